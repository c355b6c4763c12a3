//! Containers' own stdin and terminal, and attaching to them: CRI Attach URLs served over
//! WebSocket (a stock client, tokio-tungstenite) and SPDY (`minilet attach`), against real
//! pods; what the container read and wrote is checked in the attach stream, in its CRI log
//! and in the kernel's view (its process, its exit).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use minilet_e2e::grpc::{Clients, connect, rt};
use minilet_e2e::*;
use minilet_proto::runtime::v1 as cri;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn pod(name: &str, container: &str, command: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: {command}
{container}"#
    )
}

const ECHO: &str = r#"["sh", "-c", "while read l; do echo got:$l; done; echo stdin-ended"]"#;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The running CRI container of static pod `name`'s `main` (as the CRI lists it).
async fn container_id(c: &mut Clients, env: &Env, name: &str) -> String {
    let pod = env.wait_running(name, &["main"]);
    let id = pod.containers["main"].id.clone();
    for _ in 0..500 {
        let cs = c
            .runtime
            .list_containers(cri::ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers;
        if cs
            .iter()
            .any(|x| x.id == id && x.state == cri::ContainerState::ContainerRunning as i32)
        {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} never listed running");
}

fn attach_req(id: &str, stdin: bool, tty: bool) -> cri::AttachRequest {
    cri::AttachRequest {
        container_id: id.into(),
        stdin,
        tty,
        stdout: true,
        stderr: !tty,
    }
}

async fn attach_ws(c: &mut Clients, req: cri::AttachRequest) -> Ws {
    let url = c.runtime.attach(req).await.expect("CRI Attach").into_inner().url;
    assert!(url.contains("/attach/"), "{url}");
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("ws request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("upgrade");
    // The server's first (empty) message says the session is up: the container's output
    // from here on reaches us.
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the attach session came up");
    assert!(matches!(first, Some(Ok(Message::Binary(_)))), "{first:?}");
    ws
}

async fn send_stdin(ws: &mut Ws, data: &[u8]) {
    ws.send(Message::Binary([&[0u8][..], data].concat().into()))
        .await
        .expect("send stdin");
}

/// Read until channel `ch` has seen `needle` (or the session ends); bytes per channel.
async fn read_until(ws: &mut Ws, ch: u8, needle: &str) -> [Vec<u8>; 4] {
    let mut out: [Vec<u8>; 4] = Default::default();
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m
                && let Some((&c, body)) = b.split_first()
                && (1..=3).contains(&c)
            {
                out[c as usize].extend_from_slice(body);
                if c == ch && String::from_utf8_lossy(&out[c as usize]).contains(needle) {
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), read).await.is_err() {
        panic!(
            "no {needle:?} on channel {ch} in time; got {:?}",
            out.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect::<Vec<_>>()
        );
    }
    out
}

fn exit_code(status: &[u8]) -> i32 {
    let v: serde_json::Value = serde_json::from_slice(status).unwrap_or_else(|e| panic!("{e}: {status:?}"));
    match v["status"].as_str() {
        Some("Success") => 0,
        _ => v["details"]["causes"][0]["message"]
            .as_str()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("no exit code in {v}")),
    }
}

/// The CRI log of static pod `name`'s `main` container, once it holds `needle`.
fn log_with(env: &Env, name: &str, needle: &str) -> String {
    let pod = env.pod(name).expect("pod");
    let path = pod.containers["main"].log_path.clone();
    wait_for(
        &format!("{needle:?} in {}", path.display()),
        Duration::from_secs(10),
        || std::fs::read_to_string(&path).ok().filter(|t| t.contains(needle)),
    )
}

#[test]
fn stdin_over_websocket_reaches_the_process_and_its_output_every_client_and_the_log() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("attach-stdin");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("p.yaml", &pod("echo", "    stdin: true\n", ECHO));
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let id = container_id(&mut c, &env, &static_pod_name("echo")).await;
        let view = env.pod(&static_pod_name("echo")).expect("pod").containers["main"].clone();
        // The attach socket: in the container's directory, a socket, root's only.
        let sock = view.dir.join("attach");
        let md = std::fs::symlink_metadata(&sock).expect("attach socket");
        assert!(md.file_type().is_socket());
        assert_eq!(md.permissions().mode() & 0o777, 0o600);

        // Two clients at once: one writes, both see the output, kept on stdout.
        let mut writer = attach_ws(&mut c, attach_req(&id, true, false)).await;
        let mut watcher = attach_ws(&mut c, attach_req(&id, false, false)).await;
        send_stdin(&mut writer, b"hello\n").await;
        let got = read_until(&mut writer, 1, "got:hello\n").await;
        assert!(got[2].is_empty(), "{got:?}");
        read_until(&mut watcher, 1, "got:hello\n").await;
        let log = log_with(&env, &static_pod_name("echo"), "got:hello");
        assert!(log.lines().any(|l| l.ends_with(" stdout F got:hello")), "{log}");

        // A watcher's input goes nowhere (it did not ask for stdin).
        send_stdin(&mut watcher, b"ignored\n").await;
        send_stdin(&mut writer, b"second\n").await;
        let got = read_until(&mut writer, 1, "got:second\n").await;
        assert!(!String::from_utf8_lossy(&got[1]).contains("ignored"), "{got:?}");

        // Sessions end, the container does not (no stdinOnce): its stdin stays open.
        drop(writer);
        drop(watcher);
        let mut again = attach_ws(&mut c, attach_req(&id, true, false)).await;
        send_stdin(&mut again, b"third\n").await;
        read_until(&mut again, 1, "got:third\n").await;
        assert!(alive(view.pid.expect("pid")));
        assert!(!log_with(&env, &static_pod_name("echo"), "got:third").contains("stdin-ended"));

        // Not running: refused. tty with stderr: refused, as the kubelet does.
        let e = c.runtime.attach(attach_req("nonesuch", true, false)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let mut bad = attach_req(&id, true, true);
        bad.stderr = true;
        let e = c.runtime.attach(bad).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    });
    // Nothing left behind with the pod: the socket goes with the container's directory.
    let dir = env.pod(&static_pod_name("echo")).expect("pod").dir;
    env.remove_manifest("p.yaml");
    wait_for("the pod's state removed", Duration::from_secs(30), || {
        (!dir.exists()).then_some(())
    });
}

