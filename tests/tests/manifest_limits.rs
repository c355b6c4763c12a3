//! A manifest cannot knock the agent over: oversized files and pods are refused with an
//! event naming the limit (memory, logs and the CLI stay fine), a nesting bomb is refused
//! at once without delaying other pods, a `metadata.uid` or an ID that would escape or wrap
//! is refused, and a re-created manifests directory is watched again.

use std::time::{Duration, Instant};

use minilet_e2e::*;
use serde_json::Value;

fn pod_yaml(name: &str, extra_meta: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
{extra_meta}spec:
  terminationGracePeriodSeconds: 1
{extra_spec}  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#
    )
}

/// Events as the agent serves them (core/v1 Event JSON), oldest first.
fn events(env: &Env) -> Vec<Value> {
    let out = ok(env, &["get", "events", "-A", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).expect("events JSON");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Wait for the InvalidManifest event of `file`; returns its message.
fn invalid_event(env: &Env, file: &str, timeout: Duration) -> String {
    wait_for(&format!("InvalidManifest event for {file}"), timeout, || {
        events(env).into_iter().find_map(|e| {
            // The object is the file, or the pod when the file was a running pod's.
            (e["reason"] == "InvalidManifest"
                && e["message"].as_str().is_some_and(|m| m.contains(&format!("/{file}: "))))
            .then(|| e["message"].as_str().unwrap_or_default().to_string())
        })
    })
}

/// The agent's peak resident memory, from the kernel (kB).
fn vm_hwm_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn an_11_mb_manifest_is_refused_and_nothing_else_suffers() {
    if !is_root() {
        return;
    }
    let env = Env::new("limits-file");
    env.import_image("busybox");
    let agent = Agent::start(&env, &[]);
    env.write_manifest("keep.yaml", &pod_yaml("keep", "", ""));
    let keep = env.wait_running(&static_pod_name("keep"), &["main"]);
    let hwm_before = vm_hwm_kb(agent.pid());

    // A valid-looking pod whose annotation makes the file 11 MiB.
    let huge = pod_yaml(
        "huge",
        &format!("  annotations:\n    blob: '{}'\n", "x".repeat(11 << 20)),
        "",
    );
    env.write_manifest("huge.yaml", &huge);
    let msg = invalid_event(&env, "huge.yaml", Duration::from_secs(30));
    assert!(
        msg.contains("huge.yaml") && msg.contains("must have at most 10485760 bytes"),
        "{msg}"
    );
    assert!(msg.len() <= 4096, "the event message is bounded: {} bytes", msg.len());

    // The kernel's view: the agent's peak memory barely moved (it never read the file),
    // its log holds no copy of it, the other pod still runs, and listing works.
    let hwm_after = vm_hwm_kb(agent.pid());
    assert!(
        hwm_after < hwm_before + 64 * 1024,
        "agent peak RSS grew from {hwm_before} kB to {hwm_after} kB"
    );
    let log_len = std::fs::metadata(&agent.log).map(|m| m.len()).unwrap_or(0);
    assert!(log_len < 4 << 20, "agent log is {log_len} bytes");
    assert!(alive(keep.pid("main")) && alive(keep.pause()));
    assert!(ok(&env, &["get", "pods"]).contains("keep"));
    assert!(
        env.pod(&static_pod_name("huge")).is_none(),
        "no state for the refused pod"
    );
}

#[test]
fn a_pod_too_large_for_kubernetes_is_refused_and_large_ones_still_list() {
    if !is_root() {
        return;
    }
    let env = Env::new("limits-pod");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);

    // 2.4 MB of env as JSON: within the file limit, beyond what etcd would store.
    let env_vars: String = (0..20_000)
        .map(|i| format!("    - {{name: V{i}, value: '{}'}}\n", "v".repeat(80)))
        .collect();
    let too_large = format!("{}    env:\n{env_vars}", pod_yaml("toolarge", "", ""));
    env.write_manifest("toolarge.yaml", &too_large);
    let msg = invalid_event(&env, "toolarge.yaml", Duration::from_secs(60));
    assert!(
        msg.contains("toolarge.yaml") && msg.contains("must have at most 1572864 bytes"),
        "{msg}"
    );
    assert!(env.pod(&static_pod_name("toolarge")).is_none());

    // Three pods of ~1.45 MB each (labels, as many as a pod may carry within the bound):
    // together beyond gRPC's default 4 MiB message, and `get pods` must still list them.
    let labels: String = (0..13_000)
        .map(|i| format!("    k{i:0>40}: {}\n", "v".repeat(63)))
        .collect();
    for name in ["big-a", "big-b", "big-c"] {
        env.write_manifest(
            &format!("{name}.yaml"),
            &pod_yaml(name, &format!("  labels:\n{labels}"), ""),
        );
    }
    for name in ["big-a", "big-b", "big-c"] {
        env.wait_running(&static_pod_name(name), &["main"]);
    }
    let pods = ok(&env, &["get", "pods", "-o", "json"]);
    let list: Value = serde_json::from_str(&pods).expect("pods JSON");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "three pods listed");
    assert!(pods.len() > 4 << 20, "the listing is {} bytes", pods.len());
    assert!(ok(&env, &["get", "events", "-A"]).contains("InvalidManifest"));
}

