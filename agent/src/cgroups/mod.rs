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
//! Files: `detect` (version and layout detection), `tree` (directory and control-file
//! operations both backends share), `error` ([`CgroupError`]), one per controller, the
//! two backends, `pressure` (v2 PSI files) and `systemd` (whether systemd delegated the
//! agent's subtree).
//!
//! All operations are blocking filesystem calls (and [`Cgroups::remove`] may sleep briefly
//! while a killed process finishes leaving); async callers should use `spawn_blocking`.

mod cpu;
mod detect;
pub mod devices;
mod error;
mod memory;
mod pids;
pub mod pressure;
pub mod systemd;
mod tree;
pub mod v1;
pub mod v2;

use std::fmt;
use std::path::PathBuf;

pub use cpu::shares_to_weight;
pub use detect::detect;
pub use devices::DevicePolicy;
pub use error::CgroupError;
pub(crate) use tree::*;
pub use tree::{join, join_single_threaded, oom_kills};

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

/// One interface over both cgroup versions. Paths are relative to the cgroup parent.
pub trait Cgroups: Send + Sync + fmt::Debug {
    fn version(&self) -> CgroupVersion;
    /// Absolute directories of `path` (relative to the parent, e.g.
    /// "kubepods/burstable/pod123/abc") in every managed hierarchy. An invalid path (one with
    /// `..`) yields no directories.
    fn dirs(&self, path: &str) -> Vec<PathBuf>;
    /// v1: each hierarchy's name as mounted (its controllers joined by commas), in the order
    /// of [`Cgroups::dirs`]. v2: none (one unnamed hierarchy).
    fn hierarchy_names(&self) -> Vec<String>;
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
    /// On EBUSY it retries for about half a second, and for up to 10 s while every process
    /// still inside is dying (a just-killed process may not have run yet), then fails with
    /// the PIDs still inside.
    fn remove(&self, path: &str) -> Result<(), CgroupError>;
    fn stats(&self, path: &str) -> Result<CgroupStats, CgroupError>;
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use super::detect::*;
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
            crate::test_skip::skip("needs root");
            return;
        }
        match nix::sys::statfs::statfs(CGROUP_ROOT) {
            Ok(st) if st.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC => {}
            _ => {
                crate::test_skip::not_for_this_machine(&format!(
                    "{CGROUP_ROOT} is not a cgroup v1 layout (the v1 backend runs on v1 hosts)"
                ));
                return;
            }
        }
        let name = unique_name();
        let cg = detect(&relative(&name)).unwrap();
        if cg.version() != CgroupVersion::V1 {
            crate::test_skip::not_for_this_machine(&format!("detected cgroup {}, not v1", cg.version()));
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
        // Child 3: single-threaded, moved through `tasks`; the kernel lists the whole process.
        let c3 = spawn_sleep();
        let pid3 = c3.id();
        g.children.push(c3);
        join_single_threaded(&cg.dirs("pod/c2"), pid3).unwrap();

        let want1 = format!("/{name}/pod/c1");
        for controller in ["cpu", "cpuacct", "memory", "pids"] {
            let p = proc_cgroup_path(pid1, controller);
            assert!(p.ends_with(&want1), "{controller}: {p}");
            assert!(proc_cgroup_path(pid2, controller).ends_with(&format!("/{name}/pod/c2")));
            assert!(proc_cgroup_path(pid3, controller).ends_with(&format!("/{name}/pod/c2")));
        }
        let mut in_c2 = vec![pid2, pid3];
        in_c2.sort();
        assert_eq!(cg.procs("pod/c2").unwrap(), in_c2);
        let mut expected = vec![pid1, pid2, pid3];
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
        assert_eq!(cg.stats("pod").unwrap().pids_current, 3);
        assert_eq!(oom_kills(&cg.dirs("pod/c1")).unwrap(), 0);

        // Busy: remove fails (after its retries) and names the process inside.
        match cg.remove("pod/c2") {
            Err(CgroupError::Remove { pids, .. }) => assert_eq!(pids, in_c2),
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
            crate::test_skip::skip("needs root");
            return;
        }
        let (Ok(mi), Ok(pc)) = (
            std::fs::read_to_string("/proc/self/mountinfo"),
            std::fs::read_to_string("/proc/self/cgroup"),
        ) else {
            crate::test_skip::skip("no /proc");
            return;
        };
        let mounts = parse_mountinfo(&mi);
        if !mounts.iter().any(|m| m.version == CgroupVersion::V2) {
            crate::test_skip::skip("no cgroup2 mount");
            return;
        }
        let name = unique_name();
        let Ok(Layout::V2(dir)) = build_layout(Some(true), &mounts, &parse_proc_cgroup(&pc), &relative(&name)) else {
            crate::test_skip::skip("own v2 cgroup not visible");
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
                crate::test_skip::skip(&e.to_string());
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
        // No `tasks` in v2: the single-threaded join writes `cgroup.procs`.
        cg.create("pod/c2").unwrap();
        join_single_threaded(&cg.dirs("pod/c2"), pid).unwrap();
        assert!(proc_cgroup_path(pid, "").ends_with(&format!("/{name}/pod/c2")));
        assert_eq!(cg.procs("pod/c2").unwrap(), vec![pid]);
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
