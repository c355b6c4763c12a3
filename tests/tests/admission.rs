//! Node admission as the kubelet does it for static pods: requests above what the node has
//! left (`OutOfcpu`, `OutOfmemory`) and nodeSelector/node affinity not matching the node's
//! labels (`NodeAffinity`) reject the pod before anything of it exists; a pod that fits runs.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};

use minilet_e2e::*;

fn pod(name: &str, extra_spec: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n{extra_spec}  containers:\n  - name: c\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n    resources: {resources}\n"
    )
}

fn pod_json(env: &Env, name: &str) -> Option<Pod> {
    serde_json::from_slice(&cli(env, &["get", "pod", name, "-o", "json"]).stdout).ok()
}

fn wait_rejected(env: &Env, name: &str) -> (String, PodStatus) {
    wait_for(&format!("{name} rejected"), Duration::from_secs(30), || {
        let p = pod_json(env, name)?;
        let uid = p.metadata.uid.clone()?;
        p.status
            .filter(|s| s.phase.as_deref() == Some("Failed"))
            .map(|s| (uid, s))
    })
}

/// The STATUS column of `get pod NAME`.
fn status_column(env: &Env, name: &str) -> String {
    let table = ok(env, &["get", "pod", name]);
    table
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_default()
        .to_string()
}

/// Every cgroup directory under the test's cgroup parent, in every hierarchy.
fn cgroup_tree(env: &Env) -> Vec<PathBuf> {
    fn walk(d: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                out.push(e.path());
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    for d in env.cgroup_dirs("") {
        walk(&d, &mut out);
    }
    out
}

/// The kernel's view of a rejected pod: no cgroup named for it, no state, no process.
fn assert_nothing_runs(env: &Env, name: &str, uid: &str) {
    let dirs = cgroup_tree(env);
    assert!(
        !dirs.iter().any(|d| d.to_string_lossy().contains(uid)),
        "{name}: cgroup for {uid} exists: {dirs:?}"
    );
    assert!(env.pod(name).is_none(), "{name} has state");
}

/// Processes in any cgroup under the test's parent.
fn procs_under_parent(env: &Env) -> Vec<String> {
    let mut dirs = env.cgroup_dirs("");
    dirs.extend(cgroup_tree(env));
    dirs.iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn describe_has(env: &Env, name: &str, lines: &[&str]) {
    let text = ok(env, &["describe", "pod", name]);
    let squashed: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in lines {
        assert!(
            squashed.iter().any(|l| l == want),
            "describe {name}: no line {want:?} in\n{text}"
        );
    }
}

fn node_milli_cpu() -> i64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as i64) * 1000
}

