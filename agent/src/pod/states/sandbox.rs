//! CreatingSandbox: admission, the pod's volumes, then its sandbox (RunPodSandbox: cgroup,
//! generated files, pause, network, hostPorts).

use super::State;
use crate::pod::worker::Worker;

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
        // The pod is on disk before anything of it is made: a restarted agent finds what a
        // crash left (its cgroup, its volumes, a sandbox made for it).
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
        let created = match volumes {
            Err(e) => {
                w.ctx
                    .events
                    .warning(&w.obj, "FailedMount", format!("MountVolume.SetUp failed: {e}"));
                Err(e)
            }
            Ok(()) => match crate::pod::security::user_namespace_problem(&w.pod)
                .or_else(|| crate::pod::security::sandbox_user_problem(&w.pod))
            {
                Some(problem) => Err(problem),
                None => w.run_sandbox().await,
            },
        };
        match created {
            Ok((id, state, ips)) => {
                tracing::info!(pod = %w.obj.name, uid = %w.uid, sandbox = %id, pause = state.pause.pid, ?ips, "sandbox running");
                w.record.sandbox_id = id;
                w.save_record();
                w.sandbox = Some(state);
                w.pod_ips = ips;
                return State::Initializing;
            }
            Err(e) => {
                w.ctx.events.warning(
                    &w.obj,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            () = w.commands.terminated() => return State::Terminating,
        }
        delay = (delay * 2).min(w.ctx.backoff.max);
    }
}
