//! Images as the CRI counts them: one per image ID (config digest), with every name the
//! store has for it. The index is keyed by name, so two tags of one image are two entries
//! there and one image here.

use std::collections::BTreeMap;

use super::{Image, ImageError, ImageStore, ImageSummary};

/// One image with all its names, as CRI `ListImages`/`ImageStatus` and `minilet image ls`
/// show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// `sha256:<config digest>`.
    pub id: String,
    /// Its tagged names (`docker.io/library/busybox:latest`), sorted.
    pub repo_tags: Vec<String>,
    /// `repository@sha256:<manifest digest>` for every repository it is named in, sorted.
    pub repo_digests: Vec<String>,
    pub size: u64,
    pub created: Option<String>,
}

/// "docker.io/library/busybox:1.0" → ("docker.io/library/busybox", Some("1.0"));
/// "localhost:5000/a/b" → ("localhost:5000/a/b", None); a digest reference has no tag.
pub fn split_name(name: &str) -> (&str, Option<&str>) {
    let name_part = name.split_once('@').map_or(name, |(n, _)| n);
    let slash = name_part.rfind('/').map_or(0, |i| i + 1);
    match name_part[slash..].rfind(':') {
        Some(colon) => (&name_part[..slash + colon], Some(&name_part[slash + colon + 1..])),
        None => (name_part, None),
    }
}

/// Group per-name summaries into per-image records, ordered by their first name.
pub fn group(summaries: &[ImageSummary]) -> Vec<ImageRecord> {
    let mut by_id: BTreeMap<&str, ImageRecord> = BTreeMap::new();
    for s in summaries {
        let record = by_id.entry(s.id.as_str()).or_insert_with(|| ImageRecord {
            id: s.id.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            size: s.size,
            created: s.created.clone(),
        });
        let (repo, tag) = split_name(&s.name);
        if tag.is_some() && !s.name.contains('@') {
            record.repo_tags.push(s.name.clone());
        }
        if !s.manifest_digest.is_empty() {
            record.repo_digests.push(format!("{repo}@{}", s.manifest_digest));
        }
    }
    let mut records: Vec<ImageRecord> = by_id
        .into_values()
        .map(|mut r| {
            r.repo_tags.sort();
            r.repo_tags.dedup();
            r.repo_digests.sort();
            r.repo_digests.dedup();
            r
        })
        .collect();
    records.sort_by(|a, b| {
        let first = |r: &ImageRecord| r.repo_tags.first().or(r.repo_digests.first()).cloned();
        first(a).cmp(&first(b)).then_with(|| a.id.cmp(&b.id))
    });
    records
}

impl ImageStore {
    /// Every image once, with all its names.
    pub fn records(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(group(&self.list()?))
    }

    /// The image `reference` means (as [`ImageStore::get`] finds it: name, name@digest, id or
    /// id prefix) with every name it has. Ok(None) if absent.
    pub fn status(&self, reference: &str) -> Result<Option<(Image, ImageRecord)>, ImageError> {
        let Some(image) = self.get(reference)? else {
            return Ok(None);
        };
        let names: Vec<ImageSummary> = self.list()?.into_iter().filter(|s| s.id == image.summary.id).collect();
        // Removed between the two reads: what was found still describes it.
        let record = group(&names)
            .pop()
            .unwrap_or_else(|| group(std::slice::from_ref(&image.summary)).remove(0));
        Ok(Some((image, record)))
    }
}

impl Image {
    /// What `inspect` (crictl inspecti) and verbose CRI `ImageStatus` show beyond the status:
    /// the config's runtime parts, the layers and the manifest digest.
    pub fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "created": self.summary.created,
            "config": self.config,
            "layers": self.layers.iter().map(|l| format!("sha256:{l}")).collect::<Vec<_>>(),
            "manifestDigest": self.summary.manifest_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str, id: &str, manifest: &str) -> ImageSummary {
        ImageSummary {
            name: name.into(),
            id: id.into(),
            manifest_digest: manifest.into(),
            size: 10,
            created: None,
        }
    }

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            split_name("docker.io/library/busybox:latest"),
            ("docker.io/library/busybox", Some("latest"))
        );
        assert_eq!(split_name("localhost:5000/a/b:v1"), ("localhost:5000/a/b", Some("v1")));
        assert_eq!(split_name("localhost:5000/a/b"), ("localhost:5000/a/b", None));
        let digest = format!("localhost/x@sha256:{}", "a".repeat(64));
        assert_eq!(split_name(&digest), ("localhost/x", None));
    }

    #[test]
    fn one_record_per_id_with_every_name() {
        let records = group(&[
            summary("docker.io/library/busybox:1", "sha256:b", "sha256:m1"),
            summary("localhost/other:latest", "sha256:o", "sha256:m2"),
            summary("docker.io/library/busybox:latest", "sha256:b", "sha256:m1"),
            summary("docker.io/library/busybox@sha256:m1", "sha256:b", "sha256:m1"),
            summary("localhost/copy:v2", "sha256:b", "sha256:m1"),
        ]);
        assert_eq!(records.len(), 2, "{records:?}");
        let busybox = &records[0];
        assert_eq!(busybox.id, "sha256:b");
        assert_eq!(
            busybox.repo_tags,
            [
                "docker.io/library/busybox:1",
                "docker.io/library/busybox:latest",
                "localhost/copy:v2"
            ]
        );
        assert_eq!(
            busybox.repo_digests,
            ["docker.io/library/busybox@sha256:m1", "localhost/copy@sha256:m1"]
        );
        assert_eq!(records[1].repo_tags, ["localhost/other:latest"]);
    }

    #[test]
    fn an_image_pulled_by_digest_only_has_no_tag() {
        let records = group(&[summary("docker.io/library/busybox@sha256:m1", "sha256:b", "sha256:m1")]);
        assert!(records[0].repo_tags.is_empty());
        assert_eq!(records[0].repo_digests, ["docker.io/library/busybox@sha256:m1"]);
    }
}
