//! hostPort without CNI: the per-pod forwarder opens the node's port before the pod runs,
//! carries TCP connections and UDP datagrams to the pod's loopback, honours hostIP, closes
//! the port when the pod goes, refuses a taken port (event, nothing started) and a second
//! pod on the same port (admission), and keeps forwarding across an agent SIGKILL; a
//! sidecar's hostPort is not opened (as the kubelet's portMappings). Also
//! `minilet port-forward` with several ports, `LOCAL:REMOTE` and `--address`.
//!
//! The whole node runs inside a network namespace each test creates (`minilet_e2e::netns`):
//! no port is ever opened on the machine's own network.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use minilet_e2e::netns::{NetNs, in_netns};
use minilet_e2e::*;

/// The test's node: its Env and a network namespace of its own, where the agent and
/// everything it binds live.
fn node(name: &str) -> (NetNs, Env) {
    (NetNs::for_test(name), Env::new(name))
}

fn start_agent(net: &NetNs, env: &mut Env) -> Agent {
    Agent::start_in(env, net.path(), &["--backoff-initial", "1s", "--backoff-max", "2s"])
}

fn pod(name: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: web\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, \"trap 'exit 0' TERM; mkdir -p /www && echo hello-from-{name} > /www/index.html && httpd -f -p 127.0.0.1:8080 -h /www & wait\"]\n    ports: {ports}\n"
    )
}

/// One HTTP/1.0 GET; `None` when the connection is refused or yields nothing.
fn http_get(addr: &str) -> Option<String> {
    let addr: SocketAddr = addr.parse().expect("address");
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    (!resp.is_empty()).then_some(resp)
}

fn refused(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("address");
    matches!(TcpStream::connect_timeout(&addr, Duration::from_secs(5)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// TCP ports listening in the namespace of `pid`, as its kernel lists them.
fn listening_tcp(pid: i32) -> Vec<u16> {
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default();
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            // State 0A is LISTEN; the local address is ADDR:PORT in hex.
            if f.get(3) == Some(&"0A")
                && let Some(port) = f.get(1).and_then(|a| a.rsplit(':').next())
                && let Ok(p) = u16::from_str_radix(port, 16)
            {
                out.push(p);
            }
        }
    }
    out
}

/// The forwarder recorded in a pod's sandbox directory.
fn forwarder_pid(p: &PodView) -> Option<i32> {
    let dir = p.sandbox_dir.as_ref()?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("portfwd.json")).ok()?).ok()?;
    v["pid"].as_i64().map(|p| p as i32)
}

