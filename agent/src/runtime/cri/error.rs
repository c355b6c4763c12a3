//! What a CRI call on a CRI-owned pod can fail with; the gRPC adapter maps each variant to
//! its status code in one place (`crate::cri`).

use crate::images::ImageError;
use crate::runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("{kind} \"{id}\" not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    InvalidArgument(String),
    /// The object is not in a state that allows the call (a container already started, a
    /// sandbox that is not ready).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A field or mode minilet does not implement: refused, never ignored.
    #[error("{0}")]
    Unimplemented(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl CriError {
    pub fn not_found(kind: &'static str, id: &str) -> Self {
        CriError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    pub(super) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CriError::Io {
            context: context.into(),
            source,
        }
    }
}
