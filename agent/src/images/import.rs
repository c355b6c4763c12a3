//! Importing images from an OCI image layout directory or an OCI archive into the store.
//!
//! Everything that enters the store is verified first: blobs against their descriptor's
//! digest and size (hashed while copied), layers against the config's `diff_ids` (hashed while
//! unpacked). Nothing half-done ever sits under a final name: blobs and layers are built under
//! temporary names and renamed into place, and temporaries are removed on every error path (and,
//! if a process was killed, by the next import).

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    Arch, Descriptor, Digest, DigestAlgorithm, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};
use sha2::{Digest as _, Sha256};

use super::{ImageError, ImageStore, ImageSummary, IndexEntry, normalize_reference};

/// The annotation skopeo and umoci use to name an image in a layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Manifests, indexes and configs are small JSON documents; refuse to load anything absurd.
const MAX_JSON_BLOB: u64 = 16 << 20;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

pub(super) fn import(store: &ImageStore, src: &Path, name: Option<&str>) -> Result<Vec<ImageSummary>, ImageError> {
    let name = name.map(normalize_reference).transpose()?;
    let _lock = store.lock(false)?;
    store.clean_stale_temporaries();
    let layout = Layout::open(store, src)?;
    let images = choose_names(&layout, layout.images(store)?, name)?;

    let mut imported = Vec::with_capacity(images.len());
    for (name, candidate) in images {
        imported.push(import_image(store, &layout, name, &candidate)?);
    }
    record(store, &imported)?;
    for image in &imported {
        tracing::debug!(name = %image.name, id = %image.id, source = %src.display(), "image imported");
    }
    Ok(imported)
}

/// Name an image whose manifest, config and layer blobs a pull has put into the store:
/// verify them, unpack the layers, and add the name to the index. The store's own `blobs/`
/// has the OCI layout's shape, so it serves as the layout to import from.
pub(super) fn register(store: &ImageStore, name: String, manifest: Descriptor) -> Result<ImageSummary, ImageError> {
    let layout = Layout {
        src: store.dir.clone(),
        dir: store.dir.clone(),
        index: ImageIndex::default(),
        movable: false,
        _extracted: None,
    };
    let summary = import_image(
        store,
        &layout,
        name,
        &Candidate {
            manifest,
            ref_name: None,
        },
    )?;
    record(store, std::slice::from_ref(&summary))?;
    Ok(summary)
}

/// Add (or re-point) the names of `images` in the store's index.
fn record(store: &ImageStore, images: &[ImageSummary]) -> Result<(), ImageError> {
    store.update_index(|index| {
        for image in images {
            let entry = IndexEntry {
                id: image.id.clone(),
                manifest_digest: image.manifest_digest.clone(),
                size: image.size,
                created: image.created.clone(),
            };
            index.images.insert(image.name.clone(), entry);
        }
    })
}

/// The diff-id hexes of a config's layers, bottom first (the names of their directories).
pub(super) fn diff_id_hexes(config: &ImageConfiguration, what: &str) -> Result<Vec<String>, ImageError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|diff_id| {
            let digest = Digest::from_str(diff_id).map_err(|e| ImageError::InvalidBlob {
                what: what.to_owned(),
                reason: format!("invalid diff_id {diff_id:?}: {e}"),
            })?;
            Ok(sha256_hex(&digest, what)?.to_owned())
        })
        .collect()
}

/// An OCI image layout to import from: the user's directory, or an archive extracted into the
/// store's `tmp/` (removed when this is dropped).
struct Layout {
    /// What the user named, for messages.
    src: PathBuf,
    dir: PathBuf,
    index: ImageIndex,
    /// Blobs may be moved into the store rather than copied (they are our own extracted copies).
    movable: bool,
    _extracted: Option<TempPath>,
}

/// A manifest found in the layout, with the name the layout gives it.
struct Candidate {
    manifest: Descriptor,
    ref_name: Option<String>,
}

