//! Pods share the pause's namespaces the way Kubernetes pods do, checked in /proc.

use std::time::Duration;

use minilet_e2e::*;

const SHARED: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: shared
spec:
  terminationGracePeriodSeconds: 1
  shareProcessNamespace: true
  containers:
  - name: a
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'echo got HUP; exit 0' HUP; while true; do sleep 0.1; done"]
    resources:
      limits: {cpu: 250m, memory: 32Mi}
  - name: b
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    resources:
      requests: {cpu: 100m, memory: 16Mi}
      limits: {cpu: 500m, memory: 48Mi}
"#;

#[test]
fn shared_process_namespace_pod() {
    if !is_root() {
        return;
    }
    let env = Env::new("shared");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("shared.yaml", SHARED);
    let pod = env.wait_running(&static_pod_name("shared"), &["a", "b"]);
    let (pause, a, b) = (pod.pause(), pod.pid("a"), pod.pid("b"));

    // net, ipc, uts and (shareProcessNamespace) pid are the pause's.
    for kind in ["net", "ipc", "uts", "pid"] {
        assert_eq!(ns(a, kind), ns(pause, kind), "container a {kind}");
        assert_eq!(ns(b, kind), ns(pause, kind), "container b {kind}");
    }
    let me = std::process::id() as i32;
    for kind in ["net", "ipc", "uts", "pid"] {
        assert_ne!(ns(pause, kind), ns(me, kind), "the pod has its own {kind} namespace");
    }
    // Each container has its own mount namespace.
    assert_ne!(ns(a, "mnt"), ns(me, "mnt"));
    assert_ne!(ns(a, "mnt"), ns(b, "mnt"));
    assert_ne!(ns(a, "mnt"), ns(pause, "mnt"));

    // The pause is PID 1 of the pod; the hostname is the pod name (the static pod's).
    let ps = in_container(b, &["ps", "-o", "pid,args"]);
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        ps.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("minilet-pause")),
        "pause is PID 1:\n{ps}"
    );
    assert!(ps.contains("trap"), "b sees a's processes:\n{ps}");
    let host = in_container(a, &["hostname"]);
    assert_eq!(String::from_utf8_lossy(&host.stdout).trim(), static_pod_name("shared"));

    // Each container sits in its own cgroup, holding the limits.
    let ca = &pod.containers["a"].cgroup;
    let cb = &pod.containers["b"].cgroup;
    assert!(
        proc_cgroups(a).iter().any(|(_, p)| p.ends_with(ca.as_str())),
        "a in {ca}: {:?}",
        proc_cgroups(a)
    );
    assert!(
        proc_cgroups(b).iter().any(|(_, p)| p.ends_with(cb.as_str())),
        "b in {cb}"
    );
    assert!(pod.cgroup.starts_with("kubepods/burstable/pod"), "{}", pod.cgroup);
    if let Some(limit) = cgroup_file(&env, ca, "memory.limit_in_bytes") {
        assert_eq!(limit, (32u64 << 20).to_string());
        assert_eq!(cgroup_file(&env, ca, "cpu.cfs_quota_us").as_deref(), Some("25000"));
        assert_eq!(cgroup_file(&env, ca, "cpu.cfs_period_us").as_deref(), Some("100000"));
        assert_eq!(cgroup_file(&env, ca, "cpu.shares").as_deref(), Some("256"));
        assert_eq!(
            cgroup_file(&env, cb, "memory.limit_in_bytes").as_deref(),
            Some((48u64 << 20).to_string().as_str())
        );
        assert_eq!(cgroup_file(&env, cb, "cpu.shares").as_deref(), Some("102"));
        // The pod cgroup limits the sum, as the kubelet's ResourceConfigForPod.
        assert_eq!(
            cgroup_file(&env, &pod.cgroup, "memory.limit_in_bytes").as_deref(),
            Some((80u64 << 20).to_string().as_str())
        );
    } else {
        assert_eq!(
            cgroup_file(&env, ca, "memory.max").as_deref(),
            Some((32u64 << 20).to_string().as_str())
        );
        assert_eq!(cgroup_file(&env, ca, "cpu.max").as_deref(), Some("25000 100000"));
    }

    // A signal from one container reaches the other across the shared PID namespace.
    let pids = in_container(b, &["pidof", "sh"]);
    let target = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .next()
        .expect("a's sh pid")
        .to_string();
    let kill = in_container(b, &["kill", "-HUP", &target]);
    assert!(kill.status.success(), "kill: {}", String::from_utf8_lossy(&kill.stderr));
    let log = pod.containers["a"].log_path.clone();
    wait_for("a logs the HUP", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("got HUP"))
            .map(|_| ())
    });
}

const SEPARATE: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: separate
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: a
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
  - name: b
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#;

