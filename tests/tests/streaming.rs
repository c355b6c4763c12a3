//! The CRI streaming server: Exec and PortForward URLs served over WebSocket and SPDY/3.1,
//! against real pods, with the kernel's view of what the exec'd processes saw and left.
//!
//! WebSocket is spoken by a stock client (tokio-tungstenite); SPDY by minilet's client side
//! (`minilet port-forward` as a user runs it, and its session module for exec).

use std::io::BufReader;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use minilet_e2e::grpc::{connect, listed_container, rt};
use minilet_e2e::*;
use minilet_proto::runtime::v1 as cri;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: stream
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; mkdir -p /www && echo hello-from-pod > /www/index.html && httpd -f -p 127.0.0.1:8080 -h /www & wait"]
"#;

/// Fields drop in order: the agent stops (and cleans up) before its directory goes.
struct Setup {
    _agent: Agent,
    env: Env,
    container_id: String,
    sandbox_id: String,
}

fn setup(name: &str, extra: &[&str]) -> Setup {
    let env = Env::new(name);
    env.import_image("busybox");
    let agent = Agent::start(&env, extra);
    env.write_manifest("stream.yaml", POD);
    let pod = env.wait_running(&static_pod_name("stream"), &["main"]);
    // The CRI view follows the state directory within moments: wait for it.
    let (container_id, sandbox_id) = rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let main = listed_container(&mut c, "main, running,", |x| {
            x.id == pod.containers["main"].id && x.state == cri::ContainerState::ContainerRunning as i32
        })
        .await;
        (main.id, main.pod_sandbox_id)
    });
    Setup {
        env,
        _agent: agent,
        container_id,
        sandbox_id,
    }
}

fn exec_req(id: &str, cmd: &[&str], stdin: bool, tty: bool) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

