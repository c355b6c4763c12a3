//! cgroup v1 backend: one directory tree per managed hierarchy (cpu, cpuacct, memory, pids,
//! devices; co-mounted hierarchies such as `cpu,cpuacct` count once).

use std::collections::BTreeSet;
use std::path::PathBuf;

use tracing::{debug, warn};

use super::{
    CgroupError, CgroupStats, CgroupVersion, Cgroups, DevicePolicy, Resources, cpu, devices, kill_tree, memory, pids,
    rel_path, remove_tree, require_dir,
};

/// One v1 hierarchy and the agent's parent cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Controllers bound to this hierarchy, e.g. `["cpu", "cpuacct"]`.
    pub controllers: Vec<String>,
    /// Absolute directory of the cgroup parent in this hierarchy.
    pub parent_dir: PathBuf,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The v1 backend over a set of hierarchies (any directories, so tests can use fixtures).
#[derive(Debug, Clone)]
pub struct V1 {
    hierarchies: Vec<Hierarchy>,
}

impl V1 {
    pub fn new(hierarchies: Vec<Hierarchy>) -> Self {
        V1 { hierarchies }
    }

    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// `(hierarchy, dir of path in it)` for every hierarchy.
    fn resolve(&self, path: &str) -> Result<Vec<(&Hierarchy, PathBuf)>, CgroupError> {
        let rel = rel_path(path)?;
        Ok(self.hierarchies.iter().map(|h| (h, h.parent_dir.join(&rel))).collect())
    }
}

