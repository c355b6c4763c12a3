//! CRI `GetContainerEvents`: created/started/stopped/deleted, for the kubelet's evented PLEG.

use minilet_proto::runtime::v1 as cri;
use tokio::sync::broadcast;

/// Fan-out of container events to every `GetContainerEvents` stream. A subscriber that falls
/// behind loses the oldest events (and is told so by the channel), as a kubelet then relists.
#[derive(Debug, Clone)]
pub struct ContainerEvents(broadcast::Sender<cri::ContainerEventResponse>);

impl Default for ContainerEvents {
    fn default() -> Self {
        ContainerEvents(broadcast::channel(1024).0)
    }
}

impl ContainerEvents {
    pub fn subscribe(&self) -> broadcast::Receiver<cri::ContainerEventResponse> {
        self.0.subscribe()
    }

    pub fn send(&self, event: cri::ContainerEventResponse) {
        // No subscriber is not an error: events are only for whoever listens now.
        let _ = self.0.send(event);
    }
}
