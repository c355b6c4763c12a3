//! What the agent hands its helper processes, and what they hand back.
//!
//! The agent decides everything (namespaces, cgroups, mounts, command, user); the helpers
//! only carry it out. Specs are JSON files in the pod's state directory, so a helper's input
//! can be read after the fact when something goes wrong.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::process::ProcessId;

/// Paths of the container's filesystem hidden from it (an empty read-only tmpfs over a
/// directory, /dev/null over anything else) and paths made read-only (the CRI's
/// `masked_paths` and `readonly_paths`, runc's `maskedPaths` and `readonlyPaths`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KernelPaths {
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
}

impl KernelPaths {
    /// What a non-privileged container gets unless its client says otherwise.
    pub fn defaults() -> KernelPaths {
        KernelPaths {
            masked: super::rootfs::MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            readonly: super::rootfs::READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// Input of `minilet __sandbox`: start the pause process of a pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub id: String,
    pub pod_uid: String,
    /// Hostname inside a new UTS namespace (ignored when the pod uses the host's).
    pub hostname: String,
    pub namespaces: SandboxNamespaces,
    pub pause_path: PathBuf,
    /// Cgroup directories (one per hierarchy) the pause joins.
    pub cgroup_dirs: Vec<PathBuf>,
    pub oom_score_adj: Option<i32>,
    /// Memory-backed filesystems of the pod (its /dev/shm, `medium: Memory` emptyDirs). They
    /// are mounted only inside the pause's mount namespace, which containers copy: when the
    /// pause exits they vanish with it and can never leak onto the host.
    pub tmpfs: Vec<TmpfsSpec>,
    /// Set inside the pod's new namespaces before the pause starts.
    #[serde(default)]
    pub sysctls: Vec<super::sysctl::Sysctl>,
    /// The pause's argv, user (the sandbox's run_as_user/group and supplemental groups),
    /// capabilities and seccomp filter, applied as a container's are, after everything above
    /// is done as root. The user is resolved without a passwd file: the pause has no image.
    pub process: ProcessSpec,
    /// Where the launcher records the pause's identity before it reports back, so that a
    /// pause is never running without the state directory knowing it.
    pub state_path: PathBuf,
}

/// Which namespaces the pause creates; `false` means the pod shares the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxNamespaces {
    pub network: bool,
    pub pid: bool,
    pub ipc: bool,
    pub uts: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsSpec {
    pub path: PathBuf,
    pub size_bytes: Option<u64>,
    pub mode: u32,
    /// The group owning the root (a pod's fsGroup).
    #[serde(default)]
    pub gid: Option<u32>,
}

/// What a started sandbox is, as recorded in `<pod>/sandbox.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxState {
    pub pause: ProcessId,
    /// Unix nanoseconds.
    pub created_at: i64,
}

/// Input of `minilet __monitor`: run one container (one attempt) and watch it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub id: String,
    pub pod_uid: String,
    pub name: String,
    /// The container's state directory (state.json, exit.json, upper/work/rootfs live here).
    pub dir: PathBuf,
    /// The pod's pause: the container joins its network, IPC, UTS and mount namespaces.
    pub sandbox: ProcessId,
    /// Join the pause's PID namespace (shareProcessNamespace, hostPID) instead of a new one.
    pub share_pid: bool,
    pub cgroup_dirs: Vec<PathBuf>,
    pub oom_score_adj: Option<i32>,
    pub rootfs: RootfsSpec,
    /// Bind mounts, in order: /etc files, volumes, /dev/shm, the termination log.
    pub mounts: Vec<BindMount>,
    /// The container's own cgroup at /sys/fs/cgroup, seen through a cgroup namespace rooted
    /// at it. `None` (a spec written by an older agent): neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_view: Option<CgroupView>,
    pub process: ProcessSpec,
    pub log_path: PathBuf,
    /// Masked and read-only paths a CRI client chose; `None`: the runtime's defaults (none
    /// for a privileged container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_paths: Option<KernelPaths>,
    /// When the monitor rotates `log_path`.
    #[serde(default)]
    pub log_rotation: super::log_rotation::Rotation,
}

/// An overlayfs root: image layers below, the container's own writable layer on top.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsSpec {
    /// Directory holding the unpacked layers; lowerdirs are given relative to it to keep the
    /// overlay mount options short (they must fit in one page).
    pub layers_dir: PathBuf,
    /// Layer directory names, bottom first.
    pub layers: Vec<String>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The mount point (inside the container's own mount namespace only).
    pub target: PathBuf,
    pub readonly: bool,
}

