//! CreatingSandbox: the pod's directory, cgroup, generated files, pause and hostPorts.

use super::State;
use crate::pod::config;
use crate::pod::worker::Worker;
use crate::runtime::state::new_id;

pub async fn run(w: &mut Worker) -> State {
    // The previous pod of the same manifest must be gone first (the kubelet orders static
    // pods the same way): they may share host ports, hostPath files, names.
    if let Some(mut after) = w.after.take() {
        while !*after.borrow() {
            tokio::select! {
                changed = after.changed() => if changed.is_err() { break },
                () = w.commands.terminated() => return State::Terminating,
            }
        }
    }

    // The kubelet's admission, before anything exists for the pod.
    let admitted = crate::pod::security::admit(&w.pod).and_then(|()| w.ctx.admission.admit(&w.uid, &w.pod));
    if let Err(rejection) = admitted {
        w.rejection = Some(rejection);
        return State::Rejected;
    }

    let mut delay = w.ctx.backoff.initial;
    loop {
        if w.commands.terminate_requested() {
            return State::Terminating;
        }
        w.record.sandbox_id = new_id();
        w.save_record();
        w.publish();
        // The pod side's volumes first, as the kubelet's volume manager sets them up before
        // it asks for a sandbox.
        let volumes = if w.pod_spec().volumes.as_ref().is_none_or(|v| v.is_empty()) {
            Ok(())
        } else {
            let (dir, pod, node) = (w.ctx.runtime.layout.pod_dir(&w.uid), w.pod.clone(), w.ctx.node.clone());
            tokio::task::spawn_blocking(move || crate::pod::volumes::set_up(&dir, &pod, &node))
                .await
                .unwrap_or_else(|e| Err(format!("set up the pod's volumes: {e}")))
        };
        let config =
            volumes.and_then(|()| config::sandbox_config(&w.ctx.runtime.layout, &w.pod, &w.uid, &w.plan, &w.ctx.node));
        let created = match config {
            Err(e) => {
                w.ctx
                    .events
                    .warning(&w.obj, "FailedMount", format!("MountVolume.SetUp failed: {e}"));
                Err(e)
            }
            Ok(cfg) => match crate::pod::security::user_namespace_problem(&w.pod)
                .or_else(|| crate::pod::security::sandbox_user_problem(&w.pod))
            {
                Some(problem) => Err(problem),
                None => (w.ctx.runtime.run_sandbox(&cfg, &w.record.sandbox_id).await).map_err(|e| e.to_string()),
            },
        };
        // The host ports are part of the sandbox: open before any container starts, and a
        // port already taken undoes the sandbox (nothing of the pod runs half-made).
        let created = match created {
            Ok((state, ips)) => match w.open_host_ports(&state).await {
                Ok(()) => Ok((state, ips)),
                Err(e) => {
                    if let Err(stop) = w.ctx.runtime.stop_sandbox(&state).await {
                        tracing::warn!(pod = %w.obj.name, error = %stop, "stop the sandbox whose host ports failed");
                    }
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        match created {
            Ok((state, ips)) => {
                tracing::info!(pod = %w.obj.name, uid = %w.uid, pause = state.pause.pid, ?ips, "sandbox running");
                w.sandbox = Some(state);
                w.pod_ips = ips;
                w.watch_sandbox();
                return State::Initializing;
            }
            Err(e) => {
                w.ctx.events.warning(
                    &w.obj,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                let cgroup = crate::runtime::Runtime::sandbox_cgroup(&w.plan.cgroup, &w.record.sandbox_id);
                let _ = w.ctx.runtime.remove_cgroup(&cgroup).await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            () = w.commands.terminated() => return State::Terminating,
        }
        delay = (delay * 2).min(w.ctx.backoff.max);
    }
}
