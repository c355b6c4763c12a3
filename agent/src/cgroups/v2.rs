//! cgroup v2 backend: one unified tree; controllers must be enabled top-down in
//! `cgroup.subtree_control` before a child can use them.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use super::{
    CgroupError, CgroupStats, CgroupVersion, Cgroups, DevicePolicy, Resources, cpu, devices, kill_tree, memory, pids,
    read_optional, rel_path, remove_tree, require_dir, write_file,
};

/// Controllers the agent delegates down to its cgroups (io only for accounting).
const WANTED: [&str; 4] = ["cpu", "memory", "pids", "io"];

/// The v2 backend below one parent directory (any directory, so tests can use fixtures).
#[derive(Debug, Clone)]
pub struct V2 {
    parent_dir: PathBuf,
}

impl V2 {
    pub fn new(parent_dir: PathBuf) -> Self {
        V2 { parent_dir }
    }

    pub fn parent_dir(&self) -> &Path {
        &self.parent_dir
    }

    fn dir(&self, path: &str) -> Result<PathBuf, CgroupError> {
        Ok(self.parent_dir.join(rel_path(path)?))
    }

    /// The directories `create` prepares before making `target`, top-down: from the parent's
    /// parent (or, when that is missing, its nearest existing ancestor) to `target`'s parent.
    fn chain_to(&self, target: &Path) -> Vec<PathBuf> {
        let mut chain = Vec::new();
        for a in target.ancestors().skip(1) {
            chain.push(a.to_path_buf());
            if !a.starts_with(&self.parent_dir) && a.exists() {
                break;
            }
        }
        chain.reverse();
        chain
    }
}

/// mkdir that accepts an existing directory.
fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Enable the wanted controllers that `dir` has but does not yet hand to its children.
/// Directories without `cgroup.controllers` (above the cgroup2 mount) are skipped.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let Some(available) = read_optional(dir, "cgroup.controllers")? else {
        return Ok(());
    };
    let enabled = read_optional(dir, "cgroup.subtree_control")?.unwrap_or_default();
    let available: Vec<&str> = available.split_whitespace().collect();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<String> = WANTED
        .iter()
        .filter(|c| available.contains(c) && !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let value = missing.join(" ");
    debug!(dir = %dir.display(), %value, "enabling controllers");
    write_file(dir, "cgroup.subtree_control", &value).map_err(subtree_error)
}

/// The leaf the agent moves itself into when it alone holds its own cgroup (a systemd
/// service's, say): cgroup v2 lets only a cgroup without processes give controllers to the
/// children the agent makes there. Named like systemd's `init.scope`, for the same reason.
pub const AGENT_LEAF: &str = "minilet-agent.scope";

/// Move `pid` (the agent) from `own` into `own/AGENT_LEAF` when it is the only process there
/// and `own` is not the hierarchy's root (exempt from the rule). Processes of others in `own`
/// are left alone: creating the first cgroup then fails with the error that explains the
/// fix. Returns whether it moved.
pub fn settle_in_leaf(own: &Path, pid: u32) -> Result<bool, CgroupError> {
    let is_root = own.parent().is_none_or(|p| !p.join("cgroup.controllers").exists());
    if is_root {
        return Ok(false);
    }
    let procs = read_optional(own, "cgroup.procs")?.unwrap_or_default();
    let procs: Vec<&str> = procs.split_whitespace().collect();
    if procs != [pid.to_string().as_str()] {
        return Ok(false);
    }
    let leaf = own.join(AGENT_LEAF);
    mkdir(&leaf)?;
    super::join(std::slice::from_ref(&leaf), pid)?;
    info!(from = %own.display(), to = %leaf.display(), "moved the agent into a leaf cgroup of its own");
    Ok(true)
}

/// EBUSY on `cgroup.subtree_control` means processes live in that cgroup ("no internal
/// processes" rule): turn it into the error that explains the fix.
fn subtree_error(e: CgroupError) -> CgroupError {
    match e {
        CgroupError::Write { path, value, source } if source.raw_os_error() == Some(libc::EBUSY) => {
            CgroupError::InternalProcesses { path, value, source }
        }
        other => other,
    }
}

