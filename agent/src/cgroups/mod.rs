//! Control groups: one interface ([`Cgroups`]) over cgroup v1 ([`v1::V1`]) and v2 ([`v2::V2`]).
//!
//! The agent only ever works below one *parent* cgroup ([`CgroupParent`]); every path the
//! callers pass is relative to that parent (e.g. `kubepods/burstable/pod123/abc`) and may not
//! climb out of it. Resource values are given in kubelet terms ([`Resources`]) and translated
//! into each version's files by the per-controller modules (`cpu`, `memory`, `pids`,
//! `devices`).
//!
//! Detection ([`detect`]) looks at the filesystem type of `/sys/fs/cgroup` and at
//! `/proc/self/mountinfo` + `/proc/self/cgroup`. A "hybrid" machine (v1 controllers plus an
//! empty cgroup2 mount at `/sys/fs/cgroup/unified`) is treated as v1.
//!
//! All operations are blocking filesystem calls (and [`Cgroups::remove`] may sleep briefly
//! while a killed process finishes leaving); async callers should use `spawn_blocking`.

mod cpu;
pub mod devices;
mod memory;
mod pids;
pub mod v1;
pub mod v2;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

pub use cpu::shares_to_weight;
pub use devices::DevicePolicy;

/// Where `/sys/fs/cgroup` lives; every real system mounts cgroups there.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// v1 controllers whose hierarchies the agent manages (a co-mounted `cpu,cpuacct` counts once).
const V1_MANAGED: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "devices"];

/// Every v1 controller the kernel knows, to tell controllers from mount options in mountinfo.
const V1_KNOWN: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Which cgroup version the backend drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// The cgroup everything the agent creates lives under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupParent {
    /// Below the agent's own cgroup, in every hierarchy (v1: the own path may differ per
    /// hierarchy).
    Relative(String),
    /// This path from the root of every hierarchy (as mounted and visible to the agent).
    Absolute(String),
}

impl CgroupParent {
    /// A leading `/` means [`CgroupParent::Absolute`], anything else is relative to the agent's
    /// own cgroup.
    pub fn parse(s: &str) -> Self {
        if s.starts_with('/') {
            CgroupParent::Absolute(s.to_string())
        } else {
            CgroupParent::Relative(s.to_string())
        }
    }
}

impl fmt::Display for CgroupParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupParent::Relative(s) | CgroupParent::Absolute(s) => f.write_str(s),
        }
    }
}

/// Resource settings in kubelet terms; backends translate them to v1 or v2 files.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// v1 `cpu.shares`; v2 `cpu.weight` via [`shares_to_weight`]. Clamped to [2, 262144].
    pub cpu_shares: Option<u64>,
    /// µs per period; `None` (or negative) = unlimited (v1 `cfs_quota_us` -1, v2 `max`).
    pub cpu_quota: Option<i64>,
    /// µs (the agent passes 100000 when it sets a quota).
    pub cpu_period: Option<u64>,
    /// Bytes; `None` (or negative) = unlimited (v1 -1, v2 `max`).
    pub memory_limit: Option<i64>,
    /// `None` (or negative) = unlimited (`max`).
    pub pids_limit: Option<i64>,
}

/// Usage figures of one cgroup (including its descendants, as the kernel counts them).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupStats {
    /// v1 `cpuacct.usage`; v2 `cpu.stat` `usage_usec` * 1000.
    pub cpu_usage_nanos: u64,
    /// v1 `memory.usage_in_bytes`; v2 `memory.current`.
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file pages, floored at 0, as cAdvisor/kubelet compute it.
    pub memory_working_set_bytes: u64,
    /// v1 `memory.stat` `total_rss`; v2 `memory.stat` `anon`.
    pub memory_rss_bytes: u64,
    /// v1 `oom_kill` of `memory.oom_control`; v2 `oom_kill` of `memory.events`.
    pub oom_kills: u64,
    /// `pids.current`.
    pub pids_current: u64,
}

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

fn pids_suffix(pids: &[u32]) -> String {
    if pids.is_empty() {
        String::new()
    } else {
        format!(" (processes still inside: {pids:?})")
    }
}

/// One interface over both cgroup versions. Paths are relative to the cgroup parent.
pub trait Cgroups: Send + Sync + fmt::Debug {
    fn version(&self) -> CgroupVersion;
    /// Absolute directories of `path` (relative to the parent, e.g.
    /// "kubepods/burstable/pod123/abc") in every managed hierarchy. An invalid path (one with
    /// `..`) yields no directories.
    fn dirs(&self, path: &str) -> Vec<PathBuf>;
    /// mkdir -p in every hierarchy. v2: also enables the available controllers among cpu,
    /// memory, pids and io in `cgroup.subtree_control` of every ancestor from the parent's
    /// parent down to the new cgroup's parent, where not yet enabled.
    fn create(&self, path: &str) -> Result<(), CgroupError>;
    /// Writes the fields that are `Some`; `None` limits are written as "unlimited" (when the
    /// file exists) so that lifting a limit works. `None` shares/period are left alone.
    fn apply(&self, path: &str, res: &Resources) -> Result<(), CgroupError>;
    /// v2: write 1 to `memory.oom.group` when the file exists, so an OOM kill takes the whole
    /// container (as the kubelet does for containers, not pods). v1: nothing to do.
    fn set_oom_group(&self, path: &str) -> Result<(), CgroupError>;
    /// Which devices the processes of `path` may create and open (see [`devices`]): v1 the
    /// `devices` controller, v2 a device program attached to the cgroup. Call it on a new
    /// cgroup without children, before any process joins it.
    fn set_devices(&self, path: &str, policy: DevicePolicy) -> Result<(), CgroupError>;
    /// Writes `pid` to `cgroup.procs` in every hierarchy.
    fn add_process(&self, path: &str, pid: u32) -> Result<(), CgroupError>;
    /// pids in `path` and all its descendants (union over hierarchies, deduplicated, sorted).
    /// An absent cgroup has no processes.
    fn procs(&self, path: &str) -> Result<Vec<u32>, CgroupError>;
    /// SIGKILL every process in `path` and below (v2: `cgroup.kill` when it exists, else
    /// iterate). Only PIDs found in our cgroups are signalled; it does not wait for them.
    fn kill(&self, path: &str) -> Result<(), CgroupError>;
    /// rmdir `path` and everything below it, leaves first, in every hierarchy; absent is OK.
    /// On EBUSY it retries for about half a second (a just-killed process may still be
    /// leaving), then fails with the PIDs still inside.
    fn remove(&self, path: &str) -> Result<(), CgroupError>;
    fn stats(&self, path: &str) -> Result<CgroupStats, CgroupError>;
}