/// A UDP echo server ("pong:" + datagram) on 127.0.0.1:`port` inside the network namespace
/// of `pause`: the pod's loopback, where a container would listen. Busybox has no UDP
/// server, and what is under test is the path from the node's port into that namespace.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start(pause: i32, port: u16) -> UdpEcho {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = PathBuf::from(format!("/proc/{pause}/ns/net"));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&ns).expect("open the pod's netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns(net)");
            let s = UdpSocket::bind(("127.0.0.1", port)).expect("bind the echo server in the pod");
            s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            tx.send(()).expect("ready");
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let mut reply = b"pong:".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = s.send_to(&reply, from);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("echo server ready");
        UdpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Send `msg` to `addr` from a fresh socket until an answer comes (the first datagrams may
/// race the server's start); returns the answer.
fn udp_ask(addr: &str, msg: &str) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    wait_for(&format!("a UDP answer from {addr}"), Duration::from_secs(15), || {
        s.send_to(msg.as_bytes(), addr).ok()?;
        let mut buf = [0u8; 2048];
        let n = s.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

#[test]
fn tcp_udp_and_host_ip_are_forwarded_and_closed_with_the_pod() {
    if !is_root() {
        return;
    }
    let (net, mut env) = node("hostport-fwd");
    env.import_image("busybox");
    let agent = start_agent(&net, &mut env);
    env.write_manifest(
        "web.yaml",
        &pod(
            "web",
            "[{containerPort: 8080, hostPort: 18080}, {containerPort: 8080, hostPort: 18081, hostIP: 127.0.0.2}, {containerPort: 5353, hostPort: 15353, protocol: UDP}]",
        ),
    );
    // The port is open before the pod runs: by the time its container exists, it listens.
    let first = wait_for("web's container process", Duration::from_secs(30), || {
        let p = env.pod(&static_pod_name("web"))?;
        p.containers.get("web")?.pid?;
        Some(p)
    });
    let ports = listening_tcp(agent.pid());
    assert!(
        ports.contains(&18080) && ports.contains(&18081),
        "host ports listen as soon as a container exists: {ports:?}"
    );
    let fwd = forwarder_pid(&first).expect("portfwd.json names the forwarder");
    assert_eq!(
        ns(fwd, "net"),
        ns(first.pause(), "net"),
        "the forwarder works from the pod's netns"
    );

    // TCP, answered by the container's httpd on its loopback.
    let body = net.within(|| {
        wait_for("the pod answers on 127.0.0.1:18080", Duration::from_secs(20), || {
            http_get("127.0.0.1:18080").filter(|r| r.contains("hello-from-web"))
        })
    });
    assert!(body.starts_with("HTTP/1."), "{body:?}");
    // hostIP: only that address has the port.
    net.within(|| {
        let r = http_get("127.0.0.2:18081").expect("an answer on hostIP 127.0.0.2");
        assert!(r.contains("hello-from-web"), "{r:?}");
        assert!(refused("127.0.0.1:18081"), "18081 is bound to 127.0.0.2 only");
    });
    // The ports are the test namespace's, never the machine's.
    assert_ne!(ns(agent.pid(), "net"), ns(std::process::id() as i32, "net"));

    // UDP, two clients each with their own session.
    let echo = UdpEcho::start(first.pause(), 5353);
    net.within(|| {
        assert_eq!(udp_ask("127.0.0.1:15353", "one"), "pong:one");
        assert_eq!(udp_ask("127.0.0.1:15353", "two"), "pong:two");
    });
    drop(echo);

    // The pod goes: the ports close and the forwarder is gone.
    env.remove_manifest("web.yaml");
    wait_for("web removed", Duration::from_secs(30), || {
        env.pod(&static_pod_name("web")).is_none().then_some(())
    });
    assert!(!alive(fwd), "the forwarder is gone with the pod");
    let ports = listening_tcp(agent.pid());
    assert!(
        !ports.contains(&18080) && !ports.contains(&18081),
        "ports closed: {ports:?}"
    );
    net.within(|| assert!(refused("127.0.0.1:18080")));
}

#[test]
fn a_taken_port_and_a_second_pod_on_the_same_port_are_refused() {
    if !is_root() {
        return;
    }
    let (net, mut env) = node("hostport-conflict");
    env.import_image("busybox");
    let _agent = start_agent(&net, &mut env);

    // Someone else (not a pod) holds the port: the pod gets the kubelet's event, and
    // nothing of it runs while the port is taken.
    let squatter = net.within(|| TcpListener::bind("0.0.0.0:18090").expect("bind 18090 in the test's netns"));
    env.write_manifest(
        "blocked.yaml",
        &pod("blocked", "[{containerPort: 8080, hostPort: 18090}]"),
    );
    let message = wait_for("the hostport event", Duration::from_secs(30), || {
        pod_events(&env, &static_pod_name("blocked"))
            .into_iter()
            .find(|(_, reason, msg, _)| {
                reason == "FailedCreatePodSandBox" && msg.contains("cannot open hostport 18090")
            })
            .map(|(_, _, msg, _)| msg)
    });
    assert!(message.contains("in use"), "{message}");
    // Give it a retry (back-off 1s) or two: still nothing started, no pause left running.
    wait_for("a second failed attempt", Duration::from_secs(30), || {
        pod_events(&env, &static_pod_name("blocked"))
            .into_iter()
            .find(|(_, reason, _, count)| reason == "FailedCreatePodSandBox" && *count >= 2)
    });
    let p = env.pod(&static_pod_name("blocked")).expect("blocked pod's state");
    assert!(
        p.containers.is_empty(),
        "no container was created: {:?}",
        p.containers.keys()
    );
    assert!(p.pause_pid.is_none_or(|pid| !alive(pid)), "no pause left running");
    // The port comes free: the next attempt starts the pod, forwarding.
    drop(squatter);
    env.wait_running(&static_pod_name("blocked"), &["web"]);
    net.within(|| {
        wait_for("blocked answers on 18090", Duration::from_secs(20), || {
            http_get("127.0.0.1:18090").filter(|r| r.contains("hello-from-blocked"))
        })
    });

    // A second pod of this node on the same port and protocol is refused at admission.
    env.write_manifest(
        "second.yaml",
        &pod("second", "[{containerPort: 8080, hostPort: 18090, hostIP: 127.0.0.1}]"),
    );
    let rejected = wait_for("second rejected", Duration::from_secs(30), || {
        pod_events(&env, &static_pod_name("second"))
            .into_iter()
            .find(|(kind, reason, _, _)| kind == "Warning" && reason == "NodePorts")
    });
    assert!(
        rejected.2.contains("didn't have free ports") && rejected.2.contains("default/blocked"),
        "{rejected:?}"
    );
    assert!(
        env.pod(&static_pod_name("second")).is_none(),
        "nothing of the rejected pod exists"
    );
    let second: serde_json::Value =
        serde_json::from_str(&ok(&env, &["get", "pod", &static_pod_name("second"), "-o", "json"])).expect("pod JSON");
    assert_eq!(second["status"]["phase"], "Failed");
    assert_eq!(second["status"]["reason"], "NodePorts");
    // The same port over UDP is another port: admitted.
    env.write_manifest(
        "udp.yaml",
        &pod("udp", "[{containerPort: 8080, hostPort: 18090, protocol: UDP}]"),
    );
    env.wait_running(&static_pod_name("udp"), &["web"]);

    // An edited manifest is a new pod that takes the port over once the old one is gone.
    env.write_manifest(
        "blocked.yaml",
        &pod("blocked", "[{containerPort: 8080, hostPort: 18090}]").replace("hello-from", "hello-again-from"),
    );
    net.within(|| {
        wait_for("the edited pod answers on 18090", Duration::from_secs(30), || {
            http_get("127.0.0.1:18090").filter(|r| r.contains("hello-again-from-blocked"))
        })
    });
    assert!(
        !pod_events(&env, &static_pod_name("blocked"))
            .iter()
            .any(|(_, reason, _, _)| reason == "NodePorts"),
        "the edited pod is not refused for its predecessor's port"
    );
}

#[test]
fn forwarding_survives_an_agent_sigkill_and_restart() {
    if !is_root() {
        return;
    }
    let (net, mut env) = node("hostport-restart");
    env.import_image("busybox");
    let mut agent = start_agent(&net, &mut env);
    env.write_manifest("web.yaml", &pod("web", "[{containerPort: 8080, hostPort: 18080}]"));
    let p = env.wait_running(&static_pod_name("web"), &["web"]);
    let get = || {
        net.within(|| {
            wait_for("web answers on 18080", Duration::from_secs(20), || {
                http_get("127.0.0.1:18080").filter(|r| r.contains("hello-from-web"))
            })
        })
    };
    get();
    let fwd = forwarder_pid(&p).expect("forwarder");

    agent.kill9();
    // No agent: the forwarder still serves.
    get();
    assert!(alive(fwd));
    let agent2 = start_agent(&net, &mut env);
    get();
    assert_eq!(
        forwarder_pid(&env.pod(&static_pod_name("web")).expect("web")),
        Some(fwd),
        "the same forwarder is re-adopted, not replaced"
    );

    // Lost while no agent ran (killed): the restarted agent opens the ports again.
    let mut agent2 = agent2;
    agent2.kill9();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(fwd), nix::sys::signal::Signal::SIGKILL).expect("kill forwarder");
    wait_for("forwarder gone", Duration::from_secs(10), || {
        (!alive(fwd)).then_some(())
    });
    net.within(|| assert!(refused("127.0.0.1:18080")));
    let _agent3 = start_agent(&net, &mut env);
    get();
    let again = forwarder_pid(&env.pod(&static_pod_name("web")).expect("web")).expect("a new forwarder");
    assert_ne!(again, fwd);

    // The pause dies: the new sandbox gets the ports again (the old forwarder let go).
    let old_pause = env.pod(&static_pod_name("web")).expect("web").pause();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old_pause), nix::sys::signal::Signal::SIGKILL)
        .expect("kill the pause");
    wait_for("a new sandbox with a new forwarder", Duration::from_secs(30), || {
        let p = env.pod(&static_pod_name("web"))?;
        let fwd = forwarder_pid(&p)?;
        (p.pause() != old_pause && alive(p.pause()) && fwd != again && alive(fwd)).then_some(())
    });
    assert!(!alive(again), "the old sandbox's forwarder is gone");
    get();
}

