//! The cells kubectl computes for its tables: human durations, `kubectl top` quantities, and
//! the READY / STATUS / RESTARTS / AGE columns of a pod (kubectl's `printPod`).

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// kubectl's `duration.HumanDuration`: two or three significant figures, coarser as the
/// duration grows (`45s`, `3m2s`, `10m`, `5h`, `2d3h`, `12d`, `3y45d`).
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    // Up to a second into the future is clock skew, "now"; more is invalid.
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{h}h", hours / 24);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{dy}d", hours / 24 / 365);
    }
    format!("{}y", hours / 24 / 365)
}

/// kubectl's `translateTimestampSince`: `<unknown>` for a missing time.
pub fn since(now: Timestamp, t: Option<&Time>) -> String {
    match t {
        Some(t) => human_duration(now.duration_since(t.0)),
        None => "<unknown>".into(),
    }
}

/// CPU as `kubectl top` prints it: millicores, rounded up as `Quantity.MilliValue` does.
pub fn cpu_millis(nano_cores: u64) -> String {
    format!("{}m", nano_cores.div_ceil(1_000_000))
}

/// Memory as `kubectl top` prints it: whole MiB, rounded down.
pub fn memory_mib(bytes: u64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

/// `True`/`False`, as kubectl's `printBool`.
pub fn bool_word(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// The cells of one `get pods` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRow {
    pub namespace: String,
    pub name: String,
    pub ready: String,
    pub status: String,
    pub restarts: String,
    pub age: String,
    pub ip: String,
    pub node: String,
    pub nominated_node: String,
    pub readiness_gates: String,
}

fn is_restartable_init(c: Option<&Container>) -> bool {
    c.and_then(|c| c.restart_policy.as_deref()) == Some("Always")
}

fn condition_true(conditions: &[PodCondition], kind: &str) -> bool {
    conditions.iter().any(|c| c.type_ == kind && c.status == "True")
}

/// The Initialized condition decides only if it is the first of its type, as kubectl checks it.
fn initialized(conditions: &[PodCondition]) -> bool {
    conditions
        .iter()
        .find(|c| c.type_ == "Initialized")
        .is_some_and(|c| c.status == "True")
}

fn later(a: Option<Timestamp>, b: Option<&Time>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b.0)),
        (None, Some(b)) => Some(b.0),
        (a, None) => a,
    }
}

