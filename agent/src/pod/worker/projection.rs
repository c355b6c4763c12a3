//! The status the worker publishes: the pod's phase and each container's state, projected
//! from its slots as the kubelet projects them from the runtime's.

use super::{Next, Slot, Worker};
use crate::pod::attempt::AttemptStatus;
use crate::pod::status::{
    Attempt, ContainerState, ContainerStatus, Phase, PodEntry, PodStatus, SandboxInfo, Terminated, WaitingReason,
};

impl Worker {
    /// Publish the current status to the registry.
    pub(in crate::pod) fn publish(&self) {
        let statuses: Vec<ContainerStatus> = self.slots.iter().map(|s| self.container_status(s)).collect();
        let (init, app): (Vec<_>, Vec<_>) = statuses.into_iter().partition(|s| s.init);
        let spec = self.pod_spec();
        let mut attempts: Vec<Attempt> = Vec::new();
        for s in &self.slots {
            if let Some(f) = &s.previous {
                attempts.push(Attempt {
                    status: f.clone(),
                    init: s.init,
                    message: String::new(),
                });
            }
            if let Some(f) = &s.current {
                attempts.push(Attempt {
                    status: f.clone(),
                    init: s.init,
                    message: s.message.clone(),
                });
            }
        }
        attempts.sort_by_key(|a| a.status.created_at);
        self.ctx.registry.publish(PodEntry {
            uid: self.uid.clone(),
            manifest: self.manifest.clone(),
            pod: self.pod.clone(),
            status: PodStatus {
                phase: self.phase,
                terminating: self.terminating,
                qos: self.plan.qos.as_str(),
                start_time: self.record.created_at,
                sandbox_id: self.sandbox.map(|_| self.record.sandbox_id.clone()),
                pause_pid: self.sandbox.map(|s| s.pause.pid),
                init_containers: init,
                containers: app,
                rejection: self.rejection.clone(),
                failure: self.record.failure.clone(),
            },
            sandbox: SandboxInfo {
                id: self.record.sandbox_id.clone(),
                attempt: self.record.sandbox_attempt,
                pause: self.sandbox.map(|s| s.pause),
                created_at: self.sandbox.map_or(self.record.created_at, |s| s.created_at),
                cgroup: self.plan.cgroup.clone(),
                namespaces: crate::runtime::spec::SandboxNamespaces {
                    network: spec.host_network != Some(true),
                    pid: spec.host_pid != Some(true),
                    ipc: spec.host_ipc != Some(true),
                    uts: spec.host_network != Some(true),
                },
                share_pid: self.plan.share_pid,
                ips: self.pod_ips.clone(),
            },
            attempts,
        });
    }

    /// The waiting reason of a container not yet created, as the kubelet words it: in a pod
    /// with init containers `PodInitializing` (kubectl shows that once the init containers
    /// are done, and skips it for init containers), otherwise `ContainerCreating`.
    pub(in crate::pod) fn default_waiting(&self) -> WaitingReason {
        if self.slots.iter().any(|o| o.init) {
            WaitingReason::PodInitializing
        } else {
            WaitingReason::ContainerCreating
        }
    }

    fn container_status(&self, s: &Slot) -> ContainerStatus {
        let terminated = |f: &AttemptStatus, message: &str| {
            f.exit.as_ref().map(|e| Terminated {
                exit_code: e.exit_code,
                signal: e.signal,
                reason: e.reason,
                message: if e.message.is_empty() {
                    message.to_string()
                } else {
                    e.message.clone()
                },
                started_at: f.started_at.unwrap_or(0),
                finished_at: e.finished_at,
                container_id: f.id.clone(),
            })
        };
        let current_term = s.current.as_ref().and_then(|f| terminated(f, &s.message));
        // A pod failed as a whole (deadline, eviction) starts nothing again: its containers
        // stay as they ended.
        let failed = self.record.failure.is_some();
        let (state, last_state) = match (&s.waiting, s.running(), current_term) {
            (_, false, Some(t)) if failed => (
                ContainerState::Terminated(t),
                s.previous.as_ref().and_then(|f| terminated(f, "")),
            ),
            (_, true, _) => (
                ContainerState::Running {
                    started_at: s.current.as_ref().and_then(|f| f.started_at).unwrap_or(0),
                },
                s.previous.as_ref().and_then(|f| terminated(f, "")),
            ),
            (Some((reason, message)), false, last) => (
                ContainerState::Waiting {
                    reason: *reason,
                    message: message.clone(),
                },
                last,
            ),
            (None, false, Some(t)) if s.next == Next::Idle => (
                ContainerState::Terminated(t),
                s.previous.as_ref().and_then(|f| terminated(f, "")),
            ),
            (None, false, last) => (
                ContainerState::Waiting {
                    reason: self.default_waiting(),
                    message: String::new(),
                },
                last,
            ),
        };
        let running = matches!(state, ContainerState::Running { .. });
        ContainerStatus {
            name: s.spec.name.clone(),
            init: s.init,
            image: s.spec.image.clone().unwrap_or_default(),
            image_id: s.current.as_ref().map(|f| f.image_id.clone()).unwrap_or_default(),
            container_id: s.current.as_ref().map(|f| f.id.clone()),
            state,
            last_state,
            restart_count: s.current.as_ref().map_or(0, |f| f.attempt),
            started: running && s.started,
            ready: running && (!s.init || s.sidecar()) && s.started && s.probe_ready,
            sidecar: s.sidecar(),
        }
    }

    /// The pod is done for good: (Succeeded|Failed) by Kubernetes' rules, if so.
    pub(in crate::pod) fn terminal_phase(&self) -> Option<Phase> {
        if self.record.failure.is_some() {
            return Some(Phase::Failed);
        }
        // Sidecars do not decide the phase: they run until the app containers are done.
        if let Some(failed_init) = self
            .slots
            .iter()
            .find(|s| s.init && !s.sidecar() && s.done() && !s.succeeded())
        {
            tracing::debug!(container = %failed_init.spec.name, "init container failed for good");
            return Some(Phase::Failed);
        }
        let apps: Vec<&Slot> = self.slots.iter().filter(|s| !s.init).collect();
        if apps.iter().all(|s| s.done()) && !apps.is_empty() {
            return Some(if apps.iter().all(|s| s.succeeded()) {
                Phase::Succeeded
            } else {
                Phase::Failed
            });
        }
        None
    }
}
