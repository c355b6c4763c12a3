//! `minilet __monitor SPEC`: start one container process and stay with it until it exits.
//!
//! The monitor owns the read ends of the container's stdout and stderr, so the container
//! never writes into a pipe nobody reads (no SIGPIPE, no blocking) whether or not an agent
//! runs; it turns the output into CRI log records; when the process exits it records the
//! exit code, signal and OOM kill in `exit.json`. The agent learns of the exit by watching
//! the monitor's pidfd and reading that file, which works just as well for an agent that was
//! restarted in between.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::{ErrorPipe, read_spec, report};
use crate::atomic_file;
use crate::file_modes;
use crate::runtime::logs::{self, LineSplitter, Stream};
use crate::runtime::process::ProcessId;
use crate::runtime::spec::{ContainerExit, ContainerSpec, ContainerState, now_nanos};
use crate::runtime::state::ContainerFiles;

pub fn main(spec_path: &OsStr) -> ExitCode {
    let spec: ContainerSpec = match read_spec(Path::new(spec_path)) {
        Ok(s) => s,
        Err(e) => {
            report::<ContainerState>(&Err(e));
            return ExitCode::FAILURE;
        }
    };
    match start(&spec) {
        Ok(running) => {
            report(&Ok(running.state));
            detach_stdio(&spec);
            supervise(&spec, running);
            ExitCode::SUCCESS
        }
        Err(msg) => {
            // Record the failure as the container's exit: the agent, now or after a restart,
            // reads the same verdict from the same place.
            let exit = ContainerExit::start_error(msg.clone(), now_nanos());
            if let Err(e) = atomic_file::write_json(&ContainerFiles::exit_path(&spec.dir), &exit) {
                eprintln!("minilet monitor: write exit.json: {e}");
            }
            report::<ContainerState>(&Err(msg));
            ExitCode::FAILURE
        }
    }
}

struct Running {
    state: ContainerState,
    child: Pid,
    stdout: OwnedFd,
    stderr: OwnedFd,
    log: File,
}

fn start(spec: &ContainerSpec) -> Result<Running, String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;

    if let Some(dir) = spec.log_path.parent() {
        file_modes::create_dir_all(dir, file_modes::LOG_DIR).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    let log = file_modes::open_log(&spec.log_path).map_err(|e| format!("open log {}: {e}", spec.log_path.display()))?;

    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let errors = ErrorPipe::new()?;

    let pause = spec
        .sandbox
        .open()
        .map_err(|e| format!("open pidfd of pause {}: {e}", spec.sandbox))?
        .ok_or_else(|| format!("pod sandbox is not running (pause pid {} is gone)", spec.sandbox))?;

    // Which PID namespace the child is born into: the pause's (shared) or a new one in which
    // it will be PID 1. Only children are affected; the monitor itself stays where it is.
    if spec.share_pid {
        nix::sched::setns(pause.as_fd(), CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("setns(pid) into pause {}: {e}", spec.sandbox))?;
    } else {
        nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare(pid): {e}"))?;
    }

    // SAFETY: this helper is single-threaded (dispatched before any thread starts), so the
    // child may run ordinary code until it execs.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => super::init::run(spec, &pause, out_w, err_w, errors.write),
        ForkResult::Parent { child } => {
            drop((out_w, err_w));
            if let Some(msg) = errors.wait() {
                let _ = waitpid(child, None);
                return Err(msg);
            }
            let state = ContainerState {
                monitor: ProcessId::of(nix::unistd::getpid().as_raw()).map_err(|e| format!("own identity: {e}"))?,
                process: ProcessId::of(child.as_raw()).map_err(|e| format!("container process {child}: {e}"))?,
                started_at: now_nanos(),
            };
            let path = ContainerFiles::state_path(&spec.dir);
            atomic_file::write_json(&path, &state).map_err(|e| format!("write {}: {e}", path.display()))?;
            Ok(Running {
                state,
                child,
                stdout: out_r,
                stderr: err_r,
                log,
            })
        }
    }
}

/// After reporting, the agent's pipes are no longer ours to write: stdout goes to /dev/null
/// and our own diagnostics to `monitor.log`. Stray signals meant for a terminal session are
/// ignored: the monitor must outlive the agent.
fn detach_stdio(spec: &ContainerSpec) {
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null.as_fd());
    }
    if let Ok(diag) = File::options()
        .create(true)
        .append(true)
        .mode(file_modes::STATE_FILE)
        .open(spec.dir.join("monitor.log"))
    {
        let _ = nix::unistd::dup2_stderr(diag.as_fd());
    }
    use nix::sys::signal::{SigHandler, Signal, signal};
    for sig in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM, Signal::SIGPIPE] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// One output stream of the container.
