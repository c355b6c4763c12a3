//! The local, content-addressed OCI image store.
//!
//! Layout under `<root>/images/`:
//!
//! - `blobs/sha256/<hex>`: manifests, configs and compressed layers, each verified against its
//!   digest on the way in, so everything under this name is trustworthy.
//! - `layers/<diff-id hex>/`: every layer unpacked once, shared by all images and containers
//!   that use it, with OCI whiteouts already converted to overlayfs form so the directories can
//!   be stacked as overlay lowerdirs as they are. A layer appears under its final name only
//!   once it is complete and its uncompressed content matched the config's `diff_ids`.
//! - `index.json`: name (normalized reference) → image, replaced atomically under `index.lock`.
//! - `tmp/`: imports in progress (extracted archives, blobs being copied).
//!
//! Imports come from an OCI image layout directory or an OCI archive (a tar of one), as
//! written by `skopeo copy ... oci:` / `oci-archive:` or `umoci`. See [`ImageStore::import`].

mod error;
pub mod gc;
mod import;
mod layer;
mod pull;
mod record;
mod reference;
pub mod registry;
mod remove;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::distribution::Reference;
use oci_spec::image::ImageConfiguration;

pub use error::ImageError;
pub use pull::{Progress, ProgressFn, Puller};
pub use record::{ImageRecord, split_name};
pub use remove::{StoreLock, Swept};

/// One named image as `minilet image ls` and CRI `ListImages` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageSummary {
    /// Normalized reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Image ID: the config digest `sha256:<hex>`, as CRI and crictl show it.
    pub id: String,
    pub manifest_digest: String,
    /// Config plus compressed layers, in bytes.
    pub size: u64,
    /// The config's `created`, RFC 3339.
    pub created: Option<String>,
}

/// A stored image with what a runtime needs to run a container from it.
#[derive(Debug, Clone)]
pub struct Image {
    pub summary: ImageSummary,
    pub config: RuntimeConfig,
    /// Unpacked layer directory names (the diff-id hex), BOTTOM layer first, all under
    /// [`ImageStore::layers_dir`].
    pub layers: Vec<String>,
}

/// The parts of the OCI image config a container runtime needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuntimeConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The store's `index.json`. Summaries are kept here (not recomputed from blobs) so that
/// listing images, which the agent does often, reads one small file.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StoreIndex {
    #[serde(default)]
    images: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct IndexEntry {
    id: String,
    manifest_digest: String,
    size: u64,
    #[serde(default)]
    created: Option<String>,
}

impl IndexEntry {
    fn summary(&self, name: &str) -> ImageSummary {
        ImageSummary {
            name: name.to_owned(),
            id: self.id.clone(),
            manifest_digest: self.manifest_digest.clone(),
            size: self.size,
            created: self.created.clone(),
        }
    }
}

/// The image store under `<root>/images`. Cheap to open; holds no file handles, so the agent
/// and the CLI can each have one on the same directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

impl ImageStore {
    /// Open the store under `root`, creating its directories and an empty index if absent.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let store = ImageStore {
            dir: root.join("images"),
        };
        for dir in [store.dir.join("blobs/sha256"), store.layers_dir(), store.tmp_dir()] {
            crate::file_modes::create_dir_all(&dir, crate::file_modes::STATE_DIR)
                .map_err(|e| ImageError::io(&dir, e))?;
        }
        // An index that exists from the start gives watchers something to watch.
        if !store.index_path().exists() {
            store.update_index(|_| ())?;
        }
        Ok(store)
    }

    /// Import every image of an OCI layout directory or OCI archive at `src` (see the module
    /// docs). `name` (normalized) names the image and requires the source to hold exactly one
    /// (after choosing linux/host-architecture in a multi-platform index); without it, each
    /// manifest's `org.opencontainers.image.ref.name` must be a full reference. Returns the
    /// images imported, in the order the layout lists them.
    pub fn import(&self, src: &Path, name: Option<&str>) -> Result<Vec<ImageSummary>, ImageError> {
        import::import(self, src, name)
    }

    /// All images, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let index = self.read_index()?;
        Ok(index.images.iter().map(|(name, entry)| entry.summary(name)).collect())
    }

    /// Look up by reference (normalized first: "busybox" finds
    /// "docker.io/library/busybox:latest"), by full image id "sha256:<hex>", or by a unique id
    /// prefix (≥ 3 hex chars, with or without "sha256:"). Ok(None) if absent.
    pub fn get(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let index = self.read_index()?;
        let Some((name, entry)) = resolve(&index, reference)? else {
            return Ok(None);
        };
        let config_path = self.blob_path(digest_hex(&entry.id));
        let bytes = fs::read(&config_path).map_err(|e| ImageError::io(&config_path, e))?;
        let config: ImageConfiguration = serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidBlob {
            what: format!("config {} of image {name}", entry.id),
            reason: e.to_string(),
        })?;
        let layers = import::diff_id_hexes(&config, &format!("config {} of image {name}", entry.id))?;
        for layer in &layers {
            let dir = self.layers_dir().join(layer);
            if !dir.is_dir() {
                return Err(ImageError::Corrupt {
                    path: self.dir.clone(),
                    reason: format!("layer {layer} of image {name} is missing; import the image again"),
                });
            }
        }
        Ok(Some(Image {
            summary: entry.summary(name),
            config: runtime_config(&config),
            layers,
        }))
    }

    /// The file that changes whenever the set of images changes (for an inotify watch). It is
    /// replaced by rename, so watch its directory for this name (moved-to), not the inode.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// Directory holding the unpacked layers (the agent chdirs here and passes relative
    /// lowerdirs to keep overlay mount options short).
    pub fn layers_dir(&self) -> PathBuf {
        self.dir.join("layers")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub(crate) fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    fn read_index(&self) -> Result<StoreIndex, ImageError> {
        let path = self.index_path();
        crate::atomic_file::read_json(&path)
            .map(Option::unwrap_or_default)
            .map_err(|e| ImageError::io(&path, e))
    }

    /// Read-modify-write the index under an exclusive lock, so that concurrent imports (CLI
    /// and agent) never lose each other's entries. Readers need no lock: the file is replaced
    /// atomically.
    fn update_index(&self, change: impl FnOnce(&mut StoreIndex)) -> Result<(), ImageError> {
        use nix::fcntl::{Flock, FlockArg};
        let lock_path = self.dir.join("index.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ImageError::io(&lock_path, e))?;
        let _lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| ImageError::io(&lock_path, errno.into()))?;
        let mut index = self.read_index()?;
        change(&mut index);
        let path = self.index_path();
        crate::atomic_file::write_json(&path, &index).map_err(|e| ImageError::io(&path, e))
    }
}

