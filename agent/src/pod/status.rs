//! Pod and container status in Kubernetes terms, and the registry where workers publish it
//! (read by whoever inspects the node).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;

use super::attempt::AttemptStatus;
use crate::runtime::process::ProcessId;
use crate::runtime::spec::{ExitReason, SandboxNamespaces};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: ExitReason,
    pub message: String,
    /// Unix nanoseconds (0 when the container never started).
    pub started_at: i64,
    pub finished_at: i64,
    pub container_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Waiting { reason: WaitingReason, message: String },
    Running { started_at: i64 },
    Terminated(Terminated),
}

/// Why a container is not running yet (`state.waiting.reason`), in the kubelet's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingReason {
    /// Not created yet, in a pod without init containers.
    ContainerCreating,
    /// Not created yet, in a pod with init containers.
    PodInitializing,
    /// Waiting out the restart back-off after it failed.
    CrashLoopBackOff,
    /// The last pull of its image failed.
    ErrImagePull,
    /// Waiting out the pull back-off of its image.
    ImagePullBackOff,
    /// The image is missing and `imagePullPolicy: Never` forbids pulling it.
    ErrImageNeverPull,
    /// The image reference does not parse.
    InvalidImageName,
    /// The image store could not be read.
    ErrImageInspect,
    /// The container's configuration cannot be built (a missing hostPath, a bad env).
    CreateContainerConfigError,
    /// The runtime failed to create it.
    CreateContainerError,
}

impl WaitingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitingReason::ContainerCreating => "ContainerCreating",
            WaitingReason::PodInitializing => "PodInitializing",
            WaitingReason::CrashLoopBackOff => "CrashLoopBackOff",
            WaitingReason::ErrImagePull => "ErrImagePull",
            WaitingReason::ImagePullBackOff => "ImagePullBackOff",
            WaitingReason::ErrImageNeverPull => "ErrImageNeverPull",
            WaitingReason::InvalidImageName => "InvalidImageName",
            WaitingReason::ErrImageInspect => "ErrImageInspect",
            WaitingReason::CreateContainerConfigError => "CreateContainerConfigError",
            WaitingReason::CreateContainerError => "CreateContainerError",
        }
    }
}

impl std::fmt::Display for WaitingReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub name: String,
    pub init: bool,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: ContainerState,
    pub last_state: Option<Terminated>,
    pub restart_count: u32,
    /// Running and past its startup probe (if any).
    pub started: bool,
    pub ready: bool,
    /// An init container with `restartPolicy: Always` (a native sidecar).
    pub sidecar: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStatus {
    pub phase: Phase,
    /// Set while the pod is being torn down.
    pub terminating: bool,
    pub qos: &'static str,
    /// Unix nanoseconds.
    pub start_time: i64,
    pub sandbox_id: Option<String>,
    pub pause_pid: Option<i32>,
    pub init_containers: Vec<ContainerStatus>,
    pub containers: Vec<ContainerStatus>,
    /// Why the node refused the pod (status.reason and status.message), if it did.
    pub rejection: Option<super::security::Rejection>,
    /// Set when the running pod failed as a whole (active deadline, eviction).
    pub failure: Option<crate::runtime::state::PodFailure>,
}

/// The pod's sandbox, as the CRI describes it.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    pub id: String,
    pub attempt: u32,
    /// The running pause; `None` when the sandbox is not ready (stopped, or being created).
    pub pause: Option<ProcessId>,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The pod's cgroup, relative to the cgroup parent.
    pub cgroup: String,
    pub namespaces: SandboxNamespaces,
    pub share_pid: bool,
    /// The pod's addresses from its network (none without one, or with hostNetwork).
    pub ips: Vec<std::net::IpAddr>,
}

/// One container attempt the pod shows (the current one and the one before it).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: AttemptStatus,
    pub init: bool,
    /// Termination message, when it has exited.
    pub message: String,
}

/// One pod as the node sees it.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub uid: String,
    pub manifest: PathBuf,
    pub pod: Arc<Pod>,
    pub status: PodStatus,
    pub sandbox: SandboxInfo,
    /// Every container attempt on disk, oldest first.
    pub attempts: Vec<Attempt>,
}

/// Every pod's latest published status.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<BTreeMap<String, PodEntry>>>,
}

impl Registry {
    pub fn publish(&self, entry: PodEntry) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.uid.clone(), entry);
    }

    pub fn remove(&self, uid: &str) {
        self.inner.write().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }

    pub fn get(&self, uid: &str) -> Option<PodEntry> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).get(uid).cloned()
    }

    pub fn list(&self) -> Vec<PodEntry> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
