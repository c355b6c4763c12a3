//! Pod networks through real CNI plugins (Debian's containernetworking-plugins). Every test
//! runs the whole node inside a network namespace of its own (see `netns::NetNs`): the
//! bridge, the veths and the iptables rules never touch the machine's network. Each test
//! ends by checking that nothing of its pods is left: veths, IPAM files, per-pod iptables
//! chains, pinned namespaces.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use minilet_e2e::grpc::{connect, rt};
use minilet_e2e::netns::NetNs;
use minilet_e2e::*;
use minilet_proto::runtime::v1 as cri;

/// The node's namespace, the test's world (busybox imported) and an empty CNI conf dir.
/// Bound in this order, the world is dropped first: its safety-net reset still finds the
/// namespace.
fn cni_node(name: &str) -> (NetNs, Env, PathBuf) {
    let ns = NetNs::for_test(name);
    let env = Env::new(&format!("net-{name}"));
    env.import_image("busybox");
    let conf = env.dir.join("cni-conf");
    std::fs::create_dir_all(&conf).expect("create the CNI conf dir");
    (ns, env, conf)
}

fn cni_flags(conf_dir: &Path) -> Vec<String> {
    vec![
        "--network=cni".into(),
        format!("--cni-conf-dir={}", conf_dir.display()),
        format!("--cni-bin-dir={}", netns::CNI_PLUGINS),
    ]
}

fn start(env: &mut Env, ns: &NetNs, flags: &[String]) -> Agent {
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    Agent::start_in(env, ns.path(), &args)
}

/// A web server answering "hello from web" on 8080, with a hostPort and its IP in its env.
const WEB: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "mkdir -p /tmp/www && echo hello from web > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
    ports: [{containerPort: 8080, hostPort: 18080}]
    env:
    - name: MY_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: MY_IPS
      valueFrom: {fieldRef: {fieldPath: status.podIPs}}
"#;

/// The pod's IP as `minilet get pods -o wide` shows it (column IP), once it has one.
fn wide_ip(env: &Env, pod: &str) -> Ipv4Addr {
    wait_for(
        &format!("{pod} has an IP in get -o wide"),
        Duration::from_secs(30),
        || {
            let out = stdout(&cli(env, &["get", "pods", "-o", "wide"]));
            let mut lines = out.lines();
            let header: Vec<&str> = lines.next()?.split_whitespace().collect();
            let col = header.iter().position(|h| *h == "IP")?;
            lines
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|w| w.first() == Some(&pod))
                .and_then(|w| w.get(col)?.parse().ok())
        },
    )
}

/// The host-local allocation files of the default network (one per allocated address).
fn ipam_files(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.root.join("network/host-local/minilet"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<Ipv4Addr>().is_ok())
        .collect()
}

fn pinned_netns(env: &Env) -> Vec<String> {
    host_mounts_containing(&env.root.join("netns").display().to_string())
}

/// Per-pod iptables chains the bridge (ipMasq) and portmap plugins make: `CNI-<hash>` and
/// `CNI-DN-<hash>`/`CNI-SN-<hash>`; the node-wide `CNI-HOSTPORT-*` chains may stay.
fn pod_chains(ns: &NetNs) -> Vec<String> {
    ns.chains("nat", "CNI-")
        .into_iter()
        .filter(|c| !c.starts_with("CNI-HOSTPORT-"))
        .collect()
}

/// Nothing of any pod is left in the node's namespace or the state directory.
fn assert_nothing_left(env: &Env, ns: &NetNs) {
    assert_eq!(ns.veths(), Vec::<String>::new(), "veths left");
    assert_eq!(ipam_files(env), Vec::<String>::new(), "IPAM allocations left");
    assert_eq!(pod_chains(ns), Vec::<String>::new(), "per-pod iptables chains left");
    assert_eq!(
        pinned_netns(env),
        Vec::<String>::new(),
        "pinned network namespaces left"
    );
}

fn sandbox_status_ip(env: &Env, pod: &str) -> String {
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let list = c
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner();
        let sb = list
            .items
            .into_iter()
            .find(|s| s.metadata.as_ref().is_some_and(|m| m.name == pod))
            .expect("the pod's sandbox");
        let st = c
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sb.id,
                verbose: false,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner();
        st.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default()
    })
}