#[test]
fn port_forward_several_ports_and_addresses_round_trip() {
    if !is_root() {
        return;
    }
    let (net, mut env) = node("hostport-pf");
    env.import_image("busybox");
    let _agent = start_agent(&net, &mut env);
    env.write_manifest(
        "pf.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: pf}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: web\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, \"trap 'exit 0' TERM; mkdir -p /a /b && echo port-a > /a/index.html && echo port-b > /b/index.html; httpd -f -p 127.0.0.1:8080 -h /a & httpd -f -p 127.0.0.1:8081 -h /b & wait\"]\n",
    );
    let pf = env.wait_running(&static_pod_name("pf"), &["web"]);
    wait_agent_ready(&env, &static_pod_name("pf"));
    // Both servers listen in the pod before any forwarding starts.
    wait_for("both servers in the pod", Duration::from_secs(20), || {
        let ports = listening_tcp(pf.pid("web"));
        (ports.contains(&8080) && ports.contains(&8081)).then_some(())
    });
    // The CLI runs in the test's namespace too: its listeners and the streaming connection
    // stay off the machine's network.
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", net.path().display()))
        .arg("--")
        .arg(minilet())
        .args([
            "port-forward",
            &static_pod_name("pf"),
            "18100:8080",
            ":8081",
            "--address",
            "127.0.0.1,127.0.0.2",
        ])
        .env("MINILET_SOCKET", &env.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn minilet port-forward");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut forwards = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        out.read_line(&mut line).expect("a Forwarding line");
        let (addr, remote) = line
            .trim()
            .strip_prefix("Forwarding from ")
            .and_then(|r| r.split_once(" -> "))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        forwards.push((addr.to_string(), remote.to_string()));
    }
    let addrs: Vec<&str> = forwards.iter().map(|(a, _)| a.as_str()).collect();
    assert!(
        addrs.contains(&"127.0.0.1:18100") && addrs.contains(&"127.0.0.2:18100"),
        "{forwards:?}"
    );
    // ":8081" picked one free local port, the same on both addresses.
    let picked: Vec<&str> = forwards
        .iter()
        .filter(|(_, r)| r == "8081")
        .map(|(a, _)| a.rsplit(':').next().unwrap_or_default())
        .collect();
    assert!(
        picked.len() == 2 && picked[0] == picked[1] && picked[0] != "0",
        "{forwards:?}"
    );
    net.within(|| {
        for (addr, remote) in &forwards {
            let want = if remote == "8080" { "port-a" } else { "port-b" };
            let resp = http_get(addr).unwrap_or_default();
            assert!(
                resp.starts_with("HTTP/1.") && resp.contains(want),
                "{addr} -> {remote}: {resp:?}"
            );
        }
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn cri_port_mappings_are_forwarded_until_the_sandbox_stops() {
    use minilet_proto::runtime::v1 as cri;
    if !is_root() {
        return;
    }
    let (net, mut env) = node("hostport-cri");
    let _agent = start_agent(&net, &mut env);
    minilet_e2e::grpc::rt().block_on(async {
        let mut c = minilet_e2e::grpc::connect(&env.socket).await;
        let mapping = |protocol: cri::Protocol, host_ip: &str| cri::PortMapping {
            protocol: protocol as i32,
            container_port: 7000,
            host_port: 17000,
            host_ip: host_ip.into(),
        };
        let config = |name: &str, mappings: Vec<cri::PortMapping>| cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "crictl".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: env.dir.join("cri-logs").display().to_string(),
            port_mappings: mappings,
            // A pause that is not root: the forwarder joins its network all the same.
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 65534 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let run = |c: &mut minilet_e2e::grpc::Clients, cfg: cri::PodSandboxConfig| {
            let mut runtime = c.runtime.clone();
            async move {
                runtime
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(cfg),
                        runtime_handler: String::new(),
                    })
                    .await
            }
        };
        // A host_ip that is not an address is refused before anything is made.
        let bad = run(&mut c, config("bad", vec![mapping(cri::Protocol::Tcp, "nowhere")]))
            .await
            .expect_err("a bad host_ip is refused");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
        assert!(bad.message().contains("port_mappings[0].host_ip"), "{bad:?}");

        let id = run(&mut c, config("crip", vec![mapping(cri::Protocol::Tcp, "")]))
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        let dir = env.root.join("sandboxes").join(&id);
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("sandbox.json")).expect("sandbox.json")).expect("JSON");
        let pause = state["pause"]["pid"].as_i64().expect("pause pid") as i32;
        let status = std::fs::read_to_string(format!("/proc/{pause}/status")).expect("pause status");
        assert!(status.lines().any(|l| l.starts_with("Uid:\t65534\t")), "{status}");
        // A server on the pod's loopback, made from the pod's namespace.
        let server = in_netns(Path::new(&format!("/proc/{pause}/ns/net")), || {
            TcpListener::bind("127.0.0.1:7000").expect("bind in the pod")
        });
        let serving = std::thread::spawn(move || {
            if let Ok((mut conn, _)) = server.accept() {
                let _ = conn.write_all(b"hi-from-cri-pod");
            }
        });
        let got = net.within(|| {
            let mut s = TcpStream::connect("127.0.0.1:17000").expect("connect to the host port");
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let mut got = String::new();
            let _ = s.read_to_string(&mut got);
            got
        });
        assert_eq!(got, "hi-from-cri-pod");
        let _ = serving.join();

        // A second sandbox on the same port: the bind fails, the call fails, nothing stays.
        let taken = run(&mut c, config("second", vec![mapping(cri::Protocol::Tcp, "127.0.0.1")]))
            .await
            .expect_err("the port is taken");
        assert!(taken.message().contains("cannot open hostport 17000"), "{taken:?}");
        let sandboxes = std::fs::read_dir(env.root.join("sandboxes"))
            .expect("sandboxes")
            .count();
        assert_eq!(sandboxes, 1, "the failed sandbox left nothing");

        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .expect("StopPodSandbox");
        net.within(|| assert!(refused("127.0.0.1:17000"), "the port closes with the sandbox"));
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .expect("RemovePodSandbox");
    });
}

