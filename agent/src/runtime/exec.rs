//! Running an extra process inside a running container (`kubectl exec`, CRI ExecSync/Exec).
//!
//! The agent never enters a container itself: it spawns `minilet __exec SPEC`
//! ([`super::helper::exec`]), which joins the container's namespaces and cgroup, starts the
//! command as the container's user with its environment, and relays its stdio. Between agent
//! and helper, stdin and stdout carry small frames: `[kind u8][length u32 BE][payload]`.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::process::{PidFd, ProcessId};
use super::state::ContainerFiles;
use super::{IoContext, Result, Runtime, RuntimeError, reaper};

/// What the helper needs to know (passed as JSON on its command line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The container attempt's directory (its spec.json has env, user, cgroup).
    pub container_dir: std::path::PathBuf,
    /// The container's main process: its namespaces are the ones to join.
    pub process: ProcessId,
    pub cmd: Vec<String>,
    pub tty: bool,
    /// Whether stdin is forwarded (else the process reads /dev/null).
    pub stdin: bool,
    pub size: Option<(u16, u16)>,
}

/// Frame kinds.
pub mod frame {
    /// Agent → helper.
    pub const STDIN: u8 = 1;
    pub const RESIZE: u8 = 2;
    pub const CLOSE_STDIN: u8 = 3;
    /// Attach only, sent first: this session carries stdin (see the monitor's attach).
    pub const ATTACH_STDIN: u8 = 4;
    /// The most stdin one frame carries: larger input is split (the monitor refuses frames
    /// much larger).
    pub const STDIN_CHUNK: usize = 32 * 1024;
    /// Helper → agent.
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const EXIT: u8 = 3;
    /// The command's PID (u32 BE, as the agent sees it), sent first: it leads its own process
    /// group, so what it started can be killed with it.
    pub const PROCESS: u8 = 4;

    pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Reassembles frames from a byte stream.
    #[derive(Debug, Default)]
    pub struct Decoder {
        buf: Vec<u8>,
    }

    impl Decoder {
        pub fn feed(&mut self, data: &[u8]) {
            self.buf.extend_from_slice(data);
        }

        /// Bytes received but not yet returned as frames.
        pub fn buffered(&self) -> usize {
            self.buf.len()
        }

        /// The next complete frame, if one has arrived.
        pub fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
            if self.buf.len() < 5 {
                return None;
            }
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if self.buf.len() < 5 + len {
                return None;
            }
            let kind = self.buf[0];
            let payload = self.buf[5..5 + len].to_vec();
            self.buf.drain(..5 + len);
            Some((kind, payload))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    Resize(u16, u16),
    CloseStdin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last output: the exit status (126 when the command could not be started).
    Exit(i32),
}

/// Where frames go: the exec helper's stdin, or a monitor's attach socket.
pub(super) type FrameSink = Box<dyn AsyncWrite + Send + Unpin>;
/// Where frames come from: the exec helper's stdout, or a monitor's attach socket.
pub(super) type FrameSource = Box<dyn AsyncRead + Send + Unpin>;

/// Sends input to an exec'd process (or an attached container).
pub struct ExecStdin {
    tx: Option<FrameSink>,
}

impl ExecStdin {
    /// Input written as frames to `tx` (what the exec helper or a monitor reads).
    pub fn over(tx: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        ExecStdin { tx: Some(Box::new(tx)) }
    }