#[test]
fn oversized_and_mismatched_pods_are_rejected_matching_ones_run() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let env = Env::new("admission");
    env.import_image("busybox");
    let _agent = Agent::start(
        &env,
        &["--node-name", NODE, "--node-labels", "disk=ssd,example.com/tier=web"],
    );

    env.write_manifest("cpu.yaml", &pod("big-cpu", "", "{requests: {cpu: '100'}}"));
    env.write_manifest("mem.yaml", &pod("big-mem", "", "{limits: {memory: 1000Gi}}"));
    env.write_manifest("sel.yaml", &pod("wrong-node", "  nodeSelector: {disk: hdd}\n", "{}"));
    env.write_manifest("gpu.yaml", &pod("gpu", "", "{limits: {example.com/gpu: '1'}}"));

    let capacity = node_milli_cpu();
    let (uid, status) = wait_rejected(&env, &static_pod_name("big-cpu"));
    assert_eq!(status.reason.as_deref(), Some("OutOfcpu"));
    let message = format!(
        "Pod was rejected: Node didn't have enough resource: cpu, requested: 100000, used: 0, capacity: {capacity}"
    );
    assert_eq!(status.message.as_deref(), Some(message.as_str()));
    assert_eq!(status_column(&env, &static_pod_name("big-cpu")), "OutOfcpu");
    describe_has(
        &env,
        &static_pod_name("big-cpu"),
        &["Status: Failed", "Reason: OutOfcpu", &format!("Message: {message}")],
    );
    assert_nothing_runs(&env, &static_pod_name("big-cpu"), &uid);

    let (uid, status) = wait_rejected(&env, &static_pod_name("big-mem"));
    assert_eq!(status.reason.as_deref(), Some("OutOfmemory"));
    let message = status.message.unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "Pod was rejected: Node didn't have enough resource: memory, requested: {}, used: 0, capacity: ",
            1000i64 << 30
        )),
        "{message}"
    );
    assert_eq!(status_column(&env, &static_pod_name("big-mem")), "OutOfmemory");
    describe_has(
        &env,
        &static_pod_name("big-mem"),
        &["Status: Failed", "Reason: OutOfmemory"],
    );
    assert_nothing_runs(&env, &static_pod_name("big-mem"), &uid);

    let (uid, status) = wait_rejected(&env, &static_pod_name("wrong-node"));
    assert_eq!(status.reason.as_deref(), Some("NodeAffinity"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector")
    );
    assert_eq!(status_column(&env, &static_pod_name("wrong-node")), "NodeAffinity");
    describe_has(
        &env,
        &static_pod_name("wrong-node"),
        &["Status: Failed", "Reason: NodeAffinity"],
    );
    assert_nothing_runs(&env, &static_pod_name("wrong-node"), &uid);
    // An extended resource: the node has no device plugins, so none of it.
    let (uid, status) = wait_rejected(&env, &static_pod_name("gpu"));
    assert_eq!(status.reason.as_deref(), Some("OutOfexample.com/gpu"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was rejected: Node didn't have enough resource: example.com/gpu, requested: 1, used: 0, capacity: 0")
    );
    assert_eq!(status_column(&env, &static_pod_name("gpu")), "OutOfexample.com/gpu");
    assert_nothing_runs(&env, &static_pod_name("gpu"), &uid);

    // Only rejected pods so far: not one process in the test's cgroups.
    assert_eq!(procs_under_parent(&env), Vec::<String>::new());

    // The well-known hostname label and a --node-labels label match.
    env.write_manifest(
        "host.yaml",
        &pod(
            "on-host",
            &format!("  nodeSelector: {{kubernetes.io/hostname: {NODE}}}\n"),
            "{}",
        ),
    );
    let affinity = "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: disk, operator: In, values: [ssd]}\n          - {key: kubernetes.io/os, operator: In, values: [linux]}\n          - {key: example.com/tier, operator: Exists}\n";
    env.write_manifest("labels.yaml", &pod("on-labels", affinity, "{requests: {cpu: 10m}}"));
    let running = env.wait_running(&static_pod_name("on-host"), &["c"]);
    env.wait_running(&static_pod_name("on-labels"), &["c"]);
    assert!(alive(running.pause()));
    assert_eq!(status_column(&env, &static_pod_name("on-host")), "Running");
}

#[test]
fn the_second_pod_that_does_not_fit_is_rejected_until_the_first_goes() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let env = Env::new("admission-share");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let capacity = node_milli_cpu();
    let share = capacity * 6 / 10;
    let resources = format!("{{requests: {{cpu: {share}m}}}}");

    env.write_manifest("first.yaml", &pod("first", "", &resources));
    env.wait_running(&static_pod_name("first"), &["c"]);
    env.write_manifest("second.yaml", &pod("second", "", &resources));
    let (uid, status) = wait_rejected(&env, &static_pod_name("second"));
    assert_eq!(status.reason.as_deref(), Some("OutOfcpu"));
    let message = format!(
        "Pod was rejected: Node didn't have enough resource: cpu, requested: {share}, used: {share}, capacity: {capacity}"
    );
    assert_eq!(status.message.as_deref(), Some(message.as_str()));
    assert_nothing_runs(&env, &static_pod_name("second"), &uid);

    // The first goes; the second's manifest changes and the new pod is admitted.
    env.remove_manifest("first.yaml");
    wait_for("first gone", Duration::from_secs(30), || {
        env.pod(&static_pod_name("first")).is_none().then_some(())
    });
    env.write_manifest(
        "second.yaml",
        &pod("second", "", &resources).replace(
            "metadata: {name: second}",
            "metadata: {name: second, labels: {try: '2'}}",
        ),
    );
    let p = env.wait_running(&static_pod_name("second"), &["c"]);
    assert_ne!(p.uid, uid);
    assert_eq!(status_column(&env, &static_pod_name("second")), "Running");
}