/// RunPodSandbox for a CRI sandbox `name` (namespace crictl), with `port_mappings`.
fn sandbox_request(name: &str, port_mappings: Vec<cri::PortMapping>) -> cri::RunPodSandboxRequest {
    cri::RunPodSandboxRequest {
        config: Some(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("{name}-uid"),
                namespace: "crictl".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            port_mappings,
            ..Default::default()
        }),
        runtime_handler: String::new(),
    }
}

fn run_in(pid: i32, cmd: &[&str]) -> String {
    let out = in_container(pid, cmd);
    assert!(
        out.status.success(),
        "{cmd:?} in the container failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_get_ips_see_them_and_reach_each_other_and_the_node() {
    if !is_root() || !netns::cni_plugins_present() {
        return;
    }
    let (ns, mut env, conf) = cni_node("ips");
    let mut agent = start(&mut env, &ns, &cni_flags(&conf));
    env.write_manifest("web.yaml", WEB);
    env.write_manifest("client.yaml", &sleeper_pod("client"));
    let web = env.wait_running(&static_pod_name("web"), &["main"]);
    let client = env.wait_running(&static_pod_name("client"), &["main"]);
    wait_agent_ready(&env, &static_pod_name("web"));
    wait_agent_ready(&env, &static_pod_name("client"));

    // The address is in the default range and shown everywhere.
    let web_ip = wide_ip(&env, &static_pod_name("web"));
    let client_ip = wide_ip(&env, &static_pod_name("client"));
    assert_ne!(web_ip, client_ip);
    for ip in [web_ip, client_ip] {
        assert_eq!(ip.octets()[..2], [10, 244], "{ip} not in the default 10.244.0.0/16");
    }
    let yaml = ok(&env, &["get", "pod", &static_pod_name("web"), "-o", "yaml"]);
    assert!(yaml.contains(&format!("podIP: {web_ip}")), "{yaml}");
    let describe = ok(&env, &["describe", "pod", &static_pod_name("web")]);
    assert!(
        describe
            .lines()
            .any(|l| l.starts_with("IP:") && l.trim_end().ends_with(&web_ip.to_string())),
        "{describe}"
    );
    assert_eq!(sandbox_status_ip(&env, &static_pod_name("web")), web_ip.to_string());

    // What the kernel and the container see: eth0 has it, /etc/hosts maps the hostname to
    // it, the downward API gives it.
    let addr = run_in(web.pid("main"), &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {web_ip}/16")), "{addr}");
    let hosts = run_in(web.pid("main"), &["cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("{web_ip}\t{}\n", static_pod_name("web"))),
        "{hosts}"
    );
    assert!(!hosts.contains("127.0.1.1"), "{hosts}");
    // The kubelet's own file from the pod's directory, not the sandbox's.
    assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n"), "{hosts}");
    assert_eq!(std::fs::read_to_string(web.dir.join("etc-hosts")).unwrap(), hosts);
    let environ = std::fs::read(format!("/proc/{}/environ", web.pid("main"))).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.split('\0').any(|v| v == format!("MY_IP={web_ip}")), "{environ}");
    assert!(
        environ.split('\0').any(|v| v == format!("MY_IPS={web_ip}")),
        "{environ}"
    );
    // One veth per pod on the node, on the bridge.
    assert_eq!(ns.veths().len(), 2);
    assert_eq!(ipam_files(&env).len(), 2);
    assert_eq!(pinned_netns(&env).len(), 2);

    // Pod to pod by IP, and pod to the node (the bridge's gateway address).
    let page = wait_for("client reaches web by IP", Duration::from_secs(20), || {
        let out = in_container(
            client.pid("main"),
            // busybox's own -T crashes (Debian's 1.35/1.36): timeout bounds it instead.
            &["timeout", "3", "wget", "-q", "-O-", &format!("http://{web_ip}:8080/")],
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(page.trim(), "hello from web");
    let gateway = Ipv4Addr::new(10, 244, 0, 1);
    let ping = run_in(
        client.pid("main"),
        &["ping", "-c", "1", "-W", "3", &gateway.to_string()],
    );
    assert!(ping.contains("1 packets received"), "{ping}");
    // hostPort through portmap, on the node's bridge address.
    let via_host_port = ns.ok(&["curl", "-s", "-m", "3", &format!("http://{gateway}:18080/")]);
    assert_eq!(via_host_port.trim(), "hello from web");
    let via_localhost = ns.ok(&["curl", "-s", "-m", "3", "http://127.0.0.1:18080/"]);
    assert_eq!(via_localhost.trim(), "hello from web");
    // The pod goes: so do its address, veth, rules, and the hostPort stops answering.
    env.remove_manifest("web.yaml");
    wait_for("web removed", Duration::from_secs(30), || {
        env.pod(&static_pod_name("web")).is_none().then_some(())
    });
    let after = ns.run(&["curl", "-s", "-m", "3", &format!("http://{gateway}:18080/")]);
    assert!(!after.status.success(), "hostPort still answers after the pod went");
    assert_eq!(ipam_files(&env), vec![client_ip.to_string()]);
    assert_eq!(ns.veths().len(), 1);

    agent.stop();
    assert_nothing_left(&env, &ns);
}

/// Two servers in one pod: one on every address, one on the pod's loopback only. Both
/// probed without a host.
const PROBED: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: everywhere
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
    readinessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 1
  - name: loopback
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "mkdir -p /tmp/www && exec httpd -f -p 127.0.0.1:8081 -h /tmp/www"]
    readinessProbe:
      tcpSocket: {port: 8081}
      periodSeconds: 1
"#;

#[test]
fn probes_without_a_host_connect_to_the_pod_ip_as_the_kubelets_do() {
    if !is_root() || !netns::cni_plugins_present() {
        return skip("needs root and the CNI plugins (containernetworking-plugins)");
    }
    let (ns, mut env, conf) = cni_node("probe-ip");
    let mut agent = start(&mut env, &ns, &cni_flags(&conf));
    env.write_manifest("probed.yaml", PROBED);
    let pod = static_pod_name("probed");
    let ip = wide_ip(&env, &pod);
    let ready = |container: &str| -> Option<bool> {
        let json: serde_json::Value = serde_json::from_str(&ok(&env, &["get", "pod", &pod, "-o", "json"])).ok()?;
        json["status"]["containerStatuses"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == container)?["ready"]
            .as_bool()
    };
    wait_for("the server on every address is ready", Duration::from_secs(30), || {
        ready("everywhere")?.then_some(())
    });
    // The kubelet probes status.podIP: a server on the pod's loopback only is not reached.
    let refused = format!("Readiness probe failed: dial tcp {ip}:8081: connect: connection refused");
    wait_for(
        "the loopback-only server's probe fails at the pod IP",
        Duration::from_secs(30),
        || {
            pod_events(&env, &pod)
                .into_iter()
                .find(|(_, r, m, _)| r == "Unhealthy" && *m == refused)
        },
    );
    assert_eq!(ready("loopback"), Some(false));

    env.remove_manifest("probed.yaml");
    wait_for("probed removed", Duration::from_secs(30), || {
        env.pod(&pod).is_none().then_some(())
    });
    agent.stop();
    assert_nothing_left(&env, &ns);
}

#[test]
fn a_pod_removed_while_the_agent_was_down_gets_its_del() {
    if !is_root() || !netns::cni_plugins_present() {
        return;
    }
    let (ns, mut env, conf) = cni_node("restart");
    let flags = cni_flags(&conf);
    let mut agent = start(&mut env, &ns, &flags);
    env.write_manifest("a.yaml", &sleeper_pod("a"));
    env.write_manifest("b.yaml", &sleeper_pod("b"));
    env.wait_running(&static_pod_name("a"), &["main"]);
    let b = env.wait_running(&static_pod_name("b"), &["main"]);
    let (a_ip, b_ip) = (
        wide_ip(&env, &static_pod_name("a")),
        wide_ip(&env, &static_pod_name("b")),
    );
    assert_eq!(ns.veths().len(), 2);

    agent.kill9();
    env.remove_manifest("a.yaml");
    let mut agent = start(&mut env, &ns, &flags);
    wait_for("pod a removed", Duration::from_secs(30), || {
        env.pod(&static_pod_name("a")).is_none().then_some(())
    });
    // Its DEL ran: address free, veth gone, namespace unpinned; b keeps everything.
    let files = ipam_files(&env);
    assert!(
        !files.contains(&a_ip.to_string()),
        "a's address still allocated: {files:?}"
    );
    assert!(files.contains(&b_ip.to_string()), "b lost its address: {files:?}");
    assert_eq!(ns.veths().len(), 1, "a's veth still there");
    assert_eq!(pinned_netns(&env).len(), 1);
    assert_eq!(wide_ip(&env, &static_pod_name("b")), b_ip);
    let again = env.wait_running(&static_pod_name("b"), &["main"]);
    assert_eq!(again.pid("main"), b.pid("main"), "b was not restarted");
    let addr = run_in(b.pid("main"), &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {b_ip}/16")), "{addr}");
    // The re-adopted pod's network passed CHECK: no event says otherwise.
    assert!(
        !pod_events(&env, &static_pod_name("b"))
            .iter()
            .any(|e| e.1 == "FailedPodNetworkCheck"),
        "{:?}",
        pod_events(&env, &static_pod_name("b"))
    );

    agent.stop();
    assert_nothing_left(&env, &ns);
}

#[test]
fn a_failing_plugin_is_an_event_and_leaves_nothing() {
    if !is_root() || !netns::cni_plugins_present() {
        return;
    }
    let (ns, mut env, conf) = cni_node("fail");
    // A real bridge first (it allocates an address and a veth), then a plugin that fails:
    // the bridge's part must be undone.
    let bin = env.dir.join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let failing = bin.join("always-fails");
    std::fs::write(
        &failing,
        "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"injected failure\",\"details\":\"by the test\"}'\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ipam = env.root.join("network/host-local");
    std::fs::write(
        conf.join("10-test.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "minilet",
            "plugins": [
                {"type": "bridge", "bridge": "testbr0", "isGateway": true, "ipMasq": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/24"}]], "dataDir": ipam}},
                {"type": "always-fails"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let flags = vec![
        "--network=cni".to_string(),
        format!("--cni-conf-dir={}", conf.display()),
        format!("--cni-bin-dir={}:{}", bin.display(), netns::CNI_PLUGINS),
        // One attempt is enough to look at; the retry comes after the test.
        "--backoff-initial=300s".into(),
    ];
    let mut agent = start(&mut env, &ns, &flags);
    env.write_manifest("p.yaml", &sleeper_pod("p"));
    let (_, _, message, _) = wait_for("FailedCreatePodSandBox event", Duration::from_secs(30), || {
        pod_events(&env, &static_pod_name("p"))
            .into_iter()
            .find(|e| e.1 == "FailedCreatePodSandBox")
    });
    assert!(
        message.contains("CNI plugin always-fails failed (ADD): injected failure: by the test"),
        "{message}"
    );
    // The sandbox was not started and nothing of the attempt is left.
    let pod = env.pod(&static_pod_name("p")).expect("pod record");
    assert!(pod.pause_pid.is_none_or(|p| !alive(p)), "pause still running");
    assert!(pod.containers.is_empty());
    assert!(!pod.dir.join("network.json").exists());
    let sandboxes = std::fs::read_dir(env.root.join("sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sandboxes, 0, "the failed sandbox's directory is gone");
    assert_nothing_left(&env, &ns);

    agent.stop();
    assert_nothing_left(&env, &ns);
}

/// The CRI's NetworkReady condition: (status, reason, message).
fn network_ready(env: &Env) -> (bool, String, String) {
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let s = c
            .runtime
            .status(cri::StatusRequest { verbose: false })
            .await
            .expect("Status")
            .into_inner();
        let cond = s
            .status
            .into_iter()
            .flat_map(|s| s.conditions)
            .find(|c| c.r#type == "NetworkReady")
            .expect("a NetworkReady condition");
        (cond.status, cond.reason, cond.message)
    })
}

#[test]
fn network_ready_says_what_pods_get_or_why_not() {
    if !is_root() || !netns::cni_plugins_present() {
        return; // both say why, and count the skip
    }
    let (ns, mut env, conf) = cni_node("ready");
    // A configuration naming a plugin no bin dir has: not ready, in containerd's words.
    std::fs::write(
        conf.join("10-missing.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "gone", "plugins": [{"type": "no-such-plugin"}]}"#,
    )
    .expect("write the conflist");
    let _agent = start(&mut env, &ns, &cni_flags(&conf));
    let (ready, reason, message) = network_ready(&env);
    assert!(!ready, "{message}");
    assert_eq!(reason, "NetworkPluginNotReady");
    assert!(
        message.contains("\"gone\"") && message.contains("no-such-plugin"),
        "{message}"
    );
    // Without a configuration, minilet's default network (its plugins are installed).
    std::fs::remove_file(conf.join("10-missing.conflist")).expect("remove the conflist");
    let (ready, reason, message) = network_ready(&env);
    assert!(ready && reason.is_empty(), "{reason}: {message}");
    assert!(message.contains("minilet's default CNI network"), "{message}");
}

#[test]
fn without_cni_pods_keep_loopback_only() {
    if !is_root() {
        return;
    }
    let env = Env::new("net-none");
    env.import_image("busybox");
    // The harness's default: --network=none, in the machine's own namespace.
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("p.yaml", &sleeper_pod("p"));
    let p = env.wait_running(&static_pod_name("p"), &["main"]);
    wait_agent_ready(&env, &static_pod_name("p"));
    let links = run_in(p.pid("main"), &["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    let hosts = run_in(p.pid("main"), &["cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("127.0.1.1\t{}\n", static_pod_name("p"))),
        "{hosts}"
    );
    let yaml = ok(&env, &["get", "pod", &static_pod_name("p"), "-o", "yaml"]);
    assert!(!yaml.contains("podIP:"), "{yaml}");
    assert!(!env.root.join("network").exists(), "no network state without CNI");
    let (ready, _, message) = network_ready(&env);
    assert!(ready && message.starts_with("--network=none"), "{message}");

    // (A CRI client's port_mappings go to the userspace forwarder in this mode: see
    // tests/hostport.rs, which runs the node in a namespace of its own.)
}

#[test]
fn a_replaced_sandbox_frees_the_old_address() {
    if !is_root() || !netns::cni_plugins_present() {
        return;
    }
    let (ns, mut env, conf) = cni_node("replace");
    let mut agent = start(&mut env, &ns, &cni_flags(&conf));
    env.write_manifest("p.yaml", &sleeper_pod("p"));
    let first = env.wait_running(&static_pod_name("p"), &["main"]);
    let old_ip = wide_ip(&env, &static_pod_name("p"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pause()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the pause");
    wait_for("a new sandbox", Duration::from_secs(30), || {
        env.pod(&static_pod_name("p"))?
            .pause_pid
            .filter(|p| *p != first.pause() && alive(*p))
    });
    let second = env.wait_running(&static_pod_name("p"), &["main"]);
    // The new sandbox has its own address; the old one's DEL freed its address and veth.
    let files = wait_for("one allocation", Duration::from_secs(30), || {
        let f = ipam_files(&env);
        (f.len() == 1).then_some(f)
    });
    assert_eq!(ns.veths().len(), 1);
    assert_eq!(pinned_netns(&env).len(), 1);
    let addr = run_in(second.pid("main"), &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(
        addr.contains(&format!("inet {}/16", files[0])),
        "{addr} vs {files:?} (old {old_ip})"
    );

    agent.stop();
    assert_nothing_left(&env, &ns);
}

#[test]
fn cri_sandboxes_get_an_address_until_they_are_stopped() {
    if !is_root() || !netns::cni_plugins_present() {
        return;
    }
    let (ns, mut env, conf) = cni_node("cri");
    let mut agent = start(&mut env, &ns, &cni_flags(&conf));
    let mut request = sandbox_request(
        "crisb",
        vec![cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 8080,
            host_port: 18090,
            host_ip: String::new(),
        }],
    );
    // A pause that is not root: the agent sets the network up through it all the same.
    if let Some(config) = request.config.as_mut() {
        config.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 65534 }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let id = c
            .runtime
            .run_pod_sandbox(request)
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        let status = |c: &mut minilet_e2e::grpc::Clients| {
            let id = id.clone();
            let mut rc = c.runtime.clone();
            async move {
                rc.pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose: false,
                })
                .await
                .expect("PodSandboxStatus")
                .into_inner()
                .status
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .unwrap_or_default()
            }
        };
        let ip = status(&mut c).await;
        let parsed: Ipv4Addr = ip.parse().unwrap_or_else(|_| panic!("sandbox IP {ip:?}"));
        assert_eq!(parsed.octets()[..2], [10, 244]);
        assert_eq!(ipam_files(&env), vec![ip.clone()]);
        assert_eq!(ns.veths().len(), 1);
        let hosts = std::fs::read_to_string(env.root.join("sandboxes").join(&id).join("etc/hosts")).unwrap();
        assert!(hosts.contains(&format!("{ip}\tcrisb\n")), "{hosts}");
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(env.root.join("sandboxes").join(&id).join("sandbox.json")).expect("sandbox.json"),
        )
        .expect("JSON");
        let pause = state["pause"]["pid"].as_i64().expect("pause pid");
        let pause_status = std::fs::read_to_string(format!("/proc/{pause}/status")).expect("pause status");
        assert!(
            pause_status.lines().any(|l| l.starts_with("Uid:\t65534\t")),
            "{pause_status}"
        );
        // Its port mapping went to portmap: the node's NAT table forwards the host port.
        let nat = ns.ok(&["iptables-save", "-t", "nat"]);
        assert!(
            nat.lines()
                .any(|l| l.contains("--dport 18090") && l.contains(&format!("--to-destination {ip}:8080"))),
            "{nat}"
        );

        // StopPodSandbox frees the address (as containerd's does); Remove leaves nothing.
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .expect("StopPodSandbox");
        assert_eq!(status(&mut c).await, "");
        assert_nothing_left(&env, &ns);
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .expect("RemovePodSandbox");
    });

    agent.stop();
    assert_nothing_left(&env, &ns);
}

/// A conflist of a real bridge (on 10.78.0.0/24, its own host-local directory) and then a
/// plugin whose ADD hangs after writing its PID to a marker file; its DEL succeeds.
struct Hanging {
    marker: PathBuf,
    ipam: PathBuf,
    list: PathBuf,
    flags: Vec<String>,
}

impl Hanging {
    fn new(env: &Env, conf: &Path) -> Hanging {
        let bin = env.dir.join("cni-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let marker = env.dir.join("hanging-pid");
        let hangs = bin.join("hangs");
        std::fs::write(
            &hangs,
            format!(
                "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then echo $$ > {}; exec sleep 600; fi\nexit 0\n",
                marker.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hangs, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ipam = env.root.join("network/host-local");
        let list = conf.join("10-hangs.conflist");
        std::fs::write(
            &list,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "hangs",
                "plugins": [
                    {"type": "bridge", "bridge": "testbr1", "isGateway": true, "ipMasq": true,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.78.0.0/24"}]], "dataDir": ipam}},
                    {"type": "hangs"}
                ]
            })
            .to_string(),
        )
        .unwrap();
        let flags = vec![
            "--network=cni".to_string(),
            format!("--cni-conf-dir={}", conf.display()),
            format!("--cni-bin-dir={}:{}", bin.display(), netns::CNI_PLUGINS),
        ];
        Hanging {
            marker,
            ipam: ipam.join("hangs"),
            list,
            flags,
        }
    }

    /// The PID of the hanging ADD, once it hangs.
    fn wait(&self) -> i32 {
        wait_for("the hanging ADD", Duration::from_secs(30), || {
            std::fs::read_to_string(&self.marker).ok()?.trim().parse().ok()
        })
    }

    /// Addresses the bridge's host-local holds.
    fn allocations(&self) -> usize {
        std::fs::read_dir(&self.ipam)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<Ipv4Addr>().is_ok())
            .count()
    }

    /// Kill the agent in the middle of the ADD, and the plugin with it (the dead agent's
    /// child, which a crashed node would lose too); the next agent gets the default network.
    fn crash(&self, agent: &mut Agent) {
        let hanging = self.wait();
        assert_eq!(self.allocations(), 1, "the bridge's ADD ran");
        agent.kill9();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(hanging), nix::sys::signal::Signal::SIGKILL)
            .expect("kill the hanging plugin");
        std::fs::remove_file(&self.list).unwrap();
    }
}

#[test]
fn an_add_interrupted_by_an_agent_crash_is_undone_and_the_sandbox_replaced() {
    if !is_root() || !netns::cni_plugins_present() {
        return;
    }
    let (ns, mut env, conf) = cni_node("interrupted");
    let hanging = Hanging::new(&env, &conf);
    let mut agent = start(&mut env, &ns, &hanging.flags);
    env.write_manifest("p.yaml", &sleeper_pod("p"));
    hanging.crash(&mut agent);
    let mut agent = start(&mut env, &ns, &hanging.flags);
    env.wait_running(&static_pod_name("p"), &["main"]);
    let ip = wide_ip(&env, &static_pod_name("p"));
    assert_eq!(ip.octets()[..2], [10, 244], "a new sandbox on the default network");
    assert_eq!(hanging.allocations(), 0, "the interrupted ADD's address was freed");
    assert_eq!(ns.veths().len(), 1);
    assert_eq!(pinned_netns(&env).len(), 1);

    agent.stop();
    assert_nothing_left(&env, &ns);
}

#[test]
fn an_interrupted_cri_sandbox_gets_its_del() {
    if !is_root() || !netns::cni_plugins_present() {
        return;
    }
    let (ns, mut env, conf) = cni_node("cri-interrupted");
    let hanging = Hanging::new(&env, &conf);
    let mut agent = start(&mut env, &ns, &hanging.flags);
    let socket = env.socket.clone();
    // RunPodSandbox hangs in the plugin; the agent dies under it.
    let call = std::thread::spawn(move || {
        rt().block_on(async {
            let mut c = connect(&socket).await;
            c.runtime
                .run_pod_sandbox(sandbox_request("cut", Vec::new()))
                .await
                .is_ok()
        })
    });
    hanging.crash(&mut agent);
    assert!(!call.join().expect("the client thread"), "RunPodSandbox succeeded");
    let mut agent = start(&mut env, &ns, &hanging.flags);
    // Never reported to a client, so the next agent discards it, DEL first.
    assert_eq!(hanging.allocations(), 0, "the interrupted ADD's address was freed");
    let left = std::fs::read_dir(env.root.join("sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "the interrupted sandbox's directory");
    assert_nothing_left(&env, &ns);

    agent.stop();
    assert_nothing_left(&env, &ns);
}

#[test]
fn a_broken_network_found_at_re_adoption_is_reported() {
    if !is_root() || !netns::cni_plugins_present() {
        return;
    }
    let (ns, mut env, conf) = cni_node("check");
    let flags = cni_flags(&conf);
    let mut agent = start(&mut env, &ns, &flags);
    env.write_manifest("p.yaml", &sleeper_pod("p"));
    let p = env.wait_running(&static_pod_name("p"), &["main"]);
    wide_ip(&env, &static_pod_name("p"));
    agent.kill9();
    // While no agent runs, the pod's veth goes (its peer, the pod's eth0, with it).
    let veths = ns.veths();
    assert_eq!(veths.len(), 1);
    ns.ok(&["ip", "link", "del", &veths[0]]);
    let mut agent = start(&mut env, &ns, &flags);
    let (_, _, message, _) = wait_for("FailedPodNetworkCheck", Duration::from_secs(30), || {
        pod_events(&env, &static_pod_name("p"))
            .into_iter()
            .find(|e| e.1 == "FailedPodNetworkCheck")
    });
    assert!(message.contains("CNI plugin bridge failed (CHECK)"), "{message}");
    // Reported, not acted on: the pod keeps running.
    assert_eq!(
        env.wait_running(&static_pod_name("p"), &["main"]).pid("main"),
        p.pid("main")
    );

    agent.stop();
    // The bridge plugin (1.1.1) finds the addresses to unmasquerade on the interface it
    // deletes: with the interface gone its per-pod NAT chain stays (in this namespace,
    // which goes with the test). Everything else must be gone.
    assert_eq!(ns.veths(), Vec::<String>::new());
    assert_eq!(ipam_files(&env), Vec::<String>::new());
    assert_eq!(pinned_netns(&env), Vec::<String>::new());
}

#[test]
fn a_broken_cri_sandbox_network_is_logged_at_re_adoption() {
    if !is_root() || !netns::cni_plugins_present() {
        return;
    }
    let (ns, mut env, conf) = cni_node("cri-check");
    let flags = cni_flags(&conf);
    let mut agent = start(&mut env, &ns, &flags);
    let id = rt().block_on(async {
        let mut c = connect(&env.socket).await;
        c.runtime
            .run_pod_sandbox(sandbox_request("checked", Vec::new()))
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id
    });
    // A healthy network passes CHECK at re-adoption.
    agent.kill9();
    let mut agent = start(&mut env, &ns, &flags);
    assert!(
        !agent.log_text().contains("pod network check failed"),
        "{}",
        agent.log_text()
    );
    // One broken while no agent ran does not.
    agent.kill9();
    let veths = ns.veths();
    assert_eq!(veths.len(), 1);
    ns.ok(&["ip", "link", "del", &veths[0]]);
    let mut agent = start(&mut env, &ns, &flags);
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("pod network check failed")
            && l.contains(&id)
            && l.contains("CNI plugin bridge failed (CHECK)")),
        "{log}"
    );

    agent.stop();
    // As with a static pod: the bridge plugin cannot unmasquerade without the interface.
    assert_eq!(ipam_files(&env), Vec::<String>::new());
    assert_eq!(pinned_netns(&env), Vec::<String>::new());
}

#[test]
fn a_cri_sandboxs_bandwidth_annotations_reach_the_bandwidth_plugin() {
    if !is_root() || !netns::cni_plugins_present() {
        return;
    }
    if !Path::new(netns::CNI_PLUGINS).join("bandwidth").is_file() {
        return skip("the CNI bandwidth plugin is missing (hack/setup installs containernetworking-plugins)");
    }
    let (ns, mut env, conf) = cni_node("bw");
    let ipam = env.root.join("network/host-local");
    std::fs::write(
        conf.join("10-bw.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "minilet",
            "plugins": [
                {"type": "bridge", "bridge": "testbw0", "isGateway": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.79.0.0/24"}]], "dataDir": ipam}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}}
            ]
        })
        .to_string(),
    )
    .expect("write the conflist");
    let mut agent = start(&mut env, &ns, &cni_flags(&conf));
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let request = |ingress: &str| {
            let mut r = sandbox_request("limited", Vec::new());
            if let Some(config) = r.config.as_mut() {
                config
                    .annotations
                    .insert("kubernetes.io/ingress-bandwidth".into(), ingress.into());
                config
                    .annotations
                    .insert("kubernetes.io/egress-bandwidth".into(), "2M".into());
            }
            r
        };
        // A value the kubelet would not pass is refused by name, before anything is made.
        let e = c.runtime.run_pod_sandbox(request("fast")).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("kubernetes.io/ingress-bandwidth"), "{e:?}");
        assert_nothing_left(&env, &ns);

        let id = c
            .runtime
            .run_pod_sandbox(request("1M"))
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        // The plugin shapes the pod's traffic on the node's side: a token bucket on the
        // pod's veth (ingress) and on an ifb device its egress is redirected to.
        let qdiscs = ns.ok(&["tc", "qdisc", "show"]);
        let tbf: Vec<&str> = qdiscs.lines().filter(|l| l.contains("tbf")).collect();
        assert!(tbf.iter().any(|l| l.contains("rate 1Mbit")), "ingress limit: {qdiscs}");
        assert!(tbf.iter().any(|l| l.contains("rate 2Mbit")), "egress limit: {qdiscs}");

        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .expect("StopPodSandbox");
        let qdiscs = ns.ok(&["tc", "qdisc", "show"]);
        assert!(!qdiscs.contains("tbf"), "the limits go with the network: {qdiscs}");
        assert_nothing_left(&env, &ns);
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .expect("RemovePodSandbox");
    });
    agent.stop();
    assert_nothing_left(&env, &ns);
}
