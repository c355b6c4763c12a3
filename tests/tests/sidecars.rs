//! Native sidecars (init containers with `restartPolicy: Always`) as the kubelet runs them:
//! started in the init sequence, the next container only once the sidecar has started
//! (startup probe passed), kept running and restarted beside the app whatever the pod's
//! restart policy, not blocking completion, and stopped after the app containers, the last
//! sidecar first. Order is recorded by the containers themselves in a file of the test's own
//! directory (hostPath), from their commands and SIGTERM traps.

use std::time::Duration;

use minilet_e2e::*;
use serde_json::Value;

const FAST_BACKOFF: &[&str] = &["--backoff-initial", "200ms", "--backoff-max", "400ms"];

fn pod_json(env: &Env, pod: &str) -> Value {
    serde_json::from_str(&ok(env, &["get", "pod", pod, "-o", "json"])).expect("pod JSON")
}

fn init_status(pod: &Value, name: &str) -> Value {
    pod["status"]["initContainerStatuses"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no init status of {name}: {pod}"))
}

/// The `get pods` row of `pod`: (READY, STATUS); None while the agent does not list it (a
/// manifest just written).
fn row(env: &Env, pod: &str) -> Option<(String, String)> {
    let out = cli(env, &["get", "pods", pod]);
    if !out.status.success() {
        return None;
    }
    let out = stdout(&out);
    let row: Vec<String> = out
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((
        row.get(1).cloned().unwrap_or_default(),
        row.get(2).cloned().unwrap_or_default(),
    ))
}

#[test]
fn sidecar_starts_before_the_next_init_container_and_the_app() {
    if !is_root() {
        return;
    }
    let env = Env::new("sidecar-order");
    env.import_image("busybox");
    let shared = env.shared_dir();
    let _agent = Agent::start(&env, FAST_BACKOFF);
    // The sidecar is started (startupProbe) only a while after its process began: the init
    // container after it must not run before that.
    env.write_manifest(
        "order.yaml",
        &r#"apiVersion: v1
kind: Pod
metadata: {name: order}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: h, hostPath: {path: SHARED, type: Directory}}
  initContainers:
  - name: side
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "echo side-begin >> /h/order; sleep 1; echo side-up >> /h/order; touch /tmp/up; exec sleep 3600"]
    startupProbe:
      exec: {command: ["test", "-f", "/tmp/up"]}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
  - name: setup
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "while [ ! -e /h/go ]; do sleep 0.1; done; echo setup >> /h/order"]
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "echo app >> /h/order; exec sleep 3600"]
"#
        .replace("SHARED", &shared.display().to_string()),
    );
    // While `setup` waits for the test's go-ahead, the started sidecar counts as initialized
    // (Init:1/2), and once its readiness probe has passed (its first run comes up to a period
    // after the startup probe's success) as ready, as kubectl counts them. Nothing moves on
    // until the go-ahead, so the state is waited for, not caught in passing.
    wait_for("STATUS Init:1/2, READY 1/2", Duration::from_secs(30), || {
        let r = row(&env, &static_pod_name("order"))?;
        (r.1 == "Init:1/2" && r.0 == "1/2").then_some(r)
    });
    assert_eq!(file_lines(&shared.join("order")), ["side-begin", "side-up"]);
    std::fs::write(shared.join("go"), "").expect("write go");
    let pod = env.wait_running(&static_pod_name("order"), &["side", "app"]);
    let order = shared.join("order");
    // Running is not yet having run its first command: wait for the app's line.
    let lines = wait_for("the app's line", Duration::from_secs(20), || {
        let l = file_lines(&order);
        (l.len() >= 4).then_some(l)
    });
    assert_eq!(lines, ["side-begin", "side-up", "setup", "app"]);
    // The kernel's view: the sidecar's process runs beside the app's, started before it.
    let (side, app) = (pod.pid("side"), pod.pid("app"));
    assert!(alive(side) && alive(app));
    assert!(
        proc_start_ticks(side) <= proc_start_ticks(app),
        "sidecar {side} started before app {app}"
    );
    // Status: the sidecar is an init container that is started and ready; kubectl counts it
    // in READY and the pod is Running and Initialized.
    let (ready, status) = wait_for("READY 2/2 Running", Duration::from_secs(20), || {
        let r = row(&env, &static_pod_name("order"))?;
        (r.0 == "2/2" && r.1 == "Running").then_some(r)
    });
    assert_eq!((ready.as_str(), status.as_str()), ("2/2", "Running"));
    let json = pod_json(&env, &static_pod_name("order"));
    let side_status = init_status(&json, "side");
    assert_eq!(side_status["started"], true, "{side_status}");
    assert_eq!(side_status["ready"], true, "{side_status}");
    assert!(side_status["state"]["running"].is_object(), "{side_status}");
    let setup = init_status(&json, "setup");
    assert_eq!(setup["state"]["terminated"]["exitCode"], 0, "{setup}");
    let initialized = json["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Initialized")
        .map(|c| c["status"].clone());
    assert_eq!(initialized, Some(Value::from("True")));
}

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot.
fn proc_start_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat format");
    rest.split_whitespace()
        .nth(19)
        .and_then(|s| s.parse().ok())
        .expect("starttime")
}

