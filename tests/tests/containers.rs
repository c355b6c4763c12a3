//! Container processes: CRI-format logs, restart policy and back-off, exit codes, OOM kills,
//! the monitor as the kernel maps it.

use std::path::Path;
use std::time::Duration;

use minilet_e2e::*;

/// Short back-off so restart tests stay fast (the kubelet's is 10s doubling to 300s).
const FAST_BACKOFF: &[&str] = &["--backoff-initial", "300ms", "--backoff-max", "1200ms"];

fn cri_lines(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let f = |x: Option<&str>| x.unwrap_or_default().to_string();
            (f(p.next()), f(p.next()), f(p.next()), f(p.next()))
        })
        .collect()
}

#[test]
fn logs_are_cri_formatted_per_stream_with_long_lines_split() {
    if !is_root() {
        return;
    }
    let env = Env::new("logs");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "logs.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: logs}
spec:
  restartPolicy: Never
  containers:
  - name: talker
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c"]
    args:
    - |
      echo "to stdout"
      echo "to stderr" >&2
      head -c 40000 /dev/zero | tr '\0' x; echo
      printf 'no newline at the end'
"#,
    );
    let pod = wait_for("talker to finish", Duration::from_secs(30), || {
        env.pod(&static_pod_name("logs"))
            .filter(|p| p.containers.get("talker").is_some_and(|c| c.exit.is_some()))
    });
    let c = &pod.containers["talker"];
    assert_eq!(c.exit.as_ref().unwrap()["exit_code"], 0);
    assert_eq!(c.exit.as_ref().unwrap()["reason"], "Completed");
    // <log-dir>/<namespace>_<name>_<uid>/<container>/<restartCount>.log
    assert_eq!(
        c.log_path,
        env.pod_log_dir(&static_pod_name("logs"), &pod.uid).join("talker/0.log")
    );
    let text = std::fs::read_to_string(&c.log_path).unwrap();
    let lines = cri_lines(&text);
    for (ts, _, _, _) in &lines {
        assert!(
            ts.ends_with('Z') && ts.len() >= 20 && ts.contains('T'),
            "RFC 3339 timestamp: {ts}"
        );
    }
    let content: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|(_, s, t, c)| (s.as_str(), t.as_str(), c.as_str()))
        .collect();
    assert!(content.contains(&("stdout", "F", "to stdout")), "{text}");
    assert!(content.contains(&("stderr", "F", "to stderr")), "{text}");
    let long: Vec<&(&str, &str, &str)> = content.iter().filter(|(_, _, c)| c.starts_with('x')).collect();
    assert_eq!(long.len(), 3, "40000 bytes = 16384 + 16384 + 7232");
    assert_eq!((long[0].1, long[0].2.len()), ("P", 16384));
    assert_eq!((long[1].1, long[1].2.len()), ("P", 16384));
    assert_eq!((long[2].1, long[2].2.len()), ("F", 40000 - 2 * 16384));
    assert_eq!(content.last().unwrap(), &("stdout", "P", "no newline at the end"));
}

