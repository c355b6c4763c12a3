//! The demo (manifests/ as shipped, hack/demo narrates the same): etcd on the node's network,
//! backends that register their pod IP in etcd, and the lb pod where a confd-style renderer
//! re-renders nginx's configuration when the pool changes and HUPs nginx's master across the
//! pod's shared PID namespace. The whole node runs in a network namespace the test creates,
//! with a TEST-NET address as the node's IP (--node-ip), a real CNI bridge and hostPort.
//!
//! Asserted: the rotation over A and B; after adding C and removing A, the rotation over B and
//! C (the time from the etcd change to nginx serving it is printed, never asserted); nginx's
//! master keeps its PID while its workers are replaced; each SIGHUP the renderer logs names
//! the master's PID as the pod sees it, and nginx received exactly as many; hostNetwork etcd
//! got no CNI ADD; nothing is left once the agent has gone.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use minilet_e2e::netns::NetNs;
use minilet_e2e::*;

const NODE_NAME: &str = "demo-node";
/// TEST-NET-1, only ever inside the test's namespace.
const NODE_IP: &str = "192.0.2.10";
const BACKENDS: &str = "/demo/backends/";

/// The name a static pod from a manifest with `metadata.name: manifest_name` gets on this
/// test's node: `<name>-<node name>`, as the kubelet names them.
fn pod_name(manifest_name: &str) -> String {
    static_pod_name_on(manifest_name, NODE_NAME)
}

fn images_present() -> bool {
    for image in ["busybox", "nginx", "etcd", "renderer"] {
        if !workspace().join(format!("hack/.images/{image}.tar")).is_file() {
            skip(&format!(
                "hack/.images/{image}.tar missing: run hack/build and hack/build-images"
            ));
            return false;
        }
    }
    // As for minilet(): the renderer must be built from the current sources, and its image
    // (whose stamp records the binary's hash) built from that binary.
    let bin = bin_dir().join("renderer");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let newest = newest_mtime(&workspace().join("demo/renderer/src"));
    assert!(
        built.is_some() && built >= newest,
        "{} missing or older than demo/renderer/src: run hack/build",
        bin.display()
    );
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(std::fs::read(&bin).expect("read the renderer")));
    let stamp = std::fs::read_to_string(workspace().join("hack/.images/renderer.stamp")).unwrap_or_default();
    assert!(
        stamp.contains(&format!("renderer={}", &hash[..16])),
        "hack/.images/renderer.tar was not built from {}: run hack/build-images",
        bin.display()
    );
    true
}

