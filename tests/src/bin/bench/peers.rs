//! The peers (bare `unshare`, `crun run`, `podman kube play`), run by this same binary as
//! `bench __peers ...` under `unshare --mount --propagation private`: Debian's crun 1.8
//! refuses the hybrid cgroup layout (its `unified` mount lists hugetlb), so in that private
//! mount namespace `unified` is replaced by an empty tmpfs (anything they write there dies
//! with the namespace). The report goes back to the parent as JSON on stdout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bare::{Bare, which};
use crate::crun::Crun;
use crate::podman::Podman;
use crate::series::{self, Runtime, Series};

/// What the peers measured, by (runtime, mode); notes say what could not be measured.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub series: Vec<(String, String, Series)>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub dir: PathBuf,
    pub tag: String,
    pub image: PathBuf,
    pub archive: PathBuf,
    pub n: usize,
    pub idle_n: usize,
    pub gap: Duration,
    pub warmup: usize,
    /// Run the start series (else only the warm-up and the memory pods).
    pub start: bool,
    /// Pods kept running at once for the memory sample (0: none).
    pub hold: usize,
}

/// `bench __cleanup <tag>`, from hack/bench's EXIT trap under `unshare --mount`: whatever a
/// failed run left (podman's pods and containers in its store, crun's containers, the
/// benchmark's cgroups and their members).
pub fn cleanup(tag: &str) -> Result<()> {
    private_cgroup_view()?;
    let dir = run_dir(tag);
    if let Some(p) = Podman::existing(&dir) {
        p.remove_all();
    }
    crate::crun::delete_all(&dir.join("crun-root"));
    remove_cgroups(tag, false);
    Ok(())
}

/// The temp dir of run `tag`: the peers' state and storage.
pub fn run_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("minilet-bench-{tag}"))
}

/// The cgroup (relative to each hierarchy's root) the peers' containers go under.
pub fn cgroup_parent(tag: &str) -> String {
    format!("minilet-bench-{tag}")
}

