//! Probes as the kubelet runs them: liveness failures restart the container (a new PID, the
//! old one gone), readiness drives `ready`, the pod's Ready/ContainersReady conditions and the
//! READY column without restarts, startup gates the others, exec timeouts leave nothing
//! behind, httpGet and tcpSocket reach the pod's own network namespace.

use std::time::{Duration, Instant};

use minilet_e2e::*;
use serde_json::Value;

const FAST_BACKOFF: &[&str] = &["--backoff-initial", "200ms", "--backoff-max", "400ms"];

/// Events of the pod and its containers: (reason, message).
fn events(env: &Env, pod: &str) -> Vec<(String, String)> {
    pod_events(env, pod).into_iter().map(|(_, r, m, _)| (r, m)).collect()
}

fn wait_event(env: &Env, pod: &str, reason: &str, needle: &str) -> String {
    wait_for(
        &format!("event {reason} with {needle:?} on {pod}"),
        Duration::from_secs(30),
        || {
            events(env, pod)
                .into_iter()
                .find(|(r, m)| r == reason && m.contains(needle))
                .map(|(_, m)| m)
        },
    )
}

/// `get pod -o json`.
fn pod_json(env: &Env, pod: &str) -> Value {
    serde_json::from_str(&ok(env, &["get", "pod", pod, "-o", "json"])).expect("pod JSON")
}

fn condition(pod: &Value, kind: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no status of {name}: {pod}"))
}

/// The READY column of `get pods` for `pod`.
fn ready_column(env: &Env, pod: &str) -> String {
    let out = ok(env, &["get", "pods", pod]);
    let row = out.lines().nth(1).unwrap_or_default();
    row.split_whitespace().nth(1).unwrap_or_default().to_string()
}

#[test]
fn liveness_failure_restarts_the_container() {
    if !is_root() {
        return;
    }
    let env = Env::new("probe-live");
    env.import_image("busybox");
    let _agent = Agent::start(&env, FAST_BACKOFF);
    // The pod's grace period is long; the probe's own (1s) is what the kill must use, or the
    // shell (PID 1, no handler: SIGTERM does nothing) would live for 30s.
    env.write_manifest(
        "live.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/healthy"]}
      periodSeconds: 1
      failureThreshold: 2
      terminationGracePeriodSeconds: 1
"#,
    );
    let first = env.wait_running(&static_pod_name("live"), &["app"]).pid("app");
    let msg = wait_event(&env, &static_pod_name("live"), "Unhealthy", "Liveness probe failed:");
    assert!(
        msg.contains("/tmp/healthy"),
        "the command's output is the message: {msg}"
    );
    let killing = wait_event(&env, &static_pod_name("live"), "Killing", "failed liveness probe");
    assert_eq!(killing, "Container app failed liveness probe, will be restarted");
    // Restarted: a new live process, the first one gone (the kernel's view).
    let (second, attempt) = wait_for("a new attempt of app", Duration::from_secs(30), || {
        let p = env.pod(&static_pod_name("live"))?;
        let c = p.containers.get("app")?;
        let pid = c.pid?;
        (c.attempt >= 1 && pid != first && alive(pid) && c.exit.is_none()).then_some((pid, c.attempt))
    });
    assert!(!alive(first), "the unhealthy process {first} is gone");
    assert_ne!(second, first);
    let killed = env.pod(&static_pod_name("live")).expect("live").attempts["app"]
        .iter()
        .find(|a| a.attempt == attempt - 1)
        .and_then(|a| a.exit.clone())
        .expect("the killed attempt's exit");
    assert_eq!(killed["exit_code"], 137, "SIGKILL after the probe's 1s grace: {killed}");
    let restarts = wait_for("RESTARTS counted", Duration::from_secs(10), || {
        let p = pod_json(&env, &static_pod_name("live"));
        let n = container_status(&p, "app")["restartCount"].as_i64()?;
        (n >= 1).then_some(n)
    });
    assert!(restarts >= 1);
}