impl Layout {
    fn open(store: &ImageStore, src: &Path) -> Result<Self, ImageError> {
        let meta = fs::metadata(src).map_err(|e| ImageError::io(src, e))?;
        let (dir, extracted) = if meta.is_dir() {
            (src.to_path_buf(), None)
        } else if meta.is_file() {
            let tmp = TempPath::new(store.tmp_dir().join(temp_name("import")));
            extract_archive(src, &tmp.path)?;
            (tmp.path.clone(), Some(tmp))
        } else {
            return Err(ImageError::InvalidLayout {
                path: src.to_path_buf(),
                reason: "neither a directory (OCI layout) nor a file (OCI archive)".into(),
            });
        };
        let invalid = |reason: String| ImageError::InvalidLayout {
            path: src.to_path_buf(),
            reason,
        };

        let marker = dir.join("oci-layout");
        let marker_json: serde_json::Value = match fs::read(&marker) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| invalid(format!("oci-layout: {e}")))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid("not an OCI image layout (no oci-layout file)".into()));
            }
            Err(e) => return Err(ImageError::io(marker, e)),
        };
        if marker_json.get("imageLayoutVersion").and_then(|v| v.as_str()).is_none() {
            return Err(invalid("oci-layout has no imageLayoutVersion".into()));
        }
        let index_path = dir.join("index.json");
        let bytes = fs::read(&index_path).map_err(|e| ImageError::io(&index_path, e))?;
        let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("index.json: {e}")))?;
        Ok(Layout {
            src: src.to_path_buf(),
            dir,
            index,
            movable: extracted.is_some(),
            _extracted: extracted,
        })
    }

    /// The image manifests of this layout for linux and this host's architecture, resolving
    /// image indexes (multi-platform images) to the matching manifest.
    fn images(&self, store: &ImageStore) -> Result<Vec<Candidate>, ImageError> {
        let mut found = Vec::new();
        let mut other_platforms = Vec::new();
        for desc in self.index.manifests() {
            let ref_name = desc.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned();
            if let Some(platform) = desc.platform()
                && !platform_matches(&platform.os().to_string(), &platform.architecture().to_string())
            {
                other_platforms.push(format!("{}/{}", platform.os(), platform.architecture()));
                continue;
            }
            let media_type = desc.media_type();
            if is_manifest(media_type) {
                found.push(Candidate {
                    manifest: desc.clone(),
                    ref_name,
                });
            } else if is_index(media_type) {
                let manifest = self.platform_manifest(store, desc)?;
                found.push(Candidate { manifest, ref_name });
            } else {
                tracing::debug!(digest = %desc.digest(), %media_type, "skipping layout entry that is not an image");
            }
        }
        if found.is_empty() {
            let reason = if other_platforms.is_empty() {
                "the layout's index.json lists no image manifests".to_owned()
            } else {
                format!(
                    "no image for linux/{} (the layout has {})",
                    host_arch(),
                    other_platforms.join(", ")
                )
            };
            return Err(ImageError::InvalidLayout {
                path: self.src.clone(),
                reason,
            });
        }
        Ok(found)
    }

    /// The manifest for linux/host-arch in the image index `desc` points at.
    fn platform_manifest(&self, store: &ImageStore, desc: &Descriptor) -> Result<Descriptor, ImageError> {
        let what = format!("image index {}", desc.digest());
        let index: ImageIndex = read_json_blob(store, self, desc, &what)?;
        linux_manifest(&index).map_err(|available| ImageError::Unsupported {
            what,
            reason: format!("no image for linux/{} (it has {})", host_arch(), available.join(", ")),
        })
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }
}

/// Decide the name of each image to import: `--name` names the only image; otherwise every
/// image whose ref.name annotation is a full reference is imported under it.
fn choose_names(
    layout: &Layout,
    candidates: Vec<Candidate>,
    name: Option<String>,
) -> Result<Vec<(String, Candidate)>, ImageError> {
    if let Some(name) = name {
        if candidates.len() > 1 {
            let names: Vec<_> = candidates
                .iter()
                .map(|c| c.ref_name.as_deref().unwrap_or("(unnamed)"))
                .collect();
            return Err(ImageError::InvalidLayout {
                path: layout.src.clone(),
                reason: format!(
                    "holds {} images ({}); --name can name only one: import without --name to use their own names",
                    candidates.len(),
                    names.join(", ")
                ),
            });
        }
        return Ok(candidates.into_iter().map(|c| (name.clone(), c)).collect());
    }

    let mut chosen: Vec<(String, Candidate)> = Vec::new();
    let mut skipped = Vec::new();
    for candidate in candidates {
        match candidate.ref_name.as_deref() {
            Some(ref_name) if is_full_reference(ref_name) => {
                let name = normalize_reference(ref_name)?;
                if chosen.iter().any(|(n, _)| *n == name) {
                    tracing::warn!(%name, "layout names two images alike; importing the first");
                    continue;
                }
                chosen.push((name, candidate));
            }
            Some(tag) => skipped.push(format!("only the tag {tag:?}")),
            None => skipped.push("no name".to_owned()),
        }
    }
    if chosen.is_empty() {
        let reason = match skipped.as_slice() {
            [one] if one == "no name" => format!("the image has no {REF_NAME} annotation"),
            [one] => format!("the image's {REF_NAME} annotation is {one} (as umoci writes it), not a full reference"),
            _ => format!(
                "none of the {} images has a full reference as {REF_NAME}",
                skipped.len()
            ),
        };
        return Err(ImageError::NameRequired {
            path: layout.src.clone(),
            reason,
        });
    }
    if !skipped.is_empty() {
        tracing::warn!(
            source = %layout.src.display(),
            skipped = skipped.len(),
            "skipping images of the layout without a full reference name"
        );
    }
    Ok(chosen)
}

