//! What happens when a container attempt ends: the restart policy decides whether it runs
//! again, the back-off when; and the termination message it leaves.

use std::time::Duration;

use super::{Next, Worker};
use crate::pod::backoff::Decision;
use crate::pod::config;
use crate::pod::status::{Phase, WaitingReason};
use crate::runtime::logs;
use crate::runtime::spec::{ContainerExit, now_nanos};

impl Worker {
    /// A container attempt exited: record it, read its termination message, decide whether it
    /// restarts. (The runtime has removed its cgroup, and what was left in it.)
    /// Each attempt's exit is handled once: the runtime's event, a stop's result and a relist
    /// may all tell of it.
    pub(in crate::pod) async fn on_exit(&mut self, id: &str, exit: ContainerExit) {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.current.as_ref().is_some_and(|c| c.id == id && c.exit.is_none()))
        else {
            return; // an attempt we already replaced, or whose exit is handled
        };
        let rt = self.ctx.runtime.clone();
        let term_path = config::termination_log_path(
            &rt.layout,
            &self.uid,
            &self.slots[i].spec.name,
            self.slots[i].attempts().saturating_sub(1),
        );
        let slot = &mut self.slots[i];
        slot.probes = None;
        let Some(attempt) = slot.current.as_mut() else { return };
        attempt.exit = Some(exit.clone());
        let log = attempt.log_path.clone();
        let fallback = slot.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let exit_code = exit.exit_code;
        let message = crate::runtime::blocking("read the termination message", move || {
            Ok(termination_message(&term_path, fallback, &log, exit_code))
        })
        .await
        .unwrap_or_default();
        let slot = &mut self.slots[i];
        slot.message = message;
        tracing::info!(pod = %self.obj.name, container = %slot.spec.name, exit_code = exit.exit_code, reason = %exit.reason, "container exited");

        // Sidecars restart whatever the pod's policy, until the pod is done or going.
        let restarts = slot.sidecar() || self.restart_policy.restarts(slot.init, exit.exit_code);
        let pod_over = matches!(self.phase, Phase::Succeeded | Phase::Failed);
        if !restarts || self.terminating || pod_over {
            self.slots[i].next = Next::Idle;
            return;
        }
        let name = self.slots[i].spec.name.clone();
        match self.backoff.decide(&name, exit.finished_at, now_nanos()) {
            Decision::RestartNow => self.slots[i].next = Next::Start,
            Decision::Wait { until, backoff } => self.enter_backoff(i, until, backoff),
        }
    }

    fn enter_backoff(&mut self, i: usize, until: i64, backoff: Duration) {
        let name = self.slots[i].spec.name.clone();
        let cobj = self.obj.container(&name, self.slots[i].init);
        let pod = self.kubelet_pod();
        self.ctx.events.warning(
            &cobj,
            "BackOff",
            format!("Back-off restarting failed container {name} in pod {pod}"),
        );
        self.slots[i].waiting = Some((
            WaitingReason::CrashLoopBackOff,
            format!(
                "back-off {} restarting failed container={name} pod={pod}",
                format_duration(backoff)
            ),
        ));
        self.slots[i].next = Next::StartAt(until);
    }

    /// Re-evaluate a slot whose back-off deadline passed: it may still be in back-off when the
    /// deadline was set by a retry rather than by the back-off itself.
    pub(in crate::pod) fn due(&self, i: usize, now: i64) -> bool {
        match self.slots[i].next {
            Next::Start => true,
            Next::StartAt(t) => now >= t,
            Next::WaitImage | Next::Pulling | Next::Idle => false,
        }
    }

    /// When the earliest timed retry is due.
    pub(in crate::pod) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let now = now_nanos();
        self.slots
            .iter()
            .filter_map(|s| if let Next::StartAt(t) = s.next { Some(t) } else { None })
            .min()
            .map(|t| tokio::time::Instant::now() + Duration::from_nanos((t - now).max(0) as u64))
    }

    /// Image store changed: slots waiting for an image try again.
    pub(in crate::pod) fn retry_images(&mut self) {
        for s in &mut self.slots {
            if s.next == Next::WaitImage {
                s.next = Next::Start;
            }
        }
    }
}

/// What a container says about its end: the termination message file (up to 4 KiB), or,
/// with `FallbackToLogsOnError` and a failure, the tail of its log (80 lines, 2 KiB).
fn termination_message(
    file: &std::path::Path,
    fallback_to_logs: bool,
    log: &std::path::Path,
    exit_code: i32,
) -> String {
    let mut msg = std::fs::read(file)
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
        .unwrap_or_default();
    if msg.is_empty() && exit_code != 0 && fallback_to_logs {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(160)), "2m40s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_duration(Duration::from_millis(1200)), "1.2s");
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
    }
}