#[test]
fn a_cri_sandboxs_lost_forwarder_is_reopened_by_the_next_agent() {
    use minilet_proto::runtime::v1 as cri;
    if !is_root() {
        return;
    }
    let (net, mut env) = node("hostport-crifwd");
    let mut agent = start_agent(&net, &mut env);
    let id = minilet_e2e::grpc::rt().block_on(async {
        let mut c = minilet_e2e::grpc::connect(&env.socket).await;
        c.runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cri::PodSandboxConfig {
                    metadata: Some(cri::PodSandboxMetadata {
                        name: "reopen".into(),
                        uid: "uid-reopen".into(),
                        namespace: "crictl".into(),
                        attempt: 0,
                    }),
                    hostname: "reopen".into(),
                    log_directory: env.dir.join("cri-logs").display().to_string(),
                    port_mappings: vec![cri::PortMapping {
                        protocol: cri::Protocol::Tcp as i32,
                        container_port: 7100,
                        host_port: 17100,
                        host_ip: String::new(),
                    }],
                    ..Default::default()
                }),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id
    });
    let dir = env.root.join("sandboxes").join(&id);
    let fwd_pid = |dir: &std::path::Path| -> Option<i32> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("portfwd.json")).ok()?).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    };
    let first = fwd_pid(&dir).expect("portfwd.json names the forwarder");
    // The agent dies, then so does the forwarder (a process this test's agent started).
    agent.kill9();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), nix::sys::signal::Signal::SIGKILL)
        .expect("kill the forwarder");
    wait_for("the forwarder gone", Duration::from_secs(10), || {
        (!alive(first)).then_some(())
    });
    net.within(|| assert!(refused("127.0.0.1:17100"), "nothing serves the port now"));

    let _agent = start_agent(&net, &mut env);
    let second = wait_for("a new forwarder", Duration::from_secs(30), || {
        fwd_pid(&dir).filter(|p| *p != first && alive(*p))
    });
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sandbox.json")).expect("sandbox.json")).expect("JSON");
    let pause = state["pause"]["pid"].as_i64().expect("pause pid") as i32;
    let server = in_netns(Path::new(&format!("/proc/{pause}/ns/net")), || {
        TcpListener::bind("127.0.0.1:7100").expect("bind in the pod")
    });
    let serving = std::thread::spawn(move || {
        if let Ok((mut conn, _)) = server.accept() {
            let _ = conn.write_all(b"back-again");
        }
    });
    let got = net.within(|| {
        let mut s = TcpStream::connect("127.0.0.1:17100").expect("connect to the host port");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got
    });
    assert_eq!(got, "back-again", "forwarder {second} serves the port");
    let _ = serving.join();
}

