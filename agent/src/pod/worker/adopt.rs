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
    /// policy; an attempt whose creation was interrupted is discarded. Returns the state to
    /// continue in.
    pub(in crate::pod) async fn adopt(
        ctx: Arc<Context>,
        record: PodRecord,
        sandbox: Option<SandboxState>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> (Self, State) {
        let mut w = Worker::new(ctx, record, commands, None);
        let rt = w.ctx.runtime.clone();
        let (attempts, interrupted): (Vec<ContainerFiles>, Vec<ContainerFiles>) =
            crate::runtime::state::load_containers(&rt.layout, &w.uid)
                .into_iter()
                .partition(|f| f.state.is_some() || f.exit.is_some());
        // Interrupted creations: no process was ever recorded; nothing of them may stay.
        for f in &interrupted {
            let _ = rt.kill_cgroup(&f.record.cgroup).await;
            let _ = rt.remove_container(f).await;
        }
        for i in 0..w.slots.len() {
            let name = w.slots[i].spec.name.clone();
            let mut mine: Vec<ContainerFiles> = attempts.iter().filter(|f| f.record.name == name).cloned().collect();
            mine.sort_by_key(|f| f.record.attempt);
            let current = mine.pop();
            let previous = mine.pop();
            for old in mine {
                let _ = rt.remove_container_with_log(&old).await;
            }
            w.slots[i].previous = previous;
            match current {
                None => w.slots[i].next = Next::Start,
                Some(f) => {
                    let exit = f.exit.clone();
                    let id = f.record.id.clone();
                    let running = exit.is_none();
                    if running {
                        w.watch_container(&f);
                    }
                    w.slots[i].current = Some(f);
                    w.slots[i].next = Next::Idle;
                    if let Some(exit) = exit {
                        w.on_exit(&id, exit).await;
                    }
                }
            }
        }

        w.sandbox = sandbox.filter(|s| s.pause.is_alive());
        if w.sandbox.is_some() {
            let dir = rt.layout.pod_dir(&w.uid);
            let (ips, interrupted) = tokio::task::spawn_blocking(move || {
                (
                    crate::runtime::network::cached_ips(&dir),
                    crate::runtime::network::interrupted(&dir),
                )
            })
            .await
            .unwrap_or_default();
            w.pod_ips = ips;
            if interrupted {
                // The agent stopped in the middle of ADD: no container may run in that
                // network. Treated as a dead sandbox: DEL, the pause goes, a new sandbox.
                tracing::warn!(pod = %w.obj.name, "the pod network's ADD was interrupted: replacing the sandbox");
                w.sandbox = None;
            }
        }
        if w.sandbox.is_some() {
            // The network the pod had is checked, not remade: a failure is reported.
            if !w.commands.terminate_requested()
                && let Err(e) = rt.network.check(&rt.layout.pod_dir(&w.uid)).await
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
        let state = if let Some(sandbox) = w.sandbox {
            w.watch_sandbox();
            w.readopt_host_ports(&sandbox).await;
            State::Initializing
        } else {
            // The pause is gone (killed while no agent ran): same as dying under our eyes.
            crate::pod::states::sandbox_died(&mut w).await
        };
        (w, state)
    }
}