/// Copy one image's blobs into the store, unpack its layers, and describe it.
fn import_image(
    store: &ImageStore,
    layout: &Layout,
    name: String,
    candidate: &Candidate,
) -> Result<ImageSummary, ImageError> {
    let manifest_desc = &candidate.manifest;
    let what = format!("manifest {} of {name}", manifest_desc.digest());
    let manifest: ImageManifest = read_json_blob(store, layout, manifest_desc, &what)?;
    if let Some(media_type) = manifest.media_type()
        && !is_manifest(media_type)
    {
        return Err(ImageError::InvalidBlob {
            what,
            reason: format!("media type {media_type} is not an image manifest"),
        });
    }

    let config_desc = manifest.config();
    let config_what = format!("config {} of {name}", config_desc.digest());
    let config_type = config_desc.media_type();
    if *config_type != MediaType::ImageConfig && config_type.as_ref() != DOCKER_CONFIG {
        return Err(ImageError::Unsupported {
            what: config_what,
            reason: format!("media type {config_type} (not a container image)"),
        });
    }
    // Check everything that can be checked before copying layers, so that an unusable image
    // leaves as little behind as possible.
    let layers: Vec<(&Descriptor, Compression)> = manifest
        .layers()
        .iter()
        .map(|l| {
            Ok((
                l,
                layer_compression(l.media_type(), &format!("layer {} of {name}", l.digest()))?,
            ))
        })
        .collect::<Result<_, ImageError>>()?;
    let config: ImageConfiguration = read_json_blob(store, layout, config_desc, &config_what)?;
    let os = config.os().to_string();
    let arch = config.architecture().to_string();
    if !platform_matches(&os, &arch) {
        return Err(ImageError::Unsupported {
            what: config_what,
            reason: format!("the image is for {os}/{arch}, this host runs linux/{}", host_arch()),
        });
    }
    let diff_ids = diff_id_hexes(&config, &config_what)?;
    if diff_ids.len() != layers.len() {
        return Err(ImageError::InvalidBlob {
            what: config_what,
            reason: format!("{} diff_ids for the manifest's {} layers", diff_ids.len(), layers.len()),
        });
    }

    let mut size = config_desc.size();
    for ((desc, compression), diff_id) in layers.iter().zip(&diff_ids) {
        let what = format!("layer {} of {name}", desc.digest());
        let blob = ingest_blob(store, layout, desc, &what)?;
        ensure_layer(store, &blob, &what, *compression, diff_id)?;
        size += desc.size();
    }
    Ok(ImageSummary {
        name,
        id: config_desc.digest().to_string(),
        manifest_digest: manifest_desc.digest().to_string(),
        size,
        created: config.created().clone(),
    })
}

