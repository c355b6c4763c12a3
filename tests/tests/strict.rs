//! Nothing ignored silently: fields the `v1.Pod` schema does not have (or given twice) are named in warning
//! events on the file and on the pod, as the API server's strict decoding warns, and the pod
//! still runs; values Kubernetes validation refuses are refused with its words.

use std::time::Duration;

use minilet_e2e::*;
use serde_json::Value;

/// Events as the agent serves them (core/v1 Event JSON).
fn events(env: &Env) -> Vec<Value> {
    let out = ok(env, &["get", "events", "-A", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).expect("events JSON");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The message of the InvalidManifest event that refuses `file`, once there is one.
fn refusal(env: &Env, file: &str) -> String {
    wait_for(
        &format!("InvalidManifest event for {file}"),
        Duration::from_secs(30),
        || {
            events(env).into_iter().find_map(|e| {
                let m = e["message"].as_str().unwrap_or_default();
                (e["reason"] == "InvalidManifest" && m.contains(file)).then(|| m.to_string())
            })
        },
    )
}

const MISSPELT: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: strict
spec:
  terminationGracePeriodSeconds: 1
  terminationGracePeriodSeconds: 1
  nodeSelektor: {disk: ssd}
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    livenesProbe:
      exec: {command: ["false"]}
"#;

#[test]
fn unknown_fields_warn_on_file_and_pod_and_the_pod_runs() {
    if !is_root() {
        return;
    }
    let env = Env::new("strict");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("strict.yaml", MISSPELT);
    let pod = env.wait_running(&static_pod_name("strict"), &["main"]);
    assert!(alive(pod.pid("main")), "the pod runs despite the unknown fields");

    for message in [
        r#"unknown field "spec.containers[0].livenesProbe""#,
        r#"unknown field "spec.nodeSelektor""#,
        r#"duplicate field "spec.terminationGracePeriodSeconds""#,
    ] {
        let found = wait_for(&format!("warning {message}"), Duration::from_secs(30), || {
            let kinds: Vec<String> = events(&env)
                .into_iter()
                .filter(|e| e["type"] == "Warning" && e["message"] == message)
                .map(|e| e["involvedObject"]["kind"].as_str().unwrap_or_default().to_string())
                .collect();
            (kinds.iter().any(|k| k == "Pod") && kinds.iter().any(|k| k == "File")).then_some(kinds)
        });
        // One event per object, not one per relist.
        assert_eq!(found.len(), 2, "{message}: {found:?}");
    }
    let table = ok(&env, &["get", "events", "-A"]);
    assert!(
        table.contains(r#"unknown field "spec.containers[0].livenesProbe""#),
        "{table}"
    );
    // The misspelt probe was not run as a liveness probe: still the same process.
    let again = env.pod(&static_pod_name("strict")).expect("pod");
    assert_eq!(again.pid("main"), pod.pid("main"));
}

#[test]
fn an_invalid_pull_policy_is_refused_with_the_kubernetes_message() {
    if !is_root() {
        return;
    }
    let env = Env::new("strict-pull");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "bad.yaml",
        &MISSPELT
            .replace("name: strict", "name: bad")
            .replace("imagePullPolicy: IfNotPresent", "imagePullPolicy: Sometimes"),
    );
    let want = r#"spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never""#;
    let message = refusal(&env, "bad.yaml");
    assert!(message.contains("bad.yaml: ") && message.contains(want), "{message}");
    assert!(
        env.pod(&static_pod_name("bad")).is_none(),
        "a refused manifest must not become a pod"
    );
    assert!(
        std::fs::read_dir(env.root.join("pods")).map_or(true, |d| d.count() == 0),
        "no pod state for a refused manifest"
    );
}

/// `dnsPolicy: None` takes the resolver from `dnsConfig` alone, so Kubernetes validation
/// (which the kubelet applies to static pods) wants a nameserver there: without one the
/// manifest is refused with its words. With one, the container's /etc/resolv.conf, as the
/// kernel shows it through the process's root, holds exactly that config.
#[test]
fn dns_policy_none_needs_a_nameserver_and_gives_exactly_the_config() {
    if !is_root() {
        return;
    }
    let env = Env::new("strict-dns");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let manifest = |name: &str, dns_config: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  dnsPolicy: None
  dnsConfig: {dns_config}
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
"
        )
    };
    env.write_manifest("nodns.yaml", &manifest("nodns", "{searches: [], options: []}"));
    env.write_manifest(
        "dns.yaml",
        &manifest(
            "dns",
            "{nameservers: [192.0.2.53], searches: [pods.example], options: [{name: ndots, value: '2'}]}",
        ),
    );
    env.write_manifest(
        "badns.yaml",
        &manifest(
            "badns",
            "{nameservers: [192.0.2.53, dns.example], searches: [Pods.example], options: [{value: '2'}]}",
        ),
    );
    let message = refusal(&env, "nodns.yaml");
    assert!(
        message.contains(
            "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"
        ),
        "{message}"
    );
    let message = refusal(&env, "badns.yaml");
    for want in [
        "spec.dnsConfig.nameservers[1]: Invalid value: \"dns.example\": must be a valid IP address",
        "spec.dnsConfig.searches[0]: Invalid value: \"Pods.example\": a lowercase RFC 1123 subdomain",
        "spec.dnsConfig.options[0]: Required value: must not be empty",
    ] {
        assert!(message.contains(want), "{want}\nin {message}");
    }
    let pod = env.wait_running(&static_pod_name("dns"), &["main"]);
    for refused in ["nodns", "badns"] {
        assert!(
            env.pod(&static_pod_name(refused)).is_none(),
            "a refused manifest must not become a pod"
        );
    }
    let resolv = std::fs::read_to_string(format!("/proc/{}/root/etc/resolv.conf", pod.pid("main")))
        .expect("the container's resolv.conf");
    assert_eq!(resolv, "nameserver 192.0.2.53\nsearch pods.example\noptions ndots:2\n");
}