    pub async fn send(&mut self, input: ExecInput) -> std::io::Result<()> {
        let Some(tx) = self.tx.as_mut() else { return Ok(()) };
        let bytes = match input {
            ExecInput::Stdin(data) => {
                let mut out = Vec::with_capacity(data.len() + 5);
                for chunk in data.chunks(frame::STDIN_CHUNK) {
                    out.extend(frame::encode(frame::STDIN, chunk));
                }
                out
            }
            ExecInput::Resize(w, h) => frame::encode(frame::RESIZE, &[w.to_be_bytes(), h.to_be_bytes()].concat()),
            ExecInput::CloseStdin => frame::encode(frame::CLOSE_STDIN, &[]),
        };
        tx.write_all(&bytes).await
    }
}

/// Receives the output of an exec'd process (or an attached container).
pub struct ExecOutputs {
    rx: FrameSource,
    decoder: frame::Decoder,
    done: bool,
    /// The command's process group, once the helper has said it (0 before).
    group: Arc<AtomicI32>,
    /// The status an end without an exit frame stands for: an exec helper that vanished
    /// (137, killed), a monitor that let an attach session go (0, as the kubelet's Success).
    lost: i32,
}

impl ExecOutputs {
    /// The next output; `None` after the exit status (or if the other side vanished, after
    /// a synthesized one, see `lost`).
    pub async fn next(&mut self) -> Option<ExecOutput> {
        if self.done {
            return None;
        }
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            if let Some((kind, payload)) = self.decoder.next_frame() {
                if kind == frame::PROCESS {
                    if let Some(b) = payload.get(..4) {
                        let pid = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        self.group.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
                    }
                    continue;
                }
                return Some(match kind {
                    frame::STDOUT => ExecOutput::Stdout(payload),
                    frame::STDERR => ExecOutput::Stderr(payload),
                    _ => {
                        self.done = true;
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(255);
                        ExecOutput::Exit(code)
                    }
                });
            }
            match self.rx.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    self.done = true;
                    return Some(ExecOutput::Exit(self.lost));
                }
                Ok(n) => self.decoder.feed(&buf[..n]),
            }
        }
    }
}

/// Kills the helper and the exec'd command's process group (the command and what it
/// started) when dropped before the command ended: a client that goes away, or a probe that
/// timed out, must not leave processes behind.
pub struct ExecGuard {
    /// `None` for an attach session: the container's process is not the client's to end.
    helper: Option<PidFd>,
    group: Arc<AtomicI32>,
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        let Some(helper) = self.helper.take().filter(|h| !h.has_exited()) else {
            return;
        };
        let group = self.group.load(Ordering::SeqCst);
        // Off the async threads when there are some: the helper may take a moment to stop.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || end_exec(&helper, group))),
            Err(_) => end_exec(&helper, group),
        }
    }
}

/// Kill an exec helper that is still running and the command it started (the process group
/// `group` leads, 0 if the helper's report of it was not read yet).
fn end_exec(helper: &PidFd, group: i32) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    if group > 0 {
        // While the helper lives it has not reaped the command, so the group's number cannot
        // have been reused.
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    } else {
        // A client that left at once. Killing the helper alone is not enough: the command's
        // parent-death signal is cleared when it drops its privileges. So the helper is
        // stopped first, and once it is (a fork in progress has then completed), each child
        // it has is killed with the group it leads.
        let pid = helper.id().pid;
        let _ = helper.signal(Signal::SIGSTOP);
        for _ in 0..1000 {
            if helper.has_exited() || stopped(pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        for child in children(pid) {
            let _ = killpg(Pid::from_raw(child), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
    }
    let _ = helper.signal(Signal::SIGKILL);
}

/// Whether process `pid` is stopped (`T` in /proc/PID/stat).
fn stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "T"))
        })
        .unwrap_or(false)
}

/// The children of process `pid` (single-threaded: its main thread's), as the kernel lists
/// them.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|c| c.parse().ok()).collect())
        .unwrap_or_default()
}

/// A process running inside a container.
pub struct ExecSession {
    pub stdin: ExecStdin,
    pub outputs: ExecOutputs,
    pub guard: ExecGuard,
}

impl ExecSession {
    /// A session over a stream of frames. `helper` (the exec helper) is killed with the
    /// command's group if the session is dropped before the command ended; `lost` is the
    /// status an end without an exit frame stands for (see [`ExecOutputs`]).
    pub(super) fn over(tx: FrameSink, rx: FrameSource, helper: Option<PidFd>, lost: i32) -> ExecSession {
        let group = Arc::new(AtomicI32::new(0));
        ExecSession {
            stdin: ExecStdin::over(tx),
            outputs: ExecOutputs {
                rx,
                decoder: frame::Decoder::default(),
                done: false,
                group: group.clone(),
                lost,
            },
            guard: ExecGuard { helper, group },
        }
    }
}

