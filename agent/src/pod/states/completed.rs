//! Completed: the pod Succeeded or Failed and nothing in it will run again. As the kubelet
//! does for terminal pods, the sandbox is stopped and the cgroups go; the records and logs
//! stay until the manifest is removed or changed.

use super::State;
use crate::pod::worker::Worker;

pub async fn run(w: &mut Worker) -> State {
    tracing::info!(pod = %w.obj.name, phase = w.phase.as_str(), "pod completed");
    // A terminal pod no longer counts against the node (the kubelet's active pods).
    w.ctx.admission.release(&w.uid);
    // What still runs is the sidecars: they stop now, the last first, preStop hooks included.
    w.stop_all(w.grace_period(), true).await;
    // StopPodSandbox: the pause goes, its hostPorts and address are free again.
    w.stop_sandbox().await;
    if let Err(e) = w.ctx.runtime.remove_cgroup(&w.plan.cgroup).await {
        tracing::warn!(pod = %w.obj.name, error = %e, "remove cgroups of completed pod");
    }
    w.publish();
    // Only a terminate order (or the manager going away) moves a completed pod on.
    w.commands.terminated().await;
    State::Terminating
}