#[test]
fn pods_started_together_do_not_both_take_the_last_cpu() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let env = Env::new("admission-race");
    env.import_image("busybox");
    let capacity = node_milli_cpu();
    let share = capacity * 6 / 10;
    let resources = format!("{{requests: {{cpu: {share}m}}}}");
    // Both manifests are there when the agent starts: admitted in parallel workers.
    env.write_manifest("a.yaml", &pod("race-a", "", &resources));
    env.write_manifest("b.yaml", &pod("race-b", "", &resources));
    let _agent = Agent::start(&env, &[]);
    let phases = wait_for("both pods decided", Duration::from_secs(30), || {
        let phase = |n: &str| pod_json(&env, &static_pod_name(n))?.status?.phase;
        let (a, b) = (phase("race-a")?, phase("race-b")?);
        (a != "Pending" && b != "Pending").then_some((a, b))
    });
    let mut sorted = [phases.0.as_str(), phases.1.as_str()];
    sorted.sort();
    assert_eq!(sorted, ["Failed", "Running"], "{phases:?}");
}

#[test]
fn pods_adopted_after_an_agent_restart_still_count() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let env = Env::new("admission-restart");
    env.import_image("busybox");
    let capacity = node_milli_cpu();
    let share = capacity * 6 / 10;
    let resources = format!("{{requests: {{cpu: {share}m}}}}");
    let mut agent = Agent::start(&env, &[]);
    env.write_manifest("first.yaml", &pod("kept", "", &resources));
    let pause = env.wait_running(&static_pod_name("kept"), &["c"]).pause();
    agent.kill9();

    let _agent = Agent::start(&env, &[]);
    env.write_manifest("second.yaml", &pod("late", "", &resources));
    let (uid, status) = wait_rejected(&env, &static_pod_name("late"));
    assert_eq!(status.reason.as_deref(), Some("OutOfcpu"));
    let message = format!(
        "Pod was rejected: Node didn't have enough resource: cpu, requested: {share}, used: {share}, capacity: {capacity}"
    );
    assert_eq!(status.message.as_deref(), Some(message.as_str()));
    assert_nothing_runs(&env, &static_pod_name("late"), &uid);
    // The adopted pod is the same one, untouched.
    assert_eq!(env.wait_running(&static_pod_name("kept"), &["c"]).pause(), pause);
}

#[test]
fn a_completed_pod_no_longer_counts() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let env = Env::new("admission-done");
    env.import_image("busybox");
    let share = node_milli_cpu() * 6 / 10;
    let resources = format!("{{requests: {{cpu: {share}m}}}}");
    let _agent = Agent::start(&env, &[]);
    let done = pod("done", "  restartPolicy: Never\n", &resources).replace("[sleep, '3600']", "[sh, -c, 'exit 0']");
    env.write_manifest("done.yaml", &done);
    wait_for("done Succeeded", Duration::from_secs(30), || {
        (pod_json(&env, &static_pod_name("done"))?.status?.phase.as_deref() == Some("Succeeded")).then_some(())
    });
    // Its manifest stays; the pod is terminal, so its requests are free again.
    env.write_manifest("next.yaml", &pod("next", "", &resources));
    env.wait_running(&static_pod_name("next"), &["c"]);
    assert_eq!(status_column(&env, &static_pod_name("next")), "Running");
}

