//! Removing images and reclaiming their space.
//!
//! Removing an image only drops names from the index; [`ImageStore::sweep`] then deletes every
//! blob and unpacked layer that no named image (and no image a container still uses) needs:
//! mark and sweep, so content shared between images stays while one of them remains.
//!
//! Pulls and imports write blobs before the index names them, so they hold the store's
//! `gc.lock` shared for their whole run and a sweep takes it exclusively: a sweep never sees
//! half-arrived images.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;

use oci_spec::image::{ImageConfiguration, ImageManifest};

use super::{ImageError, ImageStore, digest_hex, resolve};

/// Held while content enters the store (shared) or is swept (exclusive).
#[must_use = "the lock is released when this is dropped"]
pub struct StoreLock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

/// What a sweep reclaimed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub blobs: usize,
    pub layers: usize,
    pub bytes: u64,
}

impl ImageStore {
    /// Lock the store against sweeps (`exclusive: false`, for writers) or for one (`true`).
    /// Blocks until granted.
    pub fn lock(&self, exclusive: bool) -> Result<StoreLock, ImageError> {
        use nix::fcntl::{Flock, FlockArg};
        let path = self.dir.join("gc.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io(&path, e))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, arg)
            .map(StoreLock)
            .map_err(|(_, errno)| ImageError::io(&path, errno.into()))
    }

    /// Remove `reference`: a name removes that name; an image id (or unique prefix) removes
    /// every name of that image (as `crictl rmi` does). Refused while a container uses the
    /// image (`in_use`: image id → a container using it). Returns the names removed; the
    /// content goes with the next [`ImageStore::sweep`].
    pub fn remove(&self, reference: &str, in_use: &HashMap<String, String>) -> Result<Vec<String>, ImageError> {
        let index = self.read_index()?;
        let Some((name, entry)) = resolve(&index, reference)? else {
            return Ok(Vec::new());
        };
        // Found by its name (or name@digest): that name goes. Found by id: all its names.
        let by_name = reference.contains('@') || super::normalize_reference(reference).is_ok_and(|n| n == name);
        let id = entry.id.clone();
        let all_names: Vec<String> = index
            .images
            .iter()
            .filter(|(_, e)| e.id == id)
            .map(|(n, _)| n.clone())
            .collect();
        let names = if by_name {
            vec![name.to_owned()]
        } else {
            all_names.clone()
        };
        // Dropping one of several names leaves the image; dropping the last one of an image a
        // container uses is refused.
        if names.len() == all_names.len()
            && let Some(container) = in_use.get(&id)
        {
            return Err(ImageError::InUse {
                reference: name.to_owned(),
                id,
                container: container.clone(),
            });
        }
        self.update_index(|index| {
            for n in &names {
                index.images.remove(n);
            }
        })?;
        tracing::info!(image = %reference, id = %id, names = ?names, "image removed");
        Ok(names)
    }

    /// Delete blobs and layers that neither a named image nor an image in `keep_ids` (used by
    /// containers) needs. Takes the store's lock exclusively for the duration.
    pub fn sweep(&self, keep_ids: &HashSet<String>) -> Result<Swept, ImageError> {
        let _lock = self.lock(true)?;
        let index = self.read_index()?;
        let mut blobs: BTreeSet<String> = BTreeSet::new();
        let mut layers: BTreeSet<String> = BTreeSet::new();
        let mut mark_config = |id: &str, blobs: &mut BTreeSet<String>| -> Result<(), ImageError> {
            let hex = digest_hex(id).to_owned();
            let path = self.blob_path(&hex);
            blobs.insert(hex);
            let Ok(bytes) = fs::read(&path) else { return Ok(()) };
            let config: ImageConfiguration = serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidBlob {
                what: format!("config {id}"),
                reason: e.to_string(),
            })?;
            layers.extend(super::import::diff_id_hexes(&config, &format!("config {id}"))?);
            Ok(())
        };
        for entry in index.images.values() {
            mark_config(&entry.id, &mut blobs)?;
            let hex = digest_hex(&entry.manifest_digest).to_owned();
            if let Ok(bytes) = fs::read(self.blob_path(&hex))
                && let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes)
            {
                blobs.extend(
                    manifest
                        .layers()
                        .iter()
                        .map(|l| digest_hex(l.digest().as_ref()).to_owned()),
                );
            }
            blobs.insert(hex);
        }
        for id in keep_ids {
            mark_config(id, &mut blobs)?;
        }

        let mut swept = Swept::default();
        let blob_dir = self.dir.join("blobs/sha256");
        for entry in read_dir(&blob_dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&name) {
                swept.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(|e| ImageError::io(entry.path(), e))?;
                swept.blobs += 1;
            }
        }
        for entry in read_dir(&self.layers_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Layers being unpacked (".tmp-…") belong to a running import.
            if name.starts_with('.') || layers.contains(&name) {
                continue;
            }
            swept.bytes += du(&entry.path());
            fs::remove_dir_all(entry.path()).map_err(|e| ImageError::io(entry.path(), e))?;
            swept.layers += 1;
        }
        // Downloads abandoned for a day (an image nobody pulled again) are not worth resuming.
        for entry in read_dir(&self.tmp_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_DOWNLOAD));
            if name.starts_with("pull-") && name.ends_with(".partial") && stale && !locked(&entry.path()) {
                swept.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(|e| ImageError::io(entry.path(), e))?;
                swept.blobs += 1;
            }
        }
        if swept != Swept::default() {
            tracing::info!(
                blobs = swept.blobs,
                layers = swept.layers,
                bytes = swept.bytes,
                "image store swept"
            );
        }
        Ok(swept)
    }
}

/// Age after which an unfinished download is dropped by a sweep.
const STALE_DOWNLOAD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Whether another process holds the file's flock (a download in progress).
fn locked(path: &Path) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(file) = fs::OpenOptions::new().write(true).open(path) else {
        return false;
    };
    Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err()
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, ImageError> {
    Ok(fs::read_dir(dir)
        .map_err(|e| ImageError::io(dir, e))?
        .flatten()
        .collect())
}

/// Bytes used by the files under `path` (not following symlinks).
fn du(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| du(&e.path()))
        .sum::<u64>()
        + meta.len()
}
