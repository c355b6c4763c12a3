//! `minilet exec`: a session over CRI Exec and the streaming server (see [`super::exec_stream`]),
//! in Node.Exec's messages. The request stream starts with `start`, then carries
//! stdin (`-i`) and terminal resizes (`-t`, on SIGWINCH); output is written as it arrives and
//! the CLI exits with the remote exit code. With `-t` the local terminal is raw for the
//! session and restored on every way out.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, Result};
use minilet_proto::minilet::v1::{ExecRequest, ExecResponse, ExecStart, TerminalSize, exec_request, exec_response};
use minilet_proto::runtime::v1::ContainerState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

use super::terminal::{self, RawMode};
use super::{SocketArgs, attempts, client, pods};

#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the annotated default container, else the first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Allocate a terminal for the command (with -i, from a local terminal).
    #[arg(short = 't', long)]
    pub tty: bool,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub socket: SocketArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// What the local side feeds into the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin(Vec<u8>),
    StdinEof,
    Resize(TerminalSize),
}

fn request(msg: exec_request::Msg) -> ExecRequest {
    ExecRequest { msg: Some(msg) }
}

/// Run one session: queue `start`, open the call (`open` yields the response stream; `start`
/// must be queued first, as the agent may read it before it answers), forward inputs as
/// requests, write output as it arrives, and return the exit code the agent reports last.
pub async fn session<S>(
    start: ExecStart,
    requests: mpsc::Sender<ExecRequest>,
    open: impl Future<Output = Result<S>>,
    mut inputs: mpsc::Receiver<Input>,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
    status_error: impl Fn(tonic::Status) -> anyhow::Error,
) -> Result<i32>
where
    S: Stream<Item = Result<ExecResponse, tonic::Status>> + Unpin,
{
    // If the agent is gone, the call says why; a failed send adds nothing.
    let _ = requests.send(request(exec_request::Msg::Start(start))).await;
    let mut responses = open.await?;
    let mut inputs_open = true;
    loop {
        tokio::select! {
            resp = responses.next() => match resp {
                Some(Ok(ExecResponse { msg: Some(msg) })) => match msg {
                    exec_response::Msg::Stdout(b) => {
                        stdout.write_all(&b).and_then(|()| stdout.flush()).context("writing stdout")?;
                    }
                    exec_response::Msg::Stderr(b) => {
                        stderr.write_all(&b).and_then(|()| stderr.flush()).context("writing stderr")?;
                    }
                    exec_response::Msg::ExitCode(code) => return Ok(code),
                },
                Some(Ok(ExecResponse { msg: None })) => {}
                Some(Err(status)) => return Err(status_error(status)),
                None => anyhow::bail!("the exec stream ended without an exit code"),
            },
            input = inputs.recv(), if inputs_open => {
                let msg = match input {
                    Some(Input::Stdin(b)) => exec_request::Msg::Stdin(b),
                    Some(Input::StdinEof) => exec_request::Msg::CloseStdin(true),
                    Some(Input::Resize(s)) => exec_request::Msg::Resize(s),
                    None => {
                        inputs_open = false;
                        continue;
                    }
                };
                let _ = requests.send(request(msg)).await;
            }
        }
    }
}

/// Send the terminal's size on every SIGWINCH.
pub async fn forward_resizes(tx: mpsc::Sender<Input>, size: impl Fn() -> Option<TerminalSize>) -> Result<()> {
    let mut winch = signal(SignalKind::window_change()).context("watching SIGWINCH")?;
    while winch.recv().await.is_some() {
        if let Some(s) = size()
            && tx.send(Input::Resize(s)).await.is_err()
        {
            break;
        }
    }
    Ok(())
}

/// Read stdin on a thread of its own (a blocking read cannot be cancelled; the thread dies
/// with the process) and feed it to the session, then its end.
fn spawn_stdin(tx: mpsc::Sender<Input>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(Input::Stdin(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.blocking_send(Input::StdinEof);
    });
}

/// kubectl's rule: a terminal only with -i and a local terminal on stdin (warning otherwise).
pub fn use_tty(tty: bool, stdin: bool, stdin_is_terminal: bool) -> (bool, Option<&'static str>) {
    match (tty, stdin, stdin_is_terminal) {
        (true, true, true) => (true, None),
        (true, true, false) => (
            false,
            Some("Unable to use a TTY - input is not a terminal or the right kind of file"),
        ),
        _ => (false, None),
    }
}

/// The process's exit status for a remote exit code (as a shell would see it).
pub fn exit_status(code: i32) -> u8 {
    (code & 0xff) as u8
}