/// Detect the machine's cgroup setup and build the backend rooted at `parent`.
pub fn detect(parent: &CgroupParent) -> Result<Arc<dyn Cgroups>, CgroupError> {
    let sys_is_cgroup2 = match nix::sys::statfs::statfs(CGROUP_ROOT) {
        Ok(st) => Some(st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC),
        Err(e) => {
            warn!(error = %e, "statfs {CGROUP_ROOT} failed; deciding from mountinfo");
            None
        }
    };
    let mountinfo = read_proc("/proc/self/mountinfo")?;
    let proc_cgroup = read_proc("/proc/self/cgroup")?;
    let layout = build_layout(
        sys_is_cgroup2,
        &parse_mountinfo(&mountinfo),
        &parse_proc_cgroup(&proc_cgroup),
        parent,
    )?;
    Ok(match layout {
        Layout::V1(hierarchies) => {
            info!(%parent, dirs = ?hierarchies.iter().map(|h| &h.parent_dir).collect::<Vec<_>>(), "cgroup v1");
            Arc::new(v1::V1::new(hierarchies))
        }
        Layout::V2(dir) => {
            if let CgroupParent::Relative(rel) = parent {
                // The agent's own cgroup: the parent's directory without the relative part.
                let depth = rel_path(rel)?.components().count();
                if let Some(own) = dir.ancestors().nth(depth) {
                    v2::settle_in_leaf(own, std::process::id())?;
                }
            }
            info!(%parent, dir = %dir.display(), "cgroup v2");
            Arc::new(v2::V2::new(dir))
        }
    })
}

/// Used by the single-threaded container helper right before exec: write `pid` (0 = self)
/// into `<dir>/cgroup.procs` for each dir.
pub fn join(dirs: &[PathBuf], pid: u32) -> Result<(), CgroupError> {
    for dir in dirs {
        write_file(dir, "cgroup.procs", &pid.to_string())?;
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

// ---------------------------------------------------------------------------------------------
// Detection: mountinfo and /proc/self/cgroup parsing.

/// A cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    pub(crate) version: CgroupVersion,
    pub(crate) mount_point: PathBuf,
    /// The part of the hierarchy that is mounted (not "/" inside cgroup namespaces or
    /// containers with bind-mounted cgroupfs).
    pub(crate) root: String,
    /// v1: controllers (and `name=...`) of the hierarchy; v2: empty.
    pub(crate) controllers: Vec<String>,
}

/// One line of `/proc/self/cgroup`: `id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcCgroup {
    pub(crate) id: u32,
    /// Empty for the v2 entry (`0::/path`).
    pub(crate) controllers: Vec<String>,
    pub(crate) path: String,
}

/// The detected backend layout, before building the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    V1(Vec<v1::Hierarchy>),
    V2(PathBuf),
}

fn read_proc(path: &str) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: PathBuf::from(path),
        source,
    })
}

/// Undo mountinfo's octal escapes (`\040` for a space, etc.).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let digit = |c: u8| u32::from(c - b'0');
            let v = digit(b[i + 1]) * 64 + digit(b[i + 2]) * 8 + digit(b[i + 3]);
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts in `/proc/self/mountinfo` text; other lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // id parent maj:min root mountpoint options [optional...] - fstype source superopts
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 || fields.len() < sep + 4 {
            continue;
        }
        let version = match fields[sep + 1] {
            "cgroup" => CgroupVersion::V1,
            "cgroup2" => CgroupVersion::V2,
            _ => continue,
        };
        let controllers = match version {
            CgroupVersion::V1 => {
                let mut c: Vec<String> = fields[sep + 3]
                    .split(',')
                    .filter(|o| V1_KNOWN.contains(o) || o.starts_with("name="))
                    .map(str::to_string)
                    .collect();
                c.sort();
                c
            }
            CgroupVersion::V2 => Vec::new(),
        };
        mounts.push(CgroupMount {
            version,
            mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
            root: unescape_mountinfo(fields[3]),
            controllers,
        });
    }
    mounts
}

/// The lines of `/proc/self/cgroup` text.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(ProcCgroup {
                id,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// The directory of a cgroup (given as its path in the hierarchy, as `/proc/<pid>/cgroup`
