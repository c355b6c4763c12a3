//! One place that reaps the agent's children.
//!
//! The agent is a child subreaper: a pause process, whose launcher exits right after forking
//! it, is re-parented to the agent instead of to the machine's init, and the agent reaps it
//! as soon as it exits. Nothing in the agent waits on a specific child; exits are observed
//! through pidfds (see [`super::process`]) and exit codes come from the files the container
//! monitors write. So a single `waitpid(-1)` loop on SIGCHLD collects every zombie.
//!
//! The one race: a child that exits (and is reaped) between `spawn` and `pidfd_open` would
//! leave us opening a pidfd on a recycled PID. Spawning and opening happen under the same
//! lock the reaper takes, so that cannot happen.

use std::io;
use std::process::{Child, Command};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use super::process::{PidFd, ProcessId};

static SPAWN_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
    SPAWN_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Make orphaned descendants (pause processes) re-parent to this process.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Spawn `cmd` and open a pidfd on the child before anything can reap it.
pub fn spawn(cmd: &mut Command) -> io::Result<(Child, PidFd)> {
    let _guard = lock();
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    let fd = ProcessId::of(pid)
        .and_then(|id| id.open())?
        .ok_or_else(|| io::Error::other(format!("child {pid} vanished before it could be watched")))?;
    Ok((child, fd))
}

/// Reap every child that has exited, without blocking.
pub fn reap_exited() {
    let _guard = lock();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(status) => tracing::trace!(?status, "reaped"),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "waitpid");
                break;
            }
        }
    }
}

/// Reap on every SIGCHLD for as long as the runtime runs.
pub fn start() -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        // Children may have exited before the handler was installed.
        let _ = tokio::task::spawn_blocking(reap_exited).await;
        while sigchld.recv().await.is_some() {
            let _ = tokio::task::spawn_blocking(reap_exited).await;
        }
    });
    Ok(())
}
