//! CRI `GetContainerEvents`: created/started/stopped/deleted, for the kubelet's evented PLEG
//! (and minilet's own, `pod::pleg`); and the watched exits StopContainer waits for.

use std::collections::HashMap;
use std::sync::Arc;

use minilet_proto::runtime::v1 as cri;
use tokio::sync::broadcast;

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

/// Who is told of a watched container's exit.
pub type ExitWaiter = Box<dyn FnOnce(ContainerExit) + Send>;

/// The exits of the running containers the store watches, for whoever must wait until one is
/// recorded (StopContainer): no task per waiter, and, unlike the event stream, nothing is
/// lost to a slow reader.
#[derive(Clone, Default)]
pub struct Exits(Arc<std::sync::Mutex<HashMap<String, Vec<ExitWaiter>>>>);

impl Exits {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<ExitWaiter>>> {
        // Inserts and removals are single operations: a poisoned map is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Container `id` is watched from now on.
    pub fn watched(&self, id: &str) {
        self.map().insert(id.to_string(), Vec::new());
    }

    /// The watcher of `id` saw it exit: every waiter is told, and the container forgotten.
    pub fn report(&self, id: &str, exit: &ContainerExit) {
        let waiters = self.map().remove(id).unwrap_or_default();
        for waiter in waiters {
            waiter(exit.clone());
        }
    }

    /// Tell `waiter` of watched container `id`'s exit; the waiter back when `id` is not
    /// watched (it has exited already, or is no container of the store).
    pub fn on_exit(&self, id: &str, waiter: ExitWaiter) -> Result<(), ExitWaiter> {
        match self.map().get_mut(id) {
            Some(waiters) => {
                waiters.push(waiter);
                Ok(())
            }
            None => Err(waiter),
        }
    }
}