#[test]
fn readiness_drives_ready_without_restarts() {
    if !is_root() {
        return;
    }
    let env = Env::new("probe-ready");
    env.import_image("busybox");
    let _agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest(
        "ready.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: ready}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "touch /tmp/ready; exec sleep 3600"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      initialDelaySeconds: 2
      periodSeconds: 1
"#,
    );
    let view = env.wait_running(&static_pod_name("ready"), &["app"]);
    let pid = view.pid("app");
    let started_at = view.containers["app"].started_at.expect("started_at");
    // Not ready until the initial delay has passed, then ready: READY 0/1, then 1/1.
    let mut saw_not_ready = false;
    let ready_at = wait_for("READY 1/1", Duration::from_secs(20), || {
        let col = ready_column(&env, &static_pod_name("ready"));
        let now = now_nanos();
        if col == "0/1" {
            saw_not_ready = true;
        }
        (col == "1/1").then_some(now)
    });
    assert!(saw_not_ready, "READY was 0/1 before the probe passed");
    assert!(
        ready_at - started_at >= 2_000_000_000,
        "ready {}ms after the start, before initialDelaySeconds",
        (ready_at - started_at) / 1_000_000
    );
    let p = pod_json(&env, &static_pod_name("ready"));
    assert_eq!(condition(&p, "Ready"), "True", "{p}");
    assert_eq!(condition(&p, "ContainersReady"), "True", "{p}");
    assert_eq!(container_status(&p, "app")["ready"], true);

    // The probe starts failing: NotReady, the process untouched.
    let o = in_container(pid, &["rm", "/tmp/ready"]);
    assert!(o.status.success(), "{o:?}");
    wait_for("READY 0/1 again", Duration::from_secs(20), || {
        (ready_column(&env, &static_pod_name("ready")) == "0/1").then_some(())
    });
    let p = pod_json(&env, &static_pod_name("ready"));
    assert_eq!(condition(&p, "Ready"), "False", "{p}");
    assert_eq!(condition(&p, "ContainersReady"), "False", "{p}");
    let s = container_status(&p, "app");
    assert_eq!(
        (s["ready"].as_bool(), s["restartCount"].as_i64()),
        (Some(false), Some(0)),
        "{s}"
    );
    assert!(s["state"]["running"].is_object(), "{s}");
    let msg = wait_event(&env, &static_pod_name("ready"), "Unhealthy", "Readiness probe failed:");
    assert!(msg.contains("/tmp/ready"), "{msg}");
    assert!(alive(pid), "a failing readiness probe restarts nothing");
    assert_eq!(env.pod(&static_pod_name("ready")).expect("ready").pid("app"), pid);
    assert!(
        !events(&env, &static_pod_name("ready"))
            .iter()
            .any(|(r, _)| r == "Killing"),
        "no kill for readiness"
    );
}