#[test]
fn a_nesting_bomb_is_refused_at_once_and_other_pods_start_meanwhile() {
    if !is_root() {
        return;
    }
    let env = Env::new("limits-bomb");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);

    // 200 KB of `[` took libyaml ~55 s (quadratic) and held every other manifest up.
    let written = Instant::now();
    env.write_manifest("bomb.yaml", &"[".repeat(200_000));
    env.write_manifest("valid.yaml", &pod_yaml("valid", "", ""));
    let msg = invalid_event(&env, "bomb.yaml", Duration::from_secs(60));
    assert!(
        msg.contains("bomb.yaml") && msg.contains("nesting deeper than 64"),
        "{msg}"
    );
    env.wait_running(&static_pod_name("valid"), &["main"]);
    // Generous bounds (the quadratic parse took a minute and the valid pod two).
    assert!(
        written.elapsed() < Duration::from_secs(30),
        "refusing the bomb and starting the valid pod took {:?}",
        written.elapsed()
    );
    // A bomb written over a running pod's file leaves the pod alone.
    let valid = env.pod(&static_pod_name("valid")).expect("valid pod");
    env.write_manifest("valid.yaml", &format!("{}\n", "{".repeat(300_000)));
    invalid_event(&env, "valid.yaml", Duration::from_secs(60));
    assert!(alive(valid.pid("main")));
    assert_eq!(env.pod(&static_pod_name("valid")).expect("valid pod").uid, valid.uid);
}

#[test]
fn a_manifest_uid_or_id_that_would_escape_or_wrap_is_refused() {
    if !is_root() {
        return;
    }
    let env = Env::new("limits-uid");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);

    // An absolute UID would put the pod's state there and later remove that directory. The
    // victim is this test's own directory (never a host path such as /etc: run against a
    // build without the check, the test must not be able to hurt the machine).
    let victim = env.dir.join("victim");
    std::fs::create_dir_all(&victim).expect("victim dir");
    std::fs::write(victim.join("canary"), "keep me").expect("canary");
    env.write_manifest("dotdot.yaml", &pod_yaml("dotdot", "  uid: ../x\n", ""));
    env.write_manifest(
        "abs.yaml",
        &pod_yaml("abs", &format!("  uid: {:?}\n", victim.display().to_string()), ""),
    );
    env.write_manifest(
        "root.yaml",
        &pod_yaml("root", "", "  securityContext:\n    runAsUser: -1\n"),
    );
    let abs_needle = format!("metadata.uid: Invalid value: {:?}", victim.display().to_string());
    for (file, needle) in [
        ("dotdot.yaml", "metadata.uid: Invalid value: \"../x\""),
        ("abs.yaml", abs_needle.as_str()),
        (
            "root.yaml",
            "spec.securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
        ),
    ] {
        let msg = invalid_event(&env, file, Duration::from_secs(30));
        assert!(msg.contains(file) && msg.contains(needle), "{msg}");
    }
    // A UID of the right shape is used as given.
    let uid = "0b3c9e2a-5d6f-4c1e-9f3a-7e8d2c1b0a99";
    env.write_manifest("fine.yaml", &pod_yaml("fine", &format!("  uid: {uid}\n"), ""));
    let fine = env.wait_running(&static_pod_name("fine"), &["main"]);
    assert_eq!(fine.uid, uid);
    assert_eq!(fine.dir, env.root.join("pods").join(uid));

    // Nothing of the refused pods anywhere: not outside the state directory, not in the victim,
    // not as a process running as uid 4294967295.
    let pods: Vec<_> = std::fs::read_dir(env.root.join("pods"))
        .expect("pods dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(pods, [uid], "only the valid pod has state");
    assert!(!env.root.join("x").exists() && !env.dir.join("x").exists());
    let in_victim: Vec<_> = std::fs::read_dir(&victim)
        .expect("the victim directory is still there")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(in_victim, ["canary"], "nothing written into the victim directory");
    for name in ["dotdot", "abs", "root"] {
        assert!(env.pod(&static_pod_name(name)).is_none(), "{name} has state");
    }
}

