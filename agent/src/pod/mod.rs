//! Pods: what Kubernetes semantics mean for each pod, and one worker task per pod that makes
//! the runtime do it.

pub mod admission;
pub mod attempt;
pub mod backoff;
pub mod command;
pub mod config;
pub mod cri_config;
pub mod expansion;
pub mod hooks;
pub mod host_ports;
pub mod images;
pub mod manager;
pub mod node;
pub mod pleg;
pub mod probes;
pub mod qos;
pub mod restart_policy;
pub mod security;
pub mod states;
#[cfg(test)]
mod static_container;
#[cfg(test)]
mod static_sandbox;
pub mod status;
pub mod sysctls;
pub mod volumes;
pub mod worker;

use std::sync::Arc;

use tokio::sync::watch;

use crate::events::Events;
use crate::runtime::Runtime;

/// What every pod worker shares.
pub struct Context {
    pub runtime: Arc<Runtime>,
    pub node: node::NodeInfo,
    pub events: Events,
    pub registry: status::Registry,
    /// The node's allocatable and labels, and the pods admitted on it.
    pub admission: admission::Ledger,
    pub backoff: backoff::BackoffConfig,
    /// How often pod-level usage limits (emptyDir `sizeLimit`) are checked (the kubelet's
    /// `--housekeeping-interval`).
    pub housekeeping_interval: std::time::Duration,
    /// Removes unused images when the image filesystem fills up.
    pub image_gc: Arc<crate::images::gc::ImageGc>,
    /// Bumped whenever the set of images changes (a pod waiting for one tries again).
    pub images_changed: watch::Receiver<u64>,
    /// The runtime's CRI side, which the gRPC server serves too.
    pub cri: Arc<crate::cri::Cri>,
    /// The runtime's container exits, routed to the pods' workers.
    pub pleg: pleg::Pleg,
}

impl Context {
    /// The runtime as the pod side drives it: CRI `RuntimeService`, in process, as the kubelet
    /// drives containerd.
    pub fn runtime_service(&self) -> &dyn crate::cri::service::RuntimeService {
        &*self.cri
    }
}
