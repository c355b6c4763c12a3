//! End-to-end test support: a real `minilet agent` (as root) in its own directories and its
//! own cgroup parent, and helpers that read the kernel's view of what it made
//! (`/proc/<pid>/ns/*`, `/proc/<pid>/cgroup`, cgroup files, mountinfo).
//!
//! The state directory is read only to learn *which* processes and IDs to look at; every
//! assertion about what they are is made against the kernel.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod bench;
pub mod containerd;
pub mod grpc;
pub mod netns;
pub mod oci;
pub mod pty;
pub mod registry;

/// The workspace root (images built by hack/build-images live under it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Directory of the built binaries: next to this executable (a bench binary), or one level
/// up from a test binary in target/<profile>/deps.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().map(Path::to_path_buf).expect("target dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// The `minilet` binary under test; panics with instructions when it is missing or older
/// than the agent's sources (cargo builds test targets, not the binaries they run).
pub fn minilet() -> PathBuf {
    let p = bin_dir().join("minilet");
    assert!(
        p.is_file() && bin_dir().join("minilet-pause").is_file(),
        "{} or minilet-pause missing: run hack/build (hack/test does)",
        p.display()
    );
    let built = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
    let newest = newest_mtime(&workspace().join("agent/src"));
    if let (Some(built), Some(newest)) = (built, newest) {
        assert!(
            built >= newest,
            "{} is older than agent/src: run hack/build (hack/test does)",
            p.display()
        );
    }
    p
}

/// The newest modification time of the files under `dir`.
pub fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let t = if e.path().is_dir() {
            newest_mtime(&e.path())
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// A test that cannot run here says why, and is counted as skipped (see
/// [`minilet::test_skip`]). Under CI (`CI=true`), where everything it needs is installed by
/// `hack/setup`, that is a failure, never a silent pass.
pub fn skip(reason: &str) {
    minilet::test_skip::skip(reason);
}

/// The program `name` as PATH finds it.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// The children of process `agent` running `minilet` with arguments that start with `args`
/// (its helpers, by subcommand), as /proc shows them.
pub fn helper_children(agent: i32, args: &[&str]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = agent.to_string();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut argv = cmdline.split(|&b| b == 0);
            status
                .lines()
                .any(|l| l.strip_prefix("PPid:").map(str::trim) == Some(parent.as_str()))
                && argv.next() == Some(b"minilet")
                && args.iter().all(|a| argv.next() == Some(a.as_bytes()))
        })
        .collect()
}

/// End-to-end tests need root. Without it they say so and return; under CI (`CI=true`),
/// where they must run, a missing capability is a failure rather than a silent pass.
pub fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        skip("end-to-end tests need root");
    }
    root
}

/// Poll `f` every 20 ms until it yields a value; panic naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_showing(what, timeout, f, String::new)
}

/// [`wait_for`], and on a timeout what `show` says of the state it was waiting on.
pub fn wait_for_showing<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    show: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}{}",
            Some(show())
                .filter(|s| !s.is_empty())
                .map(|s| format!("; {s}"))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The node name of every agent the harness starts (`--node-name`), unless a test passes its
/// own.
pub const NODE: &str = "e2e-node";

/// A pod `name` with one busybox container, `main`, that sleeps for an hour.
pub fn sleeper_pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
"#
    )
}

/// The name of the static pod that manifest name `name` gives on the harness's agents:
/// `<name>-<node name>`, as the kubelet names static pods. Every harness function and CLI
/// command that takes a pod name takes this one, not the manifest's `metadata.name`.
pub fn static_pod_name(name: &str) -> String {
    static_pod_name_on(name, NODE)
}

/// The same on an agent started with `--node-name node`.
pub fn static_pod_name_on(name: &str, node: &str) -> String {
    format!("{name}-{node}")
}

/// One test's private world: state root, manifests, logs, cgroup parent.
pub struct Env {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub manifests: PathBuf,
    pub logs: PathBuf,
    /// Relative cgroup parent (under the test process's own cgroup in every hierarchy).
    pub cgroup_parent: String,
    /// The agent's gRPC socket.
    pub socket: PathBuf,
    /// The network namespace the agent runs in, when the test gave it one (see
    /// [`Agent::start_in`]): the safety-net reset runs there too, so that its CNI DELs
    /// never touch the machine's own network.
    pub netns: Option<PathBuf>,
}