fn manifest(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One HTTP/1.0 request to `addr` in the calling thread's namespace: the body, or None.
fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<String> {
    let addr: SocketAddr = addr.parse().ok()?;
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

/// Who answered `curl 127.0.0.1:8080` on the node (the lb pod's hostPort): "backend-a", ...
fn served_by(node: &NetNs) -> Option<String> {
    let body = node.within(|| http("127.0.0.1:8080", "GET", "/", ""))?;
    body.trim().strip_prefix("hello from ").map(str::to_string)
}

/// The keys under /demo/backends/ in etcd, read through etcd's JSON gateway on the node's
/// loopback (etcd is hostNetwork: it listens in the test's namespace).
fn registered(node: &NetNs) -> Option<BTreeSet<String>> {
    let body = format!(
        r#"{{"key":"{}","range_end":"{}","keys_only":true}}"#,
        B64.encode(BACKENDS),
        B64.encode("/demo/backends0") // the prefix's end: '/' + 1
    );
    let resp = node.within(|| http("127.0.0.1:2379", "POST", "/v3/kv/range", &body))?;
    let json: serde_json::Value = serde_json::from_str(&resp).ok()?;
    json.get("header")?;
    let keys = json["kvs"].as_array().cloned().unwrap_or_default();
    keys.iter()
        .map(|kv| {
            let key = B64.decode(kv["key"].as_str()?).ok()?;
            Some(String::from_utf8_lossy(&key).trim_start_matches(BACKENDS).to_string())
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| pod_name(n)).collect()
}

/// Wait until `n` consecutive answers come from exactly `pool` (each of them, nothing else);
/// returns the answers and when the first of them came.
fn wait_rotation(node: &NetNs, pool: &BTreeSet<String>, n: usize, timeout: Duration) -> (Vec<String>, Instant) {
    let mut run: Vec<(String, Instant)> = Vec::new();
    wait_for(&format!("a rotation over {pool:?}"), timeout, || {
        let answer = served_by(node);
        match answer {
            Some(b) if pool.contains(&b) => run.push((b, Instant::now())),
            _ => run.clear(),
        }
        let seen: BTreeSet<String> = run.iter().map(|(b, _)| b.clone()).collect();
        (run.len() >= n && &seen == pool).then(|| (run.iter().map(|(b, _)| b.clone()).collect(), run[0].1))
    })
}

/// The PIDs whose parent is `parent` (nginx's workers, for its master), by the kernel.
fn children(parent: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok());
        if ppid == Some(parent) && alive(pid) {
            out.insert(pid);
        }
    }
    out
}

/// Start time of `pid` (field 22 of /proc/PID/stat): a PID with the same start time is the
/// same process, not a reused number.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// `pid` as the innermost PID namespace sees it (the last NSpid entry): the PID the lb
/// pod's containers use for it.
fn pid_in_pod(pid: i32) -> i32 {
    *ns_pids(pid).last().expect("NSpid")
}

fn log_of(env: &Env, pod: &str, container: &str) -> String {
    let p = env.pod(pod).unwrap_or_else(|| panic!("pod {pod}"));
    std::fs::read_to_string(&p.containers[container].log_path).unwrap_or_default()
}

/// The PIDs the renderer's reload_cmd reported signalling, in order.
fn hup_pids(renderer_log: &str) -> Vec<i32> {
    renderer_log
        .lines()
        .filter_map(|l| l.split_once("sent SIGHUP to nginx master pid ")?.1.trim().parse().ok())
        .collect()
}

#[test]
fn nginx_follows_the_pool_in_etcd_through_the_renderer_and_sighup() {
    if !is_root() || !netns::cni_plugins_present() || !images_present() {
        return;
    }
    let node = NetNs::for_test("demo");
    // The node's address: pods reach hostNetwork etcd there, through their bridge gateway.
    // On the namespace's loopback (this kernel may have no dummy interfaces): any local
    // address outside 127/8 is delivered locally whichever interface a packet came in by.
    node.ok(&["ip", "addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]);
    let mut env = Env::new("demo");
    for image in ["busybox", "nginx", "renderer"] {
        env.import_image(image);
    }
    // manifests/etcd.yaml names etcd by its upstream name (hack/demo pulls it from a mirror).
    env.import_image_as("etcd", "registry.k8s.io/etcd:3.4.23");
    let conf = env.dir.join("cni-conf");
    std::fs::create_dir_all(&conf).expect("create the CNI conf dir");
    let flags = [
        "--network=cni".to_string(),
        format!("--cni-conf-dir={}", conf.display()),
        format!("--cni-bin-dir={}", netns::CNI_PLUGINS),
        format!("--node-name={NODE_NAME}"),
        format!("--node-ip={NODE_IP}"),
    ];
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut agent = Agent::start_in(&mut env, node.path(), &args);

    for file in ["etcd.yaml", "backend-a.yaml", "backend-b.yaml", "lb.yaml"] {
        env.write_manifest(file, &manifest(&format!("manifests/{file}")));
    }
    let lb = pod_name("lb");

    // 1. curl 127.0.0.1:8080 on the node: answered by A and B in turn.
    let (answers, _) = wait_rotation(&node, &set(&["backend-a", "backend-b"]), 6, Duration::from_secs(120));
    println!("rotation before: {answers:?}");
    let pod = env.wait_running(&lb, &["nginx", "renderer"]);
    let master = pod.pid("nginx");
    let master_started = start_time(master);
    let workers_before = children(master);
    assert!(!workers_before.is_empty(), "nginx master {master} has no workers");
    assert_eq!(
        ns(master, "pid"),
        ns(pod.pid("renderer"), "pid"),
        "one PID namespace in the lb pod"
    );
    // etcd is hostNetwork: no CNI ADD for it, an address for each of the other three pods.
    assert_eq!(node.veths().len(), 3, "veths: {:?}", node.veths());
    let etcd = env.pod(&pod_name("etcd")).expect("etcd pod");
    assert_eq!(
        ns(etcd.pid("etcd"), "net"),
        ns(agent.pid(), "net"),
        "etcd on the node's network"
    );

    // 2. A backend added: its registration reaches etcd, then nginx serves it.
    env.write_manifest("backend-c.yaml", &manifest("demo/manifests/backend-c.yaml"));
    let c = pod_name("backend-c");
    wait_for("backend-c registered in etcd", Duration::from_secs(60), || {
        registered(&node).filter(|k| k.contains(&c)).map(|_| ())
    });
    let put_at = Instant::now();
    wait_for("nginx serving backend-c", Duration::from_secs(30), || {
        (served_by(&node)? == c).then_some(())
    });
    println!(
        "etcd put -> nginx serving backend-c: {:?} (both polled every 20 ms)",
        put_at.elapsed()
    );
    let (answers, _) = wait_rotation(
        &node,
        &set(&["backend-a", "backend-b", "backend-c"]),
        6,
        Duration::from_secs(30),
    );
    println!("rotation: {answers:?}");

    // 3. A backend removed: its sidecar revokes its lease on SIGTERM, the key goes at once.
    env.remove_manifest("backend-a.yaml");
    let a = pod_name("backend-a");
    wait_for("backend-a's key deleted from etcd", Duration::from_secs(30), || {
        registered(&node).filter(|k| !k.contains(&a)).map(|_| ())
    });
    let deleted_at = Instant::now();
    let (answers, served_at) = wait_rotation(&node, &set(&["backend-b", "backend-c"]), 6, Duration::from_secs(30));
    // From the key's deletion to the first of the answers after which A never answered again.
    println!(
        "etcd delete -> nginx serving without backend-a: {:?}; rotation {answers:?}",
        served_at.saturating_duration_since(deleted_at)
    );
    assert_eq!(registered(&node), Some(set(&["backend-b", "backend-c"])));

    // 4. Reloaded, never restarted: the same master (same PID, same start time, attempt 0),
    // its workers replaced.
    let now = env.pod(&lb).expect("lb pod");
    assert_eq!(now.pid("nginx"), master, "nginx's master changed");
    assert_eq!(now.containers["nginx"].attempt, 0);
    assert!(alive(master));
    assert_eq!(
        start_time(master),
        master_started,
        "PID {master} is another process now"
    );
    let workers_after = wait_for("nginx's new workers", Duration::from_secs(10), || {
        let w = children(master);
        (!w.is_empty() && w.is_disjoint(&workers_before)).then_some(w)
    });
    println!("nginx master {master}: workers {workers_before:?} -> {workers_after:?}");

    // 5. Each SIGHUP went to nginx's master, as the pod's PID namespace numbers it, and nginx
    // received exactly as many as the renderer sent (one per rendered change).
    let in_pod = pid_in_pod(master);
    let renderer_log = log_of(&env, &lb, "renderer");
    let sent = hup_pids(&renderer_log);
    assert!(
        sent.len() >= 2,
        "fewer than two reloads in the renderer's log:\n{renderer_log}"
    );
    assert!(
        sent.iter().all(|p| *p == in_pod),
        "SIGHUP sent to {sent:?}, master is {in_pod}:\n{renderer_log}"
    );
    let nginx_log = log_of(&env, &lb, "nginx");
    let received = nginx_log.matches("signal 1 (SIGHUP) received").count();
    assert_eq!(
        received,
        sent.len(),
        "nginx's log:\n{nginx_log}\nrenderer's log:\n{renderer_log}"
    );
    assert!(
        renderer_log.contains("etcd revision") && renderer_log.contains("rendered /etc/nginx/conf.d/default.conf"),
        "{renderer_log}"
    );

    // 6. Cleanup: the agent removes every pod; nothing of them is left on the node.
    agent.stop();
    assert!(!alive(master), "nginx's master outlived the agent");
    assert!(served_by(&node).is_none(), "hostPort 8080 still answers");
    assert!(registered(&node).is_none(), "etcd still answers");
    assert_eq!(node.veths(), Vec::<String>::new(), "veths left");
    let pinned = host_mounts_containing(&env.root.join("netns").display().to_string());
    assert_eq!(pinned, Vec::<String>::new(), "pinned network namespaces left");
    let chains: Vec<String> = node
        .chains("nat", "CNI-")
        .into_iter()
        .filter(|c| !c.starts_with("CNI-HOSTPORT-"))
        .collect();
    assert_eq!(chains, Vec::<String>::new(), "per-pod iptables chains left");
}