/// `hostAliases` lines are checked as Kubernetes checks them (an IP address, DNS subdomains):
/// a bad one refuses the manifest, naming the field; a good one, with Go's empty strings for
/// `restartPolicy` and a port's `protocol` (defaulted, not refused) and a name part longer
/// than a label (a subdomain allows it), runs and its container's /etc/hosts, read through
/// the process's root, ends with the alias line.
#[test]
fn host_aliases_are_validated_and_empty_defaults_are_filled() {
    if !is_root() {
        return;
    }
    let env = Env::new("strict-alias");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let long = "a".repeat(70);
    let manifest = |name: &str, ip: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: ''
  hostAliases: [{{ip: '{ip}', hostnames: [db.example, {long}.example]}}]
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    ports: [{{containerPort: 8080, protocol: ''}}]
    command: [sleep, '3600']
"
        )
    };
    env.write_manifest("alias.yaml", &manifest("alias", "192.0.2.7"));
    env.write_manifest("badalias.yaml", &manifest("badalias", "10.0.0.0/8"));
    let message = refusal(&env, "badalias.yaml");
    let want = "spec.hostAliases[0].ip: Invalid value: \"10.0.0.0/8\": must be a valid IP address";
    assert!(message.contains(want), "{want}\nin {message}");
    let pod = env.wait_running(&static_pod_name("alias"), &["main"]);
    assert!(
        env.pod(&static_pod_name("badalias")).is_none(),
        "a refused manifest must not become a pod"
    );
    let hosts = std::fs::read_to_string(format!("/proc/{}/root/etc/hosts", pod.pid("main")))
        .expect("the container's /etc/hosts");
    let line = format!("192.0.2.7\tdb.example\t{long}.example\n");
    assert!(hosts.ends_with(&line), "{line:?} at the end of\n{hosts}");
}