#[test]
fn startup_probe_gates_liveness_and_kills_when_it_fails() {
    if !is_root() {
        return;
    }
    let env = Env::new("probe-startup");
    env.import_image("busybox");
    let _agent = Agent::start(&env, FAST_BACKOFF);
    // `slow` starts after ~3s; its liveness probe would fail (and kill it) at once if it ran
    // before the startup probe passed. `never` never starts: its startup probe kills it.
    env.write_manifest(
        "startup.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: startup}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: slow
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "sleep 3; touch /tmp/started; exec sleep 3600"]
    startupProbe:
      exec: {command: ["cat", "/tmp/started"]}
      periodSeconds: 1
      failureThreshold: 30
    livenessProbe:
      exec: {command: ["cat", "/tmp/started"]}
      periodSeconds: 1
      failureThreshold: 1
  - name: never
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    startupProbe:
      exec: {command: ["false"]}
      periodSeconds: 1
      failureThreshold: 2
"#,
    );
    let slow = env.wait_running(&static_pod_name("startup"), &["slow"]).pid("slow");
    let p = pod_json(&env, &static_pod_name("startup"));
    let s = container_status(&p, "slow");
    assert_eq!(
        (s["started"].as_bool(), s["ready"].as_bool()),
        (Some(false), Some(false)),
        "{s}"
    );
    wait_for("slow started", Duration::from_secs(30), || {
        let p = pod_json(&env, &static_pod_name("startup"));
        let s = container_status(&p, "slow");
        (s["started"] == true && s["ready"] == true).then_some(())
    });
    // The startup probe's failures are reported; the liveness probe never ran before it passed.
    wait_event(&env, &static_pod_name("startup"), "Unhealthy", "Startup probe failed:");
    let killing = wait_event(&env, &static_pod_name("startup"), "Killing", "failed startup probe");
    assert_eq!(killing, "Container never failed startup probe, will be restarted");
    assert!(alive(slow), "slow was not killed by its liveness probe");
    let v = env.pod(&static_pod_name("startup")).expect("startup");
    assert_eq!((v.pid("slow"), v.containers["slow"].attempt), (slow, 0));
    assert!(
        !events(&env, &static_pod_name("startup"))
            .iter()
            .any(|(_, m)| m.starts_with("Liveness probe failed") || m.contains("slow failed")),
        "{:?}",
        events(&env, &static_pod_name("startup"))
    );
    wait_for("never restarted", Duration::from_secs(30), || {
        let c = env.pod(&static_pod_name("startup"))?.containers.get("never")?.clone();
        (c.attempt >= 1).then_some(())
    });
}

