//! `minilet image pull|import|ls|rm|inspect`: the local image store from the command line,
//! with or without a running agent (the store's locks make the two safe together). Output
//! follows crictl (`images`, `pull`, `rmi`, `inspecti`), so what a user sees here matches what
//! a CRI client shows.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::images::registry::{Credentials, RegistryOptions};
use crate::images::{ImageStore, ImageSummary, Progress, Puller};
use crate::runtime::state::{Layout, images_in_use};

/// Pull `reference` into the store; on a terminal, show each layer's bytes as they arrive.
pub fn pull(root: &Path, reference: &str, options: RegistryOptions, creds: Option<&str>) -> anyhow::Result<()> {
    let credentials = creds
        .map(|c| match c.split_once(':') {
            Some((username, password)) => Ok(Credentials::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            }),
            None => Err(anyhow::anyhow!("--creds: expected USERNAME:PASSWORD")),
        })
        .transpose()?;
    let store = ImageStore::open(root)?;
    let puller = Puller::new(store, options);
    let display = std::io::stderr()
        .is_terminal()
        .then(|| Arc::new(Mutex::new(ProgressDisplay::default())));
    let progress = display.clone().map(|d| -> crate::images::ProgressFn {
        Arc::new(move |p| d.lock().unwrap_or_else(|e| e.into_inner()).update(p))
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let image = runtime.block_on(puller.pull(reference, credentials, progress))?;
    if let Some(d) = display {
        d.lock().unwrap_or_else(|e| e.into_inner()).finish();
    }
    println!("Image is up to date for {}", image.id);
    Ok(())
}

/// Per-layer progress redrawn in place: `<digest 12>: <state> <done>/<total>`.
#[derive(Default)]
struct ProgressDisplay {
    layers: BTreeMap<usize, (String, String)>,
    order: Vec<String>,
    drawn: usize,
}

impl ProgressDisplay {
    fn update(&mut self, p: Progress) {
        let short = |d: &str| d.trim_start_matches("sha256:").chars().take(12).collect::<String>();
        let line = |digest: &str, text: String| (short(digest), text);
        match p {
            Progress::Resolved { layers } => {
                self.order = layers.iter().map(|(d, _)| d.clone()).collect();
                for (i, (d, size)) in layers.iter().enumerate() {
                    self.layers
                        .insert(i, line(d, format!("waiting ({})", human_size(*size))));
                }
            }
            Progress::Bytes { digest, done, total } => {
                if let Some(i) = self.order.iter().position(|d| *d == digest) {
                    self.layers.insert(
                        i,
                        line(
                            &digest,
                            format!("downloading {}/{}", human_size(done), human_size(total)),
                        ),
                    );
                }
            }
            Progress::Done { digest, cached } => {
                if let Some(i) = self.order.iter().position(|d| *d == digest) {
                    let text = if cached { "already exists" } else { "download complete" };
                    self.layers.insert(i, line(&digest, text.into()));
                }
            }
            Progress::Unpacking => {
                for (i, d) in self.order.clone().iter().enumerate() {
                    self.layers.insert(i, line(d, "unpacking".into()));
                }
            }
        }
        self.draw();
    }

    fn draw(&mut self) {
        let mut err = std::io::stderr().lock();
        // Move up over what was drawn before and redraw every line.
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn);
        }
        for (digest, text) in self.layers.values() {
            let _ = writeln!(err, "\x1b[2K{digest}: {text}");
        }
        self.drawn = self.layers.len();
        let _ = err.flush();
    }

    fn finish(&mut self) {
        for (_, text) in self.layers.values_mut() {
            if text == "unpacking" {
                *text = "pull complete".into();
            }
        }
        self.draw();
    }
}

