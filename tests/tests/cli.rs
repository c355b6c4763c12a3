//! The kubectl-like CLI (`minilet get/describe/logs/exec/top/version`) run as a user runs it,
//! against a running agent with real pods: output shapes as kubectl prints them, exit codes,
//! and values cross-checked against the state directory, the cgroup files and the kernel.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use minilet_e2e::*;

const FAST_BACKOFF: &[&str] = &["--backoff-initial", "200ms", "--backoff-max", "400ms"];

/// A table as kubectl's tab writer prints it: columns are separated by runs of 2+ spaces
/// (values such as `NOMINATED NODE` or `3 (5s ago)` hold single spaces).
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

/// The row whose column `col` is `value`.
fn row<'a>(rows: &'a [Vec<String>], col: usize, value: &str) -> &'a Vec<String> {
    rows.iter()
        .find(|r| r.get(col).map(String::as_str) == Some(value))
        .unwrap_or_else(|| panic!("no row with {value:?} in column {col}: {rows:?}"))
}

fn millicores(cell: &str) -> u64 {
    cell.trim_end_matches('m')
        .parse()
        .unwrap_or_else(|_| panic!("not millicores: {cell}"))
}

const WEB: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do :; done"]
    resources:
      limits: {cpu: 300m, memory: 64Mi}
  - name: flaky
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo failing; exit 3"]
"#;

const OTHER: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: other
  namespace: kube-system
  labels: {app: other}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleeper
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#;