/// Ingest a small JSON blob (manifest, index, config) and parse it.
fn read_json_blob<T: serde::de::DeserializeOwned>(
    store: &ImageStore,
    layout: &Layout,
    desc: &Descriptor,
    what: &str,
) -> Result<T, ImageError> {
    if desc.size() > MAX_JSON_BLOB {
        return Err(ImageError::InvalidBlob {
            what: what.to_owned(),
            reason: format!("{} bytes is too large for a JSON document", desc.size()),
        });
    }
    let path = ingest_blob(store, layout, desc, what)?;
    let bytes = fs::read(&path).map_err(|e| ImageError::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidBlob {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// Put the blob `desc` describes into `blobs/sha256/`, verified; return its path there. A
/// blob already in the store was verified when it arrived and is not read again.
fn ingest_blob(store: &ImageStore, layout: &Layout, desc: &Descriptor, what: &str) -> Result<PathBuf, ImageError> {
    let hex = sha256_hex(desc.digest(), what)?;
    let dst = store.blob_path(hex);
    if dst.is_file() {
        return Ok(dst);
    }
    let src = layout.blob_path(hex);
    let mut file = File::open(&src).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ImageError::InvalidLayout {
            path: layout.src.clone(),
            reason: format!("{what}: blob missing from the layout"),
        },
        _ => ImageError::io(&src, e),
    })?;
    let meta = file.metadata().map_err(|e| ImageError::io(&src, e))?;
    if !meta.is_file() {
        return Err(ImageError::InvalidLayout {
            path: layout.src.clone(),
            reason: format!("{what}: blob is not a file"),
        });
    }
    if meta.len() != desc.size() {
        return Err(ImageError::SizeMismatch {
            what: what.to_owned(),
            expected: desc.size(),
            actual: meta.len(),
        });
    }
    let verify = |actual: String| {
        if actual == desc.digest().as_ref() {
            Ok(())
        } else {
            Err(ImageError::DigestMismatch {
                what: what.to_owned(),
                expected: desc.digest().to_string(),
                actual,
            })
        }
    };

    let moved_from_own_copy = layout.movable && fs::symlink_metadata(&src).is_ok_and(|m| m.is_file());
    if moved_from_own_copy {
        let mut hashing = HashingReader::new(&mut file);
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| ImageError::io(&src, e))?;
        verify(hashing.finish())?;
        fs::rename(&src, &dst).map_err(|e| ImageError::io(&dst, e))?;
    } else {
        let tmp = TempPath::new(store.tmp_dir().join(temp_name("blob")));
        let mut out = crate::file_modes::create_new(&tmp.path, crate::file_modes::STATE_FILE)
            .map_err(|e| ImageError::io(&tmp.path, e))?;
        let mut hashing = HashingReader::new(&mut file);
        io::copy(&mut hashing, &mut out).map_err(|e| ImageError::io(&src, e))?;
        drop(out);
        verify(hashing.finish())?;
        fs::rename(&tmp.path, &dst).map_err(|e| ImageError::io(&dst, e))?;
        tmp.keep();
    }
    tracing::debug!(blob = %desc.digest(), "blob stored");
    Ok(dst)
}

/// Unpack the layer blob into `layers/<diff_id>` unless that exists already. Built in a
/// temporary directory next to it and renamed into place when complete and verified; if
/// another process got there first, its copy stays and ours is dropped.
fn ensure_layer(
    store: &ImageStore,
    blob: &Path,
    what: &str,
    compression: Compression,
    diff_id: &str,
) -> Result<(), ImageError> {
    let target = store.layers_dir().join(diff_id);
    if target.is_dir() {
        tracing::debug!(layer = diff_id, "layer already unpacked");
        return Ok(());
    }
    let tmp = TempPath::new(store.layers_dir().join(temp_name(".tmp")));
    fs::create_dir(&tmp.path).map_err(|e| ImageError::io(&tmp.path, e))?;

    let file = File::open(blob).map_err(|e| ImageError::io(blob, e))?;
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(BufReader::new(file)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(BufReader::new(file)).map_err(|e| ImageError::Unpack {
                layer: what.to_owned(),
                entry: "(zstd frame header)".into(),
                reason: e.to_string(),
            })?,
        ),
    };
    let mut hashing = HashingReader::new(reader);
    super::layer::unpack(&mut hashing, &tmp.path, what)?;
    // The diff id covers the whole uncompressed stream, including the end-of-archive blocks.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| ImageError::Unpack {
        layer: what.to_owned(),
        entry: "(end of archive)".into(),
        reason: e.to_string(),
    })?;
    let actual = hashing.finish();
    let expected = format!("sha256:{diff_id}");
    if actual != expected {
        return Err(ImageError::DigestMismatch {
            what: format!("{what} (uncompressed, config diff_id)"),
            expected,
            actual,
        });
    }
    match fs::rename(&tmp.path, &target) {
        Ok(()) => {
            tmp.keep();
            tracing::debug!(layer = diff_id, "layer unpacked");
            Ok(())
        }
        // Someone else unpacked it meanwhile; theirs is as good as ours.
        Err(_) if target.is_dir() => Ok(()),
        Err(e) => Err(ImageError::io(&target, e)),
    }
}