/// The result of running a command to completion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl Runtime {
    /// Start `spec.cmd` inside the running container attempt `files`.
    pub async fn exec(
        &self,
        files: &ContainerFiles,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
        size: Option<(u16, u16)>,
    ) -> Result<ExecSession> {
        let state = files.state.filter(|_| files.exit.is_none()).ok_or_else(|| {
            RuntimeError::FailedPrecondition(format!("container {} is not running", files.record.name))
        })?;
        if cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("cmd: no command given".into()));
        }
        let spec = ExecSpec {
            container_dir: files.dir.clone(),
            process: state.process,
            cmd,
            tty,
            stdin,
            size,
        };
        let json = serde_json::to_string(&spec).map_err(|e| RuntimeError::Helper(format!("encode exec spec: {e}")))?;
        let mut cmd = super::helper_command(super::helper::EXEC, json.as_ref(), Stdio::piped());
        // As before, the exec helper's stderr is the agent's (its command's travels in frames).
        cmd.stderr(Stdio::inherit());
        let (mut child, helper) = tokio::task::spawn_blocking(move || reaper::spawn(&mut cmd))
            .await
            .map_err(|e| RuntimeError::Helper(format!("spawn exec helper: {e}")))?
            .context(|| "spawn exec helper".to_string())?;
        let to_pipe = |fd: Option<OwnedFd>| fd.ok_or_else(|| RuntimeError::Helper("exec helper without pipes".into()));
        let tx = pipe::Sender::from_owned_fd(to_pipe(child.stdin.take().map(OwnedFd::from))?)
            .context(|| "exec stdin pipe".into())?;
        let rx = pipe::Receiver::from_owned_fd(to_pipe(child.stdout.take().map(OwnedFd::from))?)
            .context(|| "exec stdout pipe".into())?;
        Ok(ExecSession::over(Box::new(tx), Box::new(rx), Some(helper), 137))
    }

    /// Run a command to completion (CRI ExecSync). `None` if it did not finish in `timeout`
    /// (it is then killed).
    pub async fn exec_sync(
        &self,
        files: &ContainerFiles,
        cmd: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<Option<ExecResult>> {
        let mut session = self.exec(files, cmd, false, false, None).await?;
        let collect = async {
            let mut result = ExecResult::default();
            while let Some(out) = session.outputs.next().await {
                let kept = result.stdout.len() + result.stderr.len();
                match out {
                    ExecOutput::Stdout(b) => append_capped(&mut result.stdout, kept, &b),
                    ExecOutput::Stderr(b) => append_capped(&mut result.stderr, kept, &b),
                    ExecOutput::Exit(code) => result.exit_code = code,
                }
            }
            result
        };
        match timeout {
            Some(t) => Ok(tokio::time::timeout(t, collect).await.ok()),
            None => Ok(Some(collect.await)),
        }
    }
}

/// The most ExecSync keeps of stdout and stderr together: the response must fit the 16 MiB
/// gRPC messages the kubelet's CRI client (and containerd's server) accept, with room for
/// the rest of the message. Output beyond it is read and dropped, so the command still runs
/// to its end and the agent's memory stays bounded.
pub const MAX_EXEC_SYNC_OUTPUT: usize = 16 * 1024 * 1024 - 64 * 1024;

/// Append what fits of `bytes` to `buf`, `kept` bytes being kept already (both streams).
fn append_capped(buf: &mut Vec<u8>, kept: usize, bytes: &[u8]) {
    let room = MAX_EXEC_SYNC_OUTPUT.saturating_sub(kept);
    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::frame::*;

    #[test]
    fn exec_sync_output_is_capped() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..10 {
            let kept = out.len() + err.len();
            super::append_capped(&mut out, kept, &chunk);
            let kept = out.len() + err.len();
            super::append_capped(&mut err, kept, &chunk);
        }
        assert_eq!(out.len() + err.len(), super::MAX_EXEC_SYNC_OUTPUT);
        assert_eq!(out.len(), 8 * 1024 * 1024);
    }

    #[test]
    fn frames_survive_arbitrary_splits() {
        let mut bytes = encode(STDOUT, b"hello");
        bytes.extend(encode(STDERR, b""));
        bytes.extend(encode(EXIT, &7i32.to_be_bytes()));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(3) {
            d.feed(chunk);
            while let Some(f) = d.next_frame() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                (STDOUT, b"hello".to_vec()),
                (STDERR, vec![]),
                (EXIT, 7i32.to_be_bytes().to_vec())
            ]
        );
    }
}