async fn exec_url(s: &Setup, req: cri::ExecRequest) -> String {
    let mut c = connect(&s.env.socket).await;
    c.runtime.exec(req).await.expect("CRI Exec").into_inner().url
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str, protocol: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = url.replacen("http://", "ws://", 1);
    let mut req = url.into_client_request().expect("ws request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().expect("header"));
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    Ok(ws)
}

/// Everything the server sends until it closes: bytes per channel.
async fn ws_drain(ws: &mut Ws) -> [Vec<u8>; 4] {
    let mut out: [Vec<u8>; 4] = Default::default();
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m
                && let Some((&ch, body)) = b.split_first()
                && (1..=3).contains(&ch)
            {
                out[ch as usize].extend_from_slice(body);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the exec ended in time");
    out
}

fn exit_code(status: &[u8]) -> i32 {
    let v: serde_json::Value = serde_json::from_slice(status).unwrap_or_else(|e| panic!("{e}: {status:?}"));
    match v["status"].as_str() {
        Some("Success") => 0,
        _ => {
            assert_eq!(v["reason"], "NonZeroExitCode", "{v}");
            v["details"]["causes"][0]["message"]
                .as_str()
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("no exit code in {v}"))
        }
    }
}

/// The exec'd `sleep` in the container's cgroup (the kernel's view), once it runs.
fn sleeping(s: &Setup) -> bool {
    let pod = s.env.pod(&static_pod_name("stream")).expect("pod");
    cgroup_file(&s.env, &pod.containers["main"].cgroup, "cgroup.procs")
        .unwrap_or_default()
        .lines()
        .any(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep"))
}

fn cgroup_procs(s: &Setup) -> usize {
    let pod = s.env.pod(&static_pod_name("stream")).expect("pod");
    let rel = &pod.containers["main"].cgroup;
    cgroup_file(&s.env, rel, "cgroup.procs")
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn exec_over_websocket() {
    if !is_root() {
        return;
    }
    let s = setup("stream-ws", &[]);
    let baseline = cgroup_procs(&s);
    rt().block_on(async {
        // stdout, stderr and the exit code, v4.
        let url = exec_url(
            &s,
            exec_req(
                &s.container_id,
                &["sh", "-c", "echo out; echo err >&2; exit 3"],
                false,
                false,
            ),
        )
        .await;
        assert!(url.starts_with("http://127.0.0.1:") && url.contains("/exec/"), "{url}");
        let mut ws = ws_connect(&url, "v4.channel.k8s.io").await.expect("upgrade");
        let [_, out, err, status] = ws_drain(&mut ws).await;
        assert_eq!((out.as_slice(), err.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
        assert_eq!(exit_code(&status), 3);

        // A URL works once.
        assert!(
            ws_connect(&url, "v4.channel.k8s.io").await.is_err(),
            "second use of {url}"
        );

        // stdin round trip and stdin's end (v5's close channel).
        let url = exec_url(
            &s,
            exec_req(&s.container_id, &["sh", "-c", "cat; echo done"], true, false),
        )
        .await;
        let mut ws = ws_connect(&url, "v5.channel.k8s.io").await.expect("upgrade");
        ws.send(Message::Binary([&[0u8][..], b"ping\n"].concat().into()))
            .await
            .unwrap();
        ws.send(Message::Binary(vec![255u8, 0].into())).await.unwrap();
        let [_, out, _, status] = ws_drain(&mut ws).await;
        assert_eq!(String::from_utf8_lossy(&out), "ping\ndone\n");
        assert_eq!(exit_code(&status), 0);

        // A terminal, resized before the command asks for its size.
        let url = exec_url(
            &s,
            exec_req(&s.container_id, &["sh", "-c", "read x; stty size"], true, true),
        )
        .await;
        let mut ws = ws_connect(&url, "v5.channel.k8s.io").await.expect("upgrade");
        ws.send(Message::Binary(
            [&[4u8][..], br#"{"Width":123,"Height":45}"#].concat().into(),
        ))
        .await
        .unwrap();
        ws.send(Message::Binary([&[0u8][..], b"go\r"].concat().into()))
            .await
            .unwrap();
        let [_, out, _, status] = ws_drain(&mut ws).await;
        assert!(
            String::from_utf8_lossy(&out).contains("45 123"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(exit_code(&status), 0);

        // A client that goes away: its command is killed, nothing stays in the container.
        let url = exec_url(&s, exec_req(&s.container_id, &["sleep", "1000"], false, false)).await;
        let ws = ws_connect(&url, "v4.channel.k8s.io").await.expect("upgrade");
        wait_for("the exec'd sleep", Duration::from_secs(10), || {
            sleeping(&s).then_some(())
        });
        drop(ws);
    });
    wait_for("the exec'd sleep to be gone", Duration::from_secs(10), || {
        (cgroup_procs(&s) == baseline).then_some(())
    });
}

/// Clients that leave at once: nothing they asked for may outlive the session, whether the
/// helper had not forked yet, had forked, or the command ran but the agent had not yet read
/// which process group it leads. That last window is narrow: a loaded machine hits it (with
/// two busy loops beside it, this test failed 2 runs of 4 when the agent killed the helper
/// alone, which left the command running: its parent-death signal is cleared when it drops
/// its privileges).
#[test]
fn an_exec_whose_client_leaves_at_once_leaves_nothing() {
    if !is_root() {
        return;
    }
    let s = setup("stream-leave", &[]);
    let baseline = cgroup_procs(&s);
    rt().block_on(async {
        for _ in 0..20 {
            let url = exec_url(&s, exec_req(&s.container_id, &["sleep", "1000"], false, false)).await;
            let ws = ws_connect(&url, "v4.channel.k8s.io").await.expect("upgrade");
            drop(ws);
        }
    });
    let agent = s._agent.pid();
    wait_for("the exec helpers to be gone", Duration::from_secs(20), || {
        helper_children(agent, &["__exec"]).is_empty().then_some(())
    });
    // A command killed with its helper may still be exiting when the helper is gone: wait
    // for the cgroup to hold only what it held before. One that survived never leaves it.
    wait_for(
        "the container's cgroup to hold only what it held before (an exec'd sleep outlived its session)",
        Duration::from_secs(10),
        || (cgroup_procs(&s) == baseline).then_some(()),
    );
}

#[test]
fn exec_requests_are_validated() {
    if !is_root() {
        return;
    }
    let s = setup("stream-val", &["--streaming-token-ttl", "0"]);
    rt().block_on(async {
        let mut c = connect(&s.env.socket).await;
        let mut bad = exec_req(&s.container_id, &[], false, false);
        let e = c.runtime.exec(bad.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        bad.cmd = vec!["true".into()];
        bad.tty = true;
        bad.stderr = true;
        let e = c.runtime.exec(bad.clone()).await.unwrap_err();
        assert!(e.message().contains("tty and stderr"), "{e:?}");
        bad.tty = false;
        bad.stdout = false;
        bad.stderr = false;
        let e = c.runtime.exec(bad.clone()).await.unwrap_err();
        assert!(e.message().contains("one of stdin, stdout, or stderr"), "{e:?}");
        let e = c
            .runtime
            .exec(exec_req("nonexistent", &["true"], false, false))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

        // This agent's tokens expire as they are made: the URL is void when the client comes.
        let url = exec_url(&s, exec_req(&s.container_id, &["true"], false, false)).await;
        let e = ws_connect(&url, "v4.channel.k8s.io").await.unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");
    });
}

/// The SPDY side of exec, through minilet's client session.
#[test]
fn exec_over_spdy() {
    if !is_root() {
        return;
    }
    use minilet::cri::streaming::EXEC_PROTOCOL;
    let s = setup("stream-spdy", &[]);
    let baseline = cgroup_procs(&s);
    rt().block_on(async {
        let h = |t: &str| vec![("streamtype".to_string(), t.to_string())];
        let url = exec_url(
            &s,
            exec_req(&s.container_id, &["sh", "-c", "cat; echo e >&2; exit 4"], true, false),
        )
        .await;
        let session = minilet::cli::upgrade::spdy(&url, EXEC_PROTOCOL)
            .await
            .expect("SPDY upgrade");
        let mut error = session.handle.open(h("error")).await.unwrap();
        let stdin = session.handle.open(h("stdin")).await.unwrap();
        let mut stdout = session.handle.open(h("stdout")).await.unwrap();
        let mut stderr = session.handle.open(h("stderr")).await.unwrap();
        assert!(stdin.writer.write(b"hello spdy\n").await);
        stdin.writer.close().await;
        let read_all = |mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>| async move {
            let mut v = Vec::new();
            while let Some(b) = rx.recv().await {
                v.extend(b);
            }
            v
        };
        let (out, err, status) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(
                read_all(std::mem::replace(&mut stdout.data, tokio::sync::mpsc::channel(1).1)),
                read_all(std::mem::replace(&mut stderr.data, tokio::sync::mpsc::channel(1).1)),
                read_all(std::mem::replace(&mut error.data, tokio::sync::mpsc::channel(1).1)),
            )
        })
        .await
        .expect("exec over SPDY ended");
        assert_eq!(String::from_utf8_lossy(&out), "hello spdy\n");
        assert_eq!(String::from_utf8_lossy(&err), "e\n");
        assert_eq!(exit_code(&status), 4);

        // A terminal over SPDY: the resize stream reaches the pty. Streams are independent in
        // SPDY (the kubelet's server too reads them concurrently), so the input may reach the
        // terminal before the size does: the command waits for the size, then reads.
        let url = exec_url(
            &s,
            exec_req(
                &s.container_id,
                &[
                    "sh",
                    "-c",
                    "until [ \"$(stty size 2>/dev/null)\" = '33 77' ]; do sleep 0.05; done; read x; stty size",
                ],
                true,
                true,
            ),
        )
        .await;
        let session = minilet::cli::upgrade::spdy(&url, EXEC_PROTOCOL)
            .await
            .expect("SPDY upgrade");
        let error = session.handle.open(h("error")).await.unwrap();
        let stdin = session.handle.open(h("stdin")).await.unwrap();
        let stdout = session.handle.open(h("stdout")).await.unwrap();
        let resize = session.handle.open(h("resize")).await.unwrap();
        assert!(resize.writer.write(br#"{"Width":77,"Height":33}"#).await);
        assert!(stdin.writer.write(b"go\r").await);
        let (out, status) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(read_all(stdout.data), read_all(error.data))
        })
        .await
        .expect("tty exec over SPDY ended");
        assert!(
            String::from_utf8_lossy(&out).contains("33 77"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(exit_code(&status), 0);

        // A client that goes away (its connection closes with this runtime): the command is
        // killed, nothing stays in the container.
        let url = exec_url(&s, exec_req(&s.container_id, &["sleep", "1000"], false, false)).await;
        let session = minilet::cli::upgrade::spdy(&url, EXEC_PROTOCOL)
            .await
            .expect("SPDY upgrade");
        let _streams = (
            session.handle.open(h("error")).await.unwrap(),
            session.handle.open(h("stdout")).await.unwrap(),
            session.handle.open(h("stderr")).await.unwrap(),
        );
        // Polled without blocking this runtime, whose tasks carry the client's frames.
        let start = std::time::Instant::now();
        while !sleeping(&s) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the exec'd sleep never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    wait_for("the exec'd sleep to be gone", Duration::from_secs(10), || {
        (cgroup_procs(&s) == baseline).then_some(())
    });
}

#[test]
fn port_forward_through_the_cli_and_websocket() {
    if !is_root() {
        return;
    }
    let s = setup("stream-pf", &[]);
    // The server listens on the pod's loopback only: nothing on the host can reach it directly.
    wait_for("httpd in the pod", Duration::from_secs(20), || {
        let o = in_container(
            s.env.pod(&static_pod_name("stream"))?.pid("main"),
            &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
        );
        stdout(&o).contains("hello-from-pod").then_some(())
    });

    // minilet port-forward, over SPDY.
    let mut child = std::process::Command::new(minilet())
        .args([
            "port-forward",
            &static_pod_name("stream"),
            ":8080",
            "--address",
            "127.0.0.1",
            "--socket",
        ])
        .arg(&s.env.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn minilet port-forward");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    let port = forwarded_port(&mut lines, 8080);
    for _ in 0..3 {
        let resp = loopback_http_get(port);
        assert!(
            resp.starts_with("HTTP/1.") && resp.contains("hello-from-pod"),
            "{resp:?}"
        );
    }
    // An idle connection, then the CLI goes away: the agent closes its side in the pod.
    let main_pid = s.env.pod(&static_pod_name("stream")).expect("pod").pid("main");
    let _idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    wait_for("the forwarded connection in the pod", Duration::from_secs(10), || {
        (established_tcp(main_pid, 8080) > 0).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    wait_for(
        "no forwarded connection left in the pod",
        Duration::from_secs(10),
        || (established_tcp(main_pid, 8080) == 0).then_some(()),
    );

    // Raw WebSocket: channel 0 data, 1 errors, each opened with the port.
    rt().block_on(async {
        let mut c = connect(&s.env.socket).await;
        let url = c
            .runtime
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: s.sandbox_id.clone(),
                port: vec![8080],
            })
            .await
            .expect("CRI PortForward")
            .into_inner()
            .url;
        assert!(url.contains("/portforward/"), "{url}");
        let mut ws = ws_connect(&format!("{url}?port=8080"), "portforward.k8s.io")
            .await
            .expect("upgrade");
        let mut opened = Vec::new();
        while opened.len() < 2 {
            if let Some(Ok(Message::Binary(b))) = ws.next().await {
                opened.push(b.to_vec());
            }
        }
        assert_eq!(opened, vec![vec![0, 0x90, 0x1f], vec![1, 0x90, 0x1f]]);
        ws.send(Message::Binary(
            [&[0u8][..], b"GET /index.html HTTP/1.0\r\n\r\n"].concat().into(),
        ))
        .await
        .unwrap();
        let mut body = Vec::new();
        let read = async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Binary(b) = m
                    && b.first() == Some(&0)
                {
                    body.extend_from_slice(&b[1..]);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the pod's answer");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("hello-from-pod"), "{body:?}");
    });
}