impl Env {
    /// `agent` and the flags that put an agent's whole world in this test's directories
    /// (manifests, state root, logs, cgroup parent, socket).
    pub fn agent_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["agent".into()];
        for (flag, value) in [
            ("--manifests", self.manifests.as_os_str()),
            ("--root", self.root.as_os_str()),
            ("--log-dir", self.logs.as_os_str()),
            ("--cgroup-parent", std::ffi::OsStr::new(&self.cgroup_parent)),
            ("--socket", self.socket.as_os_str()),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        args
    }

    pub fn new(name: &str) -> Env {
        let tag = format!("{name}-{:08x}", rand_u32());
        let dir = std::env::temp_dir().join("minilet-e2e").join(&tag);
        let env = Env {
            root: dir.join("root"),
            manifests: dir.join("manifests"),
            logs: dir.join("logs"),
            cgroup_parent: format!("minilet-e2e-{tag}"),
            socket: dir.join("minilet.sock"),
            netns: None,
            dir,
        };
        for d in [&env.root, &env.manifests, &env.logs] {
            std::fs::create_dir_all(d).expect("create test dirs");
        }
        env
    }

    /// Import an image archive built by hack/build-images (e.g. "busybox").
    pub fn import_image(&self, name: &str) {
        self.import(name, None);
    }

    /// Import an image archive built by hack/build-images under another name (e.g. "etcd" as
    /// the upstream name a manifest uses, registry.k8s.io/etcd:3.4.23).
    pub fn import_image_as(&self, name: &str, reference: &str) {
        self.import(name, Some(reference));
    }

    fn import(&self, name: &str, reference: Option<&str>) {
        let archive = workspace().join("hack/.images").join(format!("{name}.tar"));
        assert!(
            archive.is_file(),
            "{} missing: run hack/build-images (hack/test does)",
            archive.display()
        );
        let mut cmd = Command::new(minilet());
        cmd.args(["image", "import"]);
        if let Some(reference) = reference {
            cmd.args(["--name", reference]);
        }
        let out = cmd
            .arg(&archive)
            .arg("--root")
            .arg(&self.root)
            .output()
            .expect("run minilet image import");
        assert!(
            out.status.success(),
            "image import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn write_manifest(&self, file: &str, yaml: &str) {
        std::fs::write(self.manifests.join(file), yaml).expect("write manifest");
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.manifests.join(file)).expect("remove manifest");
    }