/// kubectl's `printPod`, line by line: the STATUS precedence (init containers first, then
/// app containers from the last to the first, then Terminating) is part of the contract users
/// read, so it is not simplified.
pub fn pod_row(pod: &Pod, now: Timestamp) -> PodRow {
    let empty_spec = Default::default();
    let empty_status = Default::default();
    let spec: &k8s_openapi::api::core::v1::PodSpec = pod.spec.as_ref().unwrap_or(&empty_spec);
    let status: &k8s_openapi::api::core::v1::PodStatus = pod.status.as_ref().unwrap_or(&empty_status);
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();

    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    let mut total = spec.containers.len();
    let mut ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;

    let phase = status.phase.clone().unwrap_or_default();
    let mut reason = phase.clone();
    if let Some(r) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        reason = r.to_string();
    }
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".into();
    }

    let init_spec = |name: &str| init_specs.iter().find(|c| c.name == name);
    total += init_specs.iter().filter(|c| is_restartable_init(Some(c))).count();

    let mut initializing = false;
    let init_statuses = status.init_container_statuses.as_deref().unwrap_or_default();
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += i64::from(c.restart_count);
        let last_finished = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.finished_at.as_ref());
        if let Some(finished) = last_finished {
            last_restart = later(last_restart, finished);
        }
        let restartable = is_restartable_init(init_spec(&c.name));
        if restartable {
            restartable_init_restarts += i64::from(c.restart_count);
            if let Some(finished) = last_finished {
                last_restartable_init_restart = later(last_restartable_init_restart, finished);
            }
        }
        let state = c.state.clone().unwrap_or_default();
        match (&state.terminated, &state.waiting) {
            (Some(t), _) if t.exit_code == 0 => continue,
            _ if restartable && c.started == Some(true) => {
                if c.ready {
                    ready += 1;
                }
                continue;
            }
            (Some(t), _) => {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => format!("Init:{r}"),
                    None if t.signal.unwrap_or(0) != 0 => format!("Init:Signal:{}", t.signal.unwrap_or(0)),
                    None => format!("Init:ExitCode:{}", t.exit_code),
                };
                initializing = true;
            }
            (None, Some(w))
                if w.reason
                    .as_deref()
                    .is_some_and(|r| !r.is_empty() && r != "PodInitializing") =>
            {
                reason = format!("Init:{}", w.reason.as_deref().unwrap_or_default());
                initializing = true;
            }
            _ => {
                reason = format!("Init:{i}/{}", init_specs.len());
                initializing = true;
            }
        }
        break;
    }

    if !initializing || initialized(conditions) {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for c in status.container_statuses.iter().flatten().rev() {
            restarts += i64::from(c.restart_count);
            if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                last_restart = later(last_restart, t.finished_at.as_ref());
            }
            let state = c.state.clone().unwrap_or_default();
            let waiting_reason = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .unwrap_or_default();
            if !waiting_reason.is_empty() {
                reason = waiting_reason;
            } else if let Some(t) = &state.terminated {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_string(),
                    None if t.signal.unwrap_or(0) != 0 => format!("Signal:{}", t.signal.unwrap_or(0)),
                    None => format!("ExitCode:{}", t.exit_code),
                };
            } else if c.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // Some containers completed, one still runs: say Running (or NotReady), not Completed.
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    if pod.metadata.deletion_timestamp.is_some() && status.reason.as_deref() == Some("NodeLost") {
        reason = "Unknown".into();
    } else if pod.metadata.deletion_timestamp.is_some() && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now.duration_since(t))),
        _ => restarts.to_string(),
    };

    let or_none = |s: Option<&str>| s.filter(|s| !s.is_empty()).unwrap_or("<none>").to_string();
    let ip = or_none(
        status
            .pod_ips
            .as_ref()
            .and_then(|ips| ips.first())
            .map(|ip| ip.ip.as_str()),
    );
    let readiness_gates = match spec.readiness_gates.as_deref() {
        Some(gates) if !gates.is_empty() => {
            let ok = gates
                .iter()
                .filter(|g| {
                    conditions
                        .iter()
                        .find(|c| c.type_ == g.condition_type)
                        .is_some_and(|c| c.status == "True")
                })
                .count();
            format!("{ok}/{}", gates.len())
        }
        _ => "<none>".into(),
    };

    PodRow {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts,
        age: since(now, pod.metadata.creation_timestamp.as_ref()),
        ip,
        node: or_none(spec.node_name.as_deref()),
        nominated_node: or_none(status.nominated_node_name.as_deref()),
        readiness_gates,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    /// A pod from YAML; times in it are relative to [`now`].
    pub(crate) fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn human_durations_match_kubectl() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (1, "1s"),
            (45, "45s"),
            (70, "70s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (190, "3m10s"),
            (600, "10m"),
            (70 * 60, "70m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 30 * 60, "3h30m"),
            (5 * 3600, "5h"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (49 * 3600, "2d1h"),
            (51 * 3600, "2d3h"),
            ((8 * 24 + 2) * 3600, "8d"),
            (12 * 24 * 3600, "12d"),
            (367 * 24 * 3600, "367d"),
            ((365 * 2 * 24 + 25) * 3600, "2y1d"),
            ((365 * 3 + 45) * 24 * 3600, "3y45d"),
            ((365 * 8 * 24 + 2) * 3600, "8y"),
        ];
        for &(secs, want) in cases {
            assert_eq!(human_duration(SignedDuration::from_secs(secs)), want, "{secs}s");
        }
        // Fractions of a second are dropped toward zero.
        assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
        assert_eq!(human_duration(SignedDuration::from_millis(1999)), "1s");
        assert_eq!(since(now(), None), "<unknown>");
    }

    #[test]
    fn top_quantities() {
        assert_eq!(cpu_millis(0), "0m");
        assert_eq!(cpu_millis(1), "1m");
        assert_eq!(cpu_millis(12_000_000), "12m");
        assert_eq!(cpu_millis(12_000_001), "13m");
        assert_eq!(memory_mib(5 * 1024 * 1024 + 4000), "5Mi");
        assert_eq!(memory_mib(1024 * 1024 - 1), "0Mi");
    }

    const META: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default, creationTimestamp: \"2024-05-01T11:55:00Z\"}\n";

    fn status_of(rest: &str) -> String {
        pod_row(&pod(&format!("{META}{rest}")), now()).status
    }

    #[test]
    fn status_column_matrix() {
        let two = "spec: {containers: [{name: a}, {name: b}]}\n";
        let one = "spec: {containers: [{name: a}]}\n";
        let cases: &[(String, &str)] = &[
            (
                format!(
                    "{one}status: {{phase: Pending, containerStatuses: [{{name: a, ready: false, restartCount: 0, image: i, imageID: '', state: {{waiting: {{reason: ContainerCreating}}}}}}]}}"
                ),
                "ContainerCreating",
            ),
            (format!("{one}status: {{phase: Pending}}"), "Pending"),
            (
                format!(
                    "{one}status: {{phase: Running, containerStatuses: [{{name: a, ready: true, restartCount: 0, image: i, imageID: '', state: {{running: {{startedAt: '2024-05-01T11:56:00Z'}}}}}}]}}"
                ),
                "Running",
            ),
            (
                format!(
                    "{one}status: {{phase: Running, containerStatuses: [{{name: a, ready: false, restartCount: 4, image: i, imageID: '', state: {{waiting: {{reason: CrashLoopBackOff}}}}}}]}}"
                ),
                "CrashLoopBackOff",
            ),
            (
                format!(
                    "{one}status: {{phase: Succeeded, containerStatuses: [{{name: a, ready: false, restartCount: 0, image: i, imageID: '', state: {{terminated: {{exitCode: 0, reason: Completed}}}}}}]}}"
                ),
                "Completed",
            ),
            (
                format!(
                    "{one}status: {{phase: Failed, containerStatuses: [{{name: a, ready: false, restartCount: 0, image: i, imageID: '', state: {{terminated: {{exitCode: 1, reason: Error}}}}}}]}}"
                ),
                "Error",
            ),
            (
                format!(
                    "{one}status: {{phase: Running, containerStatuses: [{{name: a, ready: false, restartCount: 1, image: i, imageID: '', state: {{terminated: {{exitCode: 137, reason: OOMKilled}}}}}}]}}"
                ),
                "OOMKilled",
            ),
            (
                format!(
                    "{one}status: {{phase: Running, containerStatuses: [{{name: a, ready: false, restartCount: 0, image: i, imageID: '', state: {{terminated: {{exitCode: 137, signal: 9}}}}}}]}}"
                ),
                "Signal:9",
            ),
            (
                format!(
                    "{one}status: {{phase: Running, containerStatuses: [{{name: a, ready: false, restartCount: 0, image: i, imageID: '', state: {{terminated: {{exitCode: 3}}}}}}]}}"
                ),
                "ExitCode:3",
            ),
            // One container completed, the other runs and the pod is Ready → Running …
            (
                format!(
                    "{two}status: {{phase: Running, conditions: [{{type: Ready, status: 'True'}}], containerStatuses: [{{name: a, ready: false, restartCount: 0, image: i, imageID: '', state: {{terminated: {{exitCode: 0, reason: Completed}}}}}}, {{name: b, ready: true, restartCount: 0, image: i, imageID: '', state: {{running: {{}}}}}}]}}"
                ),
                "Running",
            ),
            // … or NotReady when the Ready condition is false.
            (
                format!(
                    "{two}status: {{phase: Running, conditions: [{{type: Ready, status: 'False'}}], containerStatuses: [{{name: a, ready: true, restartCount: 0, image: i, imageID: '', state: {{running: {{}}}}}}, {{name: b, ready: false, restartCount: 0, image: i, imageID: '', state: {{terminated: {{exitCode: 0, reason: Completed}}}}}}]}}"
                ),
                "NotReady",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(status_of(yaml), *want, "{yaml}");
        }
    }

    #[test]
    fn init_container_statuses() {
        let spec = "spec: {initContainers: [{name: i1}, {name: i2}], containers: [{name: a}]}\n";
        let app_waiting = "containerStatuses: [{name: a, ready: false, restartCount: 0, image: i, imageID: '', state: {waiting: {reason: PodInitializing}}}]";
        let cases: &[(&str, &str)] = &[
            (
                "[{name: i1, ready: false, restartCount: 0, image: i, imageID: '', state: {running: {}}}, {name: i2, ready: false, restartCount: 0, image: i, imageID: '', state: {waiting: {reason: PodInitializing}}}]",
                "Init:0/2",
            ),
            (
                "[{name: i1, ready: false, restartCount: 0, image: i, imageID: '', state: {terminated: {exitCode: 0, reason: Completed}}}, {name: i2, ready: false, restartCount: 0, image: i, imageID: '', state: {running: {}}}]",
                "Init:1/2",
            ),
            (
                "[{name: i1, ready: false, restartCount: 3, image: i, imageID: '', state: {waiting: {reason: CrashLoopBackOff}}}]",
                "Init:CrashLoopBackOff",
            ),
            (
                "[{name: i1, ready: false, restartCount: 0, image: i, imageID: '', state: {terminated: {exitCode: 1, reason: Error}}}]",
                "Init:Error",
            ),
            (
                "[{name: i1, ready: false, restartCount: 0, image: i, imageID: '', state: {terminated: {exitCode: 2}}}]",
                "Init:ExitCode:2",
            ),
            (
                "[{name: i1, ready: false, restartCount: 0, image: i, imageID: '', state: {terminated: {exitCode: 137, signal: 9}}}]",
                "Init:Signal:9",
            ),
        ];
        for (init, want) in cases {
            let yaml = format!("{spec}status: {{phase: Pending, initContainerStatuses: {init}, {app_waiting}}}");
            assert_eq!(status_of(&yaml), *want, "{init}");
        }
    }

    #[test]
    fn terminating_wins_unless_the_pod_finished() {
        let running = "spec: {containers: [{name: a}]}\nstatus: {phase: Running, containerStatuses: [{name: a, ready: true, restartCount: 0, image: i, imageID: '', state: {running: {}}}]}";
        let p = pod(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, deletionTimestamp: '2024-05-01T11:59:00Z'}}\n{running}"
        ));
        assert_eq!(pod_row(&p, now()).status, "Terminating");
        let done = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, deletionTimestamp: '2024-05-01T11:59:00Z'}\nspec: {containers: [{name: a}]}\nstatus: {phase: Succeeded}",
        );
        assert_eq!(pod_row(&done, now()).status, "Succeeded");
    }

    #[test]
    fn ready_restarts_and_age() {
        let p = pod(&format!(
            "{META}spec: {{containers: [{{name: a}}, {{name: b}}]}}\nstatus: {{phase: Running, containerStatuses: [
              {{name: a, ready: true, restartCount: 2, image: i, imageID: '', state: {{running: {{}}}},
                lastState: {{terminated: {{exitCode: 1, finishedAt: '2024-05-01T11:59:15Z'}}}}}},
              {{name: b, ready: false, restartCount: 1, image: i, imageID: '', state: {{waiting: {{reason: CrashLoopBackOff}}}},
                lastState: {{terminated: {{exitCode: 1, finishedAt: '2024-05-01T11:58:00Z'}}}}}}]}}"
        ));
        let row = pod_row(&p, now());
        assert_eq!(row.ready, "1/2");
        assert_eq!(row.restarts, "3 (45s ago)");
        assert_eq!(row.age, "5m");
        assert_eq!(row.status, "CrashLoopBackOff");
        assert_eq!(row.ip, "<none>");
        let fresh = pod(&format!(
            "{META}spec: {{containers: [{{name: a}}]}}\nstatus: {{phase: Pending}}"
        ));
        let row = pod_row(&fresh, now());
        assert_eq!((row.ready.as_str(), row.restarts.as_str()), ("0/1", "0"));
    }

    #[test]
    fn sidecars_count_in_ready() {
        let p = pod(&format!(
            "{META}spec: {{initContainers: [{{name: s, restartPolicy: Always}}], containers: [{{name: a}}]}}
status: {{phase: Running, conditions: [{{type: Initialized, status: 'True'}}],
  initContainerStatuses: [{{name: s, ready: true, started: true, restartCount: 1, image: i, imageID: '', state: {{running: {{}}}}}}],
  containerStatuses: [{{name: a, ready: true, restartCount: 0, image: i, imageID: '', state: {{running: {{}}}}}}]}}"
        ));
        let row = pod_row(&p, now());
        assert_eq!(
            (row.ready.as_str(), row.status.as_str(), row.restarts.as_str()),
            ("2/2", "Running", "1")
        );
    }
}
