//! Running: app containers are started and restarted per the restart policy, with back-off;
//! sidecars are restarted beside them whatever the policy.

use super::{State, Wake, sandbox_died, wait};
use crate::pod::status::Phase;
use crate::pod::worker::Worker;
use crate::runtime::spec::now_nanos;

pub async fn run(w: &mut Worker) -> State {
    loop {
        if w.record.failure.is_some() {
            w.phase = Phase::Failed;
            return State::Completed;
        }
        let now = now_nanos();
        // A container that exited before its start returned (its exit already recorded) may
        // be due again at once, a restart without back-off: its exit event will not come,
        // so look again instead of waiting. Only after an attempt was made, so a start that
        // made none (a dead pause: SandboxDied is on its way) waits for that event.
        let mut again = false;
        for i in 0..w.slots.len() {
            let keeps_running = !w.slots[i].init || w.slots[i].sidecar();
            if keeps_running && !w.slots[i].running() && w.due(i, now) {
                if w.commands.terminate_requested() {
                    return State::Terminating;
                }
                let before = w.slots[i].attempts();
                // Boxed: a waiting pod's future need not hold room for a start.
                Box::pin(w.start(i)).await;
                again |= w.slots[i].attempts() != before && !w.slots[i].running() && w.due(i, now_nanos());
            }
        }
        if let Some(phase) = w.terminal_phase() {
            w.phase = phase;
            return State::Completed;
        }
        // Pending until every app container has been started at least once.
        let all_started = w.slots.iter().filter(|s| !s.init).all(|s| s.current.is_some());
        w.phase = if all_started { Phase::Running } else { Phase::Pending };
        w.publish();
        if again {
            continue;
        }
        match wait(w).await {
            Wake::Terminate => return State::Terminating,
            Wake::SandboxDied => return Box::pin(sandbox_died(w)).await,
            Wake::Again => {}
        }
    }
}