struct Output {
    fd: Option<OwnedFd>,
    stream: Stream,
    lines: LineSplitter,
}

/// SIGUSR1 asks the monitor to reopen its log file (after a rotation renamed it away). It is
/// blocked and read from a signalfd, so it is just one more fd in the poll loop.
fn reopen_signal() -> Option<nix::sys::signalfd::SignalFd> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    let mut set = SigSet::empty();
    set.add(Signal::SIGUSR1);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).ok()?;
    nix::sys::signalfd::SignalFd::with_flags(
        &set,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )
    .ok()
}

fn supervise(spec: &ContainerSpec, mut run: Running) {
    let reopen = reopen_signal();
    // `None` if it is already gone: then straight to waitpid below.
    let child_fd = crate::runtime::process::PidFd::of_child(run.child.as_raw()).ok();
    let mut outputs = [
        Output {
            fd: Some(run.stdout),
            stream: Stream::Stdout,
            lines: LineSplitter::default(),
        },
        Output {
            fd: Some(run.stderr),
            stream: Stream::Stderr,
            lines: LineSplitter::default(),
        },
    ];
    let mut buf = vec![0u8; 64 * 1024];
    let mut record = Vec::with_capacity(logs::MAX_LINE + 64);

    let mut exited = child_fd.is_none();
    while !exited {
        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        for (i, o) in outputs.iter().enumerate() {
            if let Some(fd) = &o.fd {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        if let Some(sfd) = &reopen {
            fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
        }
        if let Some(fd) = &child_fd {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("minilet monitor: poll: {e}");
                break;
            }
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        if child_fd.is_some() && ready.last().copied().unwrap_or(false) {
            exited = true;
        }
        if let Some(sfd) = &reopen
            && ready.get(which.len()).copied().unwrap_or(false)
        {
            while let Ok(Some(_)) = sfd.read_signal() {}
            match file_modes::open_log(&spec.log_path) {
                Ok(f) => run.log = f,
                Err(e) => eprintln!("minilet monitor: reopen {}: {e}", spec.log_path.display()),
            }
        }
        for (slot, &i) in which.iter().enumerate() {
            if ready[slot] {
                pump(&mut outputs[i], &mut buf, &mut record, &mut run.log, false);
            }
        }
    }

    let status = loop {
        match waitpid(run.child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    // Collect what is still buffered in the pipes. Background processes of a container in
    // the pod's shared PID namespace may keep them open; do not wait for those.
    for o in outputs.iter_mut() {
        if let Some(fd) = &o.fd {
            let _ = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        }
        pump(o, &mut buf, &mut record, &mut run.log, true);
        let stream = o.stream;
        o.lines.finish(&mut |tag, content| {
            record.clear();
            logs::encode(&mut record, jiff::Timestamp::now(), stream, tag, content);
            let _ = run.log.write_all(&record);
        });
    }

    let finished_at = now_nanos();
    let (exit_code, signal) = match status {
        Ok(WaitStatus::Exited(_, code)) => (code, None),
        Ok(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, Some(sig as i32)),
        other => {
            eprintln!("minilet monitor: waitpid {}: {other:?}", run.child);
            (255, None)
        }
    };
    let oom_killed = match crate::cgroups::oom_kills(&spec.cgroup_dirs) {
        Ok(n) => n > 0,
        Err(e) => {
            eprintln!("minilet monitor: read OOM counter: {e}");
            false
        }
    };
    let exit = ContainerExit::from_status(exit_code, signal, oom_killed, finished_at);
    if let Err(e) = atomic_file::write_json(&ContainerFiles::exit_path(&spec.dir), &exit) {
        eprintln!("minilet monitor: write exit.json: {e}");
    }
}

/// Read what is available on one output and append it to the log. With `drain`, keep
/// reading until the pipe is empty (non-blocking) or closed.
fn pump(o: &mut Output, buf: &mut [u8], record: &mut Vec<u8>, log: &mut File, drain: bool) {
    loop {
        let Some(fd) = &o.fd else { return };
        match nix::unistd::read(fd.as_fd(), buf) {
            Ok(0) => {
                o.fd = None; // EOF: every writer is gone
                return;
            }
            Ok(n) => {
                let now = jiff::Timestamp::now();
                let stream = o.stream;
                record.clear();
                o.lines.feed(&buf[..n], &mut |tag, content| {
                    logs::encode(record, now, stream, tag, content)
                });
                // One write per read keeps records of the two streams from interleaving.
                if let Err(e) = log.write_all(record) {
                    eprintln!("minilet monitor: write log: {e}");
                }
                if !drain {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(e) => {
                eprintln!("minilet monitor: read {}: {e}", o.stream.as_str());
                o.fd = None;
                return;
            }
        }
    }
}