#[test]
fn http_and_tcp_probes_reach_the_pod_network() {
    if !is_root() {
        return;
    }
    let env = Env::new("probe-http");
    env.import_image("busybox");
    let _agent = Agent::start(&env, FAST_BACKOFF);
    // busybox httpd serves in the pod's network namespace only (pods have loopback alone):
    // /cgi-bin/env records the request's headers, /cgi-bin/fail answers 500, /sub redirects
    // to /sub/ (a directory).
    let script = concat!(
        "mkdir -p /www/cgi-bin /www/sub; echo ok > /www/sub/index.html; ",
        r#"printf '#!/bin/sh\nenv > /tmp/probe-env\necho Content-Type: text/plain\necho\necho ok\n' > /www/cgi-bin/env; "#,
        r#"printf '#!/bin/sh\necho Status: 500 Boom\necho\n' > /www/cgi-bin/fail; "#,
        "chmod +x /www/cgi-bin/*; exec busybox httpd -f -p 8080 -h /www"
    );
    env.write_manifest(
        "http.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: http}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", {script:?}]
    ports: [{{name: web, containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /cgi-bin/env, port: web, httpHeaders: [{{name: X-Probe, value: hello}}]}}
      periodSeconds: 1
    livenessProbe:
      httpGet: {{path: /sub, port: 8080}}
      initialDelaySeconds: 1
      periodSeconds: 1
      failureThreshold: 5
  - name: failing
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    readinessProbe:
      httpGet: {{path: /cgi-bin/fail, port: 8080}}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {{port: 8080}}
      initialDelaySeconds: 1
      periodSeconds: 1
      failureThreshold: 5
  - name: closed
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    readinessProbe:
      tcpSocket: {{port: 9999}}
      periodSeconds: 1
"#
        ),
    );
    let view = env.wait_running(&static_pod_name("http"), &["web", "failing", "closed"]);
    wait_for("web ready", Duration::from_secs(30), || {
        let p = pod_json(&env, &static_pod_name("http"));
        (container_status(&p, "web")["ready"] == true).then_some(())
    });
    // The header reached httpd, with the kubelet's User-Agent.
    let o = in_container(view.pid("web"), &["cat", "/tmp/probe-env"]);
    let env_dump = stdout(&o);
    assert!(env_dump.contains("HTTP_X_PROBE=hello"), "{o:?}");
    assert!(env_dump.contains("HTTP_USER_AGENT=kube-probe/"), "{env_dump}");
    let msg = wait_event(&env, &static_pod_name("http"), "Unhealthy", "statuscode");
    assert_eq!(msg, "Readiness probe failed: HTTP probe failed with statuscode: 500");
    let msg = wait_event(&env, &static_pod_name("http"), "Unhealthy", "9999");
    assert_eq!(
        msg,
        "Readiness probe failed: dial tcp 127.0.0.1:9999: connect: connection refused"
    );
    // Several periods later: the liveness probes (a followed redirect, a TCP connect) pass
    // (the first run may race httpd's start; five failures in a row would restart), so
    // nothing was restarted; READY counts web only.
    let since = Instant::now();
    wait_for("three more probe periods", Duration::from_secs(10), || {
        (since.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    let p = pod_json(&env, &static_pod_name("http"));
    for c in ["web", "failing", "closed"] {
        assert_eq!(container_status(&p, c)["restartCount"], 0, "{c}: {p}");
    }
    assert_eq!(container_status(&p, "failing")["ready"], false);
    assert_eq!(container_status(&p, "closed")["ready"], false);
    assert_eq!(ready_column(&env, &static_pod_name("http")), "1/3");
    assert_eq!(condition(&p, "Ready"), "False");
    let v = env.pod(&static_pod_name("http")).expect("http");
    assert_eq!(v.pid("web"), view.pid("web"));
    // /sub answers 301 to /sub/: followed (same host), so no ProbeWarning for a redirect.
    let evs = events(&env, &static_pod_name("http"));
    assert!(
        !evs.iter().any(|(r, _)| r == "Killing" || r == "ProbeWarning"),
        "{evs:?}"
    );
}

#[test]
fn exec_probe_timeout_leaves_nothing_behind() {
    if !is_root() {
        return;
    }
    let env = Env::new("probe-timeout");
    env.import_image("busybox");
    let agent = Agent::start(&env, FAST_BACKOFF);
    // One probe run only (a long period): a shell running `sleep 5` (a child of the shell,
    // not the shell exec'd) with a 1s timeout: both must go.
    env.write_manifest(
        "slowprobe.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: slowprobe}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {command: ["sh", "-c", "sleep 5; echo never"]}
      periodSeconds: 3600
"#,
    );
    let view = env.wait_running(&static_pod_name("slowprobe"), &["app"]);
    let main = view.pid("app");
    let probe_seen_at = wait_for("the probe's sleep in the container", Duration::from_secs(20), || {
        let procs = cgroup_procs(&env, &view.containers["app"].cgroup);
        procs
            .iter()
            .any(|&p| cmdline(p) == "sleep\u{0}5\u{0}")
            .then(Instant::now)
    });
    let msg = wait_event(&env, &static_pod_name("slowprobe"), "Unhealthy", "timed out");
    assert_eq!(
        msg,
        "Readiness probe failed: command \"sh -c sleep 5; echo never\" timed out"
    );
    assert!(
        probe_seen_at.elapsed() < Duration::from_secs(4),
        "the timeout (1s) was enforced, not the command's 5s"
    );
    // Only the container's own process is left in its cgroup, and the agent has no zombie.
    wait_for("only the main process in the cgroup", Duration::from_secs(3), || {
        (cgroup_procs(&env, &view.containers["app"].cgroup) == [main]).then_some(())
    });
    let zombies: Vec<i32> = children_of(agent.pid()).into_iter().filter(|&p| !alive(p)).collect();
    assert!(zombies.is_empty(), "zombies of the agent: {zombies:?}");
    let p = pod_json(&env, &static_pod_name("slowprobe"));
    assert_eq!(container_status(&p, "app")["ready"], false);
}

/// PIDs in the container's cgroup (every hierarchy agrees; the first is read).
fn cgroup_procs(env: &Env, rel: &str) -> Vec<i32> {
    let dirs = env.cgroup_dirs(rel);
    let dir = dirs.first().expect("container cgroup");
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    pids.sort();
    pids
}

fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).into_owned()
}

