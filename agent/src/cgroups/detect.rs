//! Detection: which cgroup version the machine runs and where the agent's parent cgroup is
//! in each hierarchy, from `statfs(/sys/fs/cgroup)`, `/proc/self/mountinfo` and
//! `/proc/self/cgroup`.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::tree::rel_path;
use super::{CGROUP_ROOT, CgroupError, CgroupParent, CgroupVersion, Cgroups, V1_KNOWN, V1_MANAGED, v1, v2};

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
            if let Some(h) = hierarchies.first() {
                super::systemd::log_delegation(CgroupVersion::V1, &h.parent_dir);
            }
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
            super::systemd::log_delegation(CgroupVersion::V2, &dir);
            info!(%parent, dir = %dir.display(), "cgroup v2");
            Arc::new(v2::V2::new(dir))
        }
    })
}

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

pub(crate) fn read_proc(path: &str) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: PathBuf::from(path),
        source,
    })
}

/// Undo mountinfo's octal escapes (`\040` for a space, etc.).
pub(crate) fn unescape_mountinfo(s: &str) -> String {
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
pub(crate) fn dir_in_mount(mount: &CgroupMount, cgroup_path: &str) -> Option<PathBuf> {
    let rel = Path::new(cgroup_path).strip_prefix(&mount.root).ok()?;
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(mount.mount_point.join(rel))
}

/// The parent string as path components below a base; rejects `..` and empty relative parents
/// (which would make the agent's own cgroup the parent).
pub(crate) fn parent_rel(parent: &CgroupParent) -> Result<PathBuf, CgroupError> {
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
