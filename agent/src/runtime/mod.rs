//! The container runtime: pause sandboxes, containers, their processes and state on disk.
//!
//! Its surface is CRI-shaped (run/stop a sandbox, start/stop/remove a container) and takes
//! fully decided configurations: what Kubernetes semantics mean for a pod is worked out by
//! [`crate::pod`], how that is done on Linux is worked out here. The namespace and mount work
//! itself happens in helper processes ([`helper`]), never in the multi-threaded agent.

pub mod attach;
pub mod capabilities;
pub mod container;
pub mod cri;
pub mod exec;
pub mod helper;
pub mod host_ports;
pub mod log_rotation;
pub mod logs;
pub mod network;
pub mod process;
pub mod reaper;
pub mod rootfs;
pub mod sandbox;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod syscalls;
pub mod sysctl;
pub mod user;
pub mod warm;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::cgroups::{CgroupError, Cgroups, Resources};
use crate::file_modes;
use crate::images::{ImageError, ImageStore};
use state::Layout;

/// Relative cgroup of every pod, grouped by QoS class as the kubelet groups them.
pub const KUBEPODS: &str = "kubepods";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    /// A helper process failed; the message is its own account of what went wrong.
    #[error("{0}")]
    Helper(String),
    /// The object asked for does not exist (`kind` as CRI clients name it: "container",
    /// "sandbox").
    #[error("{kind} \"{id}\" not found")]
    NotFound { kind: &'static str, id: String },
    /// The request itself is wrong, whatever the state: the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is fine but the object is not in a state to do it (a stopped container).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation did not finish within the time the caller gave it.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// minilet does not do this at all.
    #[error("{0}")]
    Unimplemented(String),
    /// The name or object is already taken (a CRI container name reserved in its sandbox).
    #[error("{0}")]
    AlreadyExists(String),
    /// A bounded table of the agent's is full (pending streaming requests).
    #[error("{0}")]
    ResourceExhausted(String),
    /// Blocking work handed to the blocking pool panicked or was cancelled.
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        source: tokio::task::JoinError,
    },
}

impl RuntimeError {
    pub fn not_found(kind: &'static str, id: &str) -> Self {
        RuntimeError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Run blocking filesystem or cgroup work (removing a cgroup may sleep while a killed process
/// leaves it; removing a container's directory walks its whole writable layer) on tokio's
/// blocking pool, so that no async worker thread, and no pod worker or CRI call sharing it,
/// waits on it. The runtime's async methods and their callers all go through here.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| RuntimeError::Task { what, source })?
}

/// Attach a description of what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| RuntimeError::Io {
            context: what(),
            source,
        })
    }
}

/// Fixed settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub root: PathBuf,
    pub log_dir: PathBuf,
    pub pause_path: PathBuf,
    /// The lowest oom_score_adj this process may set (see [`min_oom_score_adj`]).
    pub min_oom_score_adj: i32,
    /// `--seccomp-default`, `--seccomp-profile-root`.
    pub seccomp: seccomp::SeccompArgs,
    /// `--container-log-max-size`, `--container-log-max-files`: handed to each monitor.
    pub log_rotation: log_rotation::Rotation,
    /// `--network`, `--cni-conf-dir`, `--cni-bin-dir`, `--pod-cidr`.
    pub network: network::NetworkConfig,
}

pub struct Runtime {
    pub config: RuntimeConfig,
    pub layout: Layout,
    pub network: network::Network,
    pub cgroups: Arc<dyn Cgroups>,
    pub images: ImageStore,
    /// Helpers started ahead of the pod starts that need them.
    warm: Arc<warm::WarmHelpers>,
}

impl Runtime {
    /// Open the state directory and prepare the QoS cgroups.
    pub fn new(config: RuntimeConfig, cgroups: Arc<dyn Cgroups>) -> Result<Self> {
        let layout = Layout::new(&config.root);
        file_modes::create_dir_all(&layout.pods_dir(), file_modes::STATE_DIR)
            .context(|| format!("create {}", layout.pods_dir().display()))?;
        if !config.log_dir.is_dir() {
            file_modes::create_dir_all(&config.log_dir, file_modes::LOG_DIR)
                .context(|| format!("create {}", config.log_dir.display()))?;
        }
        let images = ImageStore::open(&config.root)?;
        // A state directory from an older agent (0755 everywhere, 0644 files) is reachable by
        // every local user: close it before any pod starts.
        file_modes::tighten(&config.root, &config.log_dir).context(|| format!("chmod {}", config.root.display()))?;
        for qos in [
            KUBEPODS.to_string(),
            format!("{KUBEPODS}/burstable"),
            format!("{KUBEPODS}/besteffort"),
        ] {
            cgroups.create(&qos)?;
        }
        // The kubelet gives BestEffort pods the smallest possible CPU weight as a class.
        cgroups.apply(
            &format!("{KUBEPODS}/besteffort"),
            &Resources {
                cpu_shares: Some(2),
                ..Default::default()
            },
        )?;
        Ok(Runtime {
            network: network::Network::new(config.network.clone(), &config.root),
            config,
            layout,
            cgroups,
            images,
            warm: Default::default(),
        })
    }

