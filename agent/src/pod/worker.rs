//! One task per pod: it owns the pod's sandbox and containers and drives them through the
//! lifecycle states in [`super::states`]. Everything else only talks to it through messages
//! (a terminate command; container exits and sandbox death from its own watcher tasks), so a
//! pod's state has exactly one writer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};

use super::Context;
use super::backoff::{Backoff, Decision};
use super::config::{self, ContainerInputs, PodPlan};
use super::probes::{self, ProbeKind};
use super::states::State;
use super::status::{Attempt, ContainerState, ContainerStatus, Phase, PodEntry, PodStatus, SandboxInfo, Terminated};
use crate::events::ObjectRef;
use crate::runtime::logs;
use crate::runtime::spec::{ContainerExit, SandboxState, now_nanos};
use crate::runtime::state::{ContainerFiles, PodRecord};

/// Orders from the pod manager.
#[derive(Debug)]
pub enum Command {
    /// Stop everything and remove the pod.
    Terminate,
}

/// The manager's orders as the worker sees them. A terminate order is sticky: once seen
/// (or once the manager is gone), the pod only goes down.
#[derive(Debug)]
pub(super) struct Orders {
    rx: mpsc::UnboundedReceiver<Command>,
    terminate: bool,
}

impl Orders {
    fn new(rx: mpsc::UnboundedReceiver<Command>) -> Self {
        Orders { rx, terminate: false }
    }

    /// Whether the pod is to be removed, without waiting. Checked before anything is
    /// created (sandbox, container), so a removal cancels a start in progress between two
    /// containers rather than after the last one.
    pub fn terminate_requested(&mut self) -> bool {
        if !self.terminate {
            match self.rx.try_recv() {
                Ok(Command::Terminate) | Err(mpsc::error::TryRecvError::Disconnected) => self.terminate = true,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
        }
        self.terminate
    }

    /// Resolves when the pod is to be removed.
    pub async fn terminated(&mut self) {
        if !self.terminate {
            let (Some(Command::Terminate) | None) = self.rx.recv().await;
            self.terminate = true;
        }
    }
}

/// What the worker's own watcher tasks report.
#[derive(Debug)]
pub(super) enum Event {
    Exited {
        id: String,
        exit: ContainerExit,
    },
    SandboxDied {
        pause: crate::runtime::process::ProcessId,
    },
    /// A background image pull for a container finished (image size, or why not).
    Pulled {
        container: String,
        image: String,
        result: Result<u64, String>,
        elapsed: Duration,
    },
    /// A probe's result passed its threshold and changed (container attempt `id`).
    Probe {
        id: String,
        kind: ProbeKind,
        success: bool,
    },
}

/// How a container slot should proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// Start as soon as possible.
    Start,
    /// Start at this time (Unix nanoseconds): back-off or a retry after an error.
    StartAt(i64),
    /// Start when the image store changes (the image is missing).
    WaitImage,
    /// An image pull is running; its result will say.
    Pulling,
    /// Nothing to do: running, or done for good.
    Idle,
}

/// One container of the pod (init or app) and its attempts.
#[derive(Debug)]
pub(super) struct Slot {
    pub spec: Container,
    pub init: bool,
    /// The latest attempt.
    pub current: Option<ContainerFiles>,
    /// The one before: kept for `logs --previous`, as the kubelet keeps one dead container.
    pub previous: Option<ContainerFiles>,
    pub next: Next,
    /// Why the container is not running, when it is waiting.
    pub waiting: Option<(String, String)>,
    /// Termination message read when the current attempt exited.
    pub message: String,
    /// The image was just pulled for this start (so `Always` does not pull it again).
    pub fresh_pull: bool,
    /// The probes of the running attempt (dropped, they stop).
    pub probes: Option<probes::Running>,
    /// The startup probe passed (or there is none), for the running attempt.
    pub started: bool,
    /// The readiness probe's verdict (or there is none), for the running attempt.
    pub probe_ready: bool,
}

impl Slot {
    pub fn new(spec: Container, init: bool) -> Self {
        Slot {
            spec,
            init,
            current: None,
            previous: None,
            next: Next::Start,
            waiting: None,
            message: String::new(),
            fresh_pull: false,
            probes: None,
            started: false,
            probe_ready: false,
        }
    }