#[test]
fn restart_policy_backoff_and_exit_codes() {
    if !is_root() {
        return;
    }
    let env = Env::new("restart");
    env.import_image("busybox");
    let agent = Agent::start(&env, FAST_BACKOFF);
    env.write_manifest(
        "crash.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: crasher
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo run; exit 3"]
"#,
    );
    env.write_manifest(
        "once.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: once}
spec:
  restartPolicy: OnFailure
  containers:
  - name: ok
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["true"]
  - name: flaky
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    # /dev/shm belongs to the pod: it outlives the container's first attempt.
    command: ["sh", "-c", "[ -e /dev/shm/once ] && exit 0; touch /dev/shm/once; exit 1"]
"#,
    );
    env.write_manifest(
        "never.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  restartPolicy: Never
  # With the pause as PID 1 the shell is an ordinary process: its own SIGTERM kills it. (As
  # PID 1 of its own namespace the kernel would ignore a signal it has no handler for.)
  shareProcessNamespace: true
  containers:
  - name: fails
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    # `$$$$` is a literal `$$` after Kubernetes' $(VAR) expansion (`$$` escapes `$`).
    command: ["sh", "-c", "kill -TERM $$$$; sleep 5"]
"#,
    );

    // Always: restarted again and again, attempt numbers and log files follow.
    let crash = wait_for("crasher restarted 3 times", Duration::from_secs(30), || {
        env.pod(&static_pod_name("crash"))
            .filter(|p| p.containers.get("crasher").is_some_and(|c| c.attempt >= 3))
    });
    let c = &crash.containers["crasher"];
    assert!(
        c.log_path.ends_with(format!("crasher/{}.log", c.attempt)),
        "{}",
        c.log_path.display()
    );
    // Only the previous attempt's log is kept, as the kubelet keeps one dead container.
    let logs: Vec<String> = std::fs::read_dir(c.log_path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(logs.len() <= 2, "{logs:?}");
    let exit = wait_for("an exit record", Duration::from_secs(10), || {
        env.pod(&static_pod_name("crash"))
            .and_then(|p| p.containers.get("crasher").and_then(|c| c.exit.clone()))
    });
    assert_eq!(exit["exit_code"], 3);
    assert_eq!(exit["reason"], "Error");

    // Back-off: 0, 300ms, 600ms, then 1.2s (the cap; checked in the unit tests) between an exit
    // and the next start, as the monitors recorded them.
    assert!(
        agent
            .log_text()
            .contains("Back-off restarting failed container crasher"),
        "back-off events are logged"
    );
    let gap = |attempt: u32| {
        let p = wait_for(&format!("attempt {attempt}"), Duration::from_secs(30), || {
            env.pod(&static_pod_name("crash")).filter(|p| {
                p.attempts["crasher"]
                    .iter()
                    .any(|c| c.attempt == attempt && c.started_at.is_some())
            })
        });
        let list = &p.attempts["crasher"];
        let prev = list
            .iter()
            .find(|c| c.attempt == attempt - 1)
            .expect("the previous attempt is kept");
        let finished = prev
            .exit
            .as_ref()
            .and_then(|e| e["finished_at"].as_i64())
            .expect("previous exit");
        let started = list
            .iter()
            .find(|c| c.attempt == attempt)
            .and_then(|c| c.started_at)
            .unwrap();
        Duration::from_nanos((started - finished).max(0) as u64)
    };
    let (g3, g4, g5) = (gap(3), gap(4), gap(5));
    assert!(g3 >= Duration::from_millis(600), "third restart waited {g3:?}");
    assert!(g4 >= Duration::from_millis(1200), "fourth restart waited {g4:?}");
    assert!(g5 >= Duration::from_millis(1200), "fifth restart waited {g5:?}");

    // OnFailure: the container that failed once runs again and then succeeds; the other ran once.
    let once = wait_for("once completes", Duration::from_secs(30), || {
        env.pod(&static_pod_name("once")).filter(|p| {
            p.containers.len() == 2
                && p.containers
                    .values()
                    .all(|c| c.exit.as_ref().is_some_and(|e| e["exit_code"] == 0))
        })
    });
    assert_eq!(once.containers["ok"].attempt, 0);
    assert_eq!(once.containers["flaky"].attempt, 1);
    // A completed pod's sandbox is stopped.
    wait_for("once's pause stops", Duration::from_secs(10), || {
        (!alive(once.pause())).then_some(())
    });

    // Never: killed by a signal: 128 + 15, not restarted.
    let never = wait_for("never fails", Duration::from_secs(20), || {
        env.pod(&static_pod_name("never"))
            .filter(|p| p.containers.get("fails").is_some_and(|c| c.exit.is_some()))
    });
    let exit = never.containers["fails"].exit.clone().unwrap();
    assert_eq!(exit["exit_code"], 143);
    assert_eq!(exit["signal"], 15);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        env.pod(&static_pod_name("never")).unwrap().containers["fails"].attempt,
        0,
        "restartPolicy Never"
    );
}

#[test]
fn oom_killed_when_over_the_memory_limit() {
    if !is_root() {
        return;
    }
    let env = Env::new("oom");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "oom.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    # tail keeps the whole (newline-free) input in memory.
    command: ["tail", "/dev/zero"]
    resources:
      limits: {memory: 24Mi}
"#,
    );
    let pod = wait_for("hog is killed", Duration::from_secs(60), || {
        env.pod(&static_pod_name("oom"))
            .filter(|p| p.containers.get("hog").is_some_and(|c| c.exit.is_some()))
    });
    let exit = pod.containers["hog"].exit.clone().unwrap();
    assert_eq!(exit["reason"], "OOMKilled", "{exit}");
    assert_eq!(exit["exit_code"], 137);
}

