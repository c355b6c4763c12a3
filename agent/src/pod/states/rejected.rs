//! Rejected: the node refused the pod at admission (the kubelet's `rejectPod`). It is Failed
//! with the admission's reason, a Warning event says why, and nothing was or will be created;
//! only the manifest's removal or change moves it on.

use super::State;
use crate::pod::status::Phase;
use crate::pod::worker::Worker;

pub async fn run(w: &mut Worker) -> State {
    if let Some(r) = &w.rejection {
        tracing::warn!(pod = %w.obj.name, reason = %r.reason, "pod rejected: {}", r.message);
        w.ctx.events.warning(&w.obj, &r.reason, r.message.clone());
    }
    w.phase = Phase::Failed;
    w.publish();
    w.commands.terminated().await;
    w.ctx.registry.remove(&w.uid);
    tracing::info!(pod = %w.obj.name, uid = %w.uid, "rejected pod removed");
    State::Done
}
