//! Operations on cgroup directories shared by both backends: joining, reading and writing
//! control files, killing and removing a subtree.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use tracing::{debug, warn};

use super::{CgroupError, memory};

/// Used by the single-threaded container helper right before exec: write `pid` (0 = self)
/// into `<dir>/cgroup.procs` for each dir.
pub fn join(dirs: &[PathBuf], pid: u32) -> Result<(), CgroupError> {
    for dir in dirs {
        write_file(dir, "cgroup.procs", &pid.to_string())?;
    }
    Ok(())
}

/// [`join`] for a process with a single thread (the helpers, before any thread exists):
/// where a v1 hierarchy has `tasks`, `pid` is written there. That moves only the one thread
/// named, which for such a process is all of it. With `pid` 0 (the calling thread) the
/// kernel also skips the write lock over every thread group that `cgroup.procs` and any
/// other pid take: after an idle moment that lock waits for an RCU grace period (7-20 ms
/// measured, docs/performance.md). A v2 directory has no `tasks`: there it is
/// `cgroup.procs`, as in [`join`].
pub fn join_single_threaded(dirs: &[PathBuf], pid: u32) -> Result<(), CgroupError> {
    let pid = pid.to_string();
    for dir in dirs {
        match write_file(dir, "tasks", &pid) {
            Err(CgroupError::Write { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                write_file(dir, "cgroup.procs", &pid)?
            }
            other => other?,
        }
    }
    Ok(())
}

/// Read the OOM-kill counter of the cgroup at these dirs (whichever hierarchy holds memory);
/// used by the container monitor after the container exits. Missing file => Ok(0).
pub fn oom_kills(dirs: &[PathBuf]) -> Result<u64, CgroupError> {
    for dir in dirs {
        if let Some(n) = memory::oom_kills_any(dir)? {
            return Ok(n);
        }
    }
    Ok(0)
}

/// `path` as plain relative components; `..` is refused so callers cannot leave the parent.
pub(crate) fn rel_path(path: &str) -> Result<PathBuf, CgroupError> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::InvalidPath { path: path.to_string() });
            }
        }
    }
    Ok(out)
}

/// Write `value` to `dir/file` (which must exist: cgroupfs files are never created).
pub(crate) fn write_file(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    debug!(path = %path.display(), value, "cgroup write");
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path,
            value: value.to_string(),
            source,
        })
}

/// Write an "unlimited" value only where the file exists: resetting a limit the controller
/// does not offer (v2 controller not enabled, kernel without CFS bandwidth) is a no-op.
pub(crate) fn write_if_exists(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    if dir.join(file).exists() {
        write_file(dir, file, value)
    } else {
        debug!(dir = %dir.display(), file, "cgroup file absent, not resetting");
        Ok(())
    }
}

/// The content of `dir/file`, `None` when the file does not exist.
pub(crate) fn read_optional(dir: &Path, file: &str) -> Result<Option<String>, CgroupError> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

pub(crate) fn invalid(dir: &Path, file: &str, content: &str) -> CgroupError {
    CgroupError::Read {
        path: dir.join(file),
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected content {:?}", content.trim()),
        ),
    }
}

/// A single-number file (`memory.current`, `pids.current`, ...); absent file => 0.
pub(crate) fn read_u64_optional(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    match read_optional(dir, file)? {
        None => Ok(0),
        Some(s) => s.trim().parse().map_err(|_| invalid(dir, file, &s)),
    }
}

/// The value of `key` in a flat keyed file (`key value` per line: memory.stat, cpu.stat,
/// memory.events, memory.oom_control).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        if it.next()? == key {
            it.next()?.parse().ok()
        } else {
            None
        }
    })
}

/// Fail with a NotFound read error unless `dir` is a directory (stats of an absent cgroup).
pub(crate) fn require_dir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(CgroupError::Read {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a cgroup directory"),
        }),
        Err(source) => Err(CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// `dir` and all directories below it, children before their parents; absent => empty.
/// Symlinks are not followed (cgroupfs has none; a fixture might).
pub(crate) fn tree_postorder(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // removed meanwhile
            Err(source) => {
                return Err(CgroupError::Read {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })?;
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                walk(&entry.path(), out)?;
            }
        }
        out.push(dir.to_path_buf());
        Ok(())
    }
    let mut out = Vec::new();
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => walk(dir, &mut out)?,
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    Ok(out)
}

/// PIDs listed in `cgroup.procs` of `dir` and every cgroup below it, added to `out`.
pub(crate) fn collect_procs(dir: &Path, out: &mut BTreeSet<u32>) -> Result<(), CgroupError> {
    for d in tree_postorder(dir)? {
        let Some(text) = read_optional(&d, "cgroup.procs")? else {
            continue; // cgroup removed meanwhile
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let pid = line.parse().map_err(|_| invalid(&d, "cgroup.procs", &text))?;
            out.insert(pid);
        }
    }
    Ok(())
}

/// How long [`remove_tree`] waits for killed processes to leave a cgroup.
const DYING_WAIT: Duration = Duration::from_secs(10);

/// Every process in `dir` (and below) is leaving: removing it only needs time.
fn all_dying(dir: &Path) -> bool {
    let mut pids = BTreeSet::new();
    collect_procs(dir, &mut pids).is_ok()
        && pids
            .into_iter()
            .all(|p| i32::try_from(p).is_ok_and(crate::runtime::process::is_dying))
}

/// SIGKILL the processes in these directories (and below) until none are listed or a few
/// rounds have passed (processes may fork while we read). Processes already dying are
/// listed until they are gone; [`remove_tree`] waits for those.
pub(crate) fn kill_tree(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    const ROUNDS: u32 = 5;
    let me = std::process::id();
    for round in 0..ROUNDS {
        let mut pids = BTreeSet::new();
        for dir in dirs {
            collect_procs(dir, &mut pids)?;
        }
        // 0 = a process outside our PID namespace: never pass 0 to kill(2) (our process group).
        pids.remove(&0);
        if pids.remove(&me) {
            warn!("the agent's own process is inside a cgroup it was asked to kill; skipping it");
        }
        if pids.is_empty() {
            return Ok(());
        }
        debug!(?pids, round, "SIGKILL");
        for &pid in &pids {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(CgroupError::Kill {
                        path: dirs.first().cloned().unwrap_or_default(),
                        pid,
                        source: io::Error::from_raw_os_error(e as i32),
                    });
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// rmdir `dir` and everything below it, leaves first; absent is fine. EBUSY (a process still
/// inside, typically one that was just killed) is retried with short sleeps: for about half a
/// second, and for up to [`DYING_WAIT`] while every process inside is on its way out (on a
/// loaded machine a killed process may not run for a while).
pub(crate) fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    const ATTEMPTS: u32 = 10;
    for d in tree_postorder(dir)? {
        let mut attempt = 0;
        let started = std::time::Instant::now();
        loop {
            match std::fs::remove_dir(&d) {
                Ok(()) => {
                    debug!(dir = %d.display(), "cgroup removed");
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && (attempt + 1 < ATTEMPTS || (started.elapsed() < DYING_WAIT && all_dying(&d))) =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(10 * u64::from(attempt.min(9))));
                }
                Err(source) => {
                    let mut pids = BTreeSet::new();
                    let _ = collect_procs(&d, &mut pids);
                    return Err(CgroupError::Remove {
                        path: d,
                        pids: pids.into_iter().collect(),
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}
