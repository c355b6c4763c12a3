//! CRI `GetContainerEvents`: created/started/stopped/deleted, for the kubelet's evented PLEG;
//! and the same exits for in-process waiters.

use std::collections::HashMap;
use std::sync::Arc;

use minilet_proto::runtime::v1 as cri;
use tokio::sync::{broadcast, watch};

use crate::runtime::spec::ContainerExit;

/// Fan-out of container events to every `GetContainerEvents` stream. A subscriber that falls
/// behind loses the oldest events (and is told so by the channel), as a kubelet then relists.
/// The ring holds pointers: its slots are allocated and written when the channel is made, and
/// 1024 events inline were ~470 KiB resident in every agent, streamed to or not.
#[derive(Debug, Clone)]
pub struct ContainerEvents(broadcast::Sender<Arc<cri::ContainerEventResponse>>);

impl Default for ContainerEvents {
    fn default() -> Self {
        ContainerEvents(broadcast::channel(1024).0)
    }
}

impl ContainerEvents {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<cri::ContainerEventResponse>> {
        self.0.subscribe()
    }

    pub fn send(&self, event: cri::ContainerEventResponse) {
        // No subscriber is not an error: events are only for whoever listens now.
        let _ = self.0.send(Arc::new(event));
    }
}

/// The exits of the running containers the store watches, for in-process waiters (a static
/// pod's worker): one watcher per container, whoever waits. Unlike the event stream, nothing
/// is lost to a slow reader: a waiter sees the one exit whenever it looks.
#[derive(Debug, Clone, Default)]
pub struct Exits(Arc<std::sync::Mutex<HashMap<String, watch::Receiver<Option<ContainerExit>>>>>);

impl Exits {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<Option<ContainerExit>>>> {
        // Inserts and removals are single operations: a poisoned map is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Container `id` is watched from now on; its watcher reports through the sender.
    pub fn watched(&self, id: &str) -> watch::Sender<Option<ContainerExit>> {
        let (tx, rx) = watch::channel(None);
        self.map().insert(id.to_string(), rx);
        tx
    }

    /// The watcher of `id` reported: later waiters read the exit from the container's files.
    pub fn forget(&self, id: &str) {
        self.map().remove(id);
    }

    /// Where the exit of watched container `id` will be reported; `None` if it is not watched.
    pub fn of(&self, id: &str) -> Option<watch::Receiver<Option<ContainerExit>>> {
        self.map().get(id).cloned()
    }
}