/// Extract an OCI archive (optionally gzip-compressed) into `dst`. The tar crate refuses
/// entries that would land outside `dst`.
fn extract_archive(src: &Path, dst: &Path) -> Result<(), ImageError> {
    let mut file = File::open(src).map_err(|e| ImageError::io(src, e))?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = File::open(src).map_err(|e| ImageError::io(src, e))?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    fs::create_dir(dst).map_err(|e| ImageError::io(dst, e))?;
    tar::Archive::new(reader)
        .unpack(dst)
        .map_err(|e| ImageError::InvalidLayout {
            path: src.to_path_buf(),
            reason: format!("cannot extract as an OCI archive (tar): {e}"),
        })
}

#[derive(Debug, Clone, Copy)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn layer_compression(media_type: &MediaType, what: &str) -> Result<Compression, ImageError> {
    match media_type.as_ref() {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
        other => Err(ImageError::Unsupported {
            what: what.to_owned(),
            reason: format!("layer media type {other}"),
        }),
    }
}

/// The image manifest for linux/host-arch among an index's entries, or the platforms it has.
pub(super) fn linux_manifest(index: &ImageIndex) -> Result<Descriptor, Vec<String>> {
    let mut available = Vec::new();
    for child in index.manifests() {
        if !is_manifest(child.media_type()) {
            continue;
        }
        match child.platform() {
            Some(p) if platform_matches(&p.os().to_string(), &p.architecture().to_string()) => {
                return Ok(child.clone());
            }
            Some(p) => available.push(format!("{}/{}", p.os(), p.architecture())),
            None => available.push("(no platform)".into()),
        }
    }
    Err(available)
}

pub(super) fn is_manifest(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageManifest || media_type.as_ref() == DOCKER_MANIFEST
}

pub(super) fn is_index(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageIndex || media_type.as_ref() == DOCKER_MANIFEST_LIST
}

/// A ref.name is a full reference if it has more than a tag's grammar allows (a tag has no
/// `/`, `:` or `@`). A bare word is taken as a tag: that is how umoci names images.
fn is_full_reference(ref_name: &str) -> bool {
    ref_name.contains(['/', ':', '@'])
}

/// This host's architecture in OCI (Go) naming: amd64, arm64, ...
pub(super) fn host_arch() -> String {
    Arch::default().to_string()
}

pub(super) fn platform_matches(os: &str, arch: &str) -> bool {
    os == "linux" && arch == host_arch()
}

/// The hex of a sha256 digest; other algorithms are not supported (they are vanishingly rare,
/// and the store is keyed by sha256).
pub(super) fn sha256_hex<'d>(digest: &'d Digest, what: &str) -> Result<&'d str, ImageError> {
    if *digest.algorithm() == DigestAlgorithm::Sha256 {
        Ok(digest.digest())
    } else {
        Err(ImageError::Unsupported {
            what: what.to_owned(),
            reason: format!("digest algorithm of {digest}"),
        })
    }
}

/// Reads through, hashing everything read.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// `sha256:<hex>` of everything read so far.
    fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A file or directory removed when dropped unless [`TempPath::keep`] was called: error paths
/// (including panics) leave nothing behind.
struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    fn new(path: PathBuf) -> Self {
        TempPath { path, keep: false }
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep {
            remove_any(&self.path);
        }
    }
}

fn remove_any(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove temporary");
    }
}

/// `<prefix>-<pid>-<random>`: the pid lets a later import tell a dead process's leftovers from
/// a running import's work.
pub(super) fn temp_name(prefix: &str) -> String {
    format!("{prefix}-{}-{:016x}", std::process::id(), rand::random::<u64>())
}

impl ImageStore {
    /// Remove temporaries left by killed processes (a killed import cannot clean up after itself).
    pub(super) fn clean_stale_temporaries(&self) {
        for dir in [self.tmp_dir(), self.layers_dir()] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(temp_owner) else {
                    continue;
                };
                let alive = !matches!(
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                    Err(nix::errno::Errno::ESRCH)
                );
                if !alive {
                    tracing::info!(path = %entry.path().display(), "removing leftover of an interrupted import");
                    remove_any(&entry.path());
                }
            }
        }
    }
}

/// The pid in a [`temp_name`], if `name` is one.
fn temp_owner(name: &str) -> Option<i32> {
    let mut parts = name.split('-');
    let prefix = parts.next()?;
    if !matches!(prefix, "import" | "blob" | ".tmp") {
        return None;
    }
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(pid).filter(|&p| p > 0)
}