/// Entry point of `bench __peers <plan as JSON>`.
pub fn child(plan_json: &str) -> Result<()> {
    let plan: Plan = serde_json::from_str(plan_json).context("peer plan")?;
    private_cgroup_view()?;
    let libpod_before = cgroup_roots().iter().any(|r| r.join("libpod_parent").exists());
    let mut report = Report::default();
    let mut next = 0usize;
    match Bare::new() {
        Ok(mut b) => measure(&mut report, "bare unshare", &mut b, &plan, &mut next, false),
        Err(e) => report.notes.push(format!("bare unshare: NOT MEASURED: {e:#}")),
    }
    if which("crun").is_none() {
        report.notes.push("crun: NOT MEASURED: not installed".into());
    } else {
        match Crun::new(&plan.dir, &plan.image, &cgroup_parent(&plan.tag)) {
            Ok(mut c) => {
                measure(&mut report, "crun run", &mut c, &plan, &mut next, false);
                c.delete_all();
            }
            Err(e) => report.notes.push(format!("crun: NOT MEASURED: {e:#}")),
        }
    }
    if which("podman").is_none() {
        report.notes.push("podman: NOT MEASURED: not installed".into());
    } else {
        match Podman::new(&plan.dir, &plan.archive) {
            Ok(mut p) => {
                measure(&mut report, "podman kube play", &mut p, &plan, &mut next, true);
                p.remove_all();
            }
            Err(e) => report.notes.push(format!("podman: NOT MEASURED: {e:#}")),
        }
    }
    remove_cgroups(&plan.tag, !libpod_before);
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Untimed warm-up pods (podman's first `kube play` builds its infra image), then the
/// back-to-back and the after-idle series, then (`helpers`: the runtime leaves processes
/// beside each pod) the memory sample; pods are numbered on from `next` (unique names).
fn measure(report: &mut Report, name: &str, rt: &mut dyn DynRuntime, plan: &Plan, next: &mut usize, helpers: bool) {
    let mut go = |n: usize, gap: Duration| {
        let s = rt.series(&plan.dir, *next, n, gap);
        *next += n;
        s
    };
    if let Err(e) = go(plan.warmup.max(1), Duration::ZERO) {
        report
            .notes
            .push(format!("{name}: NOT MEASURED (warm-up failed): {e:#}"));
        return;
    }
    let series = if plan.start {
        vec![
            ("back-to-back", plan.n, Duration::ZERO),
            ("after idle", plan.idle_n, plan.gap),
        ]
    } else {
        Vec::new()
    };
    for (mode, n, gap) in series {
        match go(n, gap) {
            Ok(s) => report.series.push((name.to_string(), mode.to_string(), s)),
            Err(e) => {
                report.notes.push(format!("{name} {mode}: NOT MEASURED: {e:#}"));
                return;
            }
        }
    }
    if helpers && plan.hold > 0 {
        match rt.hold(&plan.dir, *next, plan.hold) {
            Ok(s) => report.series.push((name.to_string(), "memory".to_string(), s)),
            Err(e) => report.notes.push(format!("{name} memory: NOT MEASURED: {e:#}")),
        }
        *next += plan.hold;
    }
}

/// Object-safe wrapper so the three runtimes share one loop.
pub trait DynRuntime {
    fn series(&mut self, dir: &Path, first: usize, n: usize, gap: Duration) -> Result<Series>;
    fn hold(&mut self, dir: &Path, first: usize, n: usize) -> Result<Series>;
}

impl<R: Runtime> DynRuntime for R {
    fn series(&mut self, dir: &Path, first: usize, n: usize, gap: Duration) -> Result<Series> {
        series::run(self, dir, first, n, gap)
    }
    fn hold(&mut self, dir: &Path, first: usize, n: usize) -> Result<Series> {
        series::hold(self, dir, first, n)
    }
}

/// In this (private) mount namespace, hide the cgroup v2 `unified` mount of a hybrid layout
/// under an empty tmpfs. Refuses to run in the host's mount namespace.
fn private_cgroup_view() -> Result<()> {
    let own = std::fs::read_link("/proc/self/ns/mnt")?;
    let parent = std::fs::read_link(format!("/proc/{}/ns/mnt", nix::unistd::getppid()))?;
    if own == parent {
        bail!("the peers must run in a mount namespace of their own (unshare --mount)");
    }
    let unified = Path::new("/sys/fs/cgroup/unified");
    let is_cgroup2 = nix::sys::statfs::statfs(unified)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    if is_cgroup2 {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        umount2(unified, MntFlags::MNT_DETACH).context("unmount cgroup/unified (private namespace)")?;
        mount(Some("tmpfs"), unified, Some("tmpfs"), MsFlags::empty(), Some("size=1m"))
            .context("mount a private tmpfs on cgroup/unified")?;
    }
    Ok(())
}

/// The root directory of every mounted cgroup hierarchy (v1 controllers, or the v2 root).
pub fn cgroup_roots() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let root = pre.split_whitespace().nth(3)?;
            let point = pre.split_whitespace().nth(4)?;
            ((fstype == "cgroup" || fstype == "cgroup2") && root == "/").then(|| PathBuf::from(point))
        })
        .collect()
}

/// Kill what is left in the benchmark's peer cgroups (and podman's `libpod_parent` when the
/// benchmark made it), then remove those cgroups, deepest first.
pub fn remove_cgroups(tag: &str, libpod_is_ours: bool) {
    let mut names = vec![cgroup_parent(tag)];
    if libpod_is_ours {
        names.push("libpod_parent".into());
    }
    for root in cgroup_roots() {
        for name in &names {
            let top = root.join(name);
            if top.is_dir() {
                kill_members(&top);
                rmdir_tree(&top);
            }
        }
    }
}

fn kill_members(dir: &Path) {
    for p in std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
    {
        if let Ok(pid) = p.parse::<i32>() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            kill_members(&e.path());
        }
    }
}

fn rmdir_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            rmdir_tree(&e.path());
        }
    }
    // A killed member may take a moment to leave: retry briefly.
    for _ in 0..200 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("bench: could not remove cgroup {}", dir.display());
}