#[test]
fn a_terminal_is_resized_and_its_output_logged_as_stdout() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("attach-tty");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("p.yaml", &pod("term", "    stdin: true\n    tty: true\n", r#"["sh"]"#));
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let id = container_id(&mut c, &env, &static_pod_name("term")).await;
        let mut ws = attach_ws(&mut c, attach_req(&id, true, true)).await;
        ws.send(Message::Binary(
            [&[4u8][..], br#"{"Width":101,"Height":31}"#].concat().into(),
        ))
        .await
        .expect("resize");
        send_stdin(&mut ws, b"stty size; tty; echo to-stderr >&2\n").await;
        let got = read_until(&mut ws, 1, "to-stderr\r\n").await;
        let text = String::from_utf8_lossy(&got[1]);
        assert!(text.contains("31 101"), "{text:?}");
        assert!(text.contains("/dev/pts/"), "{text:?}");
        // Resized again: the process sees the new size.
        ws.send(Message::Binary(
            [&[4u8][..], br#"{"Width":77,"Height":22}"#].concat().into(),
        ))
        .await
        .expect("resize");
        send_stdin(&mut ws, b"stty size\n").await;
        read_until(&mut ws, 1, "22 77").await;

        // The output line, not the terminal's echo of the input line.
        let log = log_with(&env, &static_pod_name("term"), "to-stderr\r");
        assert!(
            log.lines().any(|l| l.contains(" stdout ") && l.contains("31 101")),
            "{log}"
        );
        assert!(!log.lines().any(|l| l.contains(" stderr ")), "{log}");
    });
}

#[test]
fn stdin_once_closes_stdin_when_the_first_session_ends() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("attach-once");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "p.yaml",
        &pod("once", "    stdin: true\n    stdinOnce: true\n", r#"["cat"]"#),
    );
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let id = container_id(&mut c, &env, &static_pod_name("once")).await;
        let mut ws = attach_ws(&mut c, attach_req(&id, true, false)).await;
        send_stdin(&mut ws, b"only-once\n").await;
        read_until(&mut ws, 1, "only-once\n").await;
        // v5: close stdin. The session's end closes the container's stdin: cat reads EOF,
        // exits 0, and the status says so.
        ws.send(Message::Binary(vec![255u8, 0].into()))
            .await
            .expect("close stdin");
        let got = read_until(&mut ws, 3, "Success").await;
        assert_eq!(exit_code(&got[3]), 0);
    });
    let exit = wait_for("cat exited", Duration::from_secs(20), || {
        env.pod(&static_pod_name("once"))?.containers["main"].exit.clone()
    });
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert_eq!(exit["reason"], "Completed", "{exit}");
}