    pub fn running(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.state.is_some() && c.exit.is_none())
    }

    pub fn exit(&self) -> Option<&ContainerExit> {
        self.current.as_ref().and_then(|c| c.exit.as_ref())
    }

    /// Finished successfully and will not run again.
    pub fn succeeded(&self) -> bool {
        self.next == Next::Idle && self.exit().is_some_and(|e| e.exit_code == 0)
    }

    /// Finished and will not run again.
    pub fn done(&self) -> bool {
        self.next == Next::Idle && self.exit().is_some()
    }

    fn attempts(&self) -> u32 {
        self.current.as_ref().map_or(0, |c| c.record.attempt + 1)
    }
}

pub struct Worker {
    pub(super) ctx: Arc<Context>,
    pub(super) pod: Arc<Pod>,
    pub(super) uid: String,
    pub(super) manifest: PathBuf,
    pub(super) plan: PodPlan,
    pub(super) obj: ObjectRef,
    pub(super) record: PodRecord,
    pub(super) sandbox: Option<SandboxState>,
    pub(super) slots: Vec<Slot>,
    pub(super) backoff: Backoff,
    pub(super) pull_backoff: super::images::PullBackoff,
    pub(super) phase: Phase,
    pub(super) terminating: bool,
    pub(super) events_tx: mpsc::UnboundedSender<Event>,
    pub(super) events: mpsc::UnboundedReceiver<Event>,
    pub(super) commands: Orders,
    pub(super) images_changed: watch::Receiver<u64>,
    /// A predecessor (same manifest) that must be gone before this pod creates anything.
    pub(super) after: Option<watch::Receiver<bool>>,
    /// Set when the node refused the pod at admission.
    pub(super) rejection: Option<super::security::Rejection>,
}

