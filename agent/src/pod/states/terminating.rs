//! Terminating: containers get their stop signal and the grace period, then SIGKILL; then the
//! sandbox (pause, hostPorts, network); then every trace of the pod goes: cgroups, state
//! directory, logs.

use super::State;
use crate::pod::worker::Worker;

pub async fn run(w: &mut Worker) -> State {
    w.terminating = true;
    w.publish();
    let grace = w.grace_period();
    w.stop_all(grace, true).await;
    w.remove_sandbox().await;
    if let Err(e) = w.ctx.runtime.remove_pod(&w.uid, &w.plan.cgroup, &w.pod_log_dir()).await {
        w.ctx
            .events
            .warning(&w.obj, "FailedKillPod", format!("error removing pod: {e}"));
    }
    w.ctx.registry.remove(&w.uid);
    tracing::info!(pod = %w.obj.name, uid = %w.uid, "pod removed");
    State::Done
}