/// shows it) below a mount whose root is `root`; `None` if the mount does not show it.
fn dir_in_mount(mount: &CgroupMount, cgroup_path: &str) -> Option<PathBuf> {
    let rel = Path::new(cgroup_path).strip_prefix(&mount.root).ok()?;
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(mount.mount_point.join(rel))
}

/// The parent string as path components below a base; rejects `..` and empty relative parents
/// (which would make the agent's own cgroup the parent).
fn parent_rel(parent: &CgroupParent) -> Result<PathBuf, CgroupError> {
    let (s, relative) = match parent {
        CgroupParent::Relative(s) => (s.as_str(), true),
        CgroupParent::Absolute(s) => (s.as_str(), false),
    };
    let rel = rel_path(s).map_err(|_| CgroupError::Detect(format!("invalid cgroup parent {s:?}")))?;
    if relative && rel.as_os_str().is_empty() {
        return Err(CgroupError::Detect(format!(
            "cgroup parent {s:?} names the agent's own cgroup; give it a name such as \"minilet\""
        )));
    }
    Ok(rel)
}

/// Decide the version and the parent directories from what the system shows.
/// `sys_is_cgroup2`: whether `/sys/fs/cgroup` is a cgroup2 filesystem (`None` = unknown).
pub(crate) fn build_layout(
    sys_is_cgroup2: Option<bool>,
    mounts: &[CgroupMount],
    procs: &[ProcCgroup],
    parent: &CgroupParent,
) -> Result<Layout, CgroupError> {
    let rel = parent_rel(parent)?;
    let managed_v1: Vec<&CgroupMount> = mounts
        .iter()
        .filter(|m| m.version == CgroupVersion::V1 && m.controllers.iter().any(|c| V1_MANAGED.contains(&c.as_str())))
        .collect();
    let v2_mount = mounts
        .iter()
        .find(|m| m.version == CgroupVersion::V2 && m.mount_point == Path::new(CGROUP_ROOT))
        .or_else(|| mounts.iter().find(|m| m.version == CgroupVersion::V2));
    let use_v2 = match sys_is_cgroup2 {
        Some(true) => true,
        // Hybrid (v1 controllers + an empty cgroup2 at .../unified) counts as v1.
        _ if !managed_v1.is_empty() => false,
        _ if v2_mount.is_some() => true,
        _ => {
            return Err(CgroupError::Detect(
                "no cgroup v1 (cpu, cpuacct, memory, pids) or cgroup2 mount in /proc/self/mountinfo".into(),
            ));
        }
    };

    if use_v2 {
        let default_mount = CgroupMount {
            version: CgroupVersion::V2,
            mount_point: PathBuf::from(CGROUP_ROOT),
            root: "/".into(),
            controllers: Vec::new(),
        };
        let mount = v2_mount.unwrap_or(&default_mount);
        let base = match parent {
            CgroupParent::Absolute(_) => mount.mount_point.clone(),
            CgroupParent::Relative(_) => {
                let own = procs
                    .iter()
                    .find(|p| p.id == 0 && p.controllers.is_empty())
                    .ok_or_else(|| CgroupError::Detect("no v2 entry (0::) in /proc/self/cgroup".into()))?;
                // An agent restarted from the leaf it moved itself into keeps the same parent.
                let own_path = own
                    .path
                    .strip_suffix(&format!("/{}", v2::AGENT_LEAF))
                    .filter(|p| !p.is_empty())
                    .unwrap_or(&own.path);
                dir_in_mount(mount, own_path).ok_or_else(|| {
                    CgroupError::Detect(format!(
                        "own cgroup {:?} is not visible below {} (mount root {:?}); pass an absolute --cgroup-parent",
                        own.path,
                        mount.mount_point.display(),
                        mount.root
                    ))
                })?
            }
        };
        return Ok(Layout::V2(base.join(rel)));
    }

    let mut hierarchies: Vec<v1::Hierarchy> = Vec::new();
    let mut seen: Vec<&Vec<String>> = Vec::new();
    for mount in &managed_v1 {
        if seen.contains(&&mount.controllers) {
            continue; // the same hierarchy mounted twice (bind mounts): first usable one wins
        }
        let base = match parent {
            CgroupParent::Absolute(_) => Some(mount.mount_point.clone()),
            CgroupParent::Relative(_) => {
                let own = procs
                    .iter()
                    .find(|p| p.id != 0 && p.controllers.iter().any(|c| mount.controllers.contains(c)));
                match own {
                    None => {
                        return Err(CgroupError::Detect(format!(
                            "no /proc/self/cgroup entry for the {} hierarchy",
                            mount.controllers.join(",")
                        )));
                    }
                    Some(own) => dir_in_mount(mount, &own.path),
                }
            }
        };
        let Some(base) = base else {
            continue; // maybe another mount of this hierarchy shows our cgroup
        };
        seen.push(&mount.controllers);
        hierarchies.push(v1::Hierarchy {
            controllers: mount.controllers.clone(),
            parent_dir: base.join(&rel),
        });
    }
    for mount in &managed_v1 {
        if !seen.contains(&&mount.controllers) {
            return Err(CgroupError::Detect(format!(
                "own cgroup is not visible below {} (mount root {:?}); pass an absolute --cgroup-parent",
                mount.mount_point.display(),
                mount.root
            )));
        }
    }
    Ok(Layout::V1(hierarchies))
}

// ---------------------------------------------------------------------------------------------
// Filesystem helpers shared by both backends.

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

