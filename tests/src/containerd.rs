//! A private containerd (Debian's 1.6, CRI plugin) to measure beside minilet: its own root,
//! state, runc root and socket under a test directory, the smallest CNI it accepts (a bridge
//! with a static address), run in a network namespace of its own (`unshare --net`) so neither
//! it nor its pods touch the host network, and pod cgroups under the test's cgroup parent. Dropping it removes everything it made.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::oci::{LayerTar, Layout};
use crate::{Env, bin_dir, workspace};

/// What the busybox archive and the pause image are called inside containerd.
pub const BUSYBOX: &str = "localhost/busybox:latest";
pub const PAUSE: &str = "localhost/minilet-pause:latest";

/// containerd shims keep their sockets here whatever the config says (a hash of our
/// socket path names each one); removed afterwards only if it did not exist before.
const SHIM_SOCKET_ROOT: &str = "/run/containerd";

/// The pods' bridge, inside containerd's network namespace.
const BRIDGE: &str = "bench0";

pub struct Containerd {
    /// Its CRI socket.
    pub socket: PathBuf,
    /// Relative `cgroup_parent` for sandboxes: runc resolves it under its own cgroup (ours).
    pub cgroup_parent: String,
    dir: PathBuf,
    child: Option<Child>,
    made_shim_root: bool,
}

/// Why containerd cannot be measured here, in a sentence for the benchmark's output.
pub type Unavailable = String;

fn on_path(cmd: &str) -> bool {
    crate::which(cmd).is_some()
}

fn run(cmd: &mut Command) -> Result<String, Unavailable> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Containerd {
    /// Start containerd in `env.dir/containerd` with busybox and a pause image imported.
    pub fn start(env: &Env) -> Result<Containerd, Unavailable> {
        for cmd in ["containerd", "ctr", "runc", "containerd-shim-runc-v2", "unshare"] {
            if !on_path(cmd) {
                return Err(format!(
                    "`{cmd}` not found: apt-get install containerd (Debian's 1.6 brings runc and the shim)"
                ));
            }
        }
        let cni_bin = Path::new("/usr/lib/cni");
        if !["loopback", "bridge", "static"]
            .iter()
            .all(|p| cni_bin.join(p).is_file())
        {
            return Err("CNI plugins not found in /usr/lib/cni: apt-get install containernetworking-plugins".into());
        }
        let dir = env.dir.join("containerd");
        let cni_conf = dir.join("cni");
        std::fs::create_dir_all(&cni_conf).map_err(|e| format!("create {}: {e}", cni_conf.display()))?;
        // containerd 1.6 refuses a pod network whose result has no address on eth0 (a
        // loopback-only config fails RunPodSandbox with "failed to find network info"): the
        // least that satisfies it is a bridge plugin whose bridge lives only in containerd's
        // own network namespace (no gateway, no masquerade), with a static address (no IPAM
        // state; one pod at a time). The name is unique per run: libcni keys its cache by it.
        let net = format!("minilet-bench-{}", &env.cgroup_parent);
        std::fs::write(
            cni_conf.join("10-bench.conflist"),
            format!(
                r#"{{"cniVersion": "0.4.0", "name": "{net}", "plugins": [{{"type": "bridge", "bridge": "{BRIDGE}", "ipam": {{"type": "static", "addresses": [{{"address": "10.254.0.2/24"}}]}}}}]}}"#
            ),
        )
        .map_err(|e| format!("write CNI config: {e}"))?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir, &socket, cni_bin, &cni_conf))
            .map_err(|e| format!("write {}: {e}", config.display()))?;
        let log = std::fs::File::create(dir.join("containerd.log")).map_err(|e| format!("containerd log: {e}"))?;
        let made_shim_root = !Path::new(SHIM_SOCKET_ROOT).exists();
        // `unshare` execs containerd in place: the PID we get is containerd's.
        let child = Command::new("unshare")
            .args(["--net", "--", "containerd", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn containerd: {e}"))?;
        let mut me = Containerd {
            socket,
            cgroup_parent: env.cgroup_parent.clone(),
            dir,
            child: Some(child),
            made_shim_root,
        };
        me.wait_ready()?;
        me.import(&workspace().join("hack/.images/busybox.tar"), BUSYBOX)?;
        let pause = me.pause_archive()?;
        me.import(&pause, PAUSE)?;
        Ok(me)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.socket).args(["--namespace", "k8s.io"]);
        c
    }

    fn wait_ready(&mut self) -> Result<(), Unavailable> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("containerd exited ({status}): {}", self.log_tail()));
            }
            if self.socket.exists() && run(self.ctr().arg("version")).is_ok() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("containerd not ready after 30s: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Import an OCI archive and make sure it answers to `name` (the name `ctr import`
    /// gives depends on the archive's annotations).
    fn import(&self, archive: &Path, name: &str) -> Result<(), Unavailable> {
        if !archive.is_file() {
            return Err(format!("{} missing: run hack/build-images", archive.display()));
        }
        let before = run(self.ctr().args(["images", "ls", "-q"]))?;
        run(self.ctr().args(["images", "import"]).arg(archive))?;
        let after = run(self.ctr().args(["images", "ls", "-q"]))?;
        if after.lines().any(|l| l == name) {
            return Ok(());
        }
        let new: Vec<&str> = after.lines().filter(|l| !before.lines().any(|b| b == *l)).collect();
        match new.as_slice() {
            [got] => run(self.ctr().args(["images", "tag", got, name])).map(drop),
            _ => Err(format!("importing {} gave {new:?}, not {name}", archive.display())),
        }
    }

    /// An image holding only minilet's own pause binary, so both runtimes' sandboxes run the
    /// same PID 1.
    fn pause_archive(&self) -> Result<PathBuf, Unavailable> {
        let binary = bin_dir().join("minilet-pause");
        let bytes = std::fs::read(&binary).map_err(|e| format!("read {}: {e}", binary.display()))?;
        let layout_dir = self.dir.join("pause-layout");
        let mut layout = Layout::from(&workspace().join("hack/.images/busybox"), &layout_dir);
        let layer = LayerTar::new().file_mode("pause", &bytes, 0o755).finish();
        let desc = layout.image_running(vec![layer], crate::oci::host_arch(), &["/pause"]);
        layout.tag(&desc, PAUSE);
        let archive = self.dir.join("pause.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&layout_dir)
            .arg("-cf")
            .arg(&archive)
            .args(["oci-layout", "index.json", "blobs"]))?;
        Ok(archive)
    }

    /// Processes whose command line names our socket: containerd's shims (they daemonize,
    /// so they are not our children).
    fn shims(&self) -> Vec<i32> {
        let needle = self.socket.display().to_string();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(needle.as_str()))
                    .unwrap_or(false)
            })
            .collect()
    }
}

