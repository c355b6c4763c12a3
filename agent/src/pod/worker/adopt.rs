//! Taking over a pod an earlier agent left in the state directory.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Command, Next, Worker};
use crate::pod::Context;
use crate::pod::states::State;
use crate::runtime::spec::SandboxState;
use crate::runtime::state::{ContainerFiles, PodRecord};

impl Worker {
    /// Take over a pod found in the state directory (after an agent restart): running
    /// containers keep running and are watched again; exited ones are handled by the restart
    /// policy; an attempt whose creation was interrupted is discarded; the sandbox is the
    /// runtime's, found by the ID in the pod's record. `legacy` is the pause of an agent
    /// from before sandboxes went through the runtime's CRI side (kept in the pod's own
    /// directory): it is replaced, as a sandbox that died. Returns the state to continue in.
    pub(in crate::pod) async fn adopt(
        ctx: Arc<Context>,
        record: PodRecord,
        legacy: Option<SandboxState>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> (Self, State) {
        let mut w = Worker::new(ctx, record, commands, None);
        let rt = w.ctx.runtime.clone();
        // The attempts are in the pod's sandboxes, current and earlier; an older agent kept
        // them in the pod's own directory instead (they keep running and are removed from
        // there when they are retired).
        let mut found = crate::runtime::state::load_containers(&rt.layout, &w.uid);
        let sandboxes: Vec<String> = w
            .record
            .old_sandboxes
            .iter()
            .chain(Some(&w.record.sandbox_id))
            .cloned()
            .collect();
        for id in &sandboxes {
            found.extend(w.ctx.cri_pods.sandbox_containers(id).await);
        }
        let (attempts, interrupted): (Vec<ContainerFiles>, Vec<ContainerFiles>) =
            found.into_iter().partition(|f| f.state.is_some() || f.exit.is_some());
        // Interrupted creations: no process was ever recorded; nothing of them may stay.
        for f in &interrupted {
            let _ = rt.kill_cgroup(&f.record.cgroup).await;
            w.remove_attempt(f).await;
        }
        for i in 0..w.slots.len() {
            let name = w.slots[i].spec.name.clone();
            let mut mine: Vec<ContainerFiles> = attempts.iter().filter(|f| f.record.name == name).cloned().collect();
            mine.sort_by_key(|f| f.record.attempt);
            let current = mine.pop();
            let previous = mine.pop();
            for old in mine {
                w.remove_attempt(&old).await;
            }
            w.slots[i].previous = previous;
            match current {
                None => w.slots[i].next = Next::Start,
                Some(mut f) => {
                    let exit = f.exit.take();
                    let id = f.record.id.clone();
                    if exit.is_none() {
                        w.watch_log_notices(&f);
                        if rt.layout.sandbox_of_container(&f.dir).is_none() {
                            w.watch_legacy_attempt(&f);
                        }
                    }
                    w.slots[i].current = Some(f);
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
        if let Some((state, ips)) = w.sandbox_status(&w.record.sandbox_id.clone()).await {
            w.sandbox = state.filter(|s| s.pause.is_alive());
            w.pod_ips = ips;
            // The network the pod had is checked, not remade: a failure is reported.
            if w.sandbox.is_some()
                && !w.commands.terminate_requested()
                && let Err(e) = rt.network.check(&w.sandbox_dir()).await
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
    /// The exit of a running attempt an older agent kept in the pod's own directory: the
    /// runtime's store does not hold it, so no container event will tell; its files do.
    fn watch_legacy_attempt(&self, files: &ContainerFiles) {
        let (rt, files, tx) = (self.ctx.runtime.clone(), files.clone(), self.events_tx.clone());
        tokio::spawn(async move {
            let exit = rt.wait_container(&files).await;
            if let Err(e) = rt.remove_cgroup(&files.record.cgroup).await {
                tracing::warn!(container = %files.record.name, error = %e, "remove the cgroup of an exited container");
            }
            let _ = tx.send(super::Event::Exited {
                id: files.record.id.clone(),
                exit,
            });
        });
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