    /// Kill whatever is left in `cgroup` and remove it (with its children), off the async
    /// threads. A failed kill is not an error: the removal says whether anything is left.
    pub async fn remove_cgroup(&self, cgroup: &str) -> Result<()> {
        let (cgroups, cgroup) = (self.cgroups.clone(), cgroup.to_string());
        blocking("remove a cgroup", move || {
            let _ = cgroups.kill(&cgroup);
            Ok(cgroups.remove(&cgroup)?)
        })
        .await
    }

    /// Kill every process in `cgroup` (it stays), off the async threads.
    pub async fn kill_cgroup(&self, cgroup: &str) -> Result<()> {
        let (cgroups, cgroup) = (self.cgroups.clone(), cgroup.to_string());
        blocking("kill a cgroup", move || Ok(cgroups.kill(&cgroup)?)).await
    }

    /// Set new limits on an existing cgroup, off the async threads.
    pub async fn apply_resources(&self, cgroup: &str, resources: Resources) -> Result<()> {
        let (cgroups, cgroup) = (self.cgroups.clone(), cgroup.to_string());
        blocking("update cgroup limits", move || Ok(cgroups.apply(&cgroup, &resources)?)).await
    }

    /// Clamp an oom_score_adj to what this process is allowed to set.
    pub fn oom_score_adj(&self, wanted: i32) -> i32 {
        wanted.max(self.config.min_oom_score_adj)
    }

    /// Run a helper subcommand on a spec file and parse its one-line report.
    async fn run_helper<T: DeserializeOwned>(&self, subcommand: &'static str, spec_path: &Path) -> Result<T> {
        let warm = self.warm.take(subcommand, spec_path);
        // The next start of this kind finds one waiting.
        self.warm.refill(subcommand);
        let warm::Spawned { mut child, pidfd } = match warm {
            Some(spawned) => spawned,
            None => {
                let mut cmd = helper_command(subcommand, spec_path.as_os_str(), Stdio::null());
                let (child, pidfd) = tokio::task::spawn_blocking(move || reaper::spawn(&mut cmd))
                    .await
                    .map_err(|e| RuntimeError::Helper(format!("spawn {subcommand}: {e}")))?
                    .context(|| format!("spawn helper {subcommand}"))?;
                warm::Spawned { child, pidfd }
            }
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let read = async {
            let out = read_pipe(stdout).await;
            let err = read_pipe(stderr).await;
            (out, err)
        };
        let (out, err) = match tokio::time::timeout(Duration::from_secs(60), read).await {
            Ok(v) => v,
            Err(_) => {
                let _ = pidfd.signal(nix::sys::signal::Signal::SIGKILL);
                return Err(RuntimeError::Helper(format!(
                    "{subcommand} {} did not report within 60s",
                    spec_path.display()
                )));
            }
        };
        let line = out.lines().next().unwrap_or("");
        match serde_json::from_str::<spec::Report<T>>(line) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(msg)) => Err(RuntimeError::Helper(msg)),
            Err(_) => Err(RuntimeError::Helper(format!(
                "{subcommand} exited without a report{}",
                if err.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", err.trim())
                }
            ))),
        }
    }
}

/// How a helper of `subcommand` is started: this very binary (`/proc/self/exe`, so a helper
/// is the agent's build even if the file on disk was replaced), stdout and stderr piped.
pub(crate) fn helper_command(subcommand: &'static str, arg: &std::ffi::OsStr, stdin: Stdio) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0("minilet")
        .arg(subcommand)
        .arg(arg)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // No current_dir: the helper goes to / itself (helper::dispatch), and without one std
    // spawns with posix_spawn (a vfork) instead of forking the agent.
    cmd
}

async fn read_pipe(pipe: Option<impl Into<std::os::fd::OwnedFd>>) -> String {
    use tokio::io::AsyncReadExt;
    let Some(pipe) = pipe else { return String::new() };
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe.into()) else {
        return String::new();
    };
    let mut buf = Vec::new();
    let _ = rx.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The lowest oom_score_adj the agent can give its pods. Lowering it below the agent's own
/// value takes CAP_SYS_RESOURCE; without it, do what containerd does: clamp to our own value
/// and say so once.
pub fn min_oom_score_adj() -> i32 {
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    const CAP_SYS_RESOURCE: u32 = 24;
    if has_capability(CAP_SYS_RESOURCE) {
        -1000
    } else {
        tracing::warn!(
            own,
            "no CAP_SYS_RESOURCE: oom_score_adj values below {own} (the kubelet's -998/-997 for pause and Guaranteed pods) are clamped to {own}"
        );
        own
    }
}

fn has_capability(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << cap) != 0)
}

/// Find the pause binary: explicit path, else next to this binary, else on $PATH.
pub fn find_pause(explicit: Option<&Path>) -> std::result::Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("pause binary {} does not exist", p.display()))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("minilet-pause")));
    if let Some(p) = beside.filter(|p| p.is_file()) {
        return Ok(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("minilet-pause");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err("minilet-pause not found next to the minilet binary or on $PATH (build it with hack/build, or pass --pause-binary)".into())
}