/// Why containerd's runc is run with `restrict_oom_score_adj`, for the benchmark's output.
pub const OOM_SCORE_NOTE: &str = "restrict_oom_score_adj = true: its CRI plugin gives sandboxes \
oom_score_adj -998, which needs CAP_SYS_RESOURCE; without it (as on this VM) runc's init dies \
(\"can't get final child's PID from pipe: EOF\")";

/// The OCI runtime containerd runs pods with (its shim's default, `runc`) and its version.
pub fn oci_runtime() -> String {
    let version = Command::new("runc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("runc version ").to_owned())
        })
        .unwrap_or_else(|| "version unknown".into());
    format!("runc {version}")
}

fn config_toml(dir: &Path, socket: &Path, cni_bin: &Path, cni_conf: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
# Plugins that would write under /opt or need other filesystems.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "warn"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # Sandboxes get oom_score_adj -998, which needs CAP_SYS_RESOURCE: bounded to containerd's
  # own, runc also starts pods where the host withholds that capability.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
"#,
        socket = socket.display(),
        bin = cni_bin.display(),
        conf = cni_conf.display(),
    )
}

fn kill_and_reap(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let start = Instant::now();
    while pids.iter().any(|&p| crate::alive(p)) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // containerd first (SIGTERM, then SIGKILL), so nothing restarts what we remove next.
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Shims of pods a failed run left, then whatever still runs in its pod cgroups.
        kill_and_reap(&self.shims());
        let parents = cgroup_parent_dirs(&self.cgroup_parent);
        for parent in &parents {
            kill_and_reap(&cgroup_pids(parent));
        }
        // runc makes the parent in every hierarchy it knows (more than the Env cleans up).
        for parent in &parents {
            remove_cgroup_tree(parent);
        }
        for m in mounts_under(&self.dir) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("containerd cleanup: umount {}: {e}", m.display());
            }
        }
        if self.made_shim_root {
            // Only empty directories go: rmdir refuses anything else.
            let _ = std::fs::remove_dir(Path::new(SHIM_SOCKET_ROOT).join("s"));
            let _ = std::fs::remove_dir(SHIM_SOCKET_ROOT);
        }
        // The directory itself goes with the Env.
    }
}

/// PIDs in the cgroup tree at `dir` (cgroup.procs of every group in it).
fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(cgroup_pids(&e.path()));
            }
        }
    }
    out
}

/// `rel` under this process's own cgroup in every mounted hierarchy (v1 and v2) where it exists.
fn cgroup_parent_dirs(rel: &str) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let fstype = fields.get(dash + 1).copied().unwrap_or("");
        let opts: Vec<&str> = fields.get(dash + 3).copied().unwrap_or("").split(',').collect();
        let (Some(root), Some(mount)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        // /proc/self/cgroup: "id:controllers:path"; v2 has no controllers.
        let path = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = match fstype {
                "cgroup2" => ctrls.is_empty(),
                "cgroup" => !ctrls.is_empty() && ctrls.split(',').all(|c| opts.contains(&c)),
                _ => false,
            };
            matches.then_some(path)
        });
        let Some(path) = path else { continue };
        let inside = Path::new(path).strip_prefix(root).unwrap_or(Path::new(path));
        let dir = Path::new(mount)
            .join(inside.strip_prefix("/").unwrap_or(inside))
            .join(rel);
        if dir.is_dir() && !out.contains(&dir) {
            out.push(dir);
        }
    }
    out
}

/// Remove a cgroup tree bottom-up (rmdir only: cgroupfs refuses anything with tasks).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("containerd cleanup: rmdir {}: {e}", dir.display());
    }
}