/// What a container sees at /sys/fs/cgroup: its own cgroup as the root, read-only unless
/// privileged (runc's rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupView {
    pub readonly: bool,
    pub hierarchies: CgroupHierarchies,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupHierarchies {
    /// v2: a cgroup2 mount made inside the container's cgroup namespace.
    Unified,
    /// v1: a tmpfs holding one bind mount of the container's directory per hierarchy, named
    /// as on the host (`cpu,cpuacct`, `memory`, ...).
    V1(Vec<V1Hierarchy>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Hierarchy {
    /// The controllers joined by commas, as the hierarchy is mounted.
    pub name: String,
    /// The container's cgroup directory in it, on the host.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: String,
    pub readonly: bool,
    /// Whether the source is a file (so the mount point to create is a file, not a dir).
    pub file: bool,
    /// `None`: the source is bound inside the pod's mount namespace (where the pod's own
    /// tmpfs volumes live), private. `Some`: it is taken from the host's mount namespace when
    /// the container starts, with what the host mounted under it since the pod started (a
    /// CRI client's host paths), as this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_host: Option<HostTree>,
}

/// How a host path's mount tree is given to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTree {
    pub propagation: Propagation,
    /// Every mount of the tree read-only, submounts too (the CRI's `recursive_read_only`);
    /// `readonly` alone makes only the top one read-only.
    pub recursive_readonly: bool,
}

/// Mount propagation between a host path and the container (the CRI's
/// PROPAGATION_PRIVATE, HOST_TO_CONTAINER and BIDIRECTIONAL; rprivate, rslave, rshared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    Private,
    HostToContainer,
    Bidirectional,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Fully resolved argv (command/args against the image's Entrypoint/Cmd, `$(VAR)` expanded).
    pub args: Vec<String>,
    /// `KEY=value`, image env overridden by the pod's.
    pub env: Vec<String>,
    pub cwd: String,
    pub user: UserSpec,
    /// Capabilities the process keeps (names like `CAP_CHOWN`); `None` keeps all (privileged).
    pub capabilities: Option<Vec<String>>,
    pub no_new_privileges: bool,
    /// The seccomp filter to load just before exec, compiled for this container; `None` runs
    /// unconfined. Also applies to processes exec'd into the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<super::seccomp::Seccomp>,
    /// The container's own stdin and terminal (`stdin`, `stdinOnce`, `tty` of the pod spec or
    /// the CRI ContainerConfig). Not used for processes exec'd into the container.
    #[serde(default)]
    pub stdio: StdioSpec,
}

/// How the container's main process is wired: stdin a pipe the monitor holds (else
/// /dev/null), or a terminal whose master the monitor holds. Attach reaches both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioSpec {
    pub stdin: bool,
    /// Close stdin when the first attach session that used it ends (pipes only, as containerd).
    pub stdin_once: bool,
    pub tty: bool,
}

/// Who the process runs as. Names are resolved inside the container's root filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    /// securityContext.runAsUser.
    pub uid: Option<u32>,
    /// securityContext.runAsGroup.
    pub gid: Option<u32>,
    /// The image's `User` ("", "name", "uid", "name:group", "uid:gid"), used when uid is unset.
    pub image_user: String,
    /// Pod supplementalGroups and fsGroup.
    pub supplemental_groups: Vec<u32>,
    /// `supplementalGroupsPolicy: Strict`: the groups the container image's /etc/group gives
    /// the user are not added; only the primary group and `supplemental_groups` apply.
    #[serde(default)]
    pub strict_groups: bool,
}

/// Written by the monitor once the container process has exec'd (`state.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub monitor: ProcessId,
    pub process: ProcessId,
    /// Unix nanoseconds.
    pub started_at: i64,
    /// How the process got into its cgroup.
    #[serde(default)]
    pub cgroup_entry: CgroupEntry,
}

/// How a container process entered its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupEntry {
    /// Born there: clone3 with CLONE_INTO_CGROUP (v2); it never ran anywhere else.
    Born,
    /// Forked in the monitor's cgroup, then moved by writing its pid there (v1, or a kernel
    /// that refused CLONE_INTO_CGROUP).
    #[default]
    Attached,
}