/// Direct children of `pid`, from /proc.
fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<i32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A grpc.health.v1 server: "" serves, "down" does not, anything else is unknown.
struct HealthServer;

#[tonic::async_trait]
impl minilet_proto::grpc::health::v1::health_server::Health for HealthServer {
    async fn check(
        &self,
        req: tonic::Request<minilet_proto::grpc::health::v1::HealthCheckRequest>,
    ) -> Result<tonic::Response<minilet_proto::grpc::health::v1::HealthCheckResponse>, tonic::Status> {
        use minilet_proto::grpc::health::v1::health_check_response::ServingStatus;
        let status = match req.get_ref().service.as_str() {
            "" => ServingStatus::Serving,
            "down" => ServingStatus::NotServing,
            other => return Err(tonic::Status::not_found(format!("unknown service {other}"))),
        };
        Ok(tonic::Response::new(
            minilet_proto::grpc::health::v1::HealthCheckResponse { status: status as i32 },
        ))
    }

    type WatchStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<minilet_proto::grpc::health::v1::HealthCheckResponse, tonic::Status>>
                + Send,
        >,
    >;

    async fn watch(
        &self,
        _: tonic::Request<minilet_proto::grpc::health::v1::HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("watch"))
    }
}

/// A listening socket on 127.0.0.1:`port` in `pause`'s network namespace: a thread of its
/// own enters the namespace, binds, and ends (the socket stays in that namespace).
fn listen_in(pause: i32, port: u16) -> std::net::TcpListener {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pause}/ns/net")).expect("open the pod's netns");
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the pod's netns");
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind in the pod's netns")
    })
    .join()
    .expect("netns thread")
}

#[test]
fn grpc_probes_call_the_health_service_in_the_pod() {
    if !is_root() {
        return;
    }
    let env = Env::new("probe-grpc");
    env.import_image("busybox");
    let _agent = Agent::start(&env, FAST_BACKOFF);
    let container = |name: &str, service: &str| {
        format!(
            r#"  - name: {name}
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    readinessProbe:
      grpc: {{port: 9090{service}}}
      periodSeconds: 1
"#
        )
    };
    env.write_manifest(
        "grpc.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: grpc}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n{}{}{}",
            container("up", ""),
            container("down", ", service: down"),
            container("unknown", ", service: nope")
        ),
    );
    let view = env.wait_running(&static_pod_name("grpc"), &["up", "down", "unknown"]);
    // Nothing listens yet: the connection fails.
    wait_event(&env, &static_pod_name("grpc"), "Unhealthy", "failed to connect service");
    // The server runs in this test process, its socket in the pod's network namespace
    // (where the pod has only loopback): only a probe made from inside the pod reaches it.
    let listener = listen_in(view.pause(), 9090);
    listener.set_nonblocking(true).expect("nonblocking");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let _guard = rt.enter();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(
        tokio::net::TcpListener::from_std(listener).expect("tokio listener"),
    );
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(minilet_proto::grpc::health::v1::health_server::HealthServer::new(
                HealthServer,
            ))
            .serve_with_incoming(incoming),
    );
    wait_for("up ready", Duration::from_secs(20), || {
        let p = pod_json(&env, &static_pod_name("grpc"));
        (container_status(&p, "up")["ready"] == true).then_some(())
    });
    let msg = wait_event(&env, &static_pod_name("grpc"), "Unhealthy", "NOT_SERVING");
    assert_eq!(
        msg,
        "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")"
    );
    let msg = wait_event(&env, &static_pod_name("grpc"), "Unhealthy", "NotFound");
    assert_eq!(
        msg,
        "Readiness probe failed: rpc error: code = NotFound desc = unknown service nope"
    );
    let p = pod_json(&env, &static_pod_name("grpc"));
    assert_eq!(container_status(&p, "down")["ready"], false);
    assert_eq!(container_status(&p, "unknown")["ready"], false);
    assert_eq!(ready_column(&env, &static_pod_name("grpc")), "1/3");
}