#[test]
fn a_recreated_manifests_directory_is_watched_again() {
    if !is_root() {
        return;
    }
    let env = Env::new("limits-rewatch");
    env.import_image("busybox");
    // The re-list is 10 minutes away: only the watch can start the second pod in time.
    let agent = Agent::start(&env, &["--relist-period", "10m"]);
    env.write_manifest("first.yaml", &pod_yaml("first", "", ""));
    let first = env.wait_running(&static_pod_name("first"), &["main"]);

    std::fs::remove_dir_all(&env.manifests).expect("remove the manifests directory");
    wait_for("the first pod removed", Duration::from_secs(30), || {
        (!first.dir.exists()).then_some(())
    });
    assert!(
        agent.log_text().contains("the manifests directory is gone"),
        "a warning while it is missing"
    );
    std::fs::create_dir(&env.manifests).expect("re-create the manifests directory");
    env.write_manifest("second.yaml", &pod_yaml("second", "", ""));
    env.wait_running(&static_pod_name("second"), &["main"]);
    // And later changes are seen too: the watch itself is back.
    env.write_manifest("third.yaml", &pod_yaml("third", "", ""));
    env.wait_running(&static_pod_name("third"), &["main"]);

    // A rename into the directory (as editors and `kubectl`-style writers save) is one
    // change: the file is read once, though inotify reports it twice (To, and From+To).
    env.write_manifest(".fourth.yaml.tmp", &pod_yaml("fourth", "", ""));
    std::fs::rename(
        env.manifests.join(".fourth.yaml.tmp"),
        env.manifests.join("fourth.yaml"),
    )
    .expect("rename");
    env.wait_running(&static_pod_name("fourth"), &["main"]);
    let reads = |log: &str| {
        log.lines()
            .filter(|l| l.contains("reading manifest") && l.contains("fourth.yaml"))
            .count()
    };
    assert_eq!(reads(&agent.log_text()), 1, "fourth.yaml read once");
}

/// Static pods are named `<name>-<node name>`: a manifest name that fits alone but not with
/// the node's name is an invalid manifest naming the file and `metadata.name`; nothing runs.
#[test]
fn a_name_too_long_once_the_node_name_is_appended_is_refused() {
    if !is_root() {
        return;
    }
    let env = Env::new("limits-name");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    // 249 characters (parts of at most 63); with "-" and the node name, past 253.
    let name = ["a".repeat(62), "b".repeat(62), "c".repeat(62), "d".repeat(60)].join(".");
    assert!(name.len() + 1 + NODE.len() > 253);
    env.write_manifest("long.yaml", &pod_yaml(&name, "", ""));
    env.write_manifest("short.yaml", &pod_yaml("short", "", ""));
    let message = invalid_event(&env, "long.yaml", Duration::from_secs(30));
    assert!(
        message.contains("long.yaml: metadata.name: Invalid value: static pod name")
            && message.contains(&format!("node name {NODE:?} is 258 characters, must have at most 253")),
        "{message}"
    );
    // The other manifest runs; the refused one left no state.
    let short = env.wait_running(&static_pod_name("short"), &["main"]);
    assert!(alive(short.pause()));
    assert_eq!(std::fs::read_dir(env.root.join("pods")).expect("pods dir").count(), 1);
}
