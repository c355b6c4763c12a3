//! CRI `GetContainerEvents`: created/started/stopped/deleted, for the kubelet's evented PLEG
//! (and minilet's own, `pod::pleg`); and the watched exits StopContainer waits for.

use std::collections::HashMap;
use std::sync::Arc;

use minilet_proto::runtime::v1 as cri;
use tokio::sync::{broadcast, oneshot};

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

/// The running containers the store watches, and whoever waits until a watcher has recorded
/// one's exit (StopContainer): no task per waiter, and, unlike the event stream, nothing is
/// lost to a slow reader.
#[derive(Clone, Default)]
pub struct Exits(Arc<std::sync::Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>>);

impl Exits {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<()>>>> {
        // Inserts and removals are single operations: a poisoned map is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Container `id` is watched from now on.
    pub fn watched(&self, id: &str) {
        self.map().insert(id.to_string(), Vec::new());
    }

    /// The watcher of `id` has recorded its exit: every waiter is released, and the container
    /// forgotten.
    pub fn report(&self, id: &str) {
        for waiter in self.map().remove(id).unwrap_or_default() {
            let _ = waiter.send(());
        }
    }

    /// Once the watcher of `id` has recorded its exit; at once when `id` is not watched (never
    /// started, or its exit is recorded already).
    pub async fn recorded(&self, id: &str) {
        let rx = {
            let mut map = self.map();
            let Some(waiters) = map.get_mut(id) else { return };
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            rx
        };
        // A watcher gone without a report (the runtime shutting down) drops the sender.
        let _ = rx.await;
    }
}