#[test]
fn attach_survives_an_agent_restart() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("attach-restart");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    env.write_manifest("p.yaml", &pod("keep", "    stdin: true\n", ECHO));
    let pid = rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let id = container_id(&mut c, &env, &static_pod_name("keep")).await;
        let mut ws = attach_ws(&mut c, attach_req(&id, true, false)).await;
        send_stdin(&mut ws, b"before\n").await;
        read_until(&mut ws, 1, "got:before\n").await;
        env.pod(&static_pod_name("keep")).expect("pod").pid("main")
    });
    // The session dies with the agent; the container and its stdin do not.
    agent.kill9();
    assert!(alive(pid));
    let _agent = Agent::start(&env, &[]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let id = container_id(&mut c, &env, &static_pod_name("keep")).await;
        assert_eq!(
            env.pod(&static_pod_name("keep")).expect("pod").pid("main"),
            pid,
            "the same process"
        );
        let mut ws = attach_ws(&mut c, attach_req(&id, true, false)).await;
        send_stdin(&mut ws, b"after\n").await;
        read_until(&mut ws, 1, "got:after\n").await;
    });
    let log = log_with(&env, &static_pod_name("keep"), "got:after");
    assert!(log.contains("got:before") && !log.contains("stdin-ended"), "{log}");
}

#[test]
fn minilet_attach_i_round_trip() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("attach-cli");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "p.yaml",
        &pod("cli", "    stdin: true\n    stdinOnce: true\n", r#"["cat"]"#),
    );
    env.wait_running(&static_pod_name("cli"), &["main"]);
    wait_agent_ready(&env, &static_pod_name("cli"));
    // Input from a pipe: sent, then its end closes the container's stdin (stdinOnce); cat
    // echoes it and exits 0, and so does the CLI.
    let out = cli_in(
        &env,
        &["attach", &static_pod_name("cli"), "-i"],
        Some(b"from-the-cli\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from-the-cli\n");
    let exit = wait_for("cat exited", Duration::from_secs(20), || {
        env.pod(&static_pod_name("cli"))?.containers["main"].exit.clone()
    });
    assert_eq!(exit["exit_code"], 0, "{exit}");

    // An unknown pod: kubectl's error.
    let out = cli(&env, &["attach", "nosuch"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn a_cri_created_container_with_stdin_and_a_terminal() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("attach-cri");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let pod_logs = env.dir.join("cri-logs");
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let sb = c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cri::PodSandboxConfig {
                    metadata: Some(cri::PodSandboxMetadata {
                        name: "crit".into(),
                        uid: "uid-crit".into(),
                        namespace: "crictl".into(),
                        attempt: 0,
                    }),
                    log_directory: pod_logs.display().to_string(),
                    ..Default::default()
                }),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        let id = c
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sb.clone(),
                config: Some(cri::ContainerConfig {
                    metadata: Some(cri::ContainerMetadata {
                        name: "shell".into(),
                        attempt: 0,
                    }),
                    image: Some(cri::ImageSpec {
                        image: "localhost/busybox:latest".into(),
                        ..Default::default()
                    }),
                    command: vec!["sh".into()],
                    stdin: true,
                    tty: true,
                    log_path: "shell/0.log".into(),
                    ..Default::default()
                }),
                sandbox_config: None,
            })
            .await
            .expect("CreateContainer with stdin and tty")
            .into_inner()
            .container_id;
        // Not running yet: nothing to attach to.
        let e = c.runtime.attach(attach_req(&id, true, true)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        c.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
        let mut ws = attach_ws(&mut c, attach_req(&id, true, true)).await;
        ws.send(Message::Binary(
            [&[4u8][..], br#"{"Width":90,"Height":33}"#].concat().into(),
        ))
        .await
        .expect("resize");
        send_stdin(&mut ws, b"stty size; exit 7\n").await;
        let got = read_until(&mut ws, 3, "ExitCode").await;
        assert!(String::from_utf8_lossy(&got[1]).contains("33 90"), "{got:?}");
        assert_eq!(exit_code(&got[3]), 7);
        let log = wait_for("the CRI log", Duration::from_secs(10), || {
            std::fs::read_to_string(pod_logs.join("shell/0.log"))
                .ok()
                .filter(|t| t.contains("33 90"))
        });
        assert!(!log.lines().any(|l| l.contains(" stderr ")), "{log}");

        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await
            .expect("RemovePodSandbox");
    });
    assert_eq!(
        std::fs::read_dir(env.root.join("sandboxes"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "nothing of the sandbox (its containers' attach sockets included) is left"
    );
}