impl Worker {
    pub(super) fn new(
        ctx: Arc<Context>,
        record: PodRecord,
        commands: mpsc::UnboundedReceiver<Command>,
        after: Option<watch::Receiver<bool>>,
    ) -> Self {
        let pod = Arc::new(record.pod.clone());
        let uid = record.uid.clone();
        let plan = PodPlan::new(&pod, &uid);
        let spec = pod.spec.clone().unwrap_or_default();
        let slots = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| Slot::new(c.clone(), true))
            .chain(spec.containers.iter().map(|c| Slot::new(c.clone(), false)))
            .collect();
        let (events_tx, events) = mpsc::unbounded_channel();
        let images_changed = ctx.images_changed.clone();
        Worker {
            obj: ObjectRef::pod(&record.namespace, &record.name, &uid),
            backoff: Backoff::new(ctx.backoff),
            pull_backoff: Default::default(),
            ctx,
            pod,
            manifest: record.manifest.clone(),
            uid,
            plan,
            record,
            sandbox: None,
            slots,
            phase: Phase::Pending,
            terminating: false,
            events_tx,
            events,
            commands: Orders::new(commands),
            images_changed,
            after,
            rejection: None,
        }
    }

    /// Drive the pod until it is removed.
    pub async fn run(mut self, initial: State) {
        let mut state = initial;
        loop {
            tracing::debug!(pod = %self.obj.name, ?state, "pod state");
            state = match state {
                State::CreatingSandbox => super::states::sandbox::run(&mut self).await,
                State::Initializing => super::states::init::run(&mut self).await,
                State::Running => super::states::running::run(&mut self).await,
                State::Completed => super::states::completed::run(&mut self).await,
                State::Terminating => super::states::terminating::run(&mut self).await,
                State::Rejected => super::states::rejected::run(&mut self).await,
                State::Done => break,
            };
        }
        self.ctx.admission.release(&self.uid);
    }

    pub(super) fn pod_spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        static EMPTY: std::sync::OnceLock<k8s_openapi::api::core::v1::PodSpec> = std::sync::OnceLock::new();
        self.pod
            .spec
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }

    pub(super) fn restart_policy(&self) -> &str {
        self.pod_spec().restart_policy.as_deref().unwrap_or("Always")
    }

    pub(super) fn grace_period(&self) -> Duration {
        Duration::from_secs(self.pod_spec().termination_grace_period_seconds.unwrap_or(30).max(0) as u64)
    }

    pub(super) fn pod_log_dir(&self) -> PathBuf {
        logs::pod_log_dir(
            &self.ctx.runtime.config.log_dir,
            &self.record.namespace,
            &self.record.name,
            &self.uid,
        )
    }

    /// Persist the pod record (before anything it names is created).
    pub(super) fn save_record(&self) {
        let path = self.ctx.runtime.layout.pod_record(&self.uid);
        if let Some(dir) = path.parent()
            && let Err(e) = crate::file_modes::create_dir_all(dir, crate::file_modes::STATE_DIR)
        {
            tracing::error!(pod = %self.obj.name, error = %e, "create {}", dir.display());
        }
        if let Err(e) = crate::atomic_file::write_json(&path, &self.record) {
            tracing::error!(pod = %self.obj.name, error = %e, "write {}", path.display());
        }
    }

    /// Watch the pause: its death means the sandbox must be recreated.
    pub(super) fn watch_sandbox(&self) {
        let Some(state) = self.sandbox else { return };
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            if let Ok(Some(fd)) = state.pause.open() {
                let _ = fd.exited().await;
            }
            let _ = tx.send(Event::SandboxDied { pause: state.pause });
        });
    }

    /// Watch a running attempt until it exits (and its monitor's reports on writing the log).
    pub(super) fn watch_container(&self, files: &ContainerFiles) {
        tokio::spawn(logs::report_notices(
            files.dir.clone(),
            files.record.name.clone(),
            files.record.log_path.clone(),
            self.obj.container(&files.record.name, files.record.init),
            self.ctx.events.clone(),
        ));
        let rt = self.ctx.runtime.clone();
        let tx = self.events_tx.clone();
        let files = files.clone();
        tokio::spawn(async move {
            let exit = rt.wait_container(&files).await;
            let _ = tx.send(Event::Exited {
                id: files.record.id.clone(),
                exit,
            });
        });
    }

    /// Start the container in slot `i` now. Afterwards the slot is running, or knows when to
    /// try again, or has exited at once (StartError) and been handed to the restart logic.
    pub(super) async fn start(&mut self, i: usize) {
        // A dead pause means a new sandbox, not a container start that is bound to fail: the
        // watcher's SandboxDied is on its way and the state will recreate the sandbox.
        let Some(sandbox) = self.sandbox.filter(|s| s.pause.is_alive()) else {
            return;
        };
        let rt = self.ctx.runtime.clone();
        let name = self.slots[i].spec.name.clone();
        let init = self.slots[i].init;
        let cobj = self.obj.container(&name, init);
        let Some(image) = self.ensure_image(i) else {
            return;
        };
        self.ctx.image_gc.mark_used(&image.summary.id);

        let attempt = self.slots[i].attempts();
        let log_path = logs::container_log_path(&self.pod_log_dir(), &name, attempt);
        let inputs = ContainerInputs {
            pod: &self.pod,
            uid: &self.uid,
            plan: &self.plan,
            container: &self.slots[i].spec,
            init,
            attempt,
            image: &image,
            log_path,
        };
        let cfg = match config::container_config(&rt, &self.ctx.node, &inputs) {
            Ok(c) => c,
            Err(msg) => {
                self.config_error(i, "CreateContainerConfigError", msg);
                return;
            }
        };

        // The kubelet keeps one dead attempt per container (for `logs --previous`): the one
        // before it goes now, so there are never more than two.
        self.retire_previous(i);
        match rt.start_container(&cfg, sandbox.pause).await {
            Ok(files) => {
                let slot = &mut self.slots[i];
                slot.previous = slot.current.take();
                slot.waiting = None;
                slot.message.clear();
                slot.next = Next::Idle;
                // It could not start (StartError); or it runs, or ran and already ended.
                let start_error = files.exit.as_ref().filter(|e| e.reason == "StartError");
                if start_error.is_some() && !sandbox.pause.is_alive() {
                    // The pause died while this container was being set up: not the
                    // container's failure. Drop the attempt; the sandbox will be recreated.
                    tracing::info!(pod = %self.obj.name, container = %name, "sandbox died during container start");
                    if let Err(e) = rt.remove_container(&files) {
                        tracing::warn!(pod = %self.obj.name, container = %name, error = %e, "remove container attempt");
                    }
                    crate::runtime::log_rotation::remove_all(&files.record.log_path);
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
                if let Some(exit) = files.exit.clone() {
                    let id = files.record.id.clone();
                    self.slots[i].current = Some(files);
                    self.on_exit(&id, exit);
                } else {
                    self.watch_container(&files);
                    self.slots[i].current = Some(files);
                    self.start_probes(i);
                }
                // Seen at once by the CRI and the CLI, not after the pod's other starts.
                self.publish();
            }
            Err(e) => {
                self.ctx.events.warning(&cobj, "Failed", format!("Error: {e}"));
                self.slots[i].waiting = Some(("CreateContainerError".into(), e.to_string()));
                self.slots[i].next = Next::StartAt(now_nanos() + self.ctx.backoff.initial.as_nanos() as i64);
            }
        }
    }

    fn config_error(&mut self, i: usize, reason: &str, msg: String) {
        let cobj = self.obj.container(&self.slots[i].spec.name, self.slots[i].init);
        self.ctx.events.warning(&cobj, "Failed", format!("Error: {msg}"));
        self.retry_later(i, reason, msg);
    }

    /// Leave slot `i` waiting (`reason`, `msg`) and try again after the initial back-off, as
    /// any other sync would: the cause may be fixed outside the pod (a hostPath, an image).
    pub(super) fn retry_later(&mut self, i: usize, reason: &str, msg: String) {
        self.slots[i].waiting = Some((reason.into(), msg));
        self.slots[i].next = Next::StartAt(now_nanos() + self.ctx.backoff.initial.as_nanos() as i64);
    }

    /// Before a new attempt: the one before the current goes (directory, cgroup, log file).
    fn retire_previous(&mut self, i: usize) {
        if let Some(old) = self.slots[i].previous.take() {
            if let Err(e) = self.ctx.runtime.remove_container(&old) {
                tracing::warn!(pod = %self.obj.name, container = %old.record.name, error = %e, "remove old container attempt");
            }
            crate::runtime::log_rotation::remove_all(&old.record.log_path);
        }
    }

    /// A container attempt exited: record it, clean its cgroup, decide whether it restarts.
    pub(super) fn on_exit(&mut self, id: &str, exit: ContainerExit) {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.current.as_ref().is_some_and(|c| c.record.id == id))
        else {
            return; // an attempt we already replaced
        };
        let rt = self.ctx.runtime.clone();
        let term_path = config::termination_log_path(
            &rt,
            &self.uid,
            &self.slots[i].spec.name,
            self.slots[i].attempts().saturating_sub(1),
        );
        let slot = &mut self.slots[i];
        slot.probes = None;
        let Some(files) = slot.current.as_mut() else { return };
        files.exit = Some(exit.clone());
        // Leftovers of the container (children in a shared PID namespace) die with it.
        let _ = rt.cgroups.kill(&files.record.cgroup);
        if let Err(e) = rt.cgroups.remove(&files.record.cgroup) {
            tracing::warn!(container = %slot.spec.name, error = %e, "remove cgroup of exited container");
        }
        slot.message = termination_message(&term_path, &slot.spec, &files.record.log_path, exit.exit_code);
        tracing::info!(pod = %self.obj.name, container = %slot.spec.name, exit_code = exit.exit_code, reason = %exit.reason, "container exited");

        let policy = if slot.init && self.restart_policy() == "Always" {
            "OnFailure"
        } else {
            self.restart_policy()
        };
        let restart = match policy {
            "Always" => true,
            "OnFailure" => exit.exit_code != 0,
            _ => false,
        };
        if !restart || self.terminating {
            self.slots[i].next = Next::Idle;
            return;
        }
        let name = self.slots[i].spec.name.clone();
        match self.backoff.decide(&name, exit.finished_at, now_nanos()) {
            Decision::RestartNow => self.slots[i].next = Next::Start,
            Decision::Wait { until, backoff } => self.enter_backoff(i, until, backoff),
        }
    }

    /// A running attempt starts its probes; it is started (and ready) at once for what it
    /// has no probe of.
    pub(super) fn start_probes(&mut self, i: usize) {
        let slot = &self.slots[i];
        let Some(files) = slot.current.clone() else { return };
        let has = |k: ProbeKind| k.spec(&slot.spec).is_some();
        let (started, ready) = (!has(ProbeKind::Startup), !has(ProbeKind::Readiness));
        // Init containers have no probes (validation refuses them, sidecars aside).
        let running = if slot.init {
            None
        } else {
            let network = match self.sandbox {
                Some(s) if self.pod_spec().host_network != Some(true) => probes::Network::Pod(s.pause),
                _ => probes::Network::Host,
            };
            let ctx = probes::Context {
                runtime: self.ctx.runtime.clone(),
                files,
                network,
                events: self.ctx.events.clone(),
                object: self.obj.container(&slot.spec.name, slot.init),
            };
            probes::Running::start(&slot.spec, ctx, &self.events_tx)
        };
        let slot = &mut self.slots[i];
        slot.started = started;
        slot.probe_ready = ready;
        slot.probes = running;
    }

    /// A probe's verdict changed: readiness is the container's `ready`; a startup pass
    /// releases the other probes; a liveness or startup failure kills the container, which
    /// the restart policy then restarts (with the usual back-off), as the kubelet does.
    fn on_probe(&mut self, id: &str, kind: ProbeKind, success: bool) {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.running() && s.current.as_ref().is_some_and(|c| c.record.id == id))
        else {
            return; // a probe of an attempt that is gone
        };
        match (kind, success) {
            (ProbeKind::Readiness, ready) => self.slots[i].probe_ready = ready,
            (ProbeKind::Startup, true) => {
                self.slots[i].started = true;
                if let Some(p) = &self.slots[i].probes {
                    p.set_started();
                }
            }
            (ProbeKind::Liveness, true) => {}
            (ProbeKind::Liveness | ProbeKind::Startup, false) => self.kill_unhealthy(i, kind),
        }
    }

    /// Kill a container whose liveness or startup probe failed, with the probe's grace period
    /// (or the pod's). Its exit arrives through the container's watcher, as any other.
    fn kill_unhealthy(&mut self, i: usize, kind: ProbeKind) {
        let slot = &mut self.slots[i];
        let Some(files) = slot.current.clone() else { return };
        let grace = probes::Probe::of(kind, &slot.spec).and_then(|p| p.termination_grace);
        slot.probes = None;
        slot.probe_ready = false;
        let name = slot.spec.name.clone();
        let what = if kind == ProbeKind::Liveness {
            "liveness"
        } else {
            "startup"
        };
        self.ctx.events.normal(
            &self.obj.container(&name, slot.init),
            "Killing",
            format!("Container {name} failed {what} probe, will be restarted"),
        );
        let grace = grace.unwrap_or_else(|| self.grace_period());
        let rt = self.ctx.runtime.clone();
        let signal = stop_signal(&rt, &files);
        tracing::info!(pod = %self.obj.name, container = %name, probe = what, "killing unhealthy container");
        tokio::spawn(async move {
            rt.stop_container(&files, signal, grace).await;
        });
    }

    fn enter_backoff(&mut self, i: usize, until: i64, backoff: Duration) {
        let name = self.slots[i].spec.name.clone();
        let cobj = self.obj.container(&name, self.slots[i].init);
        let pod = format!("{}_{}({})", self.record.name, self.record.namespace, self.uid);
        self.ctx.events.warning(
            &cobj,
            "BackOff",
            format!("Back-off restarting failed container {name} in pod {pod}"),
        );
        self.slots[i].waiting = Some((
            "CrashLoopBackOff".into(),
            format!(
                "back-off {} restarting failed container={name} pod={pod}",
                format_duration(backoff)
            ),
        ));
        self.slots[i].next = Next::StartAt(until);
    }

    /// Re-evaluate a slot whose back-off deadline passed: it may still be in back-off when the
    /// deadline was set by a retry rather than by the back-off itself.
    pub(super) fn due(&self, i: usize, now: i64) -> bool {
        match self.slots[i].next {
            Next::Start => true,
            Next::StartAt(t) => now >= t,
            Next::WaitImage | Next::Pulling | Next::Idle => false,
        }
    }

    /// When the earliest timed retry is due.
    pub(super) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let now = now_nanos();
        self.slots
            .iter()
            .filter_map(|s| if let Next::StartAt(t) = s.next { Some(t) } else { None })
            .min()
            .map(|t| tokio::time::Instant::now() + Duration::from_nanos((t - now).max(0) as u64))
    }

    /// Image store changed: slots waiting for an image try again.
    pub(super) fn retry_images(&mut self) {
        for s in &mut self.slots {
            if s.next == Next::WaitImage {
                s.next = Next::Start;
            }
        }
    }

    /// Stop every running container (in parallel, with the pod's grace period) and wait for
    /// their exits to be recorded.
    pub(super) async fn stop_all(&mut self, grace: Duration) {
        let mut set = tokio::task::JoinSet::new();
        for s in &self.slots {
            let Some(files) = s.current.clone().filter(|_| s.running()) else {
                continue;
            };
            self.ctx.events.normal(
                &self.obj.container(&s.spec.name, s.init),
                "Killing",
                format!("Stopping container {}", s.spec.name),
            );
            let rt = self.ctx.runtime.clone();
            let signal = stop_signal(&rt, &files);
            set.spawn(async move {
                let exit = rt.stop_container(&files, signal, grace).await;
                (files.record.id.clone(), exit)
            });
        }
        while let Some(done) = set.join_next().await {
            if let Ok((id, exit)) = done {
                self.on_exit(&id, exit);
            }
        }
    }

    /// Publish the current status to the registry.
    pub(super) fn publish(&self) {
        let statuses: Vec<ContainerStatus> = self.slots.iter().map(|s| self.container_status(s)).collect();
        let (init, app): (Vec<_>, Vec<_>) = statuses.into_iter().partition(|s| s.init);
        let spec = self.pod_spec();
        let mut attempts: Vec<Attempt> = Vec::new();
        for s in &self.slots {
            if let Some(f) = &s.previous {
                attempts.push(Attempt {
                    files: f.clone(),
                    init: s.init,
                    message: String::new(),
                });
            }
            if let Some(f) = &s.current {
                attempts.push(Attempt {
                    files: f.clone(),
                    init: s.init,
                    message: s.message.clone(),
                });
            }
        }
        attempts.sort_by_key(|a| a.files.record.created_at);
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
            },
            attempts,
        });
    }

    /// The waiting reason of a container not yet created, as the kubelet words it: in a pod
    /// with init containers `PodInitializing` (kubectl shows that once the init containers
    /// are done, and skips it for init containers), otherwise `ContainerCreating`.
    pub(super) fn default_waiting(&self) -> &'static str {
        if self.slots.iter().any(|o| o.init) {
            "PodInitializing"
        } else {
            "ContainerCreating"
        }
    }

    fn container_status(&self, s: &Slot) -> ContainerStatus {
        let terminated = |f: &ContainerFiles, message: &str| {
            f.exit.as_ref().map(|e| Terminated {
                exit_code: e.exit_code,
                signal: e.signal,
                reason: e.reason.clone(),
                message: if e.message.is_empty() {
                    message.to_string()
                } else {
                    e.message.clone()
                },
                started_at: f.state.map_or(0, |st| st.started_at),
                finished_at: e.finished_at,
                container_id: f.record.id.clone(),
            })
        };
        let current_term = s.current.as_ref().and_then(|f| terminated(f, &s.message));
        let (state, last_state) = match (&s.waiting, s.running(), current_term) {
            (_, true, _) => (
                ContainerState::Running {
                    started_at: s.current.as_ref().and_then(|f| f.state).map_or(0, |st| st.started_at),
                },
                s.previous.as_ref().and_then(|f| terminated(f, "")),
            ),
            (Some((reason, message)), false, last) => (
                ContainerState::Waiting {
                    reason: reason.clone(),
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
                    reason: self.default_waiting().into(),
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
            image_id: s
                .current
                .as_ref()
                .map(|f| f.record.image_id.clone())
                .unwrap_or_default(),
            container_id: s.current.as_ref().map(|f| f.record.id.clone()),
            state,
            last_state,
            restart_count: s.current.as_ref().map_or(0, |f| f.record.attempt),
            started: running && s.started,
            ready: running && !s.init && s.started && s.probe_ready,
        }
    }

    /// The pod is done for good: (Succeeded|Failed) by Kubernetes' rules, if so.
    pub(super) fn terminal_phase(&self) -> Option<Phase> {
        if let Some(failed_init) = self.slots.iter().find(|s| s.init && s.done() && !s.succeeded()) {
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

    /// Handle a message from a watcher. Returns true if the sandbox died.
    pub(super) fn handle_event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Exited { id, exit } => {
                self.on_exit(&id, exit);
                // Containers in the pod's PID namespace die with its pause, often before the
                // pause's own death is reported: handle the cause now, so that nothing is
                // started into the dead sandbox first.
                self.sandbox.is_some_and(|s| !s.pause.is_alive())
            }
            Event::SandboxDied { pause } => self.sandbox.is_some_and(|s| s.pause == pause),
            Event::Pulled {
                container,
                image,
                result,
                elapsed,
            } => {
                self.on_pulled(&container, &image, result, elapsed);
                false
            }
            Event::Probe { id, kind, success } => {
                self.on_probe(&id, kind, success);
                false
            }
        }
    }
}

/// What a container says about its end: the termination message file (up to 4 KiB), or,
/// with `FallbackToLogsOnError` and a failure, the tail of its log (80 lines, 2 KiB).
fn termination_message(file: &std::path::Path, spec: &Container, log: &std::path::Path, exit_code: i32) -> String {
    let mut msg = std::fs::read(file)
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
        .unwrap_or_default();
    if msg.is_empty() && exit_code != 0 && spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError") {
        let content = std::fs::read(log).unwrap_or_default();
        let lines: Vec<String> = content
            .split(|&b| b == b'\n')
            .filter_map(logs::parse)
            .map(|r| String::from_utf8_lossy(&r.content).into_owned())
            .collect();
        let tail = lines[lines.len().saturating_sub(80)..].join("\n");
        msg = tail
            .chars()
            .rev()
            .take(2048)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
    }
    msg
}