impl Cgroups for V2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn dirs(&self, path: &str) -> Vec<PathBuf> {
        match self.dir(path) {
            Ok(d) => vec![d],
            Err(e) => {
                warn!(error = %e, "no cgroup directories");
                Vec::new()
            }
        }
    }

    fn hierarchy_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn create(&self, path: &str) -> Result<(), CgroupError> {
        let target = self.dir(path)?;
        for dir in self.chain_to(&target) {
            mkdir(&dir)?;
            enable_controllers(&dir)?;
        }
        mkdir(&target)?;
        debug!(path, "cgroup created");
        Ok(())
    }

    fn apply(&self, path: &str, res: &Resources) -> Result<(), CgroupError> {
        let dir = self.dir(path)?;
        cpu::apply_v2(&dir, res)?;
        memory::apply_v2(&dir, res)?;
        pids::apply(&dir, res)
    }

    fn set_oom_group(&self, path: &str) -> Result<(), CgroupError> {
        memory::set_oom_group_v2(&self.dir(path)?)
    }

    fn set_devices(&self, path: &str, policy: DevicePolicy) -> Result<(), CgroupError> {
        devices::attach_v2(&self.dir(path)?, policy)
    }

    fn add_process(&self, path: &str, pid: u32) -> Result<(), CgroupError> {
        super::join(&[self.dir(path)?], pid)
    }

    fn procs(&self, path: &str) -> Result<Vec<u32>, CgroupError> {
        let mut all = BTreeSet::new();
        super::collect_procs(&self.dir(path)?, &mut all)?;
        Ok(all.into_iter().collect())
    }

    fn kill(&self, path: &str) -> Result<(), CgroupError> {
        let dir = self.dir(path)?;
        if dir.join("cgroup.kill").exists() {
            // The kernel kills the whole subtree, including processes forking meanwhile.
            write_file(&dir, "cgroup.kill", "1")
        } else {
            kill_tree(&[dir])
        }
    }

    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        remove_tree(&self.dir(path)?)?;
        debug!(path, "cgroup removed");
        Ok(())
    }

    fn stats(&self, path: &str) -> Result<CgroupStats, CgroupError> {
        let dir = self.dir(path)?;
        require_dir(&dir)?;
        let mut stats = CgroupStats {
            cpu_usage_nanos: cpu::usage_v2(&dir)?,
            pids_current: pids::current(&dir)?,
            ..Default::default()
        };
        memory::stats_v2(&dir, &mut stats)?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap()
    }

    /// A fake cgroup2 dir with `cgroup.controllers` and `cgroup.subtree_control`.
    fn cg(dir: &Path, controllers: &str, subtree: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
        fs::write(dir.join("cgroup.subtree_control"), subtree).unwrap();
        fs::write(dir.join("cgroup.procs"), "").unwrap();
    }

    #[test]
    fn create_enables_controllers_from_parents_parent_down() {
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().join("mnt");
        // mount root (above the parent's parent: never written)
        cg(&mnt, "cpuset cpu io memory hugetlb pids rdma misc", "cpu memory");
        // the agent's own cgroup = the parent's parent
        cg(&mnt.join("agent.service"), "cpu io memory pids", "memory");
        cg(&mnt.join("agent.service/minilet"), "cpu memory pids", "");
        cg(
            &mnt.join("agent.service/minilet/kubepods"),
            "cpu memory pids",
            "cpu memory pids",
        );
        let v2 = V2::new(mnt.join("agent.service/minilet"));
        v2.create("kubepods/pod1/c1").unwrap();
        assert!(mnt.join("agent.service/minilet/kubepods/pod1/c1").is_dir());
        assert_eq!(
            read(&mnt.join("cgroup.subtree_control")),
            "cpu memory",
            "above: untouched"
        );
        assert_eq!(
            read(&mnt.join("agent.service/cgroup.subtree_control")),
            "+cpu +pids +io"
        );
        assert_eq!(
            read(&mnt.join("agent.service/minilet/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert_eq!(
            read(&mnt.join("agent.service/minilet/kubepods/cgroup.subtree_control")),
            "cpu memory pids",
            "already enabled: not written"
        );
        // New dirs in a fixture have no kernel files: nothing to enable there, no error.
        assert!(
            !mnt.join("agent.service/minilet/kubepods/pod1/cgroup.subtree_control")
                .exists()
        );
        // Idempotent.
        v2.create("kubepods/pod1/c1").unwrap();
        assert_eq!(
            v2.dirs("kubepods/pod1/c1"),
            vec![mnt.join("agent.service/minilet/kubepods/pod1/c1")]
        );
    }

    #[test]
    fn create_with_missing_parent_and_mount_root_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().join("mnt");
        cg(&mnt, "cpu memory pids", "");
        // Absolute parent /a/b with /a missing: mkdir -p, enabling from the mount root.
        let v2 = V2::new(mnt.join("a/b"));
        v2.create("x").unwrap();
        assert!(mnt.join("a/b/x").is_dir());
        assert_eq!(read(&mnt.join("cgroup.subtree_control")), "+cpu +memory +pids");
        // Parent = the mount root: its parent (outside cgroupfs) is skipped.
        let v2 = V2::new(mnt.clone());
        v2.create("y").unwrap();
        assert!(mnt.join("y").is_dir());
        assert!(!tmp.path().join("cgroup.subtree_control").exists());
    }

    #[test]
    fn ebusy_on_subtree_control_explains_the_fix() {
        let e = subtree_error(CgroupError::Write {
            path: PathBuf::from("/sys/fs/cgroup/user.slice/cgroup.subtree_control"),
            value: "+cpu".into(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        });
        assert!(matches!(e, CgroupError::InternalProcesses { .. }));
        let msg = e.to_string();
        assert!(msg.contains("own cgroup") && msg.contains("--cgroup-parent"), "{msg}");
        let e = subtree_error(CgroupError::Write {
            path: PathBuf::from("x"),
            value: "+cpu".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert!(matches!(e, CgroupError::Write { .. }));
    }

    #[test]
    fn apply_writes_exact_values() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("c");
        fs::create_dir(&d).unwrap();
        for f in ["cpu.weight", "cpu.max", "memory.max", "pids.max", "memory.oom.group"] {
            fs::write(d.join(f), "0\n").unwrap();
        }
        let v2 = V2::new(tmp.path().to_path_buf());
        v2.apply(
            "c",
            &Resources {
                cpu_shares: Some(2),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(1 << 30),
                pids_limit: Some(32),
            },
        )
        .unwrap();
        assert_eq!(read(&d.join("cpu.weight")), "1");
        assert_eq!(read(&d.join("cpu.max")), "50000 100000");
        assert_eq!(read(&d.join("memory.max")), "1073741824");
        assert_eq!(read(&d.join("pids.max")), "32");
        assert_eq!(read(&d.join("memory.oom.group")), "0\n", "apply leaves oom.group alone");
        v2.set_oom_group("c").unwrap();
        assert_eq!(read(&d.join("memory.oom.group")), "1");

        v2.apply(
            "c",
            &Resources {
                cpu_shares: Some(262_144),
                cpu_period: Some(100_000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(&d.join("cpu.weight")), "10000");
        assert_eq!(read(&d.join("cpu.max")), "max 100000");
        assert_eq!(read(&d.join("memory.max")), "max");
        assert_eq!(read(&d.join("pids.max")), "max");
    }

    #[test]
    fn apply_without_controller_files() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("c")).unwrap();
        let v2 = V2::new(tmp.path().to_path_buf());
        v2.apply("c", &Resources::default()).unwrap(); // unlimited everywhere: nothing to reset
        v2.set_oom_group("c").unwrap();
        let err = v2
            .apply(
                "c",
                &Resources {
                    memory_limit: Some(4096),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("memory.max"), "{err}");
    }

    #[test]
    fn procs_kill_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let v2 = V2::new(tmp.path().join("minilet"));
        v2.create("pod/c1").unwrap();
        v2.create("pod/c2").unwrap();
        let pod = tmp.path().join("minilet/pod");
        // PIDs above the kernel's pid_max limit (2^22): should anything signal them, nothing happens.
        fs::write(pod.join("c1/cgroup.procs"), "900000010\n900000011\n").unwrap();
        fs::write(pod.join("c2/cgroup.procs"), "900000011\n900000012\n").unwrap();
        assert_eq!(v2.procs("pod").unwrap(), vec![900000010, 900000011, 900000012]);
        // cgroup.kill present: the kernel does the work; we only write "1".
        fs::write(pod.join("cgroup.kill"), "").unwrap();
        v2.kill("pod").unwrap();
        assert_eq!(read(&pod.join("cgroup.kill")), "1");
        // Clean up the fixture's regular files so rmdir can work, then remove the tree.
        for f in ["c1/cgroup.procs", "c2/cgroup.procs", "cgroup.kill"] {
            fs::remove_file(pod.join(f)).unwrap();
        }
        v2.add_process("pod/c1", 5).unwrap_err(); // no cgroup.procs: write fails, never creates
        assert!(!pod.join("c1/cgroup.procs").exists());
        v2.remove("pod").unwrap();
        assert!(!pod.exists());
        v2.remove("pod").unwrap();
        assert!(tmp.path().join("minilet").is_dir());
    }

    #[test]
    fn remove_reports_non_busy_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let v2 = V2::new(tmp.path().to_path_buf());
        v2.create("c").unwrap();
        fs::write(tmp.path().join("c/cgroup.procs"), "77\n").unwrap();
        let err = v2.remove("c").unwrap_err(); // ENOTEMPTY in a fixture
        match &err {
            CgroupError::Remove { pids, .. } => assert_eq!(pids, &vec![77]),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("[77]"), "{err}");
    }

    #[test]
    fn stats_from_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("c");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("cpu.stat"), "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n").unwrap();
        fs::write(d.join("memory.current"), "2097152\n").unwrap();
        fs::write(
            d.join("memory.stat"),
            "anon 1048576\nfile 1048576\ninactive_file 524288\n",
        )
        .unwrap();
        fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n").unwrap();
        fs::write(d.join("pids.current"), "2\n").unwrap();
        let v2 = V2::new(tmp.path().to_path_buf());
        assert_eq!(
            v2.stats("c").unwrap(),
            CgroupStats {
                cpu_usage_nanos: 1_234_000,
                memory_usage_bytes: 2_097_152,
                memory_working_set_bytes: 2_097_152 - 524_288,
                memory_rss_bytes: 1_048_576,
                oom_kills: 1,
                pids_current: 2,
            }
        );
        assert_eq!(super::super::oom_kills(&v2.dirs("c")).unwrap(), 1);
        assert!(v2.stats("absent").is_err());
    }
}