#[test]
fn separate_process_namespaces_by_default() {
    if !is_root() {
        return;
    }
    let env = Env::new("separate");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("separate.yaml", SEPARATE);
    let pod = env.wait_running(&static_pod_name("separate"), &["a", "b"]);
    let (pause, a, b) = (pod.pause(), pod.pid("a"), pod.pid("b"));
    for kind in ["net", "ipc", "uts"] {
        assert_eq!(ns(a, kind), ns(pause, kind), "a {kind}");
        assert_eq!(ns(b, kind), ns(pause, kind), "b {kind}");
    }
    assert_ne!(ns(a, "pid"), ns(pause, "pid"));
    assert_ne!(ns(b, "pid"), ns(pause, "pid"));
    assert_ne!(ns(a, "pid"), ns(b, "pid"));
    // Each main process is PID 1 of its own namespace (NSpid: host pid, then namespaced pid).
    for pid in [a, b] {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        assert!(nspid.trim_end().ends_with("\t1"), "{pid}: {nspid}");
    }
    // BestEffort QoS.
    assert!(pod.cgroup.starts_with("kubepods/besteffort/pod"), "{}", pod.cgroup);
}

#[test]
fn host_network_pods_share_the_hosts_network_and_uts_namespaces() {
    if !is_root() {
        return;
    }
    let env = Env::new("hostnet");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "hostnet.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hostnet}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: localhost/busybox:latest, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}\n",
    );
    let pod = env.wait_running(&static_pod_name("hostnet"), &["c"]);
    let me = std::process::id() as i32;
    // hostNetwork: the host's network and (as in Kubernetes) UTS namespace; IPC and PID stay the pod's.
    assert_eq!(ns(pod.pid("c"), "net"), ns(me, "net"));
    assert_eq!(ns(pod.pid("c"), "uts"), ns(me, "uts"));
    assert_eq!(ns(pod.pause(), "net"), ns(me, "net"));
    assert_ne!(ns(pod.pid("c"), "ipc"), ns(me, "ipc"));
    assert_ne!(ns(pod.pid("c"), "pid"), ns(me, "pid"));
    let hosts = in_container(pod.pid("c"), &["cat", "/etc/hosts"]);
    assert!(String::from_utf8_lossy(&hosts.stdout).starts_with("# Kubernetes-managed hosts file (host network)."));
}

/// A sandbox helper started ahead of need makes the pod's network, IPC, UTS and PID
/// namespaces while it waits (off the start's path): the next pod's pause is in exactly
/// those. A pod that shares the host's namespaces, started from such a helper too, is in
/// the host's (the helper went back to them), not in the ones made for nobody.
#[test]
fn a_waiting_sandbox_helper_makes_the_next_pods_namespaces() {
    if !is_root() {
        return;
    }
    let env = Env::new("premade-ns");
    env.import_image("busybox");
    let agent = Agent::start(&env, &[]);
    let waiting = || {
        wait_for("a waiting sandbox helper", Duration::from_secs(20), || {
            helper_children(agent.pid(), &["__sandbox", "-"]).first().copied()
        })
    };
    // The namespaces a waiting helper holds. (Its children's PID namespace has no name in
    // /proc until its first process exists.)
    let held = |helper: i32| {
        wait_for("the waiting helper's namespaces", Duration::from_secs(20), || {
            let net = ns(helper, "net");
            (net != ns(agent.pid(), "net")).then(|| [net, ns(helper, "ipc"), ns(helper, "uts")])
        })
    };
    let pod_yaml = |name: &str, host: bool| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  hostNetwork: {host}\n  hostIPC: {host}\n  hostPID: {host}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: localhost/busybox:latest, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}}\n"
        )
    };
    // The first start leaves the next helper waiting.
    env.write_manifest("first.yaml", &pod_yaml("first", false));
    env.wait_running(&static_pod_name("first"), &["c"]);
    let helper = waiting();
    let premade = held(helper);
    env.write_manifest("own.yaml", &pod_yaml("own", false));
    let own = env.wait_running(&static_pod_name("own"), &["c"]);
    assert!(
        !helper_children(agent.pid(), &["__sandbox", "-"]).contains(&helper),
        "the waiting helper was taken"
    );
    let pause = own.pause();
    assert_eq!(
        [ns(pause, "net"), ns(pause, "ipc"), ns(pause, "uts")],
        premade,
        "the pod's pause is in the namespaces the helper made while it waited"
    );
    assert_ne!(ns(pause, "pid"), ns(agent.pid(), "pid"));
    assert_eq!(
        ns_pids(pause).last(),
        Some(&1),
        "the pause is PID 1 of the pod's PID namespace"
    );

    let helper = waiting();
    let made_for_nobody = held(helper);
    env.write_manifest("host.yaml", &pod_yaml("host", true));
    let host = env.wait_running(&static_pod_name("host"), &["c"]);
    let (pause, me) = (host.pause(), std::process::id() as i32);
    for (i, kind) in ["net", "ipc", "uts"].into_iter().enumerate() {
        assert_eq!(ns(pause, kind), ns(me, kind), "a host-namespace pod's pause: {kind}");
        assert_ne!(ns(pause, kind), made_for_nobody[i]);
    }
    assert_eq!(ns(pause, "pid"), ns(me, "pid"), "a host-namespace pod's pause: pid");
    assert_eq!(ns_pids(pause).len(), 1, "the pause is in the host's PID namespace only");
    assert_eq!(ns(host.pid("c"), "net"), ns(me, "net"));
}