impl Cgroups for V1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn dirs(&self, path: &str) -> Vec<PathBuf> {
        match self.resolve(path) {
            Ok(v) => v.into_iter().map(|(_, d)| d).collect(),
            Err(e) => {
                warn!(error = %e, "no cgroup directories");
                Vec::new()
            }
        }
    }

    fn hierarchy_names(&self) -> Vec<String> {
        self.hierarchies.iter().map(|h| h.controllers.join(",")).collect()
    }

    fn create(&self, path: &str) -> Result<(), CgroupError> {
        for (_, dir) in self.resolve(path)? {
            std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Create {
                path: dir.clone(),
                source,
            })?;
        }
        debug!(path, "cgroup created");
        Ok(())
    }

    fn apply(&self, path: &str, res: &Resources) -> Result<(), CgroupError> {
        let mut seen_cpu = false;
        let mut seen_memory = false;
        let mut seen_pids = false;
        for (h, dir) in self.resolve(path)? {
            if h.has("cpu") {
                cpu::apply_v1(&dir, res)?;
                seen_cpu = true;
            }
            if h.has("memory") {
                memory::apply_v1(&dir, res)?;
                seen_memory = true;
            }
            if h.has("pids") {
                pids::apply(&dir, res)?;
                seen_pids = true;
            }
        }
        let unenforced = [
            (
                !seen_cpu && (res.cpu_shares.is_some() || res.cpu_quota.is_some()),
                "cpu",
            ),
            (!seen_memory && res.memory_limit.is_some(), "memory"),
            (!seen_pids && res.pids_limit.is_some(), "pids"),
        ];
        for (missing, controller) in unenforced {
            if missing {
                warn!(path, controller, "controller not mounted; limit not enforced");
            }
        }
        Ok(())
    }

    fn set_oom_group(&self, _path: &str) -> Result<(), CgroupError> {
        Ok(()) // v1 has no group OOM kill
    }

    fn set_devices(&self, path: &str, policy: DevicePolicy) -> Result<(), CgroupError> {
        let mut seen = false;
        for (h, dir) in self.resolve(path)? {
            if h.has("devices") {
                devices::apply_v1(&dir, policy)?;
                seen = true;
            }
        }
        if !seen {
            warn!(
                path,
                controller = "devices",
                "controller not mounted; device access not restricted"
            );
        }
        Ok(())
    }

    fn add_process(&self, path: &str, pid: u32) -> Result<(), CgroupError> {
        let dirs: Vec<PathBuf> = self.resolve(path)?.into_iter().map(|(_, d)| d).collect();
        super::join(&dirs, pid)
    }

    fn procs(&self, path: &str) -> Result<Vec<u32>, CgroupError> {
        let mut all = BTreeSet::new();
        for (_, dir) in self.resolve(path)? {
            super::collect_procs(&dir, &mut all)?;
        }
        Ok(all.into_iter().collect())
    }

    fn kill(&self, path: &str) -> Result<(), CgroupError> {
        let dirs: Vec<PathBuf> = self.resolve(path)?.into_iter().map(|(_, d)| d).collect();
        kill_tree(&dirs)
    }

    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        let mut first_err = None;
        for (_, dir) in self.resolve(path)? {
            // Keep going in the other hierarchies so one busy cgroup does not leak the rest.
            if let Err(e) = remove_tree(&dir) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => {
                debug!(path, "cgroup removed");
                Ok(())
            }
        }
    }

    fn stats(&self, path: &str) -> Result<CgroupStats, CgroupError> {
        let mut stats = CgroupStats::default();
        for (h, dir) in self.resolve(path)? {
            if !["cpuacct", "memory", "pids"].iter().any(|c| h.has(c)) {
                // No figures here (devices); a container from an agent that did not manage
                // this hierarchy has no directory in it.
                continue;
            }
            require_dir(&dir)?;
            if h.has("cpuacct") {
                stats.cpu_usage_nanos = cpu::usage_v1(&dir)?;
            }
            if h.has("memory") {
                memory::stats_v1(&dir, &mut stats)?;
            }
            if h.has("pids") {
                stats.pids_current = pids::current(&dir)?;
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        v1: V1,
    }

    /// A fake v1 cgroupfs: cpu,cpuacct co-mounted, memory under a nested own cgroup, pids.
    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let hierarchies = vec![
            Hierarchy {
                controllers: vec!["cpu".into(), "cpuacct".into()],
                parent_dir: root.join("cpu,cpuacct/minilet"),
            },
            Hierarchy {
                controllers: vec!["memory".into()],
                parent_dir: root.join("memory/process_api/abc/minilet"),
            },
            Hierarchy {
                controllers: vec!["pids".into()],
                parent_dir: root.join("pids/minilet"),
            },
        ];
        Fixture {
            _tmp: tmp,
            root,
            v1: V1::new(hierarchies),
        }
    }

    /// Pre-create the kernel's files in `path` of every hierarchy.
    fn populate(f: &Fixture, path: &str) {
        for (h, dir) in f.v1.resolve(path).unwrap() {
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("cgroup.procs"), "").unwrap();
            let files: &[&str] = if h.has("cpu") {
                &["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpuacct.usage"]
            } else if h.has("memory") {
                &[
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                    "memory.stat",
                    "memory.oom_control",
                ]
            } else {
                &["pids.max", "pids.current"]
            };
            for file in files {
                fs::write(dir.join(file), "0\n").unwrap();
            }
        }
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap()
    }

    #[test]
    fn dirs_per_hierarchy() {
        let f = fixture();
        assert_eq!(
            f.v1.dirs("kubepods/pod1/c1"),
            vec![
                f.root.join("cpu,cpuacct/minilet/kubepods/pod1/c1"),
                f.root.join("memory/process_api/abc/minilet/kubepods/pod1/c1"),
                f.root.join("pids/minilet/kubepods/pod1/c1"),
            ]
        );
        assert_eq!(f.v1.dirs("/kubepods/")[0], f.root.join("cpu,cpuacct/minilet/kubepods"));
        assert!(f.v1.dirs("../escape").is_empty());
        assert!(matches!(f.v1.create("a/../../b"), Err(CgroupError::InvalidPath { .. })));
        assert!(matches!(f.v1.remove(".."), Err(CgroupError::InvalidPath { .. })));
    }

    #[test]
    fn create_apply_writes_exact_values() {
        let f = fixture();
        f.v1.create("pod1/c1").unwrap();
        for d in f.v1.dirs("pod1/c1") {
            assert!(d.is_dir(), "{}", d.display());
        }
        populate(&f, "pod1/c1");
        let res = Resources {
            cpu_shares: Some(256),
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            memory_limit: Some(128 << 20),
            pids_limit: Some(64),
        };
        f.v1.apply("pod1/c1", &res).unwrap();
        let cpu = f.root.join("cpu,cpuacct/minilet/pod1/c1");
        let mem = f.root.join("memory/process_api/abc/minilet/pod1/c1");
        let pid = f.root.join("pids/minilet/pod1/c1");
        assert_eq!(read(&cpu.join("cpu.shares")), "256");
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "150000");
        assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&mem.join("memory.limit_in_bytes")), "134217728");
        assert_eq!(read(&pid.join("pids.max")), "64");

        // Unlimited: explicit resets; shares and period are left as they were.
        f.v1.apply("pod1/c1", &Resources::default()).unwrap();
        assert_eq!(read(&cpu.join("cpu.shares")), "256");
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "-1");
        assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&mem.join("memory.limit_in_bytes")), "-1");
        assert_eq!(read(&pid.join("pids.max")), "max");
        f.v1.set_oom_group("pod1/c1").unwrap();
        assert!(!mem.join("memory.oom.group").exists());
    }

    #[test]
    fn apply_to_missing_cgroup_fails_with_path_and_value() {
        let f = fixture();
        let err =
            f.v1.apply(
                "nope",
                &Resources {
                    cpu_shares: Some(2),
                    ..Default::default()
                },
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"2\"") && msg.contains("nope/cpu.shares"), "{msg}");
    }

    #[test]
    fn add_process_procs_and_join() {
        let f = fixture();
        populate(&f, "pod1");
        populate(&f, "pod1/c1");
        populate(&f, "pod1/c2");
        f.v1.add_process("pod1/c1", 4242).unwrap();
        for d in f.v1.dirs("pod1/c1") {
            assert_eq!(read(&d.join("cgroup.procs")), "4242");
        }
        // Different hierarchies may list different (and overlapping) processes.
        fs::write(
            f.root.join("memory/process_api/abc/minilet/pod1/c2/cgroup.procs"),
            "7\n8\n",
        )
        .unwrap();
        fs::write(f.root.join("pids/minilet/pod1/cgroup.procs"), "8\n1\n").unwrap();
        assert_eq!(f.v1.procs("pod1").unwrap(), vec![1, 7, 8, 4242]);
        assert_eq!(f.v1.procs("pod1/c2").unwrap(), vec![7, 8]);
        assert_eq!(f.v1.procs("absent").unwrap(), Vec::<u32>::new());

        super::super::join(&f.v1.dirs("pod1/c2"), 0).unwrap();
        for d in f.v1.dirs("pod1/c2") {
            assert_eq!(read(&d.join("cgroup.procs")), "0");
        }
        let err = super::super::join(&[f.root.join("missing")], 1).unwrap_err();
        assert!(matches!(err, CgroupError::Write { .. }), "{err}");
    }

    #[test]
    fn remove_leaves_first_everywhere_absent_ok() {
        let f = fixture();
        f.v1.create("pod1/c1/x").unwrap();
        f.v1.create("pod1/c2").unwrap();
        f.v1.create("pod2").unwrap();
        f.v1.remove("pod1").unwrap();
        for d in f.v1.dirs("pod1") {
            assert!(!d.exists(), "{}", d.display());
        }
        for d in f.v1.dirs("pod2") {
            assert!(d.is_dir(), "sibling untouched: {}", d.display());
        }
        f.v1.remove("pod1").unwrap(); // absent is fine
        f.v1.remove("").unwrap(); // the parent itself
        for d in f.v1.dirs("") {
            assert!(!d.exists(), "{}", d.display());
        }
        assert!(
            f.root.join("memory/process_api/abc").is_dir(),
            "above the parent: untouched"
        );
    }

    #[test]
    fn kill_of_empty_or_absent_cgroup_is_ok() {
        let f = fixture();
        populate(&f, "pod1");
        f.v1.kill("pod1").unwrap();
        f.v1.kill("absent").unwrap();
    }

    #[test]
    fn stats_from_files() {
        let f = fixture();
        populate(&f, "c");
        let cpu = f.root.join("cpu,cpuacct/minilet/c");
        let mem = f.root.join("memory/process_api/abc/minilet/c");
        let pid = f.root.join("pids/minilet/c");
        fs::write(cpu.join("cpuacct.usage"), "987654321\n").unwrap();
        fs::write(mem.join("memory.usage_in_bytes"), "10485760\n").unwrap();
        fs::write(
            mem.join("memory.stat"),
            "cache 100\nrss 200\ninactive_file 50\ntotal_cache 4096\ntotal_rss 8192\ntotal_inactive_file 1048576\n",
        )
        .unwrap();
        fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        fs::write(pid.join("pids.current"), "3\n").unwrap();
        // A hierarchy without figures (devices) where the cgroup does not exist: no matter.
        let mut with_devices = f.v1.hierarchies().to_vec();
        with_devices.push(Hierarchy {
            controllers: vec!["devices".into()],
            parent_dir: f.root.join("devices/minilet"),
        });
        assert_eq!(V1::new(with_devices).stats("c").unwrap().pids_current, 3);
        let s = f.v1.stats("c").unwrap();
        assert_eq!(
            s,
            CgroupStats {
                cpu_usage_nanos: 987_654_321,
                memory_usage_bytes: 10_485_760,
                memory_working_set_bytes: 10_485_760 - 1_048_576,
                memory_rss_bytes: 8192,
                oom_kills: 1,
                pids_current: 3,
            }
        );
        assert_eq!(super::super::oom_kills(&f.v1.dirs("c")).unwrap(), 1);
        assert_eq!(super::super::oom_kills(&f.v1.dirs("absent")).unwrap(), 0);
        assert!(f.v1.stats("absent").is_err());
    }
}