#[test]
fn never_pod_completes_while_its_sidecar_runs_and_then_stops_it() {
    if !is_root() {
        return;
    }
    let env = Env::new("sidecar-complete");
    env.import_image("busybox");
    let shared = env.shared_dir();
    let _agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest(
        "job.yaml",
        &r#"apiVersion: v1
kind: Pod
metadata: {name: job}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  volumes:
  - {name: h, hostPath: {path: SHARED, type: Directory}}
  initContainers:
  - name: side
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "trap 'echo side-term >> /h/order; exit 0' TERM; echo side >> /h/order; sleep 3600 & wait"]
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "while [ ! -e /h/go ]; do sleep 0.1; done; echo app-done >> /h/order"]
"#
        .replace("SHARED", &shared.display().to_string()),
    );
    let pod = env.wait_running(&static_pod_name("job"), &["side", "app"]);
    let side = pod.pid("side");
    std::fs::write(shared.join("go"), "").expect("write go");
    let phase = wait_for("pod job Succeeded", Duration::from_secs(30), || {
        let p = pod_json(&env, &static_pod_name("job"));
        let phase = p["status"]["phase"].as_str()?.to_string();
        (phase == "Succeeded").then_some(phase)
    });
    assert_eq!(phase, "Succeeded");
    // The sidecar was stopped once the app finished, by its SIGTERM (the trap ran).
    wait_for("sidecar process gone", Duration::from_secs(10), || {
        (!alive(side)).then_some(())
    });
    assert_eq!(file_lines(&shared.join("order")), ["side", "app-done", "side-term"]);
    // Not restarted although it has restartPolicy Always: the pod is over.
    let p = env.pod(&static_pod_name("job")).expect("job");
    assert_eq!(
        p.containers["side"].attempt, 0,
        "sidecar not restarted after completion"
    );
    let (_, status) = row(&env, &static_pod_name("job")).expect("job listed");
    assert_eq!(status, "Completed");
}

#[test]
fn killed_sidecar_is_restarted_while_the_app_keeps_running() {
    if !is_root() {
        return;
    }
    let env = Env::new("sidecar-restart");
    env.import_image("busybox");
    let _agent = Agent::start(&env, FAST_BACKOFF);
    // restartPolicy Never: a sidecar restarts regardless.
    env.write_manifest(
        "restart.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: restart}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: side
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sleep", "3600"]
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#,
    );
    let pod = env.wait_running(&static_pod_name("restart"), &["side", "app"]);
    let (side, app) = (pod.pid("side"), pod.pid("app"));
    // The sidecar's process, which this test's agent started.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(side), nix::sys::signal::Signal::SIGKILL).expect("kill sidecar");
    let second = wait_for("a new sidecar attempt", Duration::from_secs(30), || {
        let p = env.pod(&static_pod_name("restart"))?;
        let c = p.containers.get("side")?;
        let pid = c.pid?;
        (c.attempt >= 1 && pid != side && alive(pid) && c.exit.is_none()).then_some(pid)
    });
    assert!(!alive(side), "the killed sidecar {side} is gone");
    assert!(alive(second));
    let p = env.pod(&static_pod_name("restart")).expect("restart");
    assert_eq!(p.pid("app"), app, "the app was not restarted");
    assert_eq!(p.containers["app"].attempt, 0);
    assert!(alive(app), "the app keeps running");
    let count = wait_for("sidecar restartCount", Duration::from_secs(10), || {
        let n = init_status(&pod_json(&env, &static_pod_name("restart")), "side")["restartCount"].as_i64()?;
        (n >= 1).then_some(n)
    });
    assert!(count >= 1);
    let phase = pod_json(&env, &static_pod_name("restart"))["status"]["phase"].clone();
    assert_eq!(phase, "Running");
}

