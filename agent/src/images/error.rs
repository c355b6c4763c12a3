//! What can go wrong in the image store. Every variant names the file, blob or reference it is
//! about, because these errors end up as one line in front of a user (`error: ...`) or in a pod
//! event, where "permission denied" without a path is useless.
//!
//! Causes are part of the message rather than `#[source]` chains: the message is complete when
//! printed with `{}` as well as with anyhow's `{:#}`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation on `path` failed.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },

    /// The import source is not a usable OCI image layout or archive.
    #[error("{}: {reason}", path.display())]
    InvalidLayout { path: PathBuf, reason: String },

    /// A manifest, index or config blob is not what the OCI image spec says it should be.
    #[error("{what}: {reason}")]
    InvalidBlob { what: String, reason: String },

    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// The layout does not say which name its image should get.
    #[error("{}: {reason}; give the image a name with --name (e.g. --name localhost/myimage:latest)", path.display())]
    NameRequired { path: PathBuf, reason: String },

    /// Content does not hash to the digest it was announced with.
    #[error("{what}: digest mismatch: expected {expected}, content is {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A blob's size differs from its descriptor's.
    #[error("{what}: size mismatch: descriptor says {expected} bytes, blob has {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },

    /// A download would not fit on the store's filesystem (checked before it starts, from the
    /// size the manifest declares).
    #[error(
        "{what}: No space left on device: it needs {needed} bytes, the filesystem of {} has {available} bytes available{}",
        path.display(),
        if *reserved > 0 { format!(" ({reserved} of them held for downloads in progress)") } else { String::new() }
    )]
    NoSpace {
        what: String,
        path: PathBuf,
        needed: u64,
        available: u64,
        reserved: u64,
    },

    /// Something valid but not supported (yet): zstd layers, non-sha256 digests, other platforms.
    #[error("{what}: unsupported: {reason}")]
    Unsupported { what: String, reason: String },

    /// Unpacking a layer failed at one of its entries.
    #[error("{layer}: entry {entry:?}: {reason}")]
    Unpack {
        layer: String,
        entry: String,
        reason: String,
    },

    /// An id prefix matches more than one image.
    #[error("image reference {reference:?} is ambiguous: it matches {}", matches.join(", "))]
    AmbiguousReference { reference: String, matches: Vec<String> },

    /// A configuration file (registry credentials) cannot be used.
    #[error("{}: {reason}", path.display())]
    InvalidConfig { path: PathBuf, reason: String },

    /// Pulling from a registry failed (the registry's own words are in `reason`).
    #[error("failed to pull and unpack image \"{reference}\": {reason}")]
    Pull { reference: String, reason: String },

    /// The image is used by a container and cannot be removed.
    #[error("image {reference} ({id}) is in use by container {container}")]
    InUse {
        reference: String,
        id: String,
        container: String,
    },

    /// The store itself is inconsistent (a blob or layer its index refers to is missing).
    #[error("image store {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        ImageError::Io {
            path: path.into(),
            error,
        }
    }
}