fn invalid(dir: &Path, file: &str, content: &str) -> CgroupError {
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
/// inside, typically one that was just killed) is retried with short sleeps.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    const ATTEMPTS: u32 = 10;
    for d in tree_postorder(dir)? {
        let mut attempt = 0;
        loop {
            match std::fs::remove_dir(&d) {
                Ok(()) => {
                    debug!(dir = %d.display(), "cgroup removed");
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
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

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
24 1 253:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/1fb45
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    fn relative(s: &str) -> CgroupParent {
        CgroupParent::Relative(s.into())
    }

    fn layout(sys2: Option<bool>, mountinfo: &str, cgroup: &str, parent: &CgroupParent) -> Result<Layout, CgroupError> {
        build_layout(sys2, &parse_mountinfo(mountinfo), &parse_proc_cgroup(cgroup), parent)
    }

    fn hier(controllers: &[&str], dir: &str) -> v1::Hierarchy {
        v1::Hierarchy {
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            parent_dir: PathBuf::from(dir),
        }
    }

    #[test]
    fn version_and_parent_parse() {
        assert_eq!(CgroupVersion::V1.to_string(), "v1");
        assert_eq!(CgroupVersion::V2.to_string(), "v2");
        assert_eq!(CgroupParent::parse("minilet"), relative("minilet"));
        assert_eq!(
            CgroupParent::parse("/foo/bar"),
            CgroupParent::Absolute("/foo/bar".into())
        );
        assert_eq!(CgroupParent::parse("a/b").to_string(), "a/b");
    }

    #[test]
    fn mountinfo_parsing() {
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(m.len(), 10, "tmpfs and ext4 skipped");
        assert_eq!(
            m[0],
            CgroupMount {
                version: CgroupVersion::V1,
                mount_point: "/sys/fs/cgroup/cpu".into(),
                root: "/".into(),
                controllers: vec!["cpu".into()],
            }
        );
        assert_eq!(m[8].controllers, vec!["name=systemd".to_string()]);
        assert_eq!(m[9].version, CgroupVersion::V2);
        assert!(m[9].controllers.is_empty());

        let co = "25 18 0:22 /docker/x /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:8 master:3 - cgroup cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct\n\
                  26 18 0:23 / /mnt/my\\040cgroups rw - cgroup2 none rw,nsdelegate,memory_recursiveprot\n\
                  garbage line\n";
        let m = parse_mountinfo(co);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].controllers, vec!["cpu".to_string(), "cpuacct".to_string()]);
        assert_eq!(m[0].root, "/docker/x");
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/my cgroups"));
    }

    #[test]
    fn proc_cgroup_parsing() {
        let p = parse_proc_cgroup(HYBRID_CGROUP);
        assert_eq!(p.len(), 10);
        assert_eq!(
            p[0],
            ProcCgroup {
                id: 9,
                controllers: vec!["name=systemd".into()],
                path: "/".into()
            }
        );
        assert_eq!(p[5].controllers, vec!["memory".to_string()]);
        assert_eq!(p[5].path, "/process_api/1fb45");
        assert_eq!(
            p[9],
            ProcCgroup {
                id: 0,
                controllers: vec![],
                path: "/".into()
            }
        );
        let p = parse_proc_cgroup("4:cpu,cpuacct:/user.slice/a:b\n");
        assert_eq!(p[0].controllers, vec!["cpu".to_string(), "cpuacct".to_string()]);
        assert_eq!(p[0].path, "/user.slice/a:b");
    }

    #[test]
    fn hybrid_is_v1_with_per_hierarchy_own_paths() {
        for sys2 in [Some(false), None] {
            let l = layout(sys2, HYBRID_MOUNTINFO, HYBRID_CGROUP, &relative("minilet")).unwrap();
            assert_eq!(
                l,
                Layout::V1(vec![
                    hier(&["cpu"], "/sys/fs/cgroup/cpu/minilet"),
                    hier(&["cpuacct"], "/sys/fs/cgroup/cpuacct/minilet"),
                    hier(&["memory"], "/sys/fs/cgroup/memory/process_api/1fb45/minilet"),
                    hier(&["devices"], "/sys/fs/cgroup/devices/minilet"),
                    hier(&["pids"], "/sys/fs/cgroup/pids/minilet"),
                ])
            );
        }
        let l = layout(
            Some(false),
            HYBRID_MOUNTINFO,
            HYBRID_CGROUP,
            &CgroupParent::parse("/foo/bar"),
        )
        .unwrap();
        let Layout::V1(h) = l else { panic!("not v1") };
        assert_eq!(h[2], hier(&["memory"], "/sys/fs/cgroup/memory/foo/bar"));
    }

    #[test]
    fn pure_v2() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let cg = "0::/system.slice/minilet.service\n";
        assert_eq!(
            layout(Some(true), mi, cg, &relative("minilet")).unwrap(),
            Layout::V2("/sys/fs/cgroup/system.slice/minilet.service/minilet".into())
        );
        assert_eq!(
            layout(None, mi, cg, &relative("a/b")).unwrap(),
            Layout::V2("/sys/fs/cgroup/system.slice/minilet.service/a/b".into())
        );
        // Restarted from the leaf it moved itself into: the same parent as before.
        assert_eq!(
            layout(
                Some(true),
                mi,
                "0::/system.slice/minilet.service/minilet-agent.scope\n",
                &relative("minilet")
            )
            .unwrap(),
            Layout::V2("/sys/fs/cgroup/system.slice/minilet.service/minilet".into())
        );
        assert_eq!(
            layout(Some(true), mi, cg, &CgroupParent::parse("/minilet")).unwrap(),
            Layout::V2("/sys/fs/cgroup/minilet".into())
        );
        // statfs says cgroup2 but the hybrid's unified mount is the only one: use that.
        assert_eq!(
            layout(Some(true), HYBRID_MOUNTINFO, HYBRID_CGROUP, &relative("m")).unwrap(),
            Layout::V2("/sys/fs/cgroup/unified/m".into())
        );
    }

    #[test]
    fn co_mounted_cpu_cpuacct_counts_once() {
        let mi = "\
25 18 0:22 / /sys/fs/cgroup/cpu,cpuacct rw shared:8 - cgroup cgroup rw,cpu,cpuacct
26 18 0:23 / /sys/fs/cgroup/memory rw shared:9 - cgroup cgroup rw,memory
27 18 0:24 / /sys/fs/cgroup/net_cls,net_prio rw shared:10 - cgroup cgroup rw,net_cls,net_prio
";
        let cg = "3:net_cls,net_prio:/\n2:memory:/user.slice\n1:cpu,cpuacct:/user.slice\n0::/user.slice\n";
        assert_eq!(
            layout(Some(false), mi, cg, &relative("minilet")).unwrap(),
            Layout::V1(vec![
                hier(&["cpu", "cpuacct"], "/sys/fs/cgroup/cpu,cpuacct/user.slice/minilet"),
                hier(&["memory"], "/sys/fs/cgroup/memory/user.slice/minilet"),
            ])
        );
    }

    #[test]
    fn mount_root_not_slash() {
        // A container without a cgroup namespace: the mounts show only its own subtree.
        let mi = "\
50 40 0:30 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
51 40 0:31 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct
";
        let cg = "5:memory:/docker/abc/sub\n4:cpu,cpuacct:/docker/abc\n";
        assert_eq!(
            layout(Some(false), mi, cg, &relative("minilet")).unwrap(),
            Layout::V1(vec![
                hier(&["memory"], "/sys/fs/cgroup/memory/sub/minilet"),
                hier(&["cpu", "cpuacct"], "/sys/fs/cgroup/cpu,cpuacct/minilet"),
            ])
        );
        // v2 with a mount root below the hierarchy root.
        let mi2 = "30 23 0:26 /kubepods/x /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            layout(Some(true), mi2, "0::/kubepods/x/c\n", &relative("minilet")).unwrap(),
            Layout::V2("/sys/fs/cgroup/c/minilet".into())
        );
        // Own cgroup outside what is mounted: relative fails with advice, absolute works.
        let err = layout(Some(true), mi2, "0::/other\n", &relative("minilet")).unwrap_err();
        assert!(err.to_string().contains("--cgroup-parent"), "{err}");
        let err = layout(
            Some(false),
            mi,
            "5:memory:/elsewhere\n4:cpu,cpuacct:/docker/abc\n",
            &relative("m"),
        )
        .unwrap_err();
        assert!(matches!(err, CgroupError::Detect(_)), "{err}");
        assert_eq!(
            layout(Some(true), mi2, "0::/other\n", &CgroupParent::parse("/minilet")).unwrap(),
            Layout::V2("/sys/fs/cgroup/minilet".into())
        );
        // A bind mount of the same hierarchy that shows our cgroup is picked over one that does not.
        let mi3 = "\
50 40 0:30 /other /mnt/mem rw - cgroup cgroup rw,memory
51 40 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        assert_eq!(
            layout(Some(false), mi3, "5:memory:/a\n", &relative("m")).unwrap(),
            Layout::V1(vec![hier(&["memory"], "/sys/fs/cgroup/memory/a/m")])
        );
    }

    #[test]
    fn bad_parents_and_missing_mounts() {
        assert!(matches!(
            layout(Some(false), HYBRID_MOUNTINFO, HYBRID_CGROUP, &relative("")),
            Err(CgroupError::Detect(_))
        ));
        assert!(matches!(
            layout(Some(false), HYBRID_MOUNTINFO, HYBRID_CGROUP, &relative("../up")),
            Err(CgroupError::Detect(_))
        ));
        assert!(matches!(
            layout(None, "24 1 253:0 / / rw - ext4 /dev/vda rw\n", "", &relative("m")),
            Err(CgroupError::Detect(_))
        ));
        // A v1 hierarchy without a /proc/self/cgroup entry.
        assert!(matches!(
            layout(Some(false), HYBRID_MOUNTINFO, "0::/\n", &relative("m")),
            Err(CgroupError::Detect(_))
        ));
    }

    #[test]
    fn helpers() {
        assert_eq!(rel_path("/a//b/./c/").unwrap(), PathBuf::from("a/b/c"));
        assert_eq!(rel_path("").unwrap(), PathBuf::new());
        assert!(rel_path("a/../b").is_err());
        assert_eq!(keyed_value("a 1\nab 2\nb x\n", "ab"), Some(2));
        assert_eq!(keyed_value("a 1\n", "b"), None);
        assert_eq!(keyed_value("b x\n", "b"), None);
        assert_eq!(unescape_mountinfo("a\\040b\\011c\\\\d\\9"), "a b\tc\\\\d\\9");
    }

    // -----------------------------------------------------------------------------------------
    // Real tests against the kernel; skipped unless root and the right cgroup setup exists.

    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    fn unique_name() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("minilet-unit-{}-{nanos:x}", std::process::id())
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Kills and reaps the children this test started and removes the test's parent cgroup,
    /// also when an assertion failed.
    struct Guard {
        cg: Arc<dyn Cgroups>,
        children: Vec<Child>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            for child in &mut self.children {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Err(e) = self.cg.remove("") {
                eprintln!("cleanup of test cgroups failed: {e}");
            }
        }
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_trim(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap().trim().to_string()
    }

    /// The line of /proc/<pid>/cgroup for the hierarchy holding `controller` (v2: "").
    fn proc_cgroup_path(pid: u32, controller: &str) -> String {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let entries = parse_proc_cgroup(&text);
        let e = entries
            .iter()
            .find(|e| {
                if controller.is_empty() {
                    e.id == 0
                } else {
                    e.controllers.iter().any(|c| c == controller)
                }
            })
            .unwrap();
        e.path.clone()
    }

    fn spawn_sleep() -> Child {
        Command::new("sleep").arg("1000").stdin(Stdio::null()).spawn().unwrap()
    }

    #[test]
    fn real_v1() {
        if !is_root() {
            eprintln!("real_v1: skipped (not root)");
            return;
        }
        match nix::sys::statfs::statfs(CGROUP_ROOT) {
            Ok(st) if st.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC => {}
            _ => {
                eprintln!("real_v1: skipped ({CGROUP_ROOT} is not a cgroup v1 layout)");
                return;
            }
        }
        let name = unique_name();
        let cg = detect(&relative(&name)).unwrap();
        if cg.version() != CgroupVersion::V1 {
            eprintln!("real_v1: skipped (detected {})", cg.version());
            return;
        }
        let mut g = Guard {
            cg: cg.clone(),
            children: Vec::new(),
        };
        let parents = cg.dirs("");
        assert!(!parents.is_empty());
        for d in &parents {
            assert!(d.ends_with(&name) && d.starts_with(CGROUP_ROOT), "{}", d.display());
            assert!(!d.exists(), "fresh parent {}", d.display());
        }

        cg.create("pod/c1").unwrap();
        cg.create("pod/c2").unwrap();
        let dir_of = |path: &str, file: &str| -> PathBuf {
            cg.dirs(path)
                .into_iter()
                .find(|d| d.join(file).exists())
                .unwrap_or_else(|| panic!("no hierarchy has {file}"))
        };
        let cpu = dir_of("pod/c1", "cpu.shares");
        let mem = dir_of("pod/c1", "memory.limit_in_bytes");
        let pids_dir = dir_of("pod/c1", "pids.max");

        let mib64 = 64 << 20;
        cg.apply(
            "pod/c1",
            &Resources {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(mib64 + 1),
                pids_limit: Some(10),
            },
        )
        .unwrap();
        assert_eq!(read_trim(&cpu.join("cpu.shares")), "512");
        assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read_trim(&cpu.join("cpu.cfs_period_us")), "100000");
        let mem_limit: i64 = read_trim(&mem.join("memory.limit_in_bytes")).parse().unwrap();
        assert!(
            mem_limit <= mib64 + 1 && mib64 + 1 - mem_limit < 65536,
            "page-rounded {mem_limit}"
        );
        assert_eq!(read_trim(&pids_dir.join("pids.max")), "10");

        // Devices: the kernel's list is exactly the default allow-list; privileged is "a".
        cg.set_devices("pod/c1", DevicePolicy::Default).unwrap();
        cg.set_devices("pod/c2", DevicePolicy::AllowAll).unwrap();
        let expected: Vec<String> = devices::DEFAULT_ALLOWED.iter().map(ToString::to_string).collect();
        let list = read_trim(&dir_of("pod/c1", "devices.list").join("devices.list"));
        assert_eq!(list.lines().collect::<Vec<_>>(), expected);
        assert_eq!(
            read_trim(&dir_of("pod/c2", "devices.list").join("devices.list")),
            "a *:* rwm"
        );

        // Shorter period (written first) and a smaller quota.
        cg.apply(
            "pod/c1",
            &Resources {
                cpu_quota: Some(20_000),
                cpu_period: Some(50_000),
                memory_limit: Some(mib64),
                pids_limit: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "20000");
        assert_eq!(read_trim(&cpu.join("cpu.cfs_period_us")), "50000");
        assert_eq!(read_trim(&mem.join("memory.limit_in_bytes")), mib64.to_string());

        // Unlimited again.
        cg.apply(
            "pod/c1",
            &Resources {
                cpu_shares: Some(1024),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read_trim(&cpu.join("cpu.shares")), "1024");
        assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "-1");
        let unlimited: i64 = read_trim(&mem.join("memory.limit_in_bytes")).parse().unwrap();
        assert!(unlimited > 1 << 60, "{unlimited}");
        assert_eq!(read_trim(&pids_dir.join("pids.max")), "max");
        cg.apply(
            "pod/c1",
            &Resources {
                memory_limit: Some(mib64),
                pids_limit: Some(10),
                ..Default::default()
            },
        )
        .unwrap();

        // Child 1: moved by add_process while it waits on stdin, then does some work.
        let c1 = Command::new("sh")
            .args([
                "-c",
                "read x; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 1000",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid1 = c1.id();
        g.children.push(c1);
        cg.add_process("pod/c1", pid1).unwrap();
        // Child 2: moved by join().
        let c2 = spawn_sleep();
        let pid2 = c2.id();
        g.children.push(c2);
        join(&cg.dirs("pod/c2"), pid2).unwrap();

        let want1 = format!("/{name}/pod/c1");
        for controller in ["cpu", "cpuacct", "memory", "pids"] {
            let p = proc_cgroup_path(pid1, controller);
            assert!(p.ends_with(&want1), "{controller}: {p}");
            assert!(proc_cgroup_path(pid2, controller).ends_with(&format!("/{name}/pod/c2")));
        }
        let mut expected = vec![pid1, pid2];
        expected.sort();
        assert_eq!(cg.procs("pod").unwrap(), expected);
        assert_eq!(cg.procs("pod/c1").unwrap(), vec![pid1]);

        if let Some(stdin) = g.children[0].stdin.as_mut() {
            stdin.write_all(b"go\n").unwrap();
        }
        wait_until("child 1 to exec sleep", || {
            std::fs::read_to_string(format!("/proc/{pid1}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        let s = cg.stats("pod/c1").unwrap();
        assert_eq!(s.pids_current, 1, "{s:?}");
        assert!(s.cpu_usage_nanos > 0, "{s:?}");
        assert!(s.memory_usage_bytes > 0, "{s:?}");
        assert!(s.memory_working_set_bytes <= s.memory_usage_bytes, "{s:?}");
        assert_eq!(s.oom_kills, 0);
        assert_eq!(cg.stats("pod").unwrap().pids_current, 2);
        assert_eq!(oom_kills(&cg.dirs("pod/c1")).unwrap(), 0);

        // Busy: remove fails (after its retries) and names the process inside.
        match cg.remove("pod/c2") {
            Err(CgroupError::Remove { pids, .. }) => assert_eq!(pids, vec![pid2]),
            other => panic!("expected busy error, got {other:?}"),
        }

        cg.kill("pod").unwrap();
        // Remove right away: killed processes may still be leaving (retries cover that).
        cg.remove("pod").unwrap();
        for child in &mut g.children {
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        }
        g.children.clear();
        for d in cg.dirs("pod") {
            assert!(!d.exists(), "{}", d.display());
        }
        assert_eq!(cg.procs("pod").unwrap(), Vec::<u32>::new());
        cg.remove("").unwrap();
        for d in &parents {
            assert!(!d.exists(), "{}", d.display());
            assert!(d.parent().is_some_and(Path::is_dir), "the own cgroup stays");
        }
    }

    /// cgroup v2 for real: the machine's v2 hierarchy (pure v2, or the controller-less
    /// `unified` mount of a hybrid machine). Only the controller-independent parts are checked.
    #[test]
    fn real_v2_core() {
        if !is_root() {
            eprintln!("real_v2_core: skipped (not root)");
            return;
        }
        let (Ok(mi), Ok(pc)) = (
            std::fs::read_to_string("/proc/self/mountinfo"),
            std::fs::read_to_string("/proc/self/cgroup"),
        ) else {
            eprintln!("real_v2_core: skipped (no /proc)");
            return;
        };
        let mounts = parse_mountinfo(&mi);
        if !mounts.iter().any(|m| m.version == CgroupVersion::V2) {
            eprintln!("real_v2_core: skipped (no cgroup2 mount)");
            return;
        }
        let name = unique_name();
        let Ok(Layout::V2(dir)) = build_layout(Some(true), &mounts, &parse_proc_cgroup(&pc), &relative(&name)) else {
            eprintln!("real_v2_core: skipped (own v2 cgroup not visible)");
            return;
        };
        let cg: Arc<dyn Cgroups> = Arc::new(v2::V2::new(dir.clone()));
        let mut g = Guard {
            cg: cg.clone(),
            children: Vec::new(),
        };
        match cg.create("pod/c1") {
            Ok(()) => {}
            Err(e @ CgroupError::InternalProcesses { .. }) => {
                eprintln!("real_v2_core: skipped ({e})");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(dir.join("pod/c1").is_dir());
        cg.apply("pod/c1", &Resources::default()).unwrap();
        cg.set_oom_group("pod/c1").unwrap();
        cg.set_devices("pod/c1", DevicePolicy::Default).unwrap();

        let child = spawn_sleep();
        let pid = child.id();
        g.children.push(child);
        cg.add_process("pod/c1", pid).unwrap();
        assert!(proc_cgroup_path(pid, "").ends_with(&format!("/{name}/pod/c1")));
        assert_eq!(cg.procs("pod").unwrap(), vec![pid]);
        let s = cg.stats("pod/c1").unwrap();
        if dir.join("pod/c1/pids.current").exists() {
            assert_eq!(s.pids_current, 1);
        }
        cg.kill("pod").unwrap();
        let status = g.children[0].wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        g.children.clear();
        cg.remove("pod").unwrap();
        assert!(!dir.join("pod").exists());
        cg.remove("").unwrap();
        assert!(!dir.exists());
    }

    /// Whether this machine mounts cgroup v2 alone at /sys/fs/cgroup (no v1 hierarchy).
    fn mounted_pure_v2() -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|mi| parse_mountinfo(&mi))
            .unwrap_or_default();
        nix::sys::statfs::statfs(CGROUP_ROOT)
            .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            && !mounts.iter().any(|m| m.version == CgroupVersion::V1)
    }

    /// cgroup v2 with its controllers, for real: delegation top-down, the limits the kubelet
    /// sets (cpu.weight from shares, cpu.max, memory.max, memory.swap.max, pids.max,
    /// memory.oom.group) as the kernel reads them back, pids.max refusing forks, and an OOM
    /// kill taking the whole cgroup. A hybrid host has no v2 controllers: ignored there, run
    /// by the v2 lane (hack/vm-v2), where a missing controller fails the test.
    #[test]
    #[ignore = "needs a pure cgroup v2 kernel: runs in the v2 lane (hack/vm-v2)"]
    fn real_v2_controllers() {
        assert!(is_root(), "needs root");
        assert!(mounted_pure_v2(), "{CGROUP_ROOT} is not a pure cgroup v2 hierarchy");
        let name = unique_name();
        let cg = detect(&relative(&name)).unwrap();
        assert_eq!(cg.version(), CgroupVersion::V2);
        let mut g = Guard {
            cg: cg.clone(),
            children: Vec::new(),
        };
        cg.create("pod/c1").unwrap();
        let dir = cg.dirs("pod/c1").remove(0);
        let parent = dir.parent().unwrap();
        let enabled = read_trim(&parent.join("cgroup.subtree_control"));
        for c in ["cpu", "memory", "pids", "io"] {
            assert!(enabled.split(' ').any(|e| e == c), "{c} not delegated: {enabled}");
        }
        cg.apply(
            "pod/c1",
            &Resources {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(32 << 20),
                pids_limit: Some(4),
            },
        )
        .unwrap();
        cg.set_oom_group("pod/c1").unwrap();
        assert_eq!(read_trim(&dir.join("cpu.weight")), shares_to_weight(512).to_string());
        assert_eq!(read_trim(&dir.join("cpu.weight")), "20");
        assert_eq!(read_trim(&dir.join("cpu.max")), "50000 100000");
        assert_eq!(read_trim(&dir.join("memory.max")), (32 << 20).to_string());
        if dir.join("memory.swap.max").exists() {
            assert_eq!(read_trim(&dir.join("memory.swap.max")), "0");
        }
        assert_eq!(read_trim(&dir.join("pids.max")), "4");
        assert_eq!(read_trim(&dir.join("memory.oom.group")), "1");

        // pids.max: a shell in the cgroup asks for 6 more tasks; the kernel stops it at 4.
        let shell = Command::new("sh")
            .arg("-c")
            .arg(
                r#"echo 0 > "$1/cgroup.procs" || exit 90
                for i in 1 2 3 4 5 6; do sleep 1000 & done; wait"#,
            )
            .arg("sh")
            .arg(&dir)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        g.children.push(shell);
        wait_until("a fork refused by pids.max", || {
            keyed_value(&read_trim(&dir.join("pids.events")), "max").is_some_and(|n| n > 0)
        });
        // (The shell may give up after the refused fork, so 4 is an upper bound here.)
        let current: u64 = read_trim(&dir.join("pids.current")).parse().unwrap();
        assert!((1..=4).contains(&current), "pids.current {current}");
        cg.kill("pod/c1").unwrap();
        g.children.pop().unwrap().wait().unwrap();
        wait_until("pod/c1 empty", || cg.procs("pod/c1").is_ok_and(|p| p.is_empty()));

        // memory.oom.group: the OOM killer takes every process of the cgroup, not one.
        cg.create("pod/c2").unwrap();
        cg.apply(
            "pod/c2",
            &Resources {
                memory_limit: Some(16 << 20),
                ..Default::default()
            },
        )
        .unwrap();
        cg.set_oom_group("pod/c2").unwrap();
        let bystander = spawn_sleep();
        cg.add_process("pod/c2", bystander.id()).unwrap();
        g.children.push(bystander);
        let mut hog = Command::new("sh")
            .arg("-c")
            .arg(r#"echo 0 > "$1/cgroup.procs" || exit 90; exec tail /dev/zero"#)
            .arg("sh")
            .arg(cg.dirs("pod/c2").remove(0))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let hog_status = hog.wait().unwrap();
        assert_eq!(hog_status.signal(), Some(libc::SIGKILL), "{hog_status:?}");
        let bystander_status = g.children[0].wait().unwrap();
        assert_eq!(bystander_status.signal(), Some(libc::SIGKILL), "the group died as one");
        g.children.clear();
        let s = cg.stats("pod/c2").unwrap();
        assert!(s.oom_kills >= 1, "{s:?}");
        cg.remove("pod").unwrap();

        // The agent alone in its own cgroup (a service's) moves into a leaf, and the cgroup
        // can then delegate; with someone else's process there it stays, and creating
        // explains why. A sleep stands in for the agent.
        let own = cg.dirs("service").remove(0);
        std::fs::create_dir(&own).unwrap();
        let agent = spawn_sleep();
        let pid = agent.id();
        g.children.push(agent);
        join(std::slice::from_ref(&own), pid).unwrap();
        assert!(v2::settle_in_leaf(&own, pid).unwrap());
        assert!(proc_cgroup_path(pid, "").ends_with(&format!("/service/{}", v2::AGENT_LEAF)));
        let below = v2::V2::new(own.join("minilet"));
        below.create("kubepods/pod1").unwrap();
        assert!(read_trim(&own.join("cgroup.subtree_control")).contains("memory"));
        let other = spawn_sleep();
        let other_pid = other.id();
        g.children.push(other);
        let own2 = cg.dirs("service2").remove(0);
        std::fs::create_dir(&own2).unwrap();
        join(std::slice::from_ref(&own2), other_pid).unwrap();
        assert!(
            !v2::settle_in_leaf(&own2, pid).unwrap(),
            "not the agent's process: stays"
        );
        let err = v2::V2::new(own2.join("minilet")).create("x").unwrap_err();
        assert!(matches!(err, CgroupError::InternalProcesses { .. }), "{err}");
        for child in &mut g.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        g.children.clear();
        cg.remove("").unwrap();
    }
}
