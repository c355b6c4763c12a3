//! Starting one container attempt: its image, its configuration, the runtime call, and what
//! the slot does when any of it fails.

use minilet_proto::runtime::v1 as cri;

use super::{Next, Worker};
use crate::pod::attempt::AttemptStatus;
use crate::pod::config::ContainerInputs;
use crate::pod::cri_config;
use crate::pod::hooks::{Hook, HookKind};
use crate::pod::status::WaitingReason;
use crate::runtime::RuntimeError;
use crate::runtime::logs;
use crate::runtime::spec::{ExitReason, now_nanos};

impl Worker {
    /// Start the container in slot `i` now. Afterwards the slot is running, or knows when to
    /// try again, or has exited at once (StartError) and been handed to the restart logic.
    pub(in crate::pod) async fn start(&mut self, i: usize) {
        // A dead pause means a new sandbox, not a container start that is bound to fail: the
        // runtime's event for it (SandboxDied) is on its way and the state will recreate the sandbox.
        let Some(sandbox) = self.sandbox.filter(|s| s.pause.is_alive()) else {
            return;
        };
        let rt = self.ctx.runtime.clone();
        let name = self.slots[i].spec.name.clone();
        let init = self.slots[i].init;
        let cobj = self.obj.container(&name, init);
        let Some(image) = self.ensure_image(i).await else {
            return;
        };
        self.ctx.image_gc.mark_used(&image.id);

        let attempt = self.slots[i].attempts();
        let log_path = logs::container_log_path(&self.pod_log_dir(), &name, attempt);
        let sandbox_dir = self.sandbox_dir();
        let inputs = ContainerInputs {
            pod: &self.pod,
            uid: &self.uid,
            sandbox_dir: &sandbox_dir,
            plan: &self.plan,
            container: &self.slots[i].spec,
            attempt,
            image: &image,
            log_path,
            pod_ips: &self.pod_ips,
        };
        // The kubelet's generateContainerConfig, then CreateContainer + StartContainer in the
        // pod's sandbox, as the kubelet asks containerd.
        let cfg = match cri_config::container_config(&rt.layout, &rt.config.seccomp, &self.ctx.node, &inputs) {
            Ok(c) => c,
            Err(msg) => {
                self.config_error(i, WaitingReason::CreateContainerConfigError, msg);
                return;
            }
        };

        // The kubelet keeps one dead attempt per container (for `logs --previous`): the one
        // before it goes now, so there are never more than two.
        self.retire_previous(i).await;
        match self.create_and_start(cfg).await {
            Ok(attempt) => {
                let slot = &mut self.slots[i];
                slot.previous = slot.current.take();
                slot.waiting = None;
                slot.message.clear();
                slot.next = Next::Idle;
                // Nothing of the attempt before carries over: started and ready are earned again.
                slot.probes = None;
                slot.started = false;
                slot.probe_ready = false;
                // It could not start (StartError); or it runs, or ran and already ended.
                let start_error = attempt.exit.as_ref().filter(|e| e.reason == ExitReason::StartError);
                if start_error.is_some() && !sandbox.pause.is_alive() {
                    // The pause died while this container was being set up: not the
                    // container's failure. Drop the attempt; the sandbox will be recreated.
                    tracing::info!(pod = %self.obj.name, container = %name, "sandbox died during container start");
                    self.remove_attempt(&attempt).await;
                    return;
                }
                if let Some(exit) = start_error {
                    self.ctx
                        .events
                        .warning(&cobj, "Failed", format!("Error: {}", exit.message));
                } else {
                    self.ctx
                        .events
                        .normal(&cobj, "Created", format!("Created container {name}"));
                    self.ctx
                        .events
                        .normal(&cobj, "Started", format!("Started container {name}"));
                }
                let mut attempt = attempt;
                if let Some(exit) = attempt.exit.take() {
                    let id = attempt.id.clone();
                    self.slots[i].current = Some(attempt);
                    self.on_exit(&id, exit).await;
                } else {
                    self.watch_log_notices(&attempt);
                    self.slots[i].current = Some(attempt);
                    if self.post_start(i).await {
                        self.start_probes(i);
                    }
                }
                // Seen at once by the CRI and the CLI, not after the pod's other starts.
                self.publish();
            }
            Err(e) => {
                self.ctx.events.warning(&cobj, "Failed", format!("Error: {e}"));
                self.slots[i].waiting = Some((WaitingReason::CreateContainerError, e.to_string()));
                self.slots[i].next = Next::StartAt(now_nanos() + self.ctx.backoff.initial.as_nanos() as i64);
            }
        }
    }

