//! What can go wrong with cgroups; every variant names the file or directory involved.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong; each variant names the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("write {value:?} to {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    /// Enabling controllers failed because the cgroup holds processes (v2 "no internal
    /// processes" rule); the message tells the user how to fix the setup.
    #[error(
        "write {value:?} to {}: {source}: the cgroup holds processes, and cgroup v2 only lets \
         a cgroup without processes give controllers to its children; run the agent in its \
         own cgroup (one whose parent already delegates cpu, memory and pids) or pass an \
         absolute --cgroup-parent (e.g. /minilet)",
        .path.display()
    )]
    InternalProcesses {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("create {}: {source}", .path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("remove {}: {source}{}", .path.display(), pids_suffix(.pids))]
    Remove {
        path: PathBuf,
        /// Processes still inside when it gave up (empty if none or unknown).
        pids: Vec<u32>,
        source: io::Error,
    },
    #[error("kill pid {pid} in {}: {source}", .path.display())]
    Kill { path: PathBuf, pid: u32, source: io::Error },
    /// cgroup v2: loading or attaching the device program failed.
    #[error("device program for {}: {step}: {source}", .path.display())]
    DeviceProgram {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    #[error("invalid cgroup path {path:?}: it must stay below the cgroup parent (no '..')")]
    InvalidPath { path: String },
    #[error("detect cgroups: {0}")]
    Detect(String),
}

pub(crate) fn pids_suffix(pids: &[u32]) -> String {
    if pids.is_empty() {
        String::new()
    } else {
        format!(" (processes still inside: {pids:?})")
    }
}
