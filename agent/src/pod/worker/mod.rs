//! One task per pod: it owns the pod's sandbox and containers and drives them through the
//! lifecycle states in [`super::states`]. Everything else only talks to it through messages
//! (a terminate command; container exits and sandbox death from the runtime's events, routed
//! by [`super::pleg`]; probes and image pulls from its own tasks), so a pod's state has
//! exactly one writer.
//!
//! This file holds the worker, its slots and its run loop; the rest is split by job:
//! the pod's sandbox ([`sandbox`]), starting an attempt ([`start`]), deciding on restarts when
//! one ends ([`restart`]), removing what the pod no longer needs ([`retire`]), stopping
//! ([`stopping`]), probes ([`probing`]), the status the worker publishes ([`projection`]) and
//! taking over a pod after an agent restart ([`adopt`]).

mod adopt;
mod enforcement;
mod probing;
mod projection;
mod restart;
mod retire;
mod sandbox;
mod start;
mod stopping;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::{mpsc, watch};

use super::Context;
use super::backoff::Backoff;
use super::config::PodPlan;
use super::probes::{self, ProbeKind};
use super::restart_policy::RestartPolicy;
use super::states::State;
use super::status::{Phase, WaitingReason};
use crate::events::ObjectRef;
use crate::pod::attempt::AttemptStatus;
use crate::runtime::logs;
use crate::runtime::spec::{ContainerExit, SandboxState};
use crate::runtime::state::PodRecord;

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

/// What the worker hears: the runtime's events ([`super::pleg`]) and its own tasks' reports.
#[derive(Debug)]
pub(super) enum Event {
    Exited {
        id: String,
        exit: ContainerExit,
    },
    /// The runtime says sandbox `sandbox` stopped (its pause died, or it was stopped).
    SandboxDied {
        sandbox: String,
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
    pub current: Option<AttemptStatus>,
    /// The one before: kept for `logs --previous`, as the kubelet keeps one dead container.
    pub previous: Option<AttemptStatus>,
    pub next: Next,
    /// Why the container is not running, when it is waiting.
    pub waiting: Option<(WaitingReason, String)>,
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

    /// A native sidecar: an init container with `restartPolicy: Always`. It starts in the
    /// init sequence, keeps running (restarted whatever the pod's policy) beside the app
    /// containers and stops after them.
    pub fn sidecar(&self) -> bool {
        self.init && self.spec.restart_policy.as_deref() == Some("Always")
    }

    /// Whether the init sequence may go past this init container: a regular one has
    /// succeeded; a sidecar runs and has started (its startup probe, if any, passed).
    pub fn init_satisfied(&self) -> bool {
        if self.sidecar() {
            self.running() && self.started
        } else {
            self.succeeded()
        }
    }

    pub fn running(&self) -> bool {
        self.current.as_ref().is_some_and(AttemptStatus::running)
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

    pub(in crate::pod) fn attempts(&self) -> u32 {
        self.current.as_ref().map_or(0, |c| c.attempt + 1)
    }
}

pub struct Worker {
    pub(super) ctx: Arc<Context>,
    pub(super) pod: Arc<Pod>,
    pub(super) uid: String,
    pub(super) manifest: PathBuf,
    pub(super) plan: PodPlan,
    pub(super) restart_policy: RestartPolicy,
    pub(super) obj: ObjectRef,
    pub(super) record: PodRecord,
    pub(super) sandbox: Option<SandboxState>,
    /// The pod's addresses from its network (CNI ADD); empty without one.
    pub(super) pod_ips: Vec<std::net::IpAddr>,
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
    /// When emptyDir usage was last measured (once per `--housekeeping-interval`, however
    /// often the worker wakes).
    pub(super) usage_checked_at: Option<tokio::time::Instant>,
    /// The pod's container exits come to `events` while this is kept.
    _exits: super::pleg::Registration,
}

impl Worker {
    pub(super) fn new(
        ctx: Arc<Context>,
        record: PodRecord,
        commands: mpsc::UnboundedReceiver<Command>,
        after: Option<watch::Receiver<bool>>,
    ) -> Self {
        let pod = record.pod.clone();
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
        let exits = ctx.pleg.register(&uid, events_tx.clone());
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
            restart_policy: RestartPolicy::of(&spec),
            record,
            sandbox: None,
            pod_ips: Vec::new(),
            slots,
            phase: Phase::Pending,
            terminating: false,
            events_tx,
            events,
            commands: Orders::new(commands),
            images_changed,
            after,
            rejection: None,
            usage_checked_at: None,
            _exits: exits,
        }
    }

    /// Drive the pod until it is removed.
    pub async fn run(mut self, initial: State) {
        let mut state = initial;
        // Each state's future is boxed: the task then holds the worker and the state it is
        // in, not room for the largest state (a pod start) for as long as the pod lives.
        loop {
            tracing::debug!(pod = %self.obj.name, ?state, "pod state");
            state = match state {
                State::CreatingSandbox => Box::pin(super::states::sandbox::run(&mut self)).await,
                State::Initializing => Box::pin(super::states::init::run(&mut self)).await,
                State::Running => Box::pin(super::states::running::run(&mut self)).await,
                State::Completed => Box::pin(super::states::completed::run(&mut self)).await,
                State::Terminating => Box::pin(super::states::terminating::run(&mut self)).await,
                State::Rejected => Box::pin(super::states::rejected::run(&mut self)).await,
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

    /// Whether `name` is one of the pod's init containers: the pod's own knowledge (names
    /// are unique across both lists), which the runtime does not keep (a CRI client cannot
    /// create "init" containers).
    pub(super) fn is_init(&self, name: &str) -> bool {
        self.slots.iter().any(|s| s.init && s.spec.name == name)
    }

    /// Report a running attempt's monitor's notices on writing the log, as events. Its exit
    /// comes from the runtime's container events ([`super::pleg`]).
    pub(super) fn watch_log_notices(&self, attempt: &AttemptStatus) {
        tokio::spawn(logs::report_notices(
            attempt.dir.clone(),
            attempt.name.clone(),
            attempt.log_path.clone(),
            self.obj.container(&attempt.name, self.is_init(&attempt.name)),
            self.ctx.events.clone(),
        ));
    }

    /// Handle a message from a watcher. Returns true if the sandbox died.
    pub(super) async fn handle_event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Exited { id, exit } => {
                self.on_exit(&id, exit).await;
                // Containers in the pod's PID namespace die with its pause, often before the
                // pause's own death is reported: handle the cause now, so that nothing is
                // started into the dead sandbox first.
                self.sandbox.is_some_and(|s| !s.pause.is_alive())
            }
            // Only the current sandbox while it is the pod's: one the worker stopped itself,
            // or replaced, is no news.
            Event::SandboxDied { sandbox } => self.sandbox.is_some() && self.record.sandbox_id == sandbox,
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