pub async fn run(args: ExecArgs) -> Result<ExitCode> {
    if args.command.is_empty() {
        anyhow::bail!("you must specify at least one command for the container");
    }
    let client = client::connect(&args.socket.socket).await?;
    let (_, _, current) = running_container(
        &client,
        &args.namespace,
        &args.pod,
        args.container.as_deref(),
        "cannot exec into a container in a completed pod",
    )
    .await?;

    let (tty, warning) = use_tty(args.tty, args.stdin, std::io::stdin().is_terminal());
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let start = ExecStart {
        container_id: current.id,
        cmd: args.command.clone(),
        tty,
        stdin: args.stdin,
        size: if tty { stdin_size() } else { None },
    };
    let exec = minilet_proto::runtime::v1::ExecRequest {
        container_id: start.container_id.clone(),
        cmd: start.cmd.clone(),
        tty,
        stdin: args.stdin,
        stdout: true,
        stderr: !tty,
    };
    let streams = Streams {
        tty,
        raw: tty,
        stdin: args.stdin,
    };
    let code = run_streams(start, streams, &args.socket.socket, client.cri_exec(exec)).await?;
    if code != 0 {
        eprintln!("command terminated with exit code {code}");
    }
    Ok(ExitCode::from(exit_status(code)))
}

/// The pod, the container (`requested`, else the default one, with kubectl's notice) and
/// its running attempt, for a session with it. `completed`: the refusal for a completed pod.
pub async fn running_container(
    client: &client::Client,
    namespace: &str,
    pod: &str,
    requested: Option<&str>,
    completed: &str,
) -> Result<(k8s_openapi::api::core::v1::Pod, String, attempts::Attempt)> {
    let np = pods::get(client, namespace, pod, client::Details::Dirs).await?;
    let phase = np
        .pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        anyhow::bail!("{completed}; current phase is {phase}");
    }
    let (container, notice) = pods::container_for_exec(&np.pod, requested)?;
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    let current = attempts::find(client, &np.pod, &container)
        .await?
        .pop()
        .filter(|a| a.state == ContainerState::ContainerRunning)
        .with_context(|| format!("unable to upgrade connection: container not found (\"{container}\")"))?;
    Ok((np.pod, container, current))
}

/// The local side of a session: the streams it opens, whether the local terminal is raw.
pub struct Streams {
    /// The remote side is a terminal: one output stream, and resizes.
    pub tty: bool,
    /// The local terminal is raw (and its size is sent) for the session.
    pub raw: bool,
    pub stdin: bool,
}

pub fn stdin_size() -> Option<TerminalSize> {
    terminal::size(std::io::stdin().as_fd())
}

/// Run one session at the streaming URL `url` gives (CRI Exec or Attach) until its exit
/// code: local stdin and terminal resizes in, output out; a terminating signal ends it.
pub async fn run_streams(
    start: ExecStart,
    s: Streams,
    socket: &std::path::Path,
    url: impl Future<Output = Result<String>>,
) -> Result<i32> {
    // Raw mode lasts exactly as long as this function: the guard is dropped on every way out.
    let _raw = if s.raw {
        Some(RawMode::enable(std::io::stdin().as_fd())?)
    } else {
        None
    };
    let (in_tx, in_rx) = mpsc::channel(64);
    if s.stdin {
        spawn_stdin(in_tx.clone());
    }
    if s.raw {
        let tx = in_tx.clone();
        tokio::spawn(async move { forward_resizes(tx, stdin_size).await });
    }
    drop(in_tx);
    let (req_tx, req_rx) = mpsc::channel(64);
    let open = async {
        let url = url.await?;
        super::exec_stream::open(url, s.tty, s.stdin, req_rx).await
    };
    let session = async {
        session(
            start,
            req_tx,
            open,
            in_rx,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
            |st| super::errors::from_status(st, socket),
        )
        .await
    };
    tokio::select! {
        code = session => code,
        sig = termination(s.raw) => Ok(128 + sig?),
    }
}