    /// What the state directory says about pod `name` (latest attempt of each container).
    /// `name` is the pod's name: for a manifest's pod, [`static_pod_name`] of its name.
    pub fn pod(&self, name: &str) -> Option<PodView> {
        for entry in std::fs::read_dir(self.root.join("pods")).ok()?.flatten() {
            let record: Value = read_json(&entry.path().join("pod.json"))?;
            if record["name"] != name {
                continue;
            }
            // The pause of the sandbox the pod's record names (the runtime's directory).
            let sandbox_dir = record["sandbox_id"]
                .as_str()
                .filter(|id| !id.is_empty())
                .map(|id| self.root.join("sandboxes").join(id));
            let sandbox = sandbox_dir.as_ref().and_then(|d| read_json(&d.join("sandbox.json")));
            let mut containers: BTreeMap<String, ContainerView> = BTreeMap::new();
            let mut attempts: BTreeMap<String, Vec<ContainerView>> = BTreeMap::new();
            // Attempts live in the pod's sandboxes, current and earlier (an older agent kept
            // them in the pod's own directory).
            let sandboxes = record["old_sandboxes"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(Some(&record["sandbox_id"]))
                .filter_map(|id| id.as_str().filter(|id| !id.is_empty()))
                .map(|id| self.root.join("sandboxes").join(id).join("containers"));
            let dirs: Vec<PathBuf> = Some(entry.path().join("containers"))
                .into_iter()
                .chain(sandboxes)
                .collect();
            for c in dirs.iter().flat_map(std::fs::read_dir).flatten().flatten() {
                let Some(rec) = read_json(&c.path().join("container.json")) else {
                    continue;
                };
                let view = ContainerView {
                    id: rec["id"].as_str().unwrap_or_default().to_string(),
                    attempt: rec["attempt"].as_u64().unwrap_or(0) as u32,
                    cgroup: rec["cgroup"].as_str().unwrap_or_default().to_string(),
                    log_path: PathBuf::from(rec["log_path"].as_str().unwrap_or_default()),
                    pid: read_json(&c.path().join("state.json"))
                        .and_then(|s: Value| s["process"]["pid"].as_i64())
                        .map(|p| p as i32),
                    monitor_pid: read_json(&c.path().join("state.json"))
                        .and_then(|s: Value| s["monitor"]["pid"].as_i64())
                        .map(|p| p as i32),
                    started_at: read_json(&c.path().join("state.json")).and_then(|s: Value| s["started_at"].as_i64()),
                    exit: read_json(&c.path().join("exit.json")),
                    dir: c.path(),
                };
                let name = rec["name"].as_str().unwrap_or_default().to_string();
                attempts.entry(name.clone()).or_default().push(view.clone());
                if containers.get(&name).is_none_or(|old| old.attempt < view.attempt) {
                    containers.insert(name, view);
                }
            }
            return Some(PodView {
                uid: record["uid"].as_str().unwrap_or_default().to_string(),
                cgroup: record["cgroup"].as_str().unwrap_or_default().to_string(),
                pause_pid: sandbox
                    .and_then(|s: Value| s["pause"]["pid"].as_i64())
                    .map(|p| p as i32),
                dir: entry.path(),
                sandbox_dir,
                containers,
                attempts: attempts
                    .into_iter()
                    .map(|(k, mut v)| {
                        v.sort_by_key(|c| c.attempt);
                        (k, v)
                    })
                    .collect(),
            });
        }
        None
    }

    /// Wait until pod `name` has a live pause and every listed container has a live process.
    pub fn wait_running(&self, name: &str, containers: &[&str]) -> PodView {
        wait_for(
            &format!("pod {name} running {containers:?}"),
            Duration::from_secs(30),
            || {
                let p = self.pod(name)?;
                alive(p.pause_pid?).then_some(())?;
                for c in containers {
                    let view = p.containers.get(*c)?;
                    (view.exit.is_none() && alive(view.pid?)).then_some(())?;
                }
                Some(p)
            },
        )
    }

    /// The pod's log directory.
    pub fn pod_log_dir(&self, name: &str, uid: &str) -> PathBuf {
        self.logs.join(format!("default_{name}_{uid}"))
    }

    /// Absolute directories of cgroup `rel` (relative to this test's parent) that exist, in
    /// every hierarchy this machine has.
    pub fn cgroup_dirs(&self, rel: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (mount, own) in cgroup_hierarchies() {
            let d = mount
                .join(own.trim_start_matches('/'))
                .join(&self.cgroup_parent)
                .join(rel);
            if d.is_dir() {
                out.push(d);
            }
        }
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Safety net: whatever a failed test left behind, `minilet reset` removes it (pods,
        // cgroups); then the directories go.
        if self.root.join("pods").is_dir()
            && std::fs::read_dir(self.root.join("pods"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        {
            let mut reset = match &self.netns {
                Some(ns) => {
                    let mut c = Command::new("nsenter");
                    c.arg(format!("--net={}", ns.display()))
                        .arg("--")
                        .arg(bin_dir().join("minilet"));
                    c
                }
                None => Command::new(bin_dir().join("minilet")),
            };
            let _ = reset
                .arg("reset")
                .arg("--root")
                .arg(&self.root)
                .arg("--log-dir")
                .arg(&self.logs)
                .arg("--cgroup-parent")
                .arg(&self.cgroup_parent)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for d in self.cgroup_dirs("") {
            remove_cgroup_tree(&d);
        }
        if !std::thread::panicking() && std::env::var_os("MINILET_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("test files kept in {}", self.dir.display());
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A running `minilet agent`.
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    /// Start an agent on `env` (with --cleanup-on-exit, and `--node-name` [`NODE`] unless
    /// `extra` names another) and wait until it is ready. Pods get loopback only (`--network=none`) unless `extra` says otherwise: a pod network
    /// (a bridge, iptables rules) is only ever made inside a namespace of the test's own
    /// ([`Agent::start_in`]).
    pub fn start(env: &Env, extra: &[&str]) -> Agent {
        assert!(
            !extra.iter().any(|a| a.starts_with("--network")) || env.netns.is_some(),
            "a pod network needs a network namespace of the test's own: use Agent::start_in"
        );
        let cmd = match &env.netns {
            Some(ns) => {
                // nsenter execs the agent: the child's PID is the agent's.
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(minilet());
                c
            }
            None => Command::new(minilet()),
        };
        Self::spawn(env, cmd, &Self::network_none_unless_asked(extra))
    }

    /// Tests run without a pod network unless they ask for one (and give it a namespace).
    fn network_none_unless_asked<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = extra.to_vec();
        if !extra.iter().any(|a| a.starts_with("--network")) {
            args.push("--network=none");
        }
        args
    }

    /// Start an agent inside network namespace `netns` (a [`netns::NetNs`]), recorded in
    /// `env` for its clean-up; `extra` usually asks for `--network=cni`.
    pub fn start_in(env: &mut Env, netns: &Path, extra: &[&str]) -> Agent {
        env.netns = Some(netns.to_path_buf());
        Self::start(env, extra)
    }

    fn spawn(env: &Env, mut cmd: Command, extra: &[&str]) -> Agent {
        let n = std::fs::read_dir(&env.dir).map(|d| d.count()).unwrap_or(0);
        let log = env.dir.join(format!("agent-{n}.log"));
        let stderr = std::fs::File::create(&log).expect("agent log");
        let child = cmd
            .args(env.agent_args())
            .arg("--cleanup-on-exit")
            .args(if extra.iter().any(|a| a.starts_with("--node-name")) {
                &[][..]
            } else {
                &["--node-name", NODE][..]
            })
            .args(extra)
            .env(
                "MINILET_LOG",
                std::env::var("MINILET_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn minilet agent");
        let agent = Agent {
            child: Some(child),
            log,
        };
        wait_for("agent ready", Duration::from_secs(20), || {
            agent.log_text().contains("minilet agent ready").then_some(())
        });
        agent
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the agent dies at once, its pods stay.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (with --cleanup-on-exit this removes every pod).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(90) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            // Its log says where it hung (a panic in drop prints no log of its own).
            eprintln!("---- agent log {} ----\n{}", self.log.display(), self.log_text());
            panic!("agent did not exit within 90s of SIGTERM");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- agent log {} ----\n{}", self.log.display(), self.log_text());
        }
        self.stop();
    }
}

/// What the state directory says about one pod.
#[derive(Debug, Clone)]
pub struct PodView {
    pub uid: String,
    pub cgroup: String,
    pub pause_pid: Option<i32>,
    /// The pod's own directory (`pods/<uid>`: record, volumes, termination logs).
    pub dir: PathBuf,
    /// Its current sandbox's directory (`sandboxes/<id>`: the pause, /etc files, hostPorts).
    pub sandbox_dir: Option<PathBuf>,
    /// The latest attempt of each container.
    pub containers: BTreeMap<String, ContainerView>,
    /// Every attempt still on disk (the latest and the one before), oldest first.
    pub attempts: BTreeMap<String, Vec<ContainerView>>,
}

impl PodView {
    pub fn pause(&self) -> i32 {
        self.pause_pid.expect("pause pid")
    }

    pub fn pid(&self, container: &str) -> i32 {
        self.containers
            .get(container)
            .and_then(|c| c.pid)
            .unwrap_or_else(|| panic!("no pid for container {container}"))
    }
}

#[derive(Debug, Clone)]
pub struct ContainerView {
    pub id: String,
    pub attempt: u32,
    pub cgroup: String,
    pub log_path: PathBuf,
    pub pid: Option<i32>,
    pub monitor_pid: Option<i32>,
    /// Unix nanoseconds, as the monitor recorded it.
    pub started_at: Option<i64>,
    pub exit: Option<Value>,
    pub dir: PathBuf,
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u32::from_ne_bytes(b) ^ std::process::id()
}

// ---- the kernel's view ----------------------------------------------------------------------

/// Whether `pid` is a live process (a zombie has exited).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

/// The namespace `kind` (net, ipc, uts, pid, mnt, ...) of `pid`, e.g. `net:[4026532281]`.
pub fn ns(pid: i32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| panic!("read /proc/{pid}/ns/{kind}: {e}"))
}

/// A process's PIDs from the host's PID namespace inward (`NSpid` of `/proc/<pid>/status`):
/// the last is its PID in its own namespace. Empty if the process is gone.
pub fn ns_pids(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|l| l.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// `/proc/<pid>/cgroup` as (controllers, path) pairs.
pub fn proc_cgroups(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// Each cgroup hierarchy of this machine that minilet manages: (mount point, this test
/// process's own path in it). v1: cpu, cpuacct, memory, pids, devices; v2: the unified mount.
pub fn cgroup_hierarchies() -> Vec<(PathBuf, String)> {
    let own = proc_cgroups(std::process::id() as i32);
    managed_hierarchies()
        .into_iter()
        .map(|(mount, ctrls)| {
            let path = own
                .iter()
                .find(|(c, _)| in_hierarchy(c, &ctrls))
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            (mount, path)
        })
        .collect()
}

/// The hierarchies of [`cgroup_hierarchies`] as (mount point, the managed controllers it
/// holds; none for the unified v2 mount).
fn managed_hierarchies() -> Vec<(PathBuf, Vec<String>)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    let pure_v2 = mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup") && l.contains(" - cgroup2 "));
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (fstype, opts) = (
            fields.get(dash + 1).copied().unwrap_or(""),
            fields.get(dash + 3).copied().unwrap_or(""),
        );
        let mount = PathBuf::from(fields.get(4).copied().unwrap_or(""));
        if pure_v2 && fstype == "cgroup2" {
            out.push((mount, Vec::new()));
        } else if !pure_v2 && fstype == "cgroup" {
            let ctrls: Vec<String> = opts
                .split(',')
                .filter(|o| ["cpu", "cpuacct", "memory", "pids", "devices"].contains(o))
                .map(str::to_string)
                .collect();
            if !ctrls.is_empty() {
                out.push((mount, ctrls));
            }
        }
    }
    out
}

/// Whether a `/proc/<pid>/cgroup` line's controller field `line_ctrls` is the hierarchy
/// holding `ctrls` (none: the unified v2 line, whose field is empty).
fn in_hierarchy(line_ctrls: &str, ctrls: &[String]) -> bool {
    if ctrls.is_empty() {
        line_ctrls.is_empty()
    } else {
        line_ctrls.split(',').any(|x| ctrls.iter().any(|c| c == x))
    }
}

/// The cgroup directories `pid` is in, in each hierarchy of [`cgroup_hierarchies`] (the
/// kernel's view from `/proc/<pid>/cgroup`, whoever made them); empty once it has exited.
pub fn process_cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    let lines = proc_cgroups(pid);
    managed_hierarchies()
        .into_iter()
        .filter_map(|(mount, ctrls)| {
            let (_, path) = lines.iter().find(|(c, _)| in_hierarchy(c, &ctrls))?;
            Some(mount.join(path.trim_start_matches('/')))
        })
        .filter(|d| d.is_dir())
        .collect()
}

/// A file of a cgroup `pid` is in (`memory.max`, `memory.limit_in_bytes`, ...), from the
/// hierarchy that has it.
pub fn process_cgroup_file(pid: i32, file: &str) -> Option<String> {
    process_cgroup_dirs(pid)
        .into_iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
        .map(|s| s.trim().to_string())
}

/// ESTABLISHED TCP connections to or from `port` in `pid`'s network namespace (IPv4).
pub fn established_tcp(pid: i32, port: u16) -> usize {
    let port = format!(":{port:04X}");
    std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "01" && (f[1].ends_with(&port) || f[2].ends_with(&port))
        })
        .count()
}

/// The local port a port-forwarder (`minilet port-forward`, `crictl port-forward`) chose for
/// `remote`, from its first line of output: kubectl's `Forwarding from 127.0.0.1:PORT ->
/// REMOTE`. The caller keeps `out` open while the forwarder runs (it writes more lines).
pub fn forwarded_port(out: &mut impl std::io::BufRead, remote: u16) -> u16 {
    let mut first = String::new();
    out.read_line(&mut first).expect("the port-forwarder's first line");
    first
        .trim_end()
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.strip_suffix(&format!(" -> {remote}")))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from the port-forwarder: {first:?}"))
}

/// `GET /index.html` over HTTP/1.0 from 127.0.0.1:`port` (a forwarded port): the whole
/// response, or what came before the server closed.
pub fn loopback_http_get(port: u16) -> String {
    use std::io::Read;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the forwarded port");
    c.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a read timeout");
    c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .expect("send the request");
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    resp
}

/// Read a cgroup file of cgroup `rel` under this test's parent, in the hierarchy that has it.
pub fn cgroup_file(env: &Env, rel: &str, file: &str) -> Option<String> {
    env.cgroup_dirs(rel)
        .into_iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
        .map(|s| s.trim().to_string())
}

/// Lines of /proc/self/mountinfo mentioning `needle`.
pub fn host_mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Run a command inside a process's namespaces (as `nsenter` does) and return stdout.
pub fn nsenter(pid: i32, flags: &[&str], cmd: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg("-t")
        .arg(pid.to_string())
        .args(flags)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run nsenter")
}

/// Run a program inside a container: its namespaces (mount, pid, net, ipc, uts) and root.
pub fn in_container(pid: i32, cmd: &[&str]) -> std::process::Output {
    nsenter(pid, &["-m", "-p", "-n", "-i", "-u", "-r", "-w"], cmd)
}

/// Append `text` to a file (used to edit manifests in place).
pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text.as_bytes()).expect("append");
}