#[test]
fn https_probe_accepts_any_certificate() {
    if !is_root() {
        return;
    }
    if !std::path::Path::new("/usr/bin/openssl").is_file() {
        skip("no /usr/bin/openssl to serve HTTPS inside the pod");
        return;
    }
    let env = Env::new("probe-https");
    env.import_image("busybox");
    let _agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest(
        "https.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: https}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    readinessProbe:
      httpGet: {scheme: HTTPS, port: 8443, path: /}
      periodSeconds: 1
"#,
    );
    let view = env.wait_running(&static_pod_name("https"), &["app"]);
    // A self-signed certificate no one could verify; the kubelet does not verify probes'.
    let (key, cert) = (env.dir.join("key.pem"), env.dir.join("cert.pem"));
    let o = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", "/CN=not-the-pod", "-days", "1"])
        .output()
        .expect("run openssl req");
    assert!(o.status.success(), "{o:?}");
    // openssl's test server, in the pod's network namespace only.
    let mut server = std::process::Command::new("nsenter")
        .arg("-t")
        .arg(view.pause().to_string())
        .args([
            "-n",
            "--",
            "openssl",
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            "127.0.0.1:8443",
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let ready = wait_for_result("app ready over HTTPS", Duration::from_secs(20), || {
        let p = pod_json(&env, &static_pod_name("https"));
        (container_status(&p, "app")["ready"] == true).then_some(())
    });
    let _ = server.kill();
    let _ = server.wait();
    ready.unwrap_or_else(|e| panic!("{e}; events: {:?}", events(&env, &static_pod_name("https"))));
}

/// `wait_for` that returns the timeout instead of panicking (so a test can clean up first).
fn wait_for_result<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn host_network_pods_probe_the_host_and_others_their_own_namespace() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("probe-hostnet");
    env.import_image("busybox");
    // A host-network pod's IP is the node's: its probes go there, as the kubelet's do. The
    // node's address is one of loopback's here, so nothing leaves the machine.
    let _agent = Agent::start(&env, &[FAST_BACKOFF, &["--node-ip", "127.0.0.2"]].concat());
    // A port open on the node's address, and one on another loopback address only.
    let listener = std::net::TcpListener::bind("127.0.0.2:0").expect("bind on the host");
    let port = listener.local_addr().expect("local addr").port();
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").expect("bind on the host");
    let elsewhere_port = elsewhere.local_addr().expect("local addr").port();
    let pod = |name: &str, host_network: bool, port: u16| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  hostNetwork: {host_network}
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    readinessProbe:
      tcpSocket: {{port: {port}}}
      periodSeconds: 1
"#
        )
    };
    env.write_manifest("host.yaml", &pod("host", true, port));
    env.write_manifest("own.yaml", &pod("own", false, port));
    env.write_manifest("host-lo.yaml", &pod("host-lo", true, elsewhere_port));
    env.wait_running(&static_pod_name("own"), &["app"]);
    wait_for("host-network pod ready", Duration::from_secs(20), || {
        let p = pod_json(&env, &static_pod_name("host"));
        (container_status(&p, "app")["ready"] == true).then_some(())
    });
    // The same port from the pod's own namespace: nothing listens there.
    let msg = wait_event(&env, &static_pod_name("own"), "Unhealthy", "connection refused");
    assert_eq!(
        msg,
        format!("Readiness probe failed: dial tcp 127.0.0.1:{port}: connect: connection refused")
    );
    assert_eq!(
        container_status(&pod_json(&env, &static_pod_name("own")), "app")["ready"],
        false
    );
    // Not the node's address: a host-network pod's probe does not reach it.
    let msg = wait_event(&env, &static_pod_name("host-lo"), "Unhealthy", "connection refused");
    assert_eq!(
        msg,
        format!("Readiness probe failed: dial tcp 127.0.0.2:{elsewhere_port}: connect: connection refused")
    );
    drop(listener);
    drop(elsewhere);
}
