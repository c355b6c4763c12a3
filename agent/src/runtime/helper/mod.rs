//! The agent's helper processes: `minilet` re-executed with a hidden subcommand.
//!
//! The agent is a multi-threaded tokio program; forking it and doing namespace work in the
//! child is unsafe. Instead it spawns this same binary, which dispatches here before any
//! thread exists, and does the namespace, mount and cgroup work single-threaded:
//!
//! - `minilet __sandbox SPEC`: creates the pod's namespaces and forks the pause into them
//!   ([`sandbox`]), records it, reports, exits.
//! - `minilet __monitor SPEC`: forks the container process, on v2 straight into its cgroup
//!   ([`fork`]); [`init`] sets it up and execs; the monitor then stays as its monitor ([`monitor`]): holds its stdio (pipes or a terminal), writes
//!   the CRI log, serves attach clients ([`attach`]), waits for the exit and records it. Monitors outlive agent restarts, so neither log
//!   lines nor exit codes are lost while no agent runs.
//!
//! - `minilet __exec SPEC`: runs a command inside a running container and relays its stdio
//!   ([`exec`]).
//! - `minilet __portfwd SPEC`: binds a pod's hostPorts, joins its network namespace and
//!   stays as their forwarder ([`portfwd`]), surviving agent restarts as monitors do.
//!
//! All but `__exec` answer on stdout with one JSON line ([`super::spec::Report`]).

mod attach;
pub mod exec;
mod fork;
mod init;
pub mod monitor;
pub mod portfwd;
mod pty;
pub mod sandbox;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use nix::fcntl::OFlag;
use serde::Serialize;

/// Hidden subcommand names.
pub const SANDBOX: &str = "__sandbox";
pub const MONITOR: &str = "__monitor";
pub const EXEC: &str = "__exec";
pub const PORTFWD: &str = "__portfwd";

/// Run a helper if `args` name one; `None` means "not a helper invocation".
pub fn dispatch(args: &[OsString]) -> Option<ExitCode> {
    let name = args
        .get(1)
        .and_then(|a| a.to_str())
        .filter(|n| [SANDBOX, MONITOR, EXEC, PORTFWD].contains(n))?;
    // The agent spawns helpers without choosing their working directory (std falls back from
    // posix_spawn to forking the whole agent when asked for one, in a static build): leave
    // the agent's at once, so no helper keeps a directory of the agent's busy.
    if let Err(e) = std::env::set_current_dir("/") {
        eprintln!("minilet: helper {name}: chdir /: {e}");
        return Some(ExitCode::FAILURE);
    }
    let from_stdin;
    let mut premade = None;
    let spec = match args.get(2) {
        // Started ahead of need (see `runtime::warm`): the spec's path comes on stdin. A
        // sandbox helper makes the pod's namespaces while it waits.
        Some(arg) if arg == WAIT_FOR_SPEC => {
            if name == SANDBOX {
                premade = sandbox::Premade::make();
            }
            match spec_from_stdin() {
                Ok(Some(path)) => {
                    from_stdin = path;
                    Some(&from_stdin)
                }
                // The agent let it go (or is gone) before it had work: nothing to do.
                Ok(None) => return Some(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("minilet: helper {name}: {e}");
                    return Some(ExitCode::FAILURE);
                }
            }
        }
        other => other,
    };
    match (Some(name), spec) {
        (Some(SANDBOX), Some(spec)) => Some(sandbox::main(spec.as_ref(), premade)),
        (Some(MONITOR), Some(spec)) => Some(monitor::main(spec.as_ref())),
        (Some(EXEC), Some(spec)) => Some(exec::main(spec.as_ref())),
        (Some(PORTFWD), Some(spec)) => Some(portfwd::main(spec.as_ref())),
        (Some(SANDBOX | MONITOR | EXEC | PORTFWD), None) => {
            eprintln!("minilet: internal helper needs a spec file argument");
            Some(ExitCode::from(2))
        }
        _ => None,
    }
}

/// The spec argument of a helper started ahead of need: its spec's path follows on stdin.
pub const WAIT_FOR_SPEC: &str = "-";

/// Read the spec's path (one line) from stdin, then let stdin be /dev/null, as it is for a
/// helper started with its spec: a monitor outlives the agent and must hold no pipe of it.
/// `None`: end of input without a path.
fn spec_from_stdin() -> Result<Option<OsString>, String> {
    use std::io::BufRead;
    use std::os::unix::ffi::OsStringExt;
    let mut line = Vec::new();
    std::io::stdin()
        .lock()
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("read the spec path from stdin: {e}"))?;
    if line.pop() != Some(b'\n') || line.is_empty() {
        return Ok(None);
    }
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| format!("dup2 /dev/null to stdin: {e}"))?;
    Ok(Some(OsString::from_vec(line)))
}

/// Write the helper's one-line answer to stdout.
fn report<T: Serialize>(answer: &Result<T, String>) {
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(answer).unwrap_or_else(|e| format!("{{\"Err\":\"cannot encode report: {e}\"}}"));
    // If the agent is gone there is nobody to tell; the state files say it all.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn read_spec<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parse {}: {e}", path.display()))
}

/// A close-on-exec pipe through which a forked child reports why it could not exec.
/// Reading EOF with no data means the exec succeeded (the write end closed with it).
struct ErrorPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl ErrorPipe {
    fn new() -> Result<Self, String> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
        Ok(ErrorPipe { read, write })
    }

    /// In the parent: wait for the child's verdict. `None` = it exec'd.
    fn wait(self) -> Option<String> {
        drop(self.write);
        let mut msg = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(self.read.as_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => msg.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Some(format!("read error pipe: {e}")),
            }
        }
        (!msg.is_empty()).then(|| String::from_utf8_lossy(&msg).into_owned())
    }
}

/// In a forked child: report `msg` through the error pipe and exit without running any
/// destructors or atexit handlers of the parent's copy of the process.
fn child_fail(pipe: &OwnedFd, msg: &str) -> ! {
    let _ = nix::unistd::write(pipe.as_fd(), msg.as_bytes());
    // SAFETY: _exit is async-signal-safe and ends the process immediately.
    unsafe { libc::_exit(127) }
}

/// Write an `oom_score_adj` for the calling process (inherited by what it execs).
fn set_oom_score_adj(value: i32) -> Result<(), String> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
        .map_err(|e| format!("write {value} to /proc/self/oom_score_adj: {e}"))
}

/// Restore default dispositions and an empty mask, so the exec'd program starts clean (an
/// ignored signal would otherwise stay ignored across execve; Rust ignores SIGPIPE).
fn reset_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL involves no handler code.
            let _ = unsafe { sigaction(sig, &default) };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