#[test]
fn get_describe_top_events_version() {
    if !is_root() {
        return;
    }
    let env = Env::new("cli-get");
    env.import_image("busybox");
    let _agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest("web.yaml", WEB);
    env.write_manifest("other.yaml", OTHER);
    env.write_manifest("broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: Broken}\n");
    env.wait_running(&static_pod_name("other"), &["sleeper"]);
    // get pods: kubectl's columns, the default namespace only; wait until flaky has failed
    // and been restarted (RESTARTS reads "N (Ts ago)").
    let t = wait_for("flaky restarted", Duration::from_secs(30), || {
        let t = table(&ok(&env, &["get", "pods"]));
        let restarts: u32 = row(&t, 0, &static_pod_name("web"))[3].split(' ').next()?.parse().ok()?;
        (restarts >= 1).then_some(t)
    });
    assert_eq!(t[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], "{t:?}");
    assert_eq!(t.len(), 2, "only the default namespace: {t:?}");
    let r = row(&t, 0, &static_pod_name("web"));
    assert!(r[1] == "1/2" || r[1] == "2/2", "{r:?}");
    assert!(r[3].ends_with(" ago)"), "{r:?}");
    let web = env.pod(&static_pod_name("web")).expect("web in the state directory");

    // -A adds NAMESPACE; -n narrows; -l selects.
    let t = table(&ok(&env, &["get", "pods", "-A"]));
    assert_eq!(t[0][..2], ["NAMESPACE", "NAME"], "{t:?}");
    assert_eq!(row(&t, 1, &static_pod_name("other"))[0], "kube-system");
    assert_eq!(row(&t, 1, &static_pod_name("web"))[0], "default");
    let t = table(&ok(&env, &["get", "pods", "-n", "kube-system"]));
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(
        t[1][..3],
        [static_pod_name("other").as_str(), "1/1", "Running"],
        "{t:?}"
    );
    let t = table(&ok(&env, &["get", "pods", "-A", "-l", "app!=web"]));
    assert_eq!(
        t.iter().skip(1).map(|r| r[1].clone()).collect::<Vec<_>>(),
        [static_pod_name("other")]
    );
    let t = table(&ok(&env, &["get", "pods", "-A", "-l", "app in (web)"]));
    assert_eq!(
        t.iter().skip(1).map(|r| r[1].clone()).collect::<Vec<_>>(),
        [static_pod_name("web")]
    );
    let none = cli(&env, &["get", "pods", "-l", "app=nothing"]);
    assert!(none.status.success() && stdout(&none).is_empty(), "{none:?}");
    assert_eq!(stderr(&none), "No resources found in default namespace.\n");

    // -o wide: IP, NODE, NOMINATED NODE, READINESS GATES.
    let t = table(&ok(&env, &["get", "pods", "-o", "wide", "-n", "kube-system"]));
    assert_eq!(
        t[0],
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    assert_eq!(t[1][6], NODE, "{t:?}");

    // -o yaml of one pod parses back into a v1.Pod that agrees with the state directory.
    let yaml = ok(&env, &["get", "pod", &static_pod_name("web"), "-o", "yaml"]);
    let pod: Pod = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("-o yaml is not a v1.Pod: {e}\n{yaml}"));
    assert_eq!(pod.metadata.name, Some(static_pod_name("web")));
    assert_eq!(pod.metadata.uid.as_deref(), Some(web.uid.as_str()));
    let status = pod.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let cs = status.container_statuses.expect("containerStatuses");
    let main = cs.iter().find(|c| c.name == "main").expect("main status");
    assert_eq!(
        main.container_id.as_deref(),
        Some(format!("minilet://{}", web.containers["main"].id).as_str())
    );
    assert!(
        main.state.as_ref().and_then(|s| s.running.as_ref()).is_some(),
        "{main:?}"
    );
    let flaky = cs.iter().find(|c| c.name == "flaky").expect("flaky status");
    assert!(flaky.restart_count >= 1, "{flaky:?}");
    let last = flaky
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_eq!(pod.spec.expect("spec").node_name.as_deref(), Some(NODE));

    // -o json of a list: a v1 List of Pods.
    let json = ok(&env, &["get", "pods", "-A", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(list["kind"], "List");
    let items: Vec<Pod> = serde_json::from_value(list["items"].clone()).expect("items are v1.Pods");
    let mut names: Vec<_> = items.iter().filter_map(|p| p.metadata.name.clone()).collect();
    names.sort();
    assert_eq!(names, [static_pod_name("other"), static_pod_name("web")]);
    // Sorted by namespace, then name, as the API server lists them.
    let t = ok(&env, &["get", "pods", "-A", "-o", "name"]);
    assert_eq!(
        t,
        format!("pod/{}\npod/{}\n", static_pod_name("web"), static_pod_name("other"))
    );

    // Errors in kubectl's words and exit code.
    let o = cli(&env, &["get", "pod", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "Error from server (NotFound): pods \"nope\" not found\n");
    let o = cli(&env, &["describe", "pod", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "Error from server (NotFound): pods \"nope\" not found\n");
    // A static pod's bare manifest name is not its name, as with kubectl; a hint says which is.
    let hint = format!(
        "Error from server (NotFound): pods \"web\" not found; static pods are named <name>-<node name>: did you mean {:?}?\n",
        static_pod_name("web")
    );
    for args in [
        &["get", "pod", "web"][..],
        &["describe", "pod", "web"],
        &["logs", "web", "-c", "main"],
        &["exec", "web", "-c", "main", "--", "true"],
    ] {
        let o = cli(&env, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&o), hint, "{args:?}");
    }

    // describe: states, last termination, restart count, the real cgroup limits, events,
    // and a manifest error about the running pod after its file is broken.
    env.write_manifest("web.yaml", &WEB.replace("cpu: 300m", "cpu: 3x"));
    // The back-off comes with flaky's second exit, which a loaded machine may not have
    // handled yet when the first restart is seen: wait for both events.
    wait_for("InvalidManifest and BackOff events", Duration::from_secs(30), || {
        let d = ok(&env, &["describe", "pod", &static_pod_name("web")]);
        (d.contains("InvalidManifest") && d.contains("Back-off restarting failed container flaky")).then_some(())
    });
    let d = ok(&env, &["describe", "pod", &static_pod_name("web")]);
    // kubectl aligns fields per block; compare lines with their spacing squeezed.
    let lines: Vec<String> = d
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    // The file names are the cgroup version's own (v1 on a hybrid host, v2 in the v2 lane).
    let applied = |files: [&str; 2]| {
        files
            .into_iter()
            .find_map(|f| cgroup_file(&env, &web.containers["main"].cgroup, f).map(|v| format!("{f}: {}", v.trim())))
    };
    let limit = applied(["memory.limit_in_bytes", "memory.max"]).expect("memory limit file");
    let quota = applied(["cpu.cfs_quota_us", "cpu.max"]).expect("cpu quota file");
    assert!(limit.ends_with(": 67108864"), "{limit}");
    assert!(
        quota.ends_with(": 30000") || quota.ends_with(": 30000 100000"),
        "{quota}"
    );
    for want in [
        format!("Name: {}", static_pod_name("web")),
        "Namespace: default".into(),
        "Labels: app=web".into(),
        "Status: Running".into(),
        "QoS Class: Burstable".into(),
        "Last State: Terminated".into(),
        "Reason: Error".into(),
        "Exit Code: 3".into(),
        limit,
        quota,
    ] {
        assert!(lines.contains(&want), "describe lacks {want:?}:\n{d}");
    }
    for want in [
        "Node: e2e-node",
        "Warning BackOff",
        &format!(
            "Back-off restarting failed container flaky in pod {}",
            static_pod_name("web")
        ),
        "Warning InvalidManifest",
        "spec.containers[0].resources.limits[cpu]: Invalid value: \"3x\"",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "describe lacks {want:?}:\n{d}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Restart Count: ") && l != "Restart Count: 0"),
        "{d}"
    );
    assert!(d.contains("\nEvents:\n  Type     Reason"), "{d}");
    // The broken file left the running pod alone.
    assert!(alive(web.pid("main")));

    // top: the busy container shows CPU near its 300m limit, from the cgroup's usage.
    let t = wait_for("top shows the busy container", Duration::from_secs(15), || {
        let t = table(&ok(&env, &["top", "pods", "--containers"]));
        (millicores(&row(&t, 1, "main")[2]) >= 100).then_some(t)
    });
    assert_eq!(t[0], ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"], "{t:?}");
    assert!(
        millicores(&row(&t, 1, "main")[2]) <= 400,
        "cpu limit not applied? {t:?}"
    );
    let t = table(&ok(&env, &["top", "pods", "-A"]));
    assert_eq!(t[0], ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"], "{t:?}");
    assert!(row(&t, 1, &static_pod_name("web"))[3].ends_with("Mi"), "{t:?}");
    // A bare manifest name: metrics-server's NotFound, with the same hint as `get`.
    let o = cli(&env, &["top", "pod", "web"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!(
            "Error from server (NotFound): podmetrics.metrics.k8s.io \"default/web\" not found; static pods are named <name>-<node name>: did you mean {:?}?\n",
            static_pod_name("web")
        )
    );

    // get events: the pod's lifecycle and the file that is not a pod.
    let t = table(&ok(&env, &["get", "events", "-A"]));
    assert_eq!(
        t[0],
        ["NAMESPACE", "LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{t:?}"
    );
    assert!(
        t.iter()
            .any(|r| r[3] == "Started" && r[4] == format!("pod/{}", static_pod_name("web"))),
        "no Started event: {t:?}"
    );
    assert!(
        t.iter()
            .any(|r| r[3] == "InvalidManifest" && r[4].ends_with("broken.yaml")),
        "no event for broken.yaml: {t:?}"
    );

    let v = ok(&env, &["version"]);
    assert!(v.starts_with("Client Version: v"), "{v}");
    assert!(v.contains("\nServer Version: "), "{v}");

    // Without an agent: one line, not a dump.
    let o = Command::new(minilet())
        .args(["get", "pods", "--socket"])
        .arg(env.dir.join("absent.sock"))
        .output()
        .expect("run CLI");
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("absent.sock"), "{e}");
}

const TALK: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: talk
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: talk
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: data, mountPath: /data}]
    command:
    - sh
    - -c
    - |
      n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n
      echo "attempt $n out"
      echo "attempt $n err" >&2
      if [ $n -lt 2 ]; then exit 1; fi
      echo "attempt $n settled"
      exec sleep 3600
  - name: quiet
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#;

const ONCE: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: once
spec:
  restartPolicy: Never
  containers:
  - name: once
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.2; done; echo done"]
"#;

#[test]
fn logs_current_previous_follow() {
    if !is_root() {
        return;
    }
    let env = Env::new("cli-logs");
    env.import_image("busybox");
    let _agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest("talk.yaml", TALK);
    wait_for("talk settled", Duration::from_secs(30), || {
        let p = env.pod(&static_pod_name("talk"))?;
        let c = p.containers.get("talk")?;
        let log = std::fs::read_to_string(&c.log_path).ok()?;
        (c.attempt == 1 && log.contains("attempt 2 settled")).then_some(())
    });

    // Two containers and no -c: the first one, with kubectl's notice on stderr.
    let o = cli(&env, &["logs", &static_pod_name("talk")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "Defaulted container \"talk\" out of: talk, quiet\n");
    assert!(stdout(&o).contains("attempt 2 settled"), "{}", stdout(&o));

    // Current attempt: the log file's lines in its order (stdout and stderr are separate pipes,
    // so their relative order is the monitor's), without the CRI prefix.
    let messages = |path: &std::path::Path| -> String {
        let file = std::fs::read_to_string(path).expect("log file");
        file.lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string() + "\n")
            .collect()
    };
    let talk = env.pod(&static_pod_name("talk")).expect("talk");
    let cur = ok(&env, &["logs", &static_pod_name("talk"), "-c", "talk"]);
    assert_eq!(cur, messages(&talk.containers["talk"].log_path));
    let mut lines: Vec<&str> = cur.lines().collect();
    lines.sort();
    assert_eq!(lines, ["attempt 2 err", "attempt 2 out", "attempt 2 settled"]);
    let prev = ok(&env, &["logs", &static_pod_name("talk"), "-c", "talk", "--previous"]);
    assert_eq!(prev, messages(&talk.attempts["talk"][0].log_path));
    let mut lines: Vec<&str> = prev.lines().collect();
    lines.sort();
    assert_eq!(lines, ["attempt 1 err", "attempt 1 out"]);
    let last = cur.lines().last().unwrap_or_default().to_string() + "\n";
    assert_eq!(
        ok(&env, &["logs", &static_pod_name("talk"), "-c", "talk", "--tail", "1"]),
        last
    );
    assert_eq!(
        ok(&env, &["logs", &static_pod_name("talk"), "-c", "talk", "--since", "1h"]),
        cur
    );

    // --timestamps: each line prefixed with the RFC 3339 time from the CRI log file.
    let ts = ok(&env, &["logs", &static_pod_name("talk"), "-c", "talk", "--timestamps"]);
    let file = std::fs::read_to_string(&env.pod(&static_pod_name("talk")).expect("talk").containers["talk"].log_path)
        .expect("log file");
    let stamps: Vec<&str> = file.lines().filter_map(|l| l.split(' ').next()).collect();
    let printed: Vec<&str> = ts.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(printed, stamps, "{ts}");
    assert!(printed.iter().all(|s| s.contains('T') && s.ends_with('Z')), "{ts}");

    // No previous attempt: kubectl's message.
    let o = cli(&env, &["logs", &static_pod_name("talk"), "-c", "quiet", "--previous"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "previous terminated container \"quiet\" in pod {:?} not found",
            static_pod_name("talk")
        )),
        "{}",
        stderr(&o)
    );

    // -f follows a running container and returns when it exits.
    env.write_manifest("once.yaml", ONCE);
    wait_for("once started", Duration::from_secs(20), || {
        let p = env.pod(&static_pod_name("once"))?;
        p.containers.get("once")?.pid.map(|_| ())
    });
    let started = Instant::now();
    let mut follow = Command::new(minilet())
        .args(["logs", &static_pod_name("once"), "-f"])
        .env("MINILET_SOCKET", &env.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logs -f");
    let out = wait_for("logs -f to return", Duration::from_secs(20), || {
        follow.try_wait().expect("try_wait")
    });
    let mut text = String::new();
    follow
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut text)
        .expect("read");
    assert!(out.success(), "logs -f: {out:?}");
    let want: String = (1..=8).map(|i| format!("tick {i}\n")).collect::<String>() + "done\n";
    assert_eq!(text, want);
    // It followed: the container ran ~1.6s after we started reading.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

const SHELL: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    resources:
      limits: {memory: 32Mi}
"#;

#[test]
fn exec_exit_codes_stdin_and_tty() {
    if !is_root() {
        return;
    }
    let env = Env::new("cli-exec");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("shell.yaml", SHELL);
    let pod = env.wait_running(&static_pod_name("shell"), &["shell"]);
    wait_agent_ready(&env, &static_pod_name("shell"));

    // The exit code propagates, with kubectl's message.
    let o = cli(
        &env,
        &[
            "exec",
            &static_pod_name("shell"),
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    );
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\ncommand terminated with exit code 7\n");

    // It runs in the container's namespaces and cgroup (the kernel's view).
    let inside = ok(
        &env,
        &[
            "exec",
            &static_pod_name("shell"),
            "--",
            "sh",
            "-c",
            "readlink /proc/self/ns/net; readlink /proc/self/ns/uts; readlink /proc/self/ns/cgroup; \
             cat /proc/self/cgroup",
        ],
    );
    let shell = pod.pid("shell");
    assert!(
        inside.starts_with(&format!(
            "{}\n{}\n{}\n",
            ns(pod.pause(), "net"),
            ns(pod.pause(), "uts"),
            ns(shell, "cgroup")
        )),
        "{inside}"
    );
    // In the container's cgroup namespace, rooted at its cgroup: `/`. v1: the memory
    // hierarchy's line; v2: the one unified line (no controller names).
    let lines = proc_cgroups(shell);
    let (controllers, _) = (lines.iter().find(|(c, _)| c.split(',').any(|c| c == "memory")))
        .or_else(|| lines.iter().find(|(c, _)| c.is_empty()))
        .cloned()
        .expect("memory cgroup of the container");
    assert!(inside.contains(&format!(":{controllers}:/\n")), "{inside}");

    // stdin with -i; none without.
    let o = cli_in(
        &env,
        &[
            "exec",
            "-i",
            &static_pod_name("shell"),
            "--",
            "sh",
            "-c",
            "cat; echo eof",
        ],
        Some(b"one\ntwo\n"),
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "one\ntwo\neof\n");
    let o = cli_in(
        &env,
        &["exec", &static_pod_name("shell"), "--", "cat"],
        Some(b"ignored\n"),
    );
    assert!(o.status.success() && o.stdout.is_empty(), "{o:?}");

    // Unknown container and command: one clear line each.
    let o = cli(&env, &["exec", &static_pod_name("shell"), "-c", "nope", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));

    // -it from a terminal: a pty of our own, with its size, resized while the session runs.
    let (master, slave) = openpty(37, 91);
    let mut session = Command::new(minilet())
        .args(["exec", "-i", "-t", &static_pod_name("shell"), "--", "sh"])
        .env("MINILET_SOCKET", &env.socket)
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave)
        .spawn()
        .expect("spawn exec -it");
    let screen = Arc::new(Mutex::new(String::new()));
    let mut reader = std::fs::File::from(master.try_clone().expect("dup master"));
    let sink = screen.clone();
    let pump = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO once the last slave closes: the session is over.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("screen")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut keyboard = std::fs::File::from(master.try_clone().expect("dup master"));
    // A timeout says what the terminal showed (the session may have ended early).
    let shows = || format!("the terminal shows {:?}", screen.lock().expect("screen"));
    let seen = |needle: &str| {
        wait_for_showing(
            &format!("{needle:?} on the terminal"),
            Duration::from_secs(10),
            || screen.lock().expect("screen").contains(needle).then_some(()),
            shows,
        )
    };
    keyboard.write_all(b"stty size; tty; echo $((6*7))x\n").expect("type");
    seen("37 91");
    seen("/dev/pts/");
    seen("42x");
    // Resize: the terminal changes, the CLI gets SIGWINCH and forwards the new size.
    set_winsize(&master, 50, 120);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(session.id() as i32),
        nix::sys::signal::Signal::SIGWINCH,
    )
    .expect("SIGWINCH");
    wait_for_showing(
        "resized",
        Duration::from_secs(10),
        || {
            keyboard.write_all(b"stty size\n").expect("type");
            std::thread::sleep(Duration::from_millis(200));
            screen.lock().expect("screen").contains("50 120").then_some(())
        },
        shows,
    );
    keyboard.write_all(b"exit 5\n").expect("type");
    let status = wait_for_showing(
        "exec -it to end",
        Duration::from_secs(10),
        || session.try_wait().expect("try_wait"),
        shows,
    );
    assert_eq!(status.code(), Some(5), "{}", screen.lock().expect("screen"));
    drop(keyboard);
    drop(master);
    pump.join().expect("pump");
}

/// A pty pair with the given size (rows, columns).
fn openpty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
    (pty.master, pty.slave)
}

fn set_winsize(fd: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is a live pty.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0, "TIOCSWINSZ");
}
