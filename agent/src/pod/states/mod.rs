//! The pod lifecycle as explicit states, one per file (krustlet's shape):
//!
//! ```text
//! CreatingSandbox ─▶ Initializing ─▶ Running ─▶ Completed
//!        ▲                │             │           │
//!        └── pause died ──┴─────────────┘           │
//!  any state ── terminate ──▶ Terminating ◀─────────┘ ──▶ Done
//!
//! CreatingSandbox ─ not admitted ─▶ Rejected ── terminate ──▶ Done
//! ```
//!
//! Each state runs until something moves the pod on and returns the next state.

pub mod completed;
pub mod init;
pub mod rejected;
pub mod running;
pub mod sandbox;
pub mod terminating;

use super::worker::Worker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Create the pod's directory, cgroup, files and pause.
    CreatingSandbox,
    /// Run init containers, one after the other, to completion.
    Initializing,
    /// Keep the app containers running per the restart policy.
    Running,
    /// Succeeded or Failed: nothing will run again; the pause is stopped, records and logs stay.
    Completed,
    /// Stop everything and remove every trace of the pod.
    Terminating,
    /// Refused at admission: Failed with the reason, nothing was created.
    Rejected,
    Done,
}

/// What happened while a state was waiting.
pub(super) enum Wake {
    Terminate,
    SandboxDied,
    /// A container exited, a deadline passed or images changed: look again.
    Again,
}

/// Wait for the next thing that concerns a running pod.
pub(super) async fn wait(w: &mut Worker) -> Wake {
    if w.commands.terminate_requested() {
        return Wake::Terminate;
    }
    // Boxed, as the event handling below: what runs now and then is not kept in the
    // future of every waiting pod.
    if Box::pin(w.enforce_pod_limits()).await {
        return Wake::Again;
    }
    let deadline = w.next_deadline().into_iter().chain(w.next_limit_check()).min();
    let sleep = async {
        match deadline {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = w.commands.terminated() => Wake::Terminate,
        Some(ev) = w.events.recv() => if Box::pin(w.handle_event(ev)).await { Wake::SandboxDied } else { Wake::Again },
        _ = sleep => Wake::Again,
        changed = w.images_changed.changed() => {
            if changed.is_ok() {
                w.retry_images();
            }
            Wake::Again
        }
    }
}

/// The pause died: kill the containers (they lost their sandbox) and make a new one, as the
/// kubelet does ("Pod sandbox changed, it will be killed and re-created").
pub(super) async fn sandbox_died(w: &mut Worker) -> State {
    w.ctx.events.normal(
        &w.obj,
        "SandboxChanged",
        "Pod sandbox changed, it will be killed and re-created.",
    );
    let grace = w.grace_period();
    // No preStop hooks: the namespaces they would run in went with the pause.
    w.stop_all(grace, false).await;
    // StopPodSandbox: the hostPorts are free and the old address released before the new
    // sandbox. The old one stays while it holds the containers' last attempts.
    w.stop_sandbox().await;
    if let Some(phase) = w.terminal_phase() {
        w.phase = phase;
        return State::Completed;
    }
    w.retire_sandbox().await;
    // A new sandbox runs the init containers again.
    for s in w.slots.iter_mut().filter(|s| s.init) {
        s.next = super::worker::Next::Start;
    }
    w.record.sandbox_attempt += 1;
    State::CreatingSandbox
}