// ---- the CLI ----------------------------------------------------------------------------------

/// `minilet ARGS...` against this test's agent (socket from MINILET_SOCKET, as a user sets it).
pub fn cli(env: &Env, args: &[&str]) -> std::process::Output {
    cli_in(env, args, None)
}

/// The same, with `stdin` fed to the command.
pub fn cli_in(env: &Env, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new(minilet())
        .args(args)
        .env("MINILET_SOCKET", &env.socket)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn minilet CLI");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("wait for minilet CLI")
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run the CLI and insist on success; returns stdout.
pub fn ok(env: &Env, args: &[&str]) -> String {
    let o = cli(env, args);
    assert!(
        o.status.success(),
        "minilet {args:?} failed ({:?}):\n{}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Wait until the agent itself (not only the state directory) has every container of pod
/// `name` running: READY n/n in `minilet get pod`. Needed before asking the agent about a
/// container (exec, logs), as the monitor records a start before the agent takes it in.
pub fn wait_agent_ready(env: &Env, name: &str) {
    wait_for(
        &format!("the agent sees pod {name} ready"),
        Duration::from_secs(30),
        || {
            let o = cli(env, &["get", "pod", name]);
            let out = stdout(&o);
            let ready = out.lines().nth(1)?.split_whitespace().nth(1)?;
            let (have, want) = ready.split_once('/')?;
            (o.status.success() && have == want && have != "0").then_some(())
        },
    );
}

/// Events of pod `pod` and its containers, as `minilet get events -o json` shows them:
/// (type, reason, message, count).
pub fn pod_events(env: &Env, pod: &str) -> Vec<(String, String, String, i64)> {
    let list: Value = serde_json::from_str(&ok(env, &["get", "events", "-o", "json"])).expect("events JSON");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == pod)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("reason"), s("message"), e["count"].as_i64().unwrap_or(1))
        })
        .collect()
}

// ---- pods that record what happened in files of the test ------------------------------------

impl Env {
    /// A directory of the test's own (`<dir>/shared`), for a pod to write into through a
    /// hostPath volume (order of starts, of SIGTERM traps, of hooks).
    pub fn shared_dir(&self) -> PathBuf {
        let dir = self.dir.join("shared");
        std::fs::create_dir_all(&dir).expect("create shared dir");
        dir
    }
}

/// The lines of a file; none when it does not exist (yet).
pub fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait for an event `reason` on pod `pod` or its containers whose message contains `needle`;
/// its message.
pub fn wait_pod_event(env: &Env, pod: &str, reason: &str, needle: &str) -> String {
    wait_for(
        &format!("event {reason} with {needle:?} on {pod}"),
        Duration::from_secs(30),
        || {
            pod_events(env, pod)
                .into_iter()
                .find(|(_, r, m, _)| r == reason && m.contains(needle))
                .map(|(_, _, m, _)| m)
        },
    )
}

/// Wait until pod `name` has left the state directory.
pub fn wait_pod_removed(env: &Env, name: &str) {
    wait_for(&format!("pod {name} removed"), Duration::from_secs(30), || {
        env.pod(name).is_none().then_some(())
    });
}