    /// CreateContainer + StartContainer in the pod's sandbox; then the attempt as
    /// ContainerStatus reports it: running, or ended (it could not start: StartError; or it
    /// already ran). `Err` when nothing of it exists (CreateContainerError).
    async fn create_and_start(&self, config: cri::ContainerConfig) -> Result<AttemptStatus, RuntimeError> {
        let rs = self.ctx.runtime_service();
        let created = rs
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: self.record.sandbox_id.clone(),
                config: Some(config),
                sandbox_config: None,
            })
            .await?;
        let id = created.container_id;
        let started = rs
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await;
        match (self.attempt_status(&id).await, started) {
            (Some(attempt), Ok(_)) => Ok(attempt),
            // It could not start, and the runtime recorded why (StartError).
            (Some(attempt), Err(_)) if attempt.exit.is_some() => Ok(attempt),
            // Refused before anything ran (the sandbox was not ready): nothing of it stays.
            (Some(attempt), Err(e)) => {
                self.remove_attempt(&attempt).await;
                Err(e)
            }
            (None, Err(e)) => Err(e),
            (None, Ok(_)) => Err(RuntimeError::not_found("container", &id)),
        }
    }

    /// ContainerStatus (verbose) of container `id`; `None` when the runtime does not know it.
    pub(in crate::pod) async fn attempt_status(&self, id: &str) -> Option<AttemptStatus> {
        let req = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        match self.ctx.runtime_service().container_status(req).await {
            Ok(resp) => Some(AttemptStatus::of(&resp.status?, &resp.info)),
            Err(e) => {
                if !matches!(e, RuntimeError::NotFound { .. }) {
                    tracing::warn!(pod = %self.obj.name, container = %id, error = %e, "ContainerStatus");
                }
                None
            }
        }
    }

    /// Run slot `i`'s postStart hook, if it has one, before anything else of the pod goes on
    /// (the kubelet blocks the start on it). True when the container may go on: no hook, or it
    /// succeeded. A failed hook kills the container (its exit then goes through the restart
    /// policy); a terminate order abandons the hook, and the container stops with the pod.
    async fn post_start(&mut self, i: usize) -> bool {
        let Some(hook) = Hook::of(HookKind::PostStart, &self.slots[i].spec) else {
            return true;
        };
        let Some(ctx) = self.handler_context(i) else {
            return true;
        };
        let pod = self.kubelet_pod();
        let result = tokio::select! {
            r = hook.run(&ctx, &pod) => r,
            () = self.commands.terminated() => return false,
        };
        let Err(msg) = result else { return true };
        let name = self.slots[i].spec.name.clone();
        let cobj = self.obj.container(&name, self.slots[i].init);
        tracing::warn!(pod = %self.obj.name, container = %name, "PostStart hook failed: {msg}");
        let kind = HookKind::PostStart;
        self.ctx
            .events
            .warning(&cobj, kind.failure_reason(), kind.failure_message());
        self.ctx.events.normal(&cobj, "Killing", "FailedPostStartHook");
        if let Some(job) = self.stop_job(i, self.grace_period(), true) {
            tokio::spawn(job.run());
        }
        false
    }

    fn config_error(&mut self, i: usize, reason: WaitingReason, msg: String) {
        let cobj = self.obj.container(&self.slots[i].spec.name, self.slots[i].init);
        self.ctx.events.warning(&cobj, "Failed", format!("Error: {msg}"));
        self.retry_later(i, reason, msg);
    }

    /// Leave slot `i` waiting (`reason`, `msg`) and try again after the initial back-off, as
    /// any other sync would: the cause may be fixed outside the pod (a hostPath, an image).
    pub(in crate::pod) fn retry_later(&mut self, i: usize, reason: WaitingReason, msg: String) {
        self.slots[i].waiting = Some((reason, msg));
        self.slots[i].next = Next::StartAt(now_nanos() + self.ctx.backoff.initial.as_nanos() as i64);
    }

    /// Before a new attempt: the one before the current goes (directory, cgroup, log file).
    async fn retire_previous(&mut self, i: usize) {
        if let Some(old) = self.slots[i].previous.take() {
            self.remove_attempt(&old).await;
            self.remove_old_sandboxes().await;
        }
    }
}