#[test]
fn max_pods_caps_how_many_pods_the_node_runs() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let env = Env::new("admission-maxpods");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &["--max-pods", "2"]);
    env.write_manifest("one.yaml", &pod("one", "", "{}"));
    env.write_manifest("two.yaml", &pod("two", "", "{}"));
    env.wait_running(&static_pod_name("one"), &["c"]);
    env.wait_running(&static_pod_name("two"), &["c"]);
    env.write_manifest("three.yaml", &pod("three", "", "{}"));
    let (uid, status) = wait_rejected(&env, &static_pod_name("three"));
    assert_eq!(status.reason.as_deref(), Some("OutOfpods"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2")
    );
    assert_nothing_runs(&env, &static_pod_name("three"), &uid);
    // A bad value stops the agent before it does anything.
    let out = std::process::Command::new(minilet())
        .args(["agent", "--max-pods", "0"])
        .output()
        .expect("run minilet");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--max-pods"), "{}", stderr(&out));
}

/// A sysctl as the process `pid` sees it (from inside its network and IPC namespaces).
fn sysctl_of(pid: i32, name: &str) -> String {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "-i", "cat", &path])
        .output()
        .expect("run nsenter");
    assert!(out.status.success(), "nsenter cat {path}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn host_sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{}", name.replace('.', "/")))
        .expect("read the host's sysctl")
        .trim()
        .to_string()
}

#[test]
fn pod_sysctls_are_set_in_its_namespaces_and_unsafe_ones_need_the_node_s_leave() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let env = Env::new("admission-sysctls");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &["--allowed-unsafe-sysctls", "kernel.msg*"]);
    let host = [
        host_sysctl("net.ipv4.ip_unprivileged_port_start"),
        host_sysctl("kernel.shm_rmid_forced"),
        host_sysctl("kernel.msgmax"),
    ];
    // Values the host does not have, so the test sees where they were written.
    let port = if host[0] == "77" { "78" } else { "77" };
    let rmid = if host[1] == "1" { "0" } else { "1" };
    let msgmax = if host[2] == "12345" { "12346" } else { "12345" };
    let sysctls = format!(
        "  securityContext:\n    sysctls:\n    - {{name: net.ipv4.ip_unprivileged_port_start, value: '{port}'}}\n    - {{name: kernel/shm_rmid_forced, value: '{rmid}'}}\n    - {{name: kernel.msgmax, value: '{msgmax}'}}\n"
    );
    env.write_manifest("tuned.yaml", &pod("tuned", &sysctls, "{}"));
    let view = env.wait_running(&static_pod_name("tuned"), &["c"]);
    let pid = view.pid("c");
    assert_eq!(sysctl_of(pid, "net.ipv4.ip_unprivileged_port_start"), port);
    assert_eq!(sysctl_of(pid, "kernel.shm_rmid_forced"), rmid);
    assert_eq!(sysctl_of(pid, "kernel.msgmax"), msgmax);
    // The node's own values are untouched.
    assert_eq!(
        [
            host_sysctl("net.ipv4.ip_unprivileged_port_start"),
            host_sysctl("kernel.shm_rmid_forced"),
            host_sysctl("kernel.msgmax"),
        ],
        host
    );

    // Namespaced but neither safe nor allowed by the node: rejected before anything runs.
    env.write_manifest(
        "loud.yaml",
        &pod(
            "loud",
            "  securityContext:\n    sysctls: [{name: net.core.somaxconn, value: '1024'}]\n",
            "{}",
        ),
    );
    let (uid, status) = wait_rejected(&env, &static_pod_name("loud"));
    assert_eq!(status.reason.as_deref(), Some("SysctlForbidden"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("\"net.core.somaxconn\""),
        "{status:?}"
    );
    assert_nothing_runs(&env, &static_pod_name("loud"), &uid);

    // A bad flag value stops the agent before it does anything.
    let out = std::process::Command::new(minilet())
        .args(["agent", "--allowed-unsafe-sysctls", "*"])
        .output()
        .expect("run minilet");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--allowed-unsafe-sysctls"), "{}", stderr(&out));
}
