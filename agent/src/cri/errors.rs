//! The one mapping from minilet's typed errors to gRPC status codes, so every CRI handler
//! answers the same failure with the same code (a CRI client such as the kubelet or crictl
//! acts on the code: NotFound means "gone", FailedPrecondition "not now", Internal "our bug
//! or our host"). Handlers return `RuntimeError`/`ImageError` and let `?` convert.

use tonic::{Code, Status};

use crate::cgroups::CgroupError;
use crate::images::ImageError;
use crate::runtime::RuntimeError;
use crate::runtime::seccomp::SeccompError;

/// The code of an I/O failure on the node: a full disk is a resource running out, a timeout
/// a deadline; anything else is the host failing us.
fn io_code(e: &std::io::Error) -> Code {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Code::ResourceExhausted,
        std::io::ErrorKind::TimedOut => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

pub fn runtime_code(e: &RuntimeError) -> Code {
    match e {
        RuntimeError::NotFound { .. } => Code::NotFound,
        RuntimeError::InvalidArgument(_) => Code::InvalidArgument,
        RuntimeError::FailedPrecondition(_) => Code::FailedPrecondition,
        RuntimeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        RuntimeError::Unimplemented(_) => Code::Unimplemented,
        RuntimeError::AlreadyExists(_) => Code::AlreadyExists,
        RuntimeError::ResourceExhausted(_) => Code::ResourceExhausted,
        RuntimeError::Image(e) => image_code(e),
        // A profile the caller named that cannot be read or is not a profile.
        RuntimeError::Seccomp(SeccompError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Code::NotFound
        }
        RuntimeError::Seccomp(_) => Code::InvalidArgument,
        RuntimeError::Io { source, .. } => io_code(source),
        RuntimeError::Cgroup(e) => cgroup_code(e),
        RuntimeError::Helper(_) | RuntimeError::Task { .. } => Code::Internal,
        RuntimeError::Network(_) => Code::Unknown,
    }
}

fn cgroup_code(e: &CgroupError) -> Code {
    match e {
        CgroupError::Write { source, .. } | CgroupError::Create { source, .. }
            if source.raw_os_error() == Some(nix::libc::ENOSPC) =>
        {
            // cgroup v1/v2 say ENOSPC when a limit (pids, nesting) is reached, not a full disk.
            Code::ResourceExhausted
        }
        _ => Code::Internal,
    }
}

pub fn image_code(e: &ImageError) -> Code {
    match e {
        ImageError::InvalidReference { .. }
        | ImageError::AmbiguousReference { .. }
        | ImageError::InvalidLayout { .. }
        | ImageError::NameRequired { .. }
        | ImageError::Unsupported { .. } => Code::InvalidArgument,
        ImageError::InUse { .. } | ImageError::InvalidConfig { .. } => Code::FailedPrecondition,
        ImageError::NoSpace { .. } => Code::ResourceExhausted,
        ImageError::Io { error, .. } => io_code(error),
        // What the registry said is kept as text through the shared pull; containerd answers
        // a failed pull with Unknown too.
        ImageError::Pull { .. } => Code::Unknown,
        ImageError::InvalidBlob { .. }
        | ImageError::DigestMismatch { .. }
        | ImageError::SizeMismatch { .. }
        | ImageError::Unpack { .. }
        | ImageError::Corrupt { .. } => Code::Internal,
    }
}

impl From<RuntimeError> for Status {
    fn from(e: RuntimeError) -> Status {
        Status::new(runtime_code(&e), e.to_string())
    }
}

impl From<ImageError> for Status {
    fn from(e: ImageError) -> Status {
        Status::new(image_code(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};
    use std::path::PathBuf;

    use super::*;

    fn io(kind: ErrorKind) -> RuntimeError {
        RuntimeError::Io {
            context: "x".into(),
            source: Error::from(kind),
        }
    }

    #[test]
    fn runtime_errors_map_to_their_codes() {
        let table = [
            (
                RuntimeError::NotFound {
                    kind: "container",
                    id: "abc".into(),
                },
                Code::NotFound,
            ),
            (RuntimeError::InvalidArgument("x".into()), Code::InvalidArgument),
            (RuntimeError::FailedPrecondition("x".into()), Code::FailedPrecondition),
            (RuntimeError::DeadlineExceeded("x".into()), Code::DeadlineExceeded),
            (RuntimeError::Unimplemented("x".into()), Code::Unimplemented),
            (RuntimeError::AlreadyExists("x".into()), Code::AlreadyExists),
            (RuntimeError::ResourceExhausted("x".into()), Code::ResourceExhausted),
            (RuntimeError::Helper("x".into()), Code::Internal),
            (io(ErrorKind::PermissionDenied), Code::Internal),
            (io(ErrorKind::StorageFull), Code::ResourceExhausted),
            (io(ErrorKind::TimedOut), Code::DeadlineExceeded),
            (
                RuntimeError::Cgroup(CgroupError::Create {
                    path: PathBuf::from("/x"),
                    source: Error::from_raw_os_error(nix::libc::ENOSPC),
                }),
                Code::ResourceExhausted,
            ),
            (
                RuntimeError::Cgroup(CgroupError::Create {
                    path: PathBuf::from("/x"),
                    source: Error::from(ErrorKind::PermissionDenied),
                }),
                Code::Internal,
            ),
            (
                RuntimeError::Seccomp(SeccompError::Read {
                    path: PathBuf::from("p.json"),
                    source: Error::from(ErrorKind::NotFound),
                }),
                Code::NotFound,
            ),
            (
                RuntimeError::Seccomp(SeccompError::Invalid {
                    origin: "p".into(),
                    problem: "x".into(),
                }),
                Code::InvalidArgument,
            ),
            (
                RuntimeError::Image(ImageError::InUse {
                    reference: "r".into(),
                    id: "i".into(),
                    container: "c".into(),
                }),
                Code::FailedPrecondition,
            ),
        ];
        for (e, code) in table {
            let text = e.to_string();
            let status = Status::from(e);
            assert_eq!(status.code(), code, "{text}");
            assert_eq!(status.message(), text, "the message is the error's own");
        }
    }

    #[test]
    fn image_errors_map_to_their_codes() {
        let s = String::new;
        let table = [
            (
                ImageError::InvalidReference {
                    reference: "A:".into(),
                    reason: s(),
                },
                Code::InvalidArgument,
            ),
            (
                ImageError::AmbiguousReference {
                    reference: "abc".into(),
                    matches: vec![],
                },
                Code::InvalidArgument,
            ),
            (
                ImageError::Unsupported { what: s(), reason: s() },
                Code::InvalidArgument,
            ),
            (
                ImageError::InUse {
                    reference: s(),
                    id: s(),
                    container: s(),
                },
                Code::FailedPrecondition,
            ),
            (
                ImageError::InvalidConfig {
                    path: PathBuf::new(),
                    reason: s(),
                },
                Code::FailedPrecondition,
            ),
            (
                ImageError::NoSpace {
                    what: s(),
                    path: PathBuf::new(),
                    needed: 2,
                    available: 1,
                    reserved: 0,
                },
                Code::ResourceExhausted,
            ),
            (
                ImageError::io("/x", Error::from(ErrorKind::StorageFull)),
                Code::ResourceExhausted,
            ),
            (ImageError::io("/x", Error::from(ErrorKind::NotFound)), Code::Internal),
            (
                ImageError::Pull {
                    reference: s(),
                    reason: s(),
                },
                Code::Unknown,
            ),
            (
                ImageError::DigestMismatch {
                    what: s(),
                    expected: s(),
                    actual: s(),
                },
                Code::Internal,
            ),
            (
                ImageError::Corrupt {
                    path: PathBuf::new(),
                    reason: s(),
                },
                Code::Internal,
            ),
        ];
        for (e, code) in table {
            let text = e.to_string();
            assert_eq!(image_code(&e), code, "{text}");
            assert_eq!(Status::from(e).code(), code, "{text}");
        }
    }
}
