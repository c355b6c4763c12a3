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
        let dir = files.dir.clone();
        let name = files.record.name.clone();
        let sock = tokio::task::spawn_blocking(move || {
            let d = std::fs::File::open(&dir)?;
            let s = std::os::unix::net::UnixStream::connect(ContainerFiles::attach_address(&d))?;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(s)
        })
        .await
        .map_err(|e| RuntimeError::Helper(format!("connect to the monitor: {e}")))?
        .map_err(|e| {
            RuntimeError::FailedPrecondition(format!("cannot attach to container {name} (its monitor: {e})"))
        })?;
        let sock = tokio::net::UnixStream::from_std(sock).context(|| "attach socket".into())?;
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