#[test]
fn termination_stops_the_app_first_then_sidecars_last_first() {
    if !is_root() {
        return;
    }
    let env = Env::new("sidecar-stop");
    env.import_image("busybox");
    let shared = env.shared_dir();
    let _agent = Agent::start(&env, FAST_BACKOFF);
    let trap = |name: &str| format!("trap 'echo {name} >> /h/order; exit 0' TERM; sleep 3600 & wait");
    env.write_manifest(
        "stop.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: stop}}
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - {{name: h, hostPath: {{path: {shared}, type: Directory}}}}
  initContainers:
  - name: first
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    volumeMounts: [{{name: h, mountPath: /h}}]
    command: ["sh", "-c", {first:?}]
  - name: second
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    volumeMounts: [{{name: h, mountPath: /h}}]
    command: ["sh", "-c", {second:?}]
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{{name: h, mountPath: /h}}]
    command: ["sh", "-c", {app:?}]
"#,
            shared = shared.display(),
            first = trap("first"),
            second = trap("second"),
            app = trap("app"),
        ),
    );
    let pod = env.wait_running(&static_pod_name("stop"), &["first", "second", "app"]);
    let pids = [pod.pid("first"), pod.pid("second"), pod.pid("app")];
    env.remove_manifest("stop.yaml");
    wait_pod_removed(&env, &static_pod_name("stop"));
    for pid in pids {
        assert!(!alive(pid), "{pid} stopped");
    }
    assert_eq!(file_lines(&shared.join("order")), ["app", "second", "first"]);
}

#[test]
fn failing_liveness_on_a_sidecar_runs_its_pre_stop_and_restarts_only_the_sidecar() {
    if !is_root() {
        return;
    }
    let env = Env::new("sidecar-live");
    env.import_image("busybox");
    let shared = env.shared_dir();
    let _agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest(
        "live.yaml",
        &r#"apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - {name: h, hostPath: {path: SHARED, type: Directory}}
  initContainers:
  - name: side
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "trap 'echo side-term >> /h/order; exit 0' TERM; touch /tmp/healthy; sleep 3600 & wait"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/healthy"]}
      periodSeconds: 1
      failureThreshold: 1
    lifecycle:
      preStop:
        exec: {command: ["sh", "-c", "echo pre-stop >> /h/order"]}
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#
        .replace("SHARED", &shared.display().to_string()),
    );
    let pod = env.wait_running(&static_pod_name("live"), &["side", "app"]);
    let (side, app) = (pod.pid("side"), pod.pid("app"));
    let out = in_container(side, &["rm", "/tmp/healthy"]);
    assert!(out.status.success(), "rm in the sidecar: {}", stderr(&out));
    let killing = wait_pod_event(&env, &static_pod_name("live"), "Killing", "failed liveness probe");
    assert_eq!(killing, "Container side failed liveness probe, will be restarted");
    wait_for("a new sidecar attempt", Duration::from_secs(30), || {
        let p = env.pod(&static_pod_name("live"))?;
        let c = p.containers.get("side")?;
        (c.attempt >= 1 && c.pid.is_some_and(|pid| pid != side && alive(pid))).then_some(())
    });
    assert!(!alive(side), "the unhealthy sidecar {side} is gone");
    // preStop ran before the stop signal.
    assert_eq!(file_lines(&shared.join("order"))[..2], ["pre-stop", "side-term"]);
    let p = env.pod(&static_pod_name("live")).expect("live");
    assert_eq!(
        (p.pid("app"), p.containers["app"].attempt),
        (app, 0),
        "the app untouched"
    );
    assert!(alive(app));
}

#[test]
fn an_agent_restart_adopts_a_running_sidecar_and_keeps_restarting_it() {
    if !is_root() {
        return;
    }
    let env = Env::new("sidecar-adopt");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest(
        "adopt.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: adopt}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: side
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sleep", "3600"]
  - name: setup
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["true"]
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#,
    );
    let pod = env.wait_running(&static_pod_name("adopt"), &["side", "app"]);
    let (side, app) = (pod.pid("side"), pod.pid("app"));
    agent.kill9();
    let _agent = Agent::start(&env, FAST_BACKOFF);
    // Taken over as it runs: nothing started again, the sidecar still counts in READY.
    let (ready, status) = wait_for("READY 2/2 Running after the restart", Duration::from_secs(30), || {
        let r = row(&env, &static_pod_name("adopt"))?;
        (r.0 == "2/2" && r.1 == "Running").then_some(r)
    });
    assert_eq!((ready.as_str(), status.as_str()), ("2/2", "Running"));
    let p = env.pod(&static_pod_name("adopt")).expect("adopt");
    assert_eq!((p.pid("side"), p.pid("app")), (side, app), "the same processes");
    assert_eq!(p.containers["setup"].attempt, 0, "the init container did not run again");
    // The new agent restarts the sidecar when it dies (restartPolicy Never notwithstanding).
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(side), nix::sys::signal::Signal::SIGKILL).expect("kill sidecar");
    wait_for(
        "the sidecar restarted by the new agent",
        Duration::from_secs(30),
        || {
            let c = env.pod(&static_pod_name("adopt"))?.containers.get("side")?.clone();
            (c.attempt >= 1 && c.pid.is_some_and(|pid| pid != side && alive(pid))).then_some(())
        },
    );
    assert!(alive(app), "the app keeps running");
}