/// The image's STOPSIGNAL, or SIGTERM.
fn stop_signal(rt: &crate::runtime::Runtime, files: &ContainerFiles) -> Signal {
    let name = rt
        .images
        .get(&files.record.image_id)
        .ok()
        .flatten()
        .and_then(|img| img.config.stop_signal);
    name.and_then(|n| parse_signal(&n)).unwrap_or(Signal::SIGTERM)
}

/// `SIGQUIT`, `QUIT` or `3`.
pub fn parse_signal(name: &str) -> Option<Signal> {
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

/// Go's duration format, as the kubelet's messages print it: `300ms`, `1.2s`, `10s`, `2m40s`.
fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let trim = |millis: u128| {
        let s = format!("{}.{:03}", millis / 1000, millis % 1000);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if ms < 60_000 {
        format!("{}s", trim(ms))
    } else {
        format!("{}m{}s", ms / 60_000, trim(ms % 60_000))
    }
}

impl Worker {
    /// Take over a pod found in the state directory (after an agent restart): running
    /// containers keep running and are watched again; exited ones are handled by the restart
    /// policy; an attempt whose creation was interrupted is discarded. Returns the state to
    /// continue in.
    pub(super) async fn adopt(
        ctx: Arc<Context>,
        record: PodRecord,
        sandbox: Option<SandboxState>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> (Self, State) {
        let mut w = Worker::new(ctx, record, commands, None);
        let rt = w.ctx.runtime.clone();
        let mut attempts = crate::runtime::state::load_containers(&rt.layout, &w.uid);
        // Interrupted creations: no process was ever recorded; nothing of them may stay.
        attempts.retain(|f| {
            let keep = f.state.is_some() || f.exit.is_some();
            if !keep {
                let _ = rt.cgroups.kill(&f.record.cgroup);
                let _ = rt.remove_container(f);
            }
            keep
        });
        for i in 0..w.slots.len() {
            let name = w.slots[i].spec.name.clone();
            let mut mine: Vec<ContainerFiles> = attempts.iter().filter(|f| f.record.name == name).cloned().collect();
            mine.sort_by_key(|f| f.record.attempt);
            let current = mine.pop();
            let previous = mine.pop();
            for old in mine {
                let _ = rt.remove_container(&old);
                crate::runtime::log_rotation::remove_all(&old.record.log_path);
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
                        w.on_exit(&id, exit);
                    }
                }
            }
        }

        w.sandbox = sandbox.filter(|s| s.pause.is_alive());
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
            w.watch_sandbox();
            State::Initializing
        } else {
            // The pause is gone (killed while no agent ran): same as dying under our eyes.
            super::states::sandbox_died(&mut w).await
        };
        (w, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_durations() {
        assert_eq!(parse_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("quit"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(160)), "2m40s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_duration(Duration::from_millis(1200)), "1.2s");
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
    }
}
