//! CRI `GetContainerEvents`: created/started/stopped/deleted, for the kubelet's evented PLEG.

use std::sync::Arc;

use minilet_proto::runtime::v1 as cri;
use tokio::sync::broadcast;

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
