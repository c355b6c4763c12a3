//! Limits the kubelet enforces on a running pod as a whole: `activeDeadlineSeconds` fails it
//! with `DeadlineExceeded`, a disk emptyDir over its `sizeLimit` gets it `Evicted`. Both end
//! its containers for good (the kernel's view: the processes are gone and none come back,
//! also across an agent restart) and show the reason where kubectl shows it.

use std::time::Duration;

use minilet_e2e::*;

fn pod_json(env: &Env, name: &str) -> serde_json::Value {
    serde_json::from_str(&ok(env, &["get", "pod", name, "-o", "json"])).expect("pod JSON")
}

/// `describe` shows the pod's status reason, whitespace-normalised.
fn describe_reason(env: &Env, name: &str) -> bool {
    let text = ok(env, &["describe", "pod", name]);
    let flat: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    flat.iter().any(|l| l == "Status: Failed") && flat.iter().any(|l| l.starts_with("Reason: "))
}

/// Wait for a pod to fail with `reason`; its status.
fn wait_failed(env: &Env, name: &str, reason: &str) -> serde_json::Value {
    wait_for(
        &format!("{name} to fail with {reason}"),
        Duration::from_secs(30),
        || {
            let o = cli(env, &["get", "pod", name, "-o", "json"]);
            let pod: serde_json::Value = serde_json::from_str(&stdout(&o)).ok()?;
            (pod["status"]["phase"] == "Failed" && pod["status"]["reason"] == reason).then_some(pod)
        },
    )
}

#[test]
fn active_deadline_fails_the_pod_for_good() {
    if !is_root() {
        return;
    }
    let env = Env::new("deadline");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    env.write_manifest(
        "deadline.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: deadline}
spec:
  activeDeadlineSeconds: 2
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: localhost/busybox:latest, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
"#,
    );
    let pod = wait_for("the container running", Duration::from_secs(30), || {
        env.pod(&static_pod_name("deadline"))
            .filter(|p| p.containers.get("c").and_then(|c| c.pid).is_some())
    });
    let pid = pod.pid("c");
    let status = wait_failed(&env, &static_pod_name("deadline"), "DeadlineExceeded");
    assert_eq!(
        status["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    wait_for("the container gone", Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });
    assert!(describe_reason(&env, &static_pod_name("deadline")));
    // The container shows as it ended (killed after the 1 s grace), not as waiting to restart.
    let code = wait_for("the container shown terminated", Duration::from_secs(10), || {
        let c = pod_json(&env, &static_pod_name("deadline"))["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"].clone();
        c.as_i64()
    });
    assert_eq!(code, 137);
    assert!(
        pod_events(&env, &static_pod_name("deadline"))
            .iter()
            .any(|(t, r, _, _)| t == "Warning" && r == "DeadlineExceeded"),
        "{:?}",
        pod_events(&env, &static_pod_name("deadline"))
    );

    // Restart policy Always does not bring it back, nor does a new agent.
    agent.kill9();
    let _agent = Agent::start(&env, &[]);
    wait_agent_ready_listing(&env, &static_pod_name("deadline"));
    let again = pod_json(&env, &static_pod_name("deadline"));
    assert_eq!(again["status"]["phase"], "Failed");
    assert_eq!(again["status"]["reason"], "DeadlineExceeded");
    let after = env.pod(&static_pod_name("deadline")).expect("pod state");
    assert_eq!(after.containers["c"].attempt, 0, "no new attempt was created");
    assert!(after.containers["c"].pid.is_none_or(|p| !alive(p)));
}

/// The agent answers and lists the pod.
fn wait_agent_ready_listing(env: &Env, name: &str) {
    wait_for("the agent lists the pod", Duration::from_secs(30), || {
        let o = cli(env, &["get", "pod", name]);
        o.status.success().then_some(())
    });
}

#[test]
fn empty_dir_over_its_size_limit_evicts_the_pod() {
    if !is_root() {
        return;
    }
    let env = Env::new("evict");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &["--housekeeping-interval", "200ms"]);
    env.write_manifest(
        "evict.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: evict}
spec:
  terminationGracePeriodSeconds: 30
  volumes: [{name: scratch, emptyDir: {sizeLimit: 1Mi}}]
  containers:
  - name: c
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "dd if=/dev/zero of=/scratch/big bs=64k count=32 && sync && exec sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
"#,
    );
    let pod = wait_for("the container running", Duration::from_secs(30), || {
        env.pod(&static_pod_name("evict"))
            .filter(|p| p.containers.get("c").and_then(|c| c.pid).is_some())
    });
    let pid = pod.pid("c");
    let status = wait_failed(&env, &static_pod_name("evict"), "Evicted");
    assert_eq!(
        status["status"]["message"],
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
    );
    // Killed at once, not after the 30 s grace period (sleep as PID 1 ignores SIGTERM).
    wait_for("the container gone", Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });
    assert!(describe_reason(&env, &static_pod_name("evict")));
    assert!(
        pod_events(&env, &static_pod_name("evict"))
            .iter()
            .any(|(t, r, _, _)| t == "Warning" && r == "Evicted"),
        "{:?}",
        pod_events(&env, &static_pod_name("evict"))
    );
}