/// Signals that end the session. In raw mode the terminal sends no SIGINT, but a signal from
/// elsewhere must still restore it, so every terminating signal is caught then; otherwise
/// SIGINT keeps its default (a Ctrl-C simply ends the CLI).
async fn termination(raw: bool) -> Result<i32> {
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("watching SIGHUP")?;
    if !raw {
        tokio::select! {
            _ = term.recv() => return Ok(libc::SIGTERM),
            _ = hup.recv() => return Ok(libc::SIGHUP),
        }
    }
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let mut quit = signal(SignalKind::quit()).context("watching SIGQUIT")?;
    tokio::select! {
        _ = term.recv() => Ok(libc::SIGTERM),
        _ = hup.recv() => Ok(libc::SIGHUP),
        _ = int.recv() => Ok(libc::SIGINT),
        _ = quit.recv() => Ok(libc::SIGQUIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::wrappers::ReceiverStream;

    fn start() -> ExecStart {
        ExecStart {
            container_id: "c1".into(),
            cmd: vec!["cat".into()],
            tty: false,
            stdin: true,
            size: None,
        }
    }

    /// A fake agent: answers the call only once it has read `start` (as a real server may),
    /// echoes stdin upper-cased on stdout, reports sizes on stderr, and exits with 3 once
    /// stdin is closed. Returns every request it saw.
    async fn fake_agent(
        mut requests: mpsc::Receiver<ExecRequest>,
        responses: mpsc::Sender<Result<ExecResponse, tonic::Status>>,
        answered: tokio::sync::oneshot::Sender<()>,
    ) -> Vec<ExecRequest> {
        let mut seen = Vec::new();
        let mut answered = Some(answered);
        while let Some(r) = requests.recv().await {
            if let Some(a) = answered.take() {
                let _ = a.send(());
            }
            let reply = match &r.msg {
                Some(exec_request::Msg::Stdin(b)) => Some(exec_response::Msg::Stdout(b.to_ascii_uppercase())),
                Some(exec_request::Msg::Resize(s)) => Some(exec_response::Msg::Stderr(
                    format!("{}x{}", s.width, s.height).into_bytes(),
                )),
                Some(exec_request::Msg::CloseStdin(true)) => Some(exec_response::Msg::ExitCode(3)),
                _ => None,
            };
            seen.push(r);
            if let Some(msg) = reply {
                let _ = responses.send(Ok(ExecResponse { msg: Some(msg) })).await;
            }
        }
        seen
    }

    #[tokio::test]
    async fn session_frames_start_stdin_resize_and_exit_code() {
        let (req_tx, req_rx) = mpsc::channel(16);
        let (resp_tx, resp_rx) = mpsc::channel(16);
        let (in_tx, in_rx) = mpsc::channel(16);
        let (answered_tx, answered_rx) = tokio::sync::oneshot::channel();
        let agent = tokio::spawn(fake_agent(req_rx, resp_tx, answered_tx));
        in_tx.send(Input::Stdin(b"hello ".to_vec())).await.unwrap();
        in_tx
            .send(Input::Resize(TerminalSize { width: 80, height: 24 }))
            .await
            .unwrap();
        in_tx.send(Input::Stdin(b"world".to_vec())).await.unwrap();
        in_tx.send(Input::StdinEof).await.unwrap();
        drop(in_tx);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = session(
            start(),
            req_tx,
            async {
                answered_rx.await?;
                Ok(ReceiverStream::new(resp_rx))
            },
            in_rx,
            &mut out,
            &mut err,
            |s| anyhow::anyhow!("{s}"),
        )
        .await
        .unwrap();
        assert_eq!(code, 3);
        assert_eq!(out, b"HELLO WORLD");
        assert_eq!(err, b"80x24");
        let seen = agent.await.unwrap();
        let msgs: Vec<_> = seen.into_iter().map(|r| r.msg.unwrap()).collect();
        assert_eq!(
            msgs,
            vec![
                exec_request::Msg::Start(start()),
                exec_request::Msg::Stdin(b"hello ".to_vec()),
                exec_request::Msg::Resize(TerminalSize { width: 80, height: 24 }),
                exec_request::Msg::Stdin(b"world".to_vec()),
                exec_request::Msg::CloseStdin(true),
            ]
        );
    }

    #[tokio::test]
    async fn errors_and_a_stream_without_exit_code() {
        let (req_tx, _req_rx) = mpsc::channel(16);
        let (_in_tx, in_rx) = mpsc::channel(1);
        let stream = tokio_stream::iter(vec![
            Ok(ExecResponse {
                msg: Some(exec_response::Msg::Stdout(b"partial".to_vec())),
            }),
            Err(tonic::Status::not_found("container \"x\" not found")),
        ]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = session(
            start(),
            req_tx.clone(),
            async { Ok(stream) },
            in_rx,
            &mut out,
            &mut err,
            |s| super::super::errors::from_status(s, std::path::Path::new("/s")),
        )
        .await
        .unwrap_err();
        assert_eq!(
            super::super::errors::line(&e).unwrap(),
            "Error from server (NotFound): container \"x\" not found"
        );
        assert_eq!(out, b"partial");

        let (_in_tx, in_rx) = mpsc::channel(1);
        let e = session(
            start(),
            req_tx,
            async { Ok(tokio_stream::empty()) },
            in_rx,
            &mut out,
            &mut err,
            |s| anyhow::anyhow!("{s}"),
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "the exec stream ended without an exit code");
    }

    #[tokio::test]
    async fn sigwinch_becomes_a_resize() {
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(forward_resizes(tx, || Some(TerminalSize { width: 100, height: 30 })));
        // Give the task time to install its handler, then resize "the terminal".
        let got = loop {
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGWINCH).unwrap();
            match tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv()).await {
                Ok(v) => break v,
                Err(_) => continue,
            }
        };
        assert_eq!(got, Some(Input::Resize(TerminalSize { width: 100, height: 30 })));
        task.abort();
    }

    #[test]
    fn tty_rules_and_exit_status() {
        assert_eq!(use_tty(true, true, true), (true, None));
        assert_eq!(
            use_tty(true, true, false),
            (
                false,
                Some("Unable to use a TTY - input is not a terminal or the right kind of file")
            )
        );
        assert_eq!(use_tty(true, false, true), (false, None));
        assert_eq!(use_tty(false, true, true), (false, None));
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(137), 137);
        assert_eq!(exit_status(256 + 2), 2);
    }
}
