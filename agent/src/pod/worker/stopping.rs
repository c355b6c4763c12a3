//! Stopping containers as the kubelet kills them: the preStop hook first, within the grace
//! period; then StopContainer with what is left of the grace in whole seconds (never less
//! than the kubelet's 2 s minimum once a hook took its share): the stop signal, then SIGKILL.
//! When the whole pod stops, regular containers go first and sidecars after them, the last
//! one first.

use std::sync::Arc;
use std::time::Duration;

use minilet_proto::runtime::v1 as cri;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Worker;
use crate::events::{Events, ObjectRef};
use crate::pod::attempt::AttemptStatus;
use crate::pod::hooks::{Hook, HookKind};
use crate::pod::probes;
use crate::runtime::spec::ContainerExit;

/// The kubelet's `minimumGracePeriodInSeconds`: what a container still gets after its preStop
/// hook used up the grace period.
const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);

/// One container's stop, ready to run on its own task.
pub(in crate::pod) struct StopJob {
    cri: Arc<dyn crate::cri::service::RuntimeService>,
    attempt: AttemptStatus,
    pre_stop: Option<(Hook, probes::Context)>,
    /// The pod as the kubelet's messages name it.
    pod: String,
    events: Events,
    object: ObjectRef,
    grace: Duration,
    /// Stops that must be over before this one sends its signal (a sidecar's turn).
    after: Vec<watch::Receiver<bool>>,
    done: watch::Sender<bool>,
}

impl StopJob {
    /// Run the stop; the attempt's id and exit (`None` when the runtime no longer knows the
    /// container: a client removed it meanwhile).
    pub async fn run(mut self) -> (String, Option<ContainerExit>) {
        let deadline = Instant::now() + self.grace;
        if let Some((hook, ctx)) = &self.pre_stop
            && !self.grace.is_zero()
        {
            match tokio::time::timeout(self.grace, hook.run(ctx, &self.pod)).await {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => {
                    tracing::warn!(pod = %self.pod, container = %self.attempt.name, "PreStop hook failed: {msg}");
                    let kind = HookKind::PreStop;
                    self.events
                        .warning(&self.object, kind.failure_reason(), kind.failure_message());
                }
                Err(_) => {
                    tracing::info!(pod = %self.pod, container = %self.attempt.name, grace = ?self.grace, "PreStop hook not completed in grace period")
                }
            }
        }
        for turn in &mut self.after {
            // A sender gone (its stop ended) counts as done.
            let _ = tokio::time::timeout_at(deadline, turn.wait_for(|done| *done)).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let grace = if self.pre_stop.is_some() {
            left.max(MIN_GRACE_AFTER_HOOK.min(self.grace))
        } else {
            left
        };
        let id = self.attempt.id.clone();
        let exit = self.stop_container(&id, grace).await;
        self.done.send_replace(true);
        (id, exit)
    }

    /// StopContainer, then the exit as ContainerStatus reports it. The CRI's timeout is in
    /// whole seconds: what is left of the grace is rounded up, as the kubelet subtracts only
    /// the whole seconds that went by.
    async fn stop_container(&self, id: &str, grace: Duration) -> Option<ContainerExit> {
        let timeout = grace.as_secs() as i64 + i64::from(grace.subsec_nanos() > 0);
        let req = cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout,
        };
        if let Err(e) = self.cri.stop_container(req).await {
            tracing::warn!(pod = %self.pod, container = %self.attempt.name, error = %e, "stop container");
        }
        let req = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let status = self.cri.container_status(req).await.ok()?.status?;
        crate::pod::pleg::exit_of(&status)
    }
}

impl Worker {
    /// The pod as the kubelet's messages name it: `name_namespace(uid)`.
    pub(in crate::pod) fn kubelet_pod(&self) -> String {
        format!("{}_{}({})", self.record.name, self.record.namespace, self.uid)
    }

    /// What probes and hooks of slot `i`'s current attempt need to reach it.
    pub(in crate::pod) fn handler_context(&self, i: usize) -> Option<probes::Context> {
        let slot = &self.slots[i];
        let attempt = slot.current.clone()?;
        let host_network = self.pod_spec().host_network == Some(true);
        let network = match self.sandbox {
            Some(s) if !host_network => probes::Network::Pod(s.pause),
            _ => probes::Network::Host,
        };
        // status.podIP, as the kubelet's probes and hooks default to it.
        let pod_ip = if host_network {
            self.ctx.node.host_ip.as_deref().and_then(|ip| ip.parse().ok())
        } else {
            self.pod_ips.first().copied()
        };
        Some(probes::Context {
            cri: self.ctx.cri.clone(),
            attempt,
            network,
            pod_ip,
            events: self.ctx.events.clone(),
            object: self.obj.container(&slot.spec.name, slot.init),
        })
    }

    /// The stop of slot `i`'s running attempt with `grace`, its preStop hook first when
    /// `hooks` (not when the sandbox is gone: there is nothing left to run it in).
    pub(in crate::pod) fn stop_job(&self, i: usize, grace: Duration, hooks: bool) -> Option<StopJob> {
        let slot = &self.slots[i];
        let attempt = slot.current.clone().filter(|_| slot.running())?;
        let pre_stop = if hooks {
            Hook::of(HookKind::PreStop, &slot.spec).zip(self.handler_context(i))
        } else {
            None
        };
        Some(StopJob {
            cri: self.ctx.cri.clone(),
            attempt,
            pre_stop,
            pod: self.kubelet_pod(),
            events: self.ctx.events.clone(),
            object: self.obj.container(&slot.spec.name, slot.init),
            grace,
            after: Vec::new(),
            done: watch::channel(false).0,
        })
    }

    /// Stop every running container within the pod's grace period `grace` and wait for their
    /// exits to be recorded. All preStop hooks start at once; regular containers get their
    /// signal as soon as their hook is done, each sidecar only once the regular containers
    /// and the sidecars after it have exited (the kubelet's termination ordering).
    pub(in crate::pod) async fn stop_all(&mut self, grace: Duration, hooks: bool) {
        let running: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].running()).collect();
        let (sidecars, regular): (Vec<usize>, Vec<usize>) = running.into_iter().partition(|&i| self.slots[i].sidecar());
        let mut set = tokio::task::JoinSet::new();
        let mut earlier: Vec<watch::Receiver<bool>> = Vec::new();
        for i in regular.into_iter().chain(sidecars.into_iter().rev()) {
            let Some(mut job) = self.stop_job(i, grace, hooks) else {
                continue;
            };
            let name = &self.slots[i].spec.name;
            self.ctx.events.normal(
                &self.obj.container(name, self.slots[i].init),
                "Killing",
                format!("Stopping container {name}"),
            );
            if self.slots[i].sidecar() {
                job.after = earlier.clone();
            }
            earlier.push(job.done.subscribe());
            set.spawn(job.run());
        }
        while let Some(done) = set.join_next().await {
            if let Ok((id, Some(exit))) = done {
                self.on_exit(&id, exit).await;
            }
        }
    }
}