/// A sidecar's hostPort is not opened: the kubelet's port mappings list only the app
/// containers' (`spec.containers`), so neither portmap nor the forwarder gets it.
#[test]
fn a_sidecars_host_port_is_not_opened() {
    if !is_root() {
        return;
    }
    let (net, mut env) = node("hostport-sidecar");
    env.import_image("busybox");
    let agent = start_agent(&net, &mut env);
    let serve = |name: &str, port: u16| {
        format!(
            "[sh, -c, \"trap 'exit 0' TERM; mkdir -p /www && echo hello-from-{name} > /www/index.html && httpd -f -p 127.0.0.1:{port} -h /www & wait\"]"
        )
    };
    env.write_manifest(
        "sc.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: sc}}\nspec:\n  terminationGracePeriodSeconds: 0\n  initContainers:\n  - name: proxy\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    restartPolicy: Always\n    command: {}\n    ports: [{{containerPort: 9090, hostPort: 18095}}]\n  containers:\n  - name: web\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: {}\n    ports: [{{containerPort: 8080, hostPort: 18094}}]\n",
            serve("proxy", 9090),
            serve("web", 8080)
        ),
    );
    let p = env.wait_running(&static_pod_name("sc"), &["proxy", "web"]);
    net.within(|| {
        wait_for("the app container answers on 18094", Duration::from_secs(20), || {
            http_get("127.0.0.1:18094").filter(|r| r.contains("hello-from-web"))
        });
    });
    // The sidecar listens in the pod, and nothing listens for it on the node.
    let in_pod = listening_tcp(p.pause());
    assert!(in_pod.contains(&9090), "the sidecar serves in the pod: {in_pod:?}");
    let on_node = listening_tcp(agent.pid());
    assert!(
        on_node.contains(&18094) && !on_node.contains(&18095),
        "the app's host port only: {on_node:?}"
    );
    net.within(|| assert!(refused("127.0.0.1:18095")));

    env.remove_manifest("sc.yaml");
    wait_for("sc removed", Duration::from_secs(30), || {
        env.pod(&static_pod_name("sc")).is_none().then_some(())
    });
}