/// Written by the monitor when the container process has exited (`exit.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerExit {
    /// As the CRI reports it: the exit status, or 128 + signal number.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: ExitReason,
    pub message: String,
    /// Unix nanoseconds.
    pub finished_at: i64,
}

/// Why a container attempt ended, in Kubernetes' words (`state.terminated.reason`). Stored
/// in `exit.json` as those same words, so agents of every version read each other's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ExitReason {
    /// Exit status 0.
    Completed,
    /// Any other exit status, or killed by a signal.
    Error,
    /// The kernel's OOM killer ended it (whatever the exit status).
    OOMKilled,
    /// It never ran: its setup or exec failed (containerd's word, which the kubelet shows).
    StartError,
    /// It never ran (Docker's word for StartError; read from older records, never written).
    ContainerCannotRun,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OOMKilled => "OOMKilled",
            ExitReason::StartError => "StartError",
            ExitReason::ContainerCannotRun => "ContainerCannotRun",
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ExitReason {
    /// The reason a record or a CRI status names. Any other word (written by a newer agent,
    /// or another runtime's) is an `Error`: the exit stays known rather than lost.
    pub fn from_word(word: &str) -> Self {
        match word {
            "Completed" => ExitReason::Completed,
            "OOMKilled" => ExitReason::OOMKilled,
            "StartError" => ExitReason::StartError,
            "ContainerCannotRun" => ExitReason::ContainerCannotRun,
            _ => ExitReason::Error,
        }
    }
}

impl<'de> Deserialize<'de> for ExitReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ExitReason::from_word(&String::deserialize(d)?))
    }
}

impl ContainerExit {
    /// Kubernetes' reasons: OOMKilled beats everything, then Completed for 0, else Error.
    pub fn from_status(exit_code: i32, signal: Option<i32>, oom_killed: bool, finished_at: i64) -> Self {
        let reason = if oom_killed {
            ExitReason::OOMKilled
        } else if exit_code == 0 {
            ExitReason::Completed
        } else {
            ExitReason::Error
        };
        ContainerExit {
            exit_code,
            signal,
            reason,
            message: String::new(),
            finished_at,
        }
    }

    /// The container never ran: its setup or exec failed.
    pub fn start_error(message: String, finished_at: i64) -> Self {
        ContainerExit {
            exit_code: 128,
            signal: None,
            reason: ExitReason::StartError,
            message,
            finished_at,
        }
    }
}

/// A helper's answer on its stdout: one JSON line.
pub type Report<T> = Result<T, String>;

/// Now, as Unix nanoseconds.
pub fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exit.json` as agents before the enum wrote it (reason a free string) still reads,
    /// and what this agent writes is the same words.
    #[test]
    fn exit_records_keep_their_format() {
        let old = |reason: &str| {
            format!(r#"{{"exit_code":137,"signal":9,"reason":"{reason}","message":"m","finished_at":42}}"#)
        };
        for (word, reason) in [
            ("Completed", ExitReason::Completed),
            ("Error", ExitReason::Error),
            ("OOMKilled", ExitReason::OOMKilled),
            ("StartError", ExitReason::StartError),
            ("ContainerCannotRun", ExitReason::ContainerCannotRun),
        ] {
            let exit: ContainerExit = serde_json::from_str(&old(word)).expect("old exit.json");
            assert_eq!(exit.reason, reason);
            assert_eq!((exit.exit_code, exit.signal, exit.finished_at), (137, Some(9), 42));
            assert_eq!(serde_json::to_string(&exit).expect("serialize"), old(word));
            assert_eq!(reason.as_str(), word);
        }
        let newer: ContainerExit = serde_json::from_str(&old("SomethingNew")).expect("unknown word");
        assert_eq!(newer.reason, ExitReason::Error);
        assert!(serde_json::from_str::<ContainerExit>(&old("Completed").replace("\"Completed\"", "7")).is_err());
    }

    #[test]
    fn reasons_from_status() {
        assert_eq!(
            ContainerExit::from_status(0, None, false, 0).reason,
            ExitReason::Completed
        );
        assert_eq!(ContainerExit::from_status(1, None, false, 0).reason, ExitReason::Error);
        assert_eq!(
            ContainerExit::from_status(0, None, true, 0).reason,
            ExitReason::OOMKilled
        );
        assert_eq!(ContainerExit::start_error("x".into(), 0).reason, ExitReason::StartError);
    }
}
