//! Container lifecycle hooks as the kubelet runs them: postStart right after the start, the
//! pod going on only once it returned; a failing postStart kills the container
//! (`FailedPostStartHook`) and the restart policy restarts it; preStop before the stop
//! signal, its time counted in the grace period (`FailedPreStopHook` when it fails, the stop
//! going on); exec, httpGet and sleep handlers. Order is recorded by the containers and hooks
//! themselves in a file of the test's own directory (hostPath), SIGTERM through traps.

use std::time::{Duration, Instant};

use minilet_e2e::*;

const FAST_BACKOFF: &[&str] = &["--backoff-initial", "200ms", "--backoff-max", "400ms"];

#[test]
fn post_start_exec_finishes_before_the_pod_goes_on() {
    if !is_root() {
        return;
    }
    let env = Env::new("hook-post");
    env.import_image("busybox");
    let shared = env.shared_dir();
    let _agent = Agent::start(&env, FAST_BACKOFF);
    // The hook takes a while; the next container must start only after it returned, and the
    // app sees what the hook wrote into its filesystem.
    env.write_manifest(
        "post.yaml",
        &r#"apiVersion: v1
kind: Pod
metadata: {name: post}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: h, hostPath: {path: SHARED, type: Directory}}
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "while [ ! -f /tmp/hooked ]; do sleep 0.1; done; cat /tmp/hooked > /h/seen; exec sleep 3600"]
    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "sleep 1; echo from-hook > /tmp/hooked; echo hook-done >> /h/order"]}
  - name: next
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "echo next-start >> /h/order; exec sleep 3600"]
"#
        .replace("SHARED", &shared.display().to_string()),
    );
    env.wait_running(&static_pod_name("post"), &["app", "next"]);
    wait_for("the app saw the hook's file", Duration::from_secs(20), || {
        (std::fs::read_to_string(shared.join("seen")).ok()? == "from-hook\n").then_some(())
    });
    wait_for("next started", Duration::from_secs(20), || {
        (file_lines(&shared.join("order")).len() == 2).then_some(())
    });
    assert_eq!(file_lines(&shared.join("order")), ["hook-done", "next-start"]);
    assert!(
        !pod_events(&env, &static_pod_name("post"))
            .iter()
            .any(|(_, r, _, _)| r == "FailedPostStartHook"),
        "no hook failure"
    );
}

#[test]
fn failing_post_start_kills_and_restarts_the_container() {
    if !is_root() {
        return;
    }
    let env = Env::new("hook-postfail");
    env.import_image("busybox");
    let agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest(
        "postfail.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: postfail}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "echo no-luck; exit 3"]}
"#,
    );
    // The event's message is fixed (a hook's output may hold secrets); the details, with
    // the output, are in the agent's log.
    let msg = wait_pod_event(&env, &static_pod_name("postfail"), "FailedPostStartHook", "");
    assert_eq!(msg, "PostStartHook failed");
    wait_pod_event(&env, &static_pod_name("postfail"), "Killing", "FailedPostStartHook");
    let log = agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("PostStart hook failed") && l.contains("exited with 3") && l.contains("no-luck")),
        "the hook's failure and output in the agent's log:\n{log}"
    );
    // Killed and restarted (restartPolicy Always): attempts come and go, each process gone.
    let (first_pid, first_exit) = wait_for("the first attempt killed", Duration::from_secs(30), || {
        let p = env.pod(&static_pod_name("postfail"))?;
        let first = p.attempts.get("app")?.iter().find(|a| a.attempt == 0)?.clone();
        Some((first.pid?, first.exit?))
    });
    assert!(!alive(first_pid), "the first attempt's process is gone");
    assert_ne!(first_exit["exit_code"], 0, "killed: {first_exit}");
    wait_for("a second attempt", Duration::from_secs(30), || {
        let p = env.pod(&static_pod_name("postfail"))?;
        (p.containers.get("app")?.attempt >= 1).then_some(())
    });
}

#[test]
fn pre_stop_exec_runs_before_the_stop_signal_and_a_failing_one_is_reported() {
    if !is_root() {
        return;
    }
    let env = Env::new("hook-prestop");
    env.import_image("busybox");
    let shared = env.shared_dir();
    let agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest(
        "prestop.yaml",
        &r#"apiVersion: v1
kind: Pod
metadata: {name: prestop}
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - {name: h, hostPath: {path: SHARED, type: Directory}}
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "trap 'echo app-term >> /h/order; exit 0' TERM; sleep 3600 & wait"]
    lifecycle:
      preStop:
        exec: {command: ["sh", "-c", "echo pre-stop >> /h/order"]}
  - name: broken
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "trap 'echo broken-term >> /h/broken; exit 0' TERM; sleep 3600 & wait"]
    lifecycle:
      preStop:
        exec: {command: ["sh", "-c", "exit 5"]}
