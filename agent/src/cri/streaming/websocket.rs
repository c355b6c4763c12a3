//! The WebSocket protocols: remotecommand `v5.channel.k8s.io` / `v4.channel.k8s.io` (every
//! binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize;
//! v5 adds 255 = "close channel N") and port-forward (channel 2i carries port i's data, 2i+1
//! its errors; each channel's first message is its port, little-endian u16).

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::exec::{self, ExecParams, ResizeDecoder};
use super::{Streaming, status};
use crate::runtime::exec::{ExecInput, ExecOutput};

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
/// What a port-forward client may ask for (the kubelet also accepts no protocol at all).
pub const PORT_FORWARD: &[&str] = &[V4, "portforward.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(1 + data.len());
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

pub async fn exec(server: Arc<Streaming>, ws: Ws, protocol: &str, p: ExecParams) {
    let v5 = protocol == V5;
    let (mut tx, mut rx) = ws.split();
    // An empty message on the first channel the client reads says the stream is up.
    let first = if p.stdout {
        STDOUT
    } else if p.stderr {
        STDERR
    } else {
        ERROR
    };
    // Started (or attached) first: once the client hears the stream is up, the session is
    // (an attach client sees all output from then on).
    let started = exec::start(&server, &p).await;
    if tx.send(frame(first, &[])).await.is_err() {
        return;
    }
    let session = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(frame(ERROR, &status::internal(&e))).await;
            let _ = tx.close().await;
            return;
        }
    };
    let crate::runtime::exec::ExecSession {
        mut stdin,
        mut outputs,
        guard,
    } = session;
    let input = tokio::spawn(async move {
        let mut resize = ResizeDecoder::default();
        while let Some(Ok(msg)) = rx.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, body)) = data.split_first() else {
                continue;
            };
            let inputs = match channel {
                STDIN => vec![ExecInput::Stdin(body.to_vec())],
                RESIZE => resize.feed(body),
                CLOSE if v5 && body.first() == Some(&STDIN) => vec![ExecInput::CloseStdin],
                _ => continue,
            };
            for i in inputs {
                if stdin.send(i).await.is_err() {
                    return;
                }
            }
        }
        let _ = stdin.send(ExecInput::CloseStdin).await;
    });
    let mut input = input;
    // Dropped on every way out: a client that goes away ends the command and what it started.
    let _guard = guard;
    loop {
        let out = tokio::select! {
            out = outputs.next() => out,
            // The client closed the WebSocket (or it broke): nobody is left to serve.
            _ = &mut input => break,
        };
        let Some(out) = out else { break };
        let msg = match out {
            ExecOutput::Stdout(b) if p.stdout => frame(STDOUT, &b),
            ExecOutput::Stderr(b) if p.stderr => frame(STDERR, &b),
            ExecOutput::Stdout(_) | ExecOutput::Stderr(_) => continue,
            ExecOutput::Exit(code) => frame(ERROR, &status::exit(code)),
        };
        if tx.send(msg).await.is_err() {
            break;
        }
    }
    input.abort();
    let _ = tx.close().await;
}

pub async fn port_forward(server: Arc<Streaming>, ws: Ws, sandbox_id: String, ports: Vec<u16>) {
    let (mut tx, mut rx) = ws.split();
    for (i, port) in ports.iter().enumerate() {
        let le = port.to_le_bytes();
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if tx.send(frame(ch, &le)).await.is_err() {
                return;
            }
        }
    }
    // One TCP connection per port, for the life of the WebSocket.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Message>(64);
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data_ch = 2 * i as u8;
        match server.connect_pod_port(&sandbox_id, *port).await {
            Ok(conn) => {
                let (mut rd, wr) = conn.into_split();
                writers.push(Some(wr));
                let out = out_tx.clone();
                readers.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(n) = rd.read(&mut buf).await {
                        if n == 0 || out.send(frame(data_ch, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }));
            }
            Err(e) => {
                writers.push(None);
                let _ = out_tx.send(frame(data_ch + 1, e.as_bytes())).await;
            }
        }
    }
    drop(out_tx);
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(m) => if tx.send(m).await.is_err() { break },
                // Every connection to the pod ended.
                None => break,
            },
            msg = rx.next() => {
                let data = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Some((&channel, body)) = data.split_first() else { continue };
                if channel % 2 != 0 {
                    continue;
                }
                let Some(Some(wr)) = writers.get_mut(usize::from(channel / 2)) else { continue };
                if wr.write_all(body).await.is_err() {
                    writers[usize::from(channel / 2)] = None;
                }
            }
        }
    }
    // The client is gone or done: the pod's side of every connection is closed now, not
    // whenever the pod next writes.
    for r in readers {
        r.abort();
    }
    let _ = tx.close().await;
}
