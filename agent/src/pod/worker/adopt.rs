//! Taking over a pod an earlier agent left in the state directory.

use std::sync::Arc;

use minilet_proto::runtime::v1 as cri;

use tokio::sync::mpsc;

use super::{Command, Next, Worker};
use crate::cri::convert::POD_UID;
use crate::pod::Context;
use crate::pod::attempt::AttemptStatus;
use crate::pod::states::State;
use crate::runtime::spec::SandboxState;
use crate::runtime::state::PodRecord;

impl Worker {
    /// Take over a pod found in the state directory (after an agent restart): its attempts
    /// are what the runtime lists for it (ListContainers by the pod's UID label, in the
    /// pod's sandboxes, then ContainerStatus). Running containers keep running; exited ones
    /// are handled by the restart policy; an attempt whose creation was interrupted is
    /// removed. The sandbox is the runtime's, found by the ID in the pod's record. `legacy`
    /// is the pause of an agent from before sandboxes went through the runtime's CRI side
    /// (kept in the pod's own directory): it is replaced, as a sandbox that died; so are
    /// containers such an agent kept there ([`Worker::replace_legacy_attempts`]). Returns the
    /// state to continue in.
    pub(in crate::pod) async fn adopt(
        ctx: Arc<Context>,
        record: PodRecord,
        legacy: Option<SandboxState>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> (Self, State) {
        let mut w = Worker::new(ctx, record, commands, None);
        let (interrupted, mut attempts): (Vec<AttemptStatus>, Vec<AttemptStatus>) = w
            .listed_attempts()
            .await
            .into_iter()
            .partition(|a| a.started_at.is_none() && a.exit.is_none());
        // Interrupted creations: created, never started; nothing of them may stay.
        for a in &interrupted {
            w.remove_attempt(a).await;
        }
        let replaced = w.replace_legacy_attempts().await;
        attempts.extend(replaced.iter().map(|(a, _)| a.clone()));
        for i in 0..w.slots.len() {
            let name = w.slots[i].spec.name.clone();
            let mut mine: Vec<AttemptStatus> = attempts.iter().filter(|a| a.name == name).cloned().collect();
            mine.sort_by_key(|a| (a.attempt, a.created_at));
            let current = mine.pop();
            let previous = mine.pop();
            for old in mine {
                w.remove_attempt(&old).await;
            }
            w.slots[i].previous = previous;
            match current {
                None => w.slots[i].next = Next::Start,
                // Stopped just now to be replaced: it runs again, whatever the policy.
                Some(a) if replaced.iter().any(|(r, stopped)| *stopped && r.id == a.id) => {
                    w.slots[i].current = Some(a);
                    w.slots[i].next = Next::Start;
                }
                Some(mut a) => {
                    let exit = a.exit.take();
                    let id = a.id.clone();
                    if exit.is_none() {
                        w.watch_log_notices(&a);
                    }
                    w.slots[i].current = Some(a);
                    w.slots[i].next = Next::Idle;
                    if let Some(exit) = exit {
                        w.on_exit(&id, exit).await;
                    }
                }
            }
        }

        w.remove_old_sandboxes().await;
        if let Some(old) = legacy {
            w.retire_legacy_sandbox(old).await;
        }
        // The sandbox the runtime re-adopted (an interrupted RunPodSandbox left none).
        if let Some(view) = w.sandbox_status(&w.record.sandbox_id.clone()).await {
            w.sandbox = view.state.filter(|s| s.pause.is_alive());
            w.pod_ips = view.ips;
            // The runtime checked the network the pod had, not remade it: a failure is
            // reported.
            if w.sandbox.is_some()
                && !w.commands.terminate_requested()
                && let Some(e) = view.network_error
            {
                w.ctx.events.warning(
                    &w.obj,
                    "FailedPodNetworkCheck",
                    format!("Pod network check failed: {e}"),
                );
            }
        }
        for i in 0..w.slots.len() {
            if w.slots[i].running() {
                w.start_probes(i);
            }
        }
        let running = w.slots.iter().filter(|s| s.running()).count();
        tracing::info!(pod = %w.obj.name, uid = %w.uid, sandbox = w.sandbox.map(|s| s.pause.pid), running, "re-adopted pod");
        if w.commands.terminate_requested() {
            return (w, State::Terminating);
        }
        if let Some(phase) = w.terminal_phase() {
            w.phase = phase;
            return (w, State::Completed);
        }
        let state = if w.sandbox.is_some() {
            State::Initializing
        } else {
            // The pause is gone (killed while no agent ran): same as dying under our eyes.
            crate::pod::states::sandbox_died(&mut w).await
        };
        (w, state)
    }
}

impl Worker {
    /// The pod's attempts as the runtime lists them: ListContainers by the pod's UID label,
    /// kept to the pod's own sandboxes (a CRI client may label its containers as it likes),
    /// each as its ContainerStatus reports it.
    async fn listed_attempts(&self) -> Vec<AttemptStatus> {
        let req = cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: [(POD_UID.to_string(), self.uid.clone())].into(),
                ..Default::default()
            }),
        };
        let listed = match self.ctx.runtime_service().list_containers(req).await {
            Ok(r) => r.containers,
            Err(e) => {
                tracing::error!(pod = %self.obj.name, error = %e, "ListContainers");
                Vec::new()
            }
        };
        let mine =
            |sandbox: &str| sandbox == self.record.sandbox_id || self.record.old_sandboxes.iter().any(|s| s == sandbox);
        let mut out = Vec::new();
        for c in listed.into_iter().filter(|c| mine(&c.pod_sandbox_id)) {
            if let Some(a) = self.attempt_status(&c.id).await {
                out.push(a);
            }
        }
        out
    }

    /// Take over the attempts an agent from before step C2a kept in the pod's own directory
    /// (outside the runtime's store, so no event, StopContainer or ExecSync knows them):
    /// they are replaced once, as step C1 replaced that agent's sandboxes. A running one is
    /// stopped now (its stop signal, then SIGKILL after the pod's grace period) and its
    /// cgroup goes, as does every other one's; they stay as exited attempts (for their last
    /// state and `logs --previous`) until retired, when their directory goes. Returns them,
    /// each with whether it was stopped here (its container then starts again in the
    /// runtime's sandbox, whatever the restart policy: the stop was the agent's, not the
    /// container's end).
    async fn replace_legacy_attempts(&self) -> Vec<(AttemptStatus, bool)> {
        let rt = self.ctx.runtime.clone();
        let (layout, uid) = (rt.layout.clone(), self.uid.clone());
        let found = crate::runtime::blocking("read an older agent's containers", move || {
            Ok(crate::runtime::state::load_containers(&layout, &uid))
        })
        .await
        .unwrap_or_default();
        let mut out = Vec::new();
        for mut f in found {
            let running = f.state.is_some() && f.exit.is_none();
            if running {
                tracing::info!(pod = %self.obj.name, container = %f.record.name, "container of an older agent: replacing it");
                let signal = rt.stop_signal(&f).await;
                f.exit = Some(rt.stop_container(&f, signal, self.grace_period()).await);
            }
            if let Err(e) = rt.remove_cgroup(&f.record.cgroup).await {
                tracing::warn!(pod = %self.obj.name, container = %f.record.name, error = %e, "remove the cgroup of an older agent's container");
            }
            let attempt = AttemptStatus::legacy(&f);
            if f.state.is_none() && f.exit.is_none() {
                self.remove_attempt(&attempt).await; // an interrupted creation
            } else {
                out.push((attempt, running));
            }
        }
        out
    }

    /// Stop and clear away a sandbox an older agent kept in the pod's own directory (its
    /// pause, hostPorts, network, files and cgroup); the pod then gets a new sandbox from
    /// the runtime, as after a sandbox died.
    async fn retire_legacy_sandbox(&mut self, old: SandboxState) {
        let rt = self.ctx.runtime.clone();
        let dir = rt.layout.pod_dir(&self.uid);
        tracing::info!(pod = %self.obj.name, pause = old.pause.pid, "sandbox of an older agent: replacing it");
        if let Err(e) = rt.stop_host_ports(&dir).await {
            tracing::warn!(pod = %self.obj.name, error = %e, "close the old sandbox's host ports");
        }
        if let Err(e) = rt.stop_sandbox(&old).await {
            tracing::warn!(pod = %self.obj.name, error = %e, "stop the old sandbox");
        }
        if let Err(e) = rt.network.remove(&dir).await {
            tracing::warn!(pod = %self.obj.name, error = %e, "release the old sandbox's network");
        }
        let cgroup = crate::runtime::Runtime::sandbox_cgroup(&self.plan.cgroup, &self.record.sandbox_id);
        if let Err(e) = rt.remove_cgroup(&cgroup).await {
            tracing::warn!(pod = %self.obj.name, error = %e, "remove the old sandbox's cgroup");
        }
        let removed = tokio::task::spawn_blocking(move || {
            for name in ["etc", "shm"] {
                let _ = std::fs::remove_dir_all(dir.join(name));
            }
            let _ = std::fs::remove_file(dir.join("sandbox-spec.json"));
            // Last: while it exists, a restarted agent still knows of the old pause.
            std::fs::remove_file(dir.join(crate::runtime::sandbox::SANDBOX_STATE))
        })
        .await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(pod = %self.obj.name, error = %e, "remove the old sandbox's record");
        }
    }
}
