//! Exec over SPDY, remotecommand `v4.channel.k8s.io`: the client opens one stream per
//! channel, typed by its `streamtype` header (error, stdin, stdout, stderr, resize); the
//! exit status goes on the error stream as a JSON `Status`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::exec::{self, ExecParams, ResizeDecoder};
use super::spdy_session::{Session, Stream};
use super::{Streaming, spdy, status};
use crate::runtime::exec::{ExecInput, ExecOutput};

pub const V4: &str = "v4.channel.k8s.io";
/// How long the client has to open every stream it needs (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn complete(&self, p: &ExecParams) -> bool {
        self.error.is_some()
            && (!p.stdin || self.stdin.is_some())
            && (!p.stdout || self.stdout.is_some())
            && (!p.stderr || self.stderr.is_some())
            && (!p.tty || self.resize.is_some())
    }
}

pub async fn exec(server: Arc<Streaming>, mut session: Session, p: ExecParams) {
    let mut s = Streams::default();
    let gathered = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while !s.complete(&p) {
            let Some(stream) = session.incoming.recv().await else {
                return false;
            };
            let slot = match spdy::header(&stream.headers, "streamtype") {
                Some("error") => &mut s.error,
                Some("stdin") => &mut s.stdin,
                Some("stdout") => &mut s.stdout,
                Some("stderr") => &mut s.stderr,
                Some("resize") => &mut s.resize,
                other => {
                    tracing::debug!(streamtype = ?other, "SPDY exec: ignoring a stream of unknown type");
                    continue;
                }
            };
            *slot = Some(stream);
        }
        true
    })
    .await;
    if gathered != Ok(true) {
        tracing::debug!("SPDY exec: the client did not open its streams in time");
        session.handle.go_away().await;
        return;
    }
    let Some(error) = s.error.take() else { return };
    let exec_session = match exec::start(&server, &p).await {
        Ok(x) => x,
        Err(e) => {
            error.writer.write(&status::internal(&e)).await;
            error.writer.close().await;
            session.handle.go_away().await;
            return;
        }
    };
    let crate::runtime::exec::ExecSession {
        stdin,
        mut outputs,
        guard,
    } = exec_session;
    let input = tokio::spawn(forward_input(
        s.stdin.take().map(|st| st.data),
        s.resize.take().map(|rs| rs.data),
        stdin,
    ));
    // Dropped on every way out: a client that goes away ends the command and what it started.
    let _guard = guard;
    let mut code = None;
    loop {
        let out = tokio::select! {
            out = outputs.next() => out,
            // The connection ended (the client opens no more streams, so only its end
            // comes here): nobody is left to serve.
            None = session.incoming.recv() => {
                input.abort();
                return;
            }
        };
        let Some(out) = out else { break };
        match out {
            ExecOutput::Stdout(b) => {
                if let Some(o) = &s.stdout {
                    o.writer.write(&b).await;
                }
            }
            ExecOutput::Stderr(b) => {
                if let Some(e) = &s.stderr {
                    e.writer.write(&b).await;
                }
            }
            ExecOutput::Exit(c) => code = Some(c),
        }
    }
    for st in [&s.stdout, &s.stderr].into_iter().flatten() {
        st.writer.close().await;
    }
    error.writer.write(&status::exit(code.unwrap_or(137))).await;
    error.writer.close().await;
    input.abort();
    session.handle.go_away().await;
}

/// Hand the client's stdin and terminal sizes to the command, in the order they came on the
/// connection. The session hands each stream its frames in that order; taking a waiting
/// size before waiting stdin keeps it, so the first size (sent before any keystroke) reaches
/// the terminal before the command reads a line that asks for it (`stty size`). Once both
/// have ended it holds `to` open until it is aborted with the session: closing it would end
/// an attach session before the container's answer to the last input came back (the monitor
/// takes it for the client going away).
async fn forward_input(
    mut stdin: Option<mpsc::Receiver<Vec<u8>>>,
    mut resize: Option<mpsc::Receiver<Vec<u8>>>,
    mut to: crate::runtime::exec::ExecStdin,
) {
    let mut sizes = ResizeDecoder::default();
    loop {
        let input = tokio::select! {
            biased;
            data = recv(&mut resize), if resize.is_some() => match data {
                Some(data) => sizes.feed(&data),
                None => {
                    resize = None;
                    continue;
                }
            },
            data = recv(&mut stdin), if stdin.is_some() => match data {
                Some(data) => vec![ExecInput::Stdin(data)],
                // The client's FIN: stdin reaches its end.
                None => {
                    stdin = None;
                    vec![ExecInput::CloseStdin]
                }
            },
            else => break,
        };
        for i in input {
            if to.send(i).await.is_err() {
                return;
            }
        }
    }
    std::future::pending::<()>().await;
    drop(to);
}

async fn recv(rx: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::runtime::exec::frame;

    /// A terminal's first size and the first keystrokes, both waiting when the task looks:
    /// the size reaches the command first, as it came first.
    #[tokio::test]
    async fn a_waiting_size_goes_before_waiting_stdin() {
        for _ in 0..20 {
            let (stdin_tx, stdin_rx) = mpsc::channel(4);
            let (resize_tx, resize_rx) = mpsc::channel(4);
            resize_tx.send(br#"{"Width":91,"Height":37}"#.to_vec()).await.unwrap();
            stdin_tx.send(b"stty size\n".to_vec()).await.unwrap();
            drop((stdin_tx, resize_tx));
            let (sink, mut helper) = tokio::io::duplex(4096);
            let task = tokio::spawn(forward_input(
                Some(stdin_rx),
                Some(resize_rx),
                crate::runtime::exec::ExecStdin::over(sink),
            ));
            let mut want = frame::encode(frame::RESIZE, &[91u16.to_be_bytes(), 37u16.to_be_bytes()].concat());
            want.extend(frame::encode(frame::STDIN, b"stty size\n"));
            want.extend(frame::encode(frame::CLOSE_STDIN, &[]));
            let mut got = vec![0; want.len()];
            helper.read_exact(&mut got).await.unwrap();
            assert_eq!(got, want);
            // The sink stays open (an attach session would end with it) until the session
            // aborts the task.
            let mut more = [0u8; 1];
            let open = tokio::time::timeout(std::time::Duration::from_millis(50), helper.read(&mut more)).await;
            assert!(open.is_err(), "the sink is still open: {open:?}");
            task.abort();
            assert_eq!(helper.read(&mut more).await.unwrap(), 0, "closed once aborted");
        }
    }
}