/// Remove images (by name, or by id with all its names) unless a container uses them, then
/// reclaim the space nothing needs any more.
pub fn remove(root: &Path, references: &[String]) -> anyhow::Result<()> {
    let store = ImageStore::open(root)?;
    let in_use = images_in_use(&Layout::new(root));
    let mut failed = None;
    for reference in references {
        match store.remove(reference, &in_use) {
            Ok(names) if names.is_empty() => {
                eprintln!("error: no such image {reference}");
                failed = Some(anyhow::anyhow!("some images could not be removed"));
            }
            Ok(names) => {
                for n in names {
                    println!("Deleted: {n}");
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = Some(anyhow::anyhow!("some images could not be removed"));
            }
        }
    }
    let keep: HashSet<String> = in_use.into_keys().collect();
    store.sweep(&keep)?;
    failed.map_or(Ok(()), Err)
}

/// `crictl inspecti`: the image as CRI shows it, plus its config, layers and manifest digest.
pub fn inspect(root: &Path, reference: &str) -> anyhow::Result<()> {
    let store = ImageStore::open(root)?;
    let image = store
        .get(reference)?
        .ok_or_else(|| anyhow::anyhow!("no such image {reference}"))?;
    let (repo, _) = split_tag(&image.summary.name);
    let out = serde_json::json!({
        "status": {
            "id": image.summary.id,
            "repoTags": [image.summary.name],
            "repoDigests": [format!("{repo}@{}", image.summary.manifest_digest)],
            "size": image.summary.size.to_string(),
            "username": image.config.user,
            "pinned": false,
        },
        "info": {
            "created": image.summary.created,
            "config": image.config,
            "layers": image.layers.iter().map(|l| format!("sha256:{l}")).collect::<Vec<_>>(),
            "manifestDigest": image.summary.manifest_digest,
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Import an OCI layout directory or OCI archive; one line per image imported.
pub fn import(root: &Path, path: &Path, name: Option<&str>) -> anyhow::Result<()> {
    let store = ImageStore::open(root)?;
    for image in store.import(path, name)? {
        println!("Imported {} ({})", image.name, image.id);
    }
    Ok(())
}

/// List images as `crictl images` does, or only their ids with `quiet`.
pub fn list(root: &Path, quiet: bool) -> anyhow::Result<()> {
    let images = ImageStore::open(root)?.list()?;
    let mut out = String::new();
    if quiet {
        // One line per image, not per name: several names may share an id.
        let mut seen = std::collections::HashSet::new();
        for image in &images {
            if seen.insert(image.id.as_str()) {
                out.push_str(&image.id);
                out.push('\n');
            }
        }
    } else {
        out = table(&images);
    }
    print!("{out}");
    Ok(())
}

/// The `crictl images` table: IMAGE, TAG, IMAGE ID (13 hex digits), SIZE; columns padded like
/// Go's tabwriter with minwidth 20 and padding 3, as crictl sets it up.
fn table(images: &[ImageSummary]) -> String {
    let mut rows = vec![[
        "IMAGE".to_owned(),
        "TAG".to_owned(),
        "IMAGE ID".to_owned(),
        "SIZE".to_owned(),
    ]];
    for image in images {
        let (repo, tag) = split_tag(&image.name);
        let hex = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
        let short: String = hex.chars().take(13).collect();
        rows.push([repo.to_owned(), tag.to_owned(), short, human_size(image.size)]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|col| {
            rows.iter()
                .map(|r| r[col].chars().count())
                .max()
                .unwrap_or(0)
                .saturating_add(3)
                .max(20)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (col, width) in widths.iter().enumerate() {
            out.push_str(&format!("{:<width$}", row[col]));
        }
        out.push_str(&row[3]);
        out.push('\n');
    }
    out
}

/// "repo:tag" → ("repo", "tag"); a digest-only reference has no tag ("<none>").
fn split_tag(name: &str) -> (&str, &str) {
    let name_part = name.split_once('@').map_or(name, |(n, _)| n);
    let slash = name_part.rfind('/').map_or(0, |i| i + 1);
    match name_part[slash..].rfind(':') {
        Some(colon) => (&name_part[..slash + colon], &name_part[slash + colon + 1..]),
        None => (name_part, "<none>"),
    }
}

/// Decimal units with 3 significant digits, as crictl (go-units HumanSizeWithPrecision) prints.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    // %.3g: three significant digits, trailing zeros dropped.
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_crictl() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_200_000), "1.2MB");
        assert_eq!(human_size(2_224_000), "2.22MB");
        assert_eq!(human_size(745_300), "745kB");
        assert_eq!(human_size(12_340_000), "12.3MB");
    }

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            split_tag("docker.io/library/busybox:latest"),
            ("docker.io/library/busybox", "latest")
        );
        assert_eq!(split_tag("localhost:5000/a/b:v1"), ("localhost:5000/a/b", "v1"));
        assert_eq!(split_tag("localhost:5000/a/b"), ("localhost:5000/a/b", "<none>"));
        let digest = format!("localhost/x@sha256:{}", "a".repeat(64));
        assert_eq!(split_tag(&digest), ("localhost/x", "<none>"));
    }

    #[test]
    fn table_has_crictl_columns() {
        let images = [ImageSummary {
            name: "localhost/busybox:latest".into(),
            id: format!("sha256:{}", "0123456789abcdef".repeat(4)),
            manifest_digest: String::new(),
            size: 1_234_567,
            created: None,
        }];
        let table = table(&images);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["localhost/busybox", "latest", "0123456789abc", "1.23MB"]
        );
        assert_eq!(lines[0].find("TAG"), lines[1].find("latest"));
    }
}