/// "busybox" → "docker.io/library/busybox:latest"; "localhost/busybox" →
/// "localhost/busybox:latest"; digests kept. The docker normalization is what users (and
/// kubelet-style image fields) expect: the same image is found however it is spelled.
pub fn normalize_reference(reference: &str) -> Result<String, ImageError> {
    parse_reference(reference).map(|r| r.whole())
}

fn parse_reference(reference: &str) -> Result<Reference, ImageError> {
    let invalid = |reason: String| ImageError::InvalidReference {
        reference: reference.to_owned(),
        reason,
    };
    if reference.trim() != reference {
        return Err(invalid("leading or trailing whitespace".into()));
    }
    reference::parse(reference).map_err(invalid)
}

/// The hex part of a `sha256:<hex>` string (the whole string if it has no algorithm).
fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Find the index entry `reference` means: a name, a name with a manifest digest, a full id or
/// a unique id prefix.
fn resolve<'a>(index: &'a StoreIndex, reference: &str) -> Result<Option<(&'a str, &'a IndexEntry)>, ImageError> {
    let by_id = |hex: &str| -> Result<Option<(&'a str, &'a IndexEntry)>, ImageError> {
        if hex.len() < 3 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(ImageError::InvalidReference {
                reference: reference.to_owned(),
                reason: "an image id (prefix) is at least 3 lowercase hex digits".into(),
            });
        }
        let mut found: Option<(&'a str, &'a IndexEntry)> = None;
        let mut ids: Vec<&str> = Vec::new();
        for (name, entry) in &index.images {
            if digest_hex(&entry.id).starts_with(hex) {
                found.get_or_insert((name.as_str(), entry));
                if !ids.contains(&entry.id.as_str()) {
                    ids.push(&entry.id);
                }
            }
        }
        if ids.len() > 1 {
            return Err(ImageError::AmbiguousReference {
                reference: reference.to_owned(),
                matches: ids.into_iter().map(str::to_owned).collect(),
            });
        }
        Ok(found)
    };

    if let Some(hex) = reference.strip_prefix("sha256:") {
        return by_id(hex);
    }
    let looks_like_id = reference.len() >= 3 && reference.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let parsed = match parse_reference(reference) {
        Ok(parsed) => parsed,
        Err(_) if looks_like_id => return by_id(reference),
        Err(e) => return Err(e),
    };
    if let Some((name, entry)) = index.images.get_key_value(&parsed.whole()) {
        return Ok(Some((name, entry)));
    }
    // "repo@sha256:<manifest>" (how kubelet-style image fields pin images): any name of the
    // same repository whose manifest has that digest.
    if let Some(digest) = parsed.digest() {
        let same_repo = |name: &str| {
            reference::parse(name)
                .is_ok_and(|r| r.registry() == parsed.registry() && r.repository() == parsed.repository())
        };
        if let Some((name, entry)) = index
            .images
            .iter()
            .find(|(name, entry)| entry.manifest_digest == digest && same_repo(name))
        {
            return Ok(Some((name, entry)));
        }
    }
    if looks_like_id { by_id(reference) } else { Ok(None) }
}

fn runtime_config(config: &ImageConfiguration) -> RuntimeConfig {
    let Some(c) = config.config() else {
        return RuntimeConfig::default();
    };
    RuntimeConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        user: c.user().clone().unwrap_or_default(),
        stop_signal: c.stop_signal().clone(),
        labels: c
            .labels()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}