"#
        .replace("SHARED", &shared.display().to_string()),
    );
    let pod = env.wait_running(&static_pod_name("prestop"), &["app", "broken"]);
    let pids = [pod.pid("app"), pod.pid("broken")];
    env.remove_manifest("prestop.yaml");
    let msg = wait_pod_event(&env, &static_pod_name("prestop"), "FailedPreStopHook", "");
    assert_eq!(msg, "PreStopHook failed");
    wait_for(
        "the preStop failure in the agent's log",
        Duration::from_secs(10),
        || {
            agent
                .log_text()
                .lines()
                .any(|l| {
                    l.contains("PreStop hook failed")
                        && l.contains("Container \"broken\"")
                        && l.contains("exited with 5")
                })
                .then_some(())
        },
    );
    wait_pod_removed(&env, &static_pod_name("prestop"));
    for pid in pids {
        assert!(!alive(pid), "{pid} stopped");
    }
    assert_eq!(file_lines(&shared.join("order")), ["pre-stop", "app-term"]);
    // The failed hook did not stop the stop: the container still got its SIGTERM.
    assert_eq!(file_lines(&shared.join("broken")), ["broken-term"]);
}

#[test]
fn pre_stop_sleep_delays_the_stop_signal() {
    if !is_root() {
        return;
    }
    let env = Env::new("hook-sleep");
    env.import_image("busybox");
    let shared = env.shared_dir();
    let _agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest(
        "sleepy.yaml",
        &r#"apiVersion: v1
kind: Pod
metadata: {name: sleepy}
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - {name: h, hostPath: {path: SHARED, type: Directory}}
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: h, mountPath: /h}]
    command: ["sh", "-c", "trap 'echo app-term >> /h/order; exit 0' TERM; sleep 3600 & wait"]
    lifecycle:
      preStop:
        sleep: {seconds: 2}
"#
        .replace("SHARED", &shared.display().to_string()),
    );
    let pid = env.wait_running(&static_pod_name("sleepy"), &["app"]).pid("app");
    let removed = Instant::now();
    env.remove_manifest("sleepy.yaml");
    let termed = wait_for("the SIGTERM trap ran", Duration::from_secs(30), || {
        (file_lines(&shared.join("order")) == ["app-term"]).then(Instant::now)
    });
    // The signal came only after the 2 s sleep (the trap writes at once when it comes).
    assert!(
        termed.duration_since(removed) >= Duration::from_millis(1900),
        "SIGTERM after {:?}, before the preStop sleep ended",
        termed.duration_since(removed)
    );
    wait_pod_removed(&env, &static_pod_name("sleepy"));
    assert!(!alive(pid));
}

#[test]
fn http_get_hooks_reach_a_server_in_the_pod() {
    if !is_root() {
        return;
    }
    let env = Env::new("hook-http");
    env.import_image("busybox");
    let shared = env.shared_dir();
    let _agent = Agent::start(&env, FAST_BACKOFF);
    // busybox httpd in a sidecar (started once it listens, so the app's postStart finds it);
    // its CGI scripts record each hook's request. The sidecar outlives the app on deletion,
    // so the preStop request is served too.
    let script = concat!(
        "mkdir -p /www/cgi-bin; ",
        r#"printf '#!/bin/sh\necho $QUERY_STRING >> /h/order\necho Content-Type: text/plain\necho\necho ok\n' > /www/cgi-bin/hook; "#,
        "chmod +x /www/cgi-bin/hook; exec busybox httpd -f -p 8080 -h /www"
    );
    env.write_manifest(
        "http.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: http}}
spec:
  terminationGracePeriodSeconds: 3
  volumes:
  - {{name: h, hostPath: {{path: {shared}, type: Directory}}}}
  initContainers:
  - name: web
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    volumeMounts: [{{name: h, mountPath: /h}}]
    command: ["sh", "-c", {script:?}]
    startupProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    ports: [{{name: web, containerPort: 8080}}]
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    lifecycle:
      postStart:
        httpGet: {{path: /cgi-bin/hook?post-start, port: web}}
      preStop:
        httpGet: {{path: /cgi-bin/hook?pre-stop, port: 8080}}
"#,
            shared = shared.display(),
        ),
    );
    env.wait_running(&static_pod_name("http"), &["web", "app"]);
    wait_for("the postStart request", Duration::from_secs(20), || {
        (!file_lines(&shared.join("order")).is_empty()).then_some(())
    });
    assert_eq!(file_lines(&shared.join("order")), ["post-start"]);
    env.remove_manifest("http.yaml");
    wait_pod_removed(&env, &static_pod_name("http"));
    assert_eq!(file_lines(&shared.join("order")), ["post-start", "pre-stop"]);
    assert!(
        !pod_events(&env, &static_pod_name("http"))
            .iter()
            .any(|(_, r, _, _)| r == "FailedPostStartHook" || r == "FailedPreStopHook"),
        "no hook failed"
    );
}