/// Run pod `name` with one idle container on `env`'s agent; its monitor's pid.
fn idle_monitor(env: &Env, name: &str) -> i32 {
    env.write_manifest(&format!("{name}.yaml"), &sleeper_pod(name));
    let pod = env.wait_running(&static_pod_name(name), &["main"]);
    pod.containers["main"].monitor_pid.expect("the monitor's pid in state")
}

/// The monitor is the `minilet` binary, linked statically (hack/rustc-wrapper): as the
/// kernel maps it, it has no dynamic loader and no shared library, only the binary itself
/// (what keeps its private memory small: docs/performance.md).
#[test]
fn the_monitor_maps_no_shared_library() {
    if !is_root() {
        return;
    }
    let env = Env::new("monitor-static");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let monitor = idle_monitor(&env, "idle");
    let exe = std::fs::read_link(format!("/proc/{monitor}/exe")).expect("the monitor's exe");
    assert_eq!(exe, std::fs::canonicalize(minilet()).expect("minilet binary"));
    let maps = std::fs::read_to_string(format!("/proc/{monitor}/maps")).expect("the monitor's maps");
    let files: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/'))
        .collect();
    assert!(!files.is_empty(), "{maps}");
    let others: Vec<&&str> = files.iter().filter(|path| Path::new(path) != exe).collect();
    assert!(
        others.is_empty(),
        "the monitor maps files besides its binary: {others:?}\n{maps}"
    );
}

/// Helpers are spawned without a working directory of their own (so that std spawns them with
/// posix_spawn rather than a fork of the agent) and go to `/` themselves: the monitor, which
/// outlives the agent, keeps none of the agent's directories busy. This test's agent runs in
/// the test's working directory (cargo's: the package's).
#[test]
fn the_monitor_runs_in_the_root_directory() {
    if !is_root() {
        return;
    }
    let env = Env::new("monitor-cwd");
    env.import_image("busybox");
    let agent = Agent::start(&env, &[]);
    let agent_cwd = std::fs::read_link(format!("/proc/{}/cwd", agent.pid())).expect("the agent's cwd");
    if agent_cwd == Path::new("/") {
        skip("the agent runs in / (the test's working directory): the monitor's cannot tell");
        return;
    }
    let monitor = idle_monitor(&env, "idle");
    let cwd = std::fs::read_link(format!("/proc/{monitor}/cwd")).expect("the monitor's cwd");
    assert_eq!(cwd, Path::new("/"));
}

/// A `__sandbox` and a `__monitor` helper are started ahead of the pod start that needs them
/// (their exec and start-up off the start's path): the next pod's container is monitored by
/// the very process that waited, and none of them outlives the agent.
#[test]
fn the_next_pod_starts_with_helpers_started_ahead_of_it() {
    if !is_root() {
        return;
    }
    let env = Env::new("warm-helpers");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    let first = idle_monitor(&env, "idle");
    let pid = agent.pid();
    let one = |kind: &str| {
        let kind = kind.to_string();
        wait_for(&format!("a waiting {kind} helper"), Duration::from_secs(20), || {
            helper_children(pid, &[&kind, "-"]).first().copied()
        })
    };
    let (sandbox, monitor) = (one("__sandbox"), one("__monitor"));
    assert_ne!(monitor, first);
    assert_eq!(
        idle_monitor(&env, "second"),
        monitor,
        "the second pod's monitor is the helper that waited"
    );
    assert!(
        !helper_children(pid, &["__sandbox", "-"]).contains(&sandbox),
        "the waiting sandbox helper was used for the second pod"
    );
    // The next ones wait already; their stdin ends with the agent, and so do they.
    let next = [one("__sandbox"), one("__monitor")];
    agent.stop();
    wait_for(
        "the waiting helpers to exit with the agent",
        Duration::from_secs(20),
        || {
            next.iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists())
                .then_some(())
        },
    );
}
