//! Client errors as kubectl words them: one line, `Error from server (Reason): …` for what the
//! agent refused, `error: …` for everything else, never a debug dump.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tonic::{Code, Status};

/// What the agent answered with an error, in kubectl's words (`Error from server (NotFound): …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Error from server ({reason}): {message}")]
pub struct ServerError {
    /// A Kubernetes StatusReason: NotFound, BadRequest, InternalError, …
    pub reason: &'static str,
    pub message: String,
}

impl ServerError {
    pub fn not_found(message: impl Into<String>) -> Self {
        ServerError {
            reason: "NotFound",
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ServerError {
            reason: "BadRequest",
            message: message.into(),
        }
    }

    /// `pods "NAME" not found`, as the API server says it.
    pub fn pod_not_found(name: &str) -> Self {
        Self::not_found(format!("pods \"{name}\" not found"))
    }
}

/// The agent cannot be reached at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot connect to the minilet agent at {}: {cause} (is `minilet agent` running?)", socket.display())]
pub struct ConnectError {
    pub socket: PathBuf,
    pub cause: String,
}

impl ConnectError {
    pub fn new(socket: &Path, err: &(dyn std::error::Error + 'static)) -> Self {
        ConnectError {
            socket: socket.to_path_buf(),
            cause: root_cause(err),
        }
    }
}

/// The problem has already been printed (e.g. one `NotFound` line per missing name, or a
/// remote command's exit status): only exit with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("exit status {0}")]
pub struct Exit(pub u8);

/// The innermost cause of an error: for transport errors that is the useful part ("No such
/// file or directory (os error 2)"), the outer layers only say "transport error".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut e = err;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
}

/// A gRPC status from the agent, as kubectl would report the equivalent API error.
pub fn from_status(status: Status, socket: &Path) -> anyhow::Error {
    let message = if status.message().is_empty() {
        status.code().description().to_string()
    } else {
        status.message().to_string()
    };
    let reason = match status.code() {
        Code::Unavailable => {
            let cause = match std::error::Error::source(&status) {
                Some(src) => root_cause(src),
                None => message,
            };
            return ConnectError {
                socket: socket.to_path_buf(),
                cause,
            }
            .into();
        }
        Code::NotFound => "NotFound",
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => "BadRequest",
        Code::AlreadyExists => "AlreadyExists",
        Code::Aborted => "Conflict",
        Code::PermissionDenied => "Forbidden",
        Code::Unauthenticated => "Unauthorized",
        Code::DeadlineExceeded => "Timeout",
        Code::ResourceExhausted => "TooManyRequests",
        Code::Unimplemented => "MethodNotAllowed",
        Code::Ok | Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => "InternalError",
    };
    ServerError { reason, message }.into()
}

/// The line to print for an error, or None when it has been reported already.
pub fn line(err: &anyhow::Error) -> Option<String> {
    if err.downcast_ref::<Exit>().is_some() {
        return None;
    }
    for e in err.chain() {
        if let Some(s) = e.downcast_ref::<ServerError>() {
            return Some(s.to_string());
        }
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return Some(format!("error: {c}"));
        }
    }
    Some(format!("error: {err:#}"))
}

/// Print the error (if not yet printed) and choose the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    if let Some(Exit(code)) = err.downcast_ref::<Exit>() {
        return ExitCode::from(*code);
    }
    // `minilet get pods | head`: the reader went away; say nothing, as a process killed by
    // SIGPIPE would (and with its exit status).
    if err
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    {
        return ExitCode::from(141);
    }
    if let Some(l) = line(err) {
        eprintln!("{l}");
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kubectl_reasons() {
        let sock = Path::new("/run/minilet/minilet.sock");
        let nf = from_status(Status::not_found("pods \"x\" not found"), sock);
        assert_eq!(line(&nf).unwrap(), "Error from server (NotFound): pods \"x\" not found");
        let bad = from_status(Status::invalid_argument("bad"), sock);
        assert_eq!(line(&bad).unwrap(), "Error from server (BadRequest): bad");
        let down = from_status(Status::unavailable("connection refused"), sock);
        assert_eq!(
            line(&down).unwrap(),
            "error: cannot connect to the minilet agent at /run/minilet/minilet.sock: connection refused \
             (is `minilet agent` running?)"
        );
        // Context added on the way up does not hide the server's words.
        let wrapped = from_status(Status::internal("boom"), sock).context("listing pods");
        assert_eq!(line(&wrapped).unwrap(), "Error from server (InternalError): boom");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(line(&plain).unwrap(), "error: outer: inner");
        assert_eq!(line(&anyhow::Error::new(Exit(3))), None);
    }
}
