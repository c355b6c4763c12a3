//! Attaching to a running container's own process (`kubectl attach`, CRI Attach): a
//! connection to its monitor's attach socket ([`super::helper`]'s attach), carrying the
//! same frames as an exec session, so the streaming server serves both alike.

use tokio::io::AsyncWriteExt;

use super::exec::{ExecSession, frame};
use super::spec::{ContainerSpec, StdioSpec};
use super::state::ContainerFiles;
use super::{IoContext, Result, Runtime, RuntimeError};
use crate::atomic_file;

/// A container's stdio as it was created (`stdin`, `stdinOnce`, `tty`).
pub async fn stdio_of(files: &ContainerFiles) -> Result<StdioSpec> {
    let path = ContainerFiles::spec_path(&files.dir);
    let spec = tokio::task::spawn_blocking(move || atomic_file::read_json::<ContainerSpec>(&path))
        .await
        .map_err(|e| RuntimeError::Helper(format!("read the container spec: {e}")))?
        .map_err(|e| RuntimeError::Helper(format!("read the container spec: {e}")))?
        .ok_or_else(|| RuntimeError::Helper(format!("container {} has no spec", files.record.name)))?;
    Ok(spec.process.stdio)
}

/// Connect to the monitor's attach socket. The connect does not block: a monitor that does
/// not accept (stopped, say) fails the attach at once (EAGAIN once its backlog is full)
/// instead of holding a thread of the agent's bounded blocking pool until it accepts.
async fn connect_monitor(dir: &std::path::Path, name: &str) -> Result<tokio::net::UnixStream> {
    let dir = {
        let dir = dir.to_path_buf();
        super::blocking("open the container's directory", move || {
            std::fs::File::open(&dir).context(|| format!("open {}", dir.display()))
        })
        .await?
    };
    // The directory stays open until the connect is done: the address goes through it.
    tokio::net::UnixStream::connect(ContainerFiles::attach_address(&dir))
        .await
        .map_err(|e| RuntimeError::FailedPrecondition(format!("cannot attach to container {name} (its monitor: {e})")))
}

impl Runtime {
    /// Attach to the running container attempt `files`: its output from now on; its stdin
    /// too if `stdin` and the container has stdin. Ending the session (dropping it) leaves
    /// the container running.
    pub async fn attach(&self, files: &ContainerFiles, stdin: bool) -> Result<ExecSession> {
        if files.state.is_none() || files.exit.is_some() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is not running",
                files.record.name
            )));
        }
        let stdin = stdin && stdio_of(files).await?.stdin;
        let sock = connect_monitor(&files.dir, &files.record.name).await?;
        let (rx, mut tx) = sock.into_split();
        if stdin {
            tx.write_all(&frame::encode(frame::ATTACH_STDIN, &[]))
                .await
                .context(|| "attach socket".into())?;
        }
        // A session the monitor lets go (its stdin ended) ends as the kubelet's: Success.
        Ok(ExecSession::over(Box::new(tx), Box::new(rx), None, 0))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket};

    use super::*;

    /// A monitor that never accepts, with its backlog full: attaching must fail, not wait.
    /// (A blocking connect on the blocking pool waited here until the monitor accepted: with
    /// enough such attaches, the whole pool.)
    #[tokio::test(flavor = "current_thread")]
    async fn an_attach_to_a_monitor_that_does_not_accept_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = ContainerFiles::attach_path(dir.path());
        let listener = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        bind(listener.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        listen(&listener, Backlog::new(0).unwrap()).unwrap();
        // Fill the backlog (the kernel queues backlog + 1).
        let mut queued = Vec::new();
        loop {
            let s = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK, None).unwrap();
            if connect(s.as_raw_fd(), &UnixAddr::new(&path).unwrap()).is_err() {
                break;
            }
            queued.push(s);
            assert!(queued.len() < 100, "the backlog never filled");
        }
        // The guard only ends a hang; the verdict is the error.
        let attached = tokio::time::timeout(std::time::Duration::from_secs(30), connect_monitor(dir.path(), "c"))
            .await
            .expect("the attach waited on a monitor that does not accept");
        let err = attached.expect_err("a monitor that does not accept");
        assert!(
            matches!(&err, RuntimeError::FailedPrecondition(m) if m.contains("cannot attach to container c")),
            "{err}"
        );
    }
}
