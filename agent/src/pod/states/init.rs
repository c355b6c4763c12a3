//! Initializing: init containers run one at a time, in order, each to success; a sidecar
//! (`restartPolicy: Always`) lets the next one start once it runs and has started (startup
//! probe passed), and is restarted if it dies before the sequence is through.

use super::{State, Wake, sandbox_died, wait};
use crate::pod::status::Phase;
use crate::pod::worker::Worker;
use crate::runtime::spec::now_nanos;

pub async fn run(w: &mut Worker) -> State {
    loop {
        if let Some(phase) = w.terminal_phase() {
            w.phase = phase;
            return State::Completed;
        }
        let Some(i) = w.slots.iter().position(|s| s.init && !s.init_satisfied()) else {
            return State::Running;
        };
        if !w.slots[i].running() && w.due(i, now_nanos()) {
            if w.commands.terminate_requested() {
                return State::Terminating;
            }
            let before = w.slots[i].attempts();
            // Boxed: a waiting pod's future need not hold room for a start.
            Box::pin(w.start(i)).await;
            // Look again at once, unless no attempt was made (a dead pause: only waiting
            // lets its SandboxDied in).
            if w.slots[i].attempts() != before {
                continue;
            }
        }
        w.phase = Phase::Pending;
        w.publish();
        match wait(w).await {
            Wake::Terminate => return State::Terminating,
            Wake::SandboxDied => return Box::pin(sandbox_died(w)).await,
            Wake::Again => {}
        }
    }
}
