//! `minilet __exec SPEC-JSON`: run a command inside a running container and relay its stdio.
//!
//! 1. Join the container's cgroup, then all its namespaces at once through a pidfd of its main
//!    process (mount, cgroup, PID, network, IPC, UTS); the mount namespace brings its root
//!    along.
//! 2. With a terminal: open a pty from the container's own devpts (`/dev/ptmx` in its root).
//! 3. fork: the child becomes the container's user and execs ([`super::init::become_and_exec`]);
//!    it dies with this helper (PR_SET_PDEATHSIG), so a vanished client leaves nothing behind.
//! 4. Relay frames ([`crate::runtime::exec::frame`]) between the agent (our stdin/stdout) and
//!    the process until it exits; the last frame is its exit status.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::ForkResult;

use super::{ErrorPipe, child_fail};
use crate::runtime::exec::{ExecSpec, frame};
use crate::runtime::spec::ContainerSpec;
use crate::runtime::state::ContainerFiles;

/// Exit status reported when the command could not be started (as kubectl shows it).
const CANNOT_START: i32 = 126;

pub fn main(spec_json: &OsStr) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let result = serde_json::from_slice::<ExecSpec>(spec_json.as_encoded_bytes())
        .map_err(|e| format!("parse exec spec: {e}"))
        .and_then(|spec| run(&spec, &mut out));
    if let Err(msg) = result {
        let _ = out.write_all(&frame::encode(frame::STDERR, format!("{msg}\n").as_bytes()));
        let _ = out.write_all(&frame::encode(frame::EXIT, &CANNOT_START.to_be_bytes()));
        let _ = out.flush();
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The child's side of its stdio.
struct ChildStdio {
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: Option<OwnedFd>,
}

fn run(spec: &ExecSpec, out: &mut impl Write) -> Result<(), String> {
    let container: ContainerSpec = super::read_spec(&ContainerFiles::spec_path(&spec.container_dir))?;
    let target = spec
        .process
        .open()
        .map_err(|e| format!("open pidfd of the container process: {e}"))?
        .ok_or("container is not running")?;

    crate::cgroups::join_single_threaded(&container.cgroup_dirs, 0)
        .map_err(|e| format!("join the container cgroup: {e}"))?;
    // The cgroup namespace after the join: the container's (rooted at its cgroup), or the
    // host's for a container started by an older agent, which is where we are already.
    let all = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWCGROUP
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    nix::sched::setns(target.as_fd(), all).map_err(|e| format!("setns into the container: {e}"))?;

    // Our end and the child's end of each stream.
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"));
    let (ours_in, ours_out, ours_err, child) = if spec.tty {
        let (master, slave) = super::pty::open(spec.size)?;
        let slave2 = slave.try_clone().map_err(|e| format!("dup pty: {e}"))?;
        let slave3 = slave.try_clone().map_err(|e| format!("dup pty: {e}"))?;
        let master_in = master.try_clone().map_err(|e| format!("dup pty: {e}"))?;
        (
            Some(master_in),
            master,
            None,
            ChildStdio {
                stdin: Some(slave),
                stdout: slave2,
                stderr: Some(slave3),
            },
        )
    } else {
        let (in_r, in_w) = if spec.stdin {
            pipe().map(|(r, w)| (Some(r), Some(w)))?
        } else {
            (None, None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        (
            in_w,
            out_r,
            Some(err_r),
            ChildStdio {
                stdin: in_r,
                stdout: out_w,
                stderr: Some(err_w),
            },
        )
    };
    let errors = ErrorPipe::new()?;
    let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;

    // SAFETY: this helper is single-threaded (dispatched before any thread starts), so the
    // child may run ordinary code until it execs.
    let pid = match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            // Its own process group (a terminal session makes one anyway), so that the agent
            // can kill what it started along with it.
            if !spec.tty {
                let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
            }
            let Err(msg) = child_exec(spec, &container, &child, &devnull);
            child_fail(&errors.write, &msg)
        }
        ForkResult::Parent { child: pid } => pid,
    };
    drop(child);
    if let Some(msg) = errors.wait() {
        let _ = waitpid(pid, None);
        return Err(msg);
    }
    out.write_all(&frame::encode(frame::PROCESS, &(pid.as_raw() as u32).to_be_bytes()))
        .and_then(|_| out.flush())
        .map_err(|e| format!("report the process: {e}"))?;
    relay(pid, ours_in, ours_out, ours_err, spec.tty, out)
}

/// In the forked child: the terminal or pipes, then the container's user and exec.
fn child_exec(
    spec: &ExecSpec,
    container: &ContainerSpec,
    stdio: &ChildStdio,
    devnull: &std::fs::File,
) -> Result<std::convert::Infallible, String> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    let extra_env: Vec<String> = if spec.tty { vec!["TERM=xterm".into()] } else { vec![] };
    super::init::become_and_exec(&container.process, &spec.cmd, &extra_env, || {
        if spec.tty {
            super::pty::make_controlling(stdio.stdout.as_fd())?;
        }
        let stdin = stdio.stdin.as_ref().map_or(devnull.as_fd(), |f| f.as_fd());
        nix::unistd::dup2_stdin(stdin).map_err(|e| format!("dup2 stdin: {e}"))?;
        nix::unistd::dup2_stdout(stdio.stdout.as_fd()).map_err(|e| format!("dup2 stdout: {e}"))?;
        let stderr = stdio.stderr.as_ref().map_or(stdio.stdout.as_fd(), |f| f.as_fd());
        nix::unistd::dup2_stderr(stderr).map_err(|e| format!("dup2 stderr: {e}"))
    })
}

/// Move bytes until the process exits and its output is drained; then report the status.
fn relay(
    pid: nix::unistd::Pid,
    mut stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: Option<OwnedFd>,
    tty: bool,
    out: &mut impl Write,
) -> Result<(), String> {
    let child_fd = crate::runtime::process::PidFd::of_child(pid.as_raw()).ok();
    let agent_in = std::io::stdin();
    let agent_fd = agent_in.as_fd();
    let mut decoder = frame::Decoder::default();
    let mut outputs: Vec<(Option<OwnedFd>, u8)> = vec![(Some(stdout), frame::STDOUT)];
    if let Some(e) = stderr {
        outputs.push((Some(e), frame::STDERR));
    }
    let mut agent_open = true;
    let mut buf = vec![0u8; 32 * 1024];
    let mut exited = child_fd.is_none();
    while !exited {
        let mut fds = Vec::new();
        if agent_open {
            fds.push(PollFd::new(agent_fd, PollFlags::POLLIN));
        }
        for (fd, _) in outputs.iter() {
            if let Some(fd) = fd {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
        }
        if let Some(c) = &child_fd {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        let mut i = 0;
        if agent_open {
            if ready[0] {
                match nix::unistd::read(agent_fd, &mut buf) {
                    Ok(0) | Err(_) => agent_open = false,
                    Ok(n) => decoder.feed(&buf[..n]),
                }
                while let Some((kind, payload)) = decoder.next_frame() {
                    handle_input(kind, &payload, &mut stdin, tty, &outputs);
                }
            }
            i += 1;
        }
        for slot in outputs.iter_mut() {
            if slot.0.is_some() {
                if ready[i] {
                    forward(slot, &mut buf, out, false);
                }
                i += 1;
            }
        }
        if child_fd.is_some() && ready.last().copied().unwrap_or(false) {
            exited = true;
        }
    }
    let status = loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    for slot in outputs.iter_mut() {
        if let Some(fd) = &slot.0 {
            let _ = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        }
        forward(slot, &mut buf, out, true);
    }
    let code = match status {
        Ok(WaitStatus::Exited(_, c)) => c,
        Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
        _ => 255,
    };
    out.write_all(&frame::encode(frame::EXIT, &code.to_be_bytes()))
        .map_err(|e| format!("report exit: {e}"))?;
    out.flush().map_err(|e| format!("report exit: {e}"))
}

fn handle_input(kind: u8, payload: &[u8], stdin: &mut Option<OwnedFd>, tty: bool, outputs: &[(Option<OwnedFd>, u8)]) {
    match kind {
        frame::STDIN => {
            if let Some(fd) = stdin {
                let mut rest = payload;
                while !rest.is_empty() {
                    match nix::unistd::write(fd.as_fd(), rest) {
                        Ok(n) => rest = &rest[n..],
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => break,
                    }
                }
            }
        }
        frame::RESIZE if tty && payload.len() == 4 => {
            let (w, h) = (
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            );
            if let Some(fd) = outputs.first().and_then(|(fd, _)| fd.as_ref()) {
                super::pty::set_size(fd.as_fd(), w, h);
            }
        }
        // A terminal has no separate end of input; closing our copy of the master would not
        // tell the process anything, so for a tty only pipes are closed.
        frame::CLOSE_STDIN if !tty => *stdin = None,
        _ => {}
    }
}

/// Read what one output has and send it as frames; with `drain`, until empty or closed.
fn forward(slot: &mut (Option<OwnedFd>, u8), buf: &mut [u8], out: &mut impl Write, drain: bool) {
    loop {
        let Some(fd) = &slot.0 else { return };
        match nix::unistd::read(fd.as_fd(), buf) {
            // EIO: the pty's slave side is closed everywhere (the process exited).
            Ok(0) | Err(nix::errno::Errno::EIO) => {
                slot.0 = None;
                return;
            }
            Ok(n) => {
                if out
                    .write_all(&frame::encode(slot.1, &buf[..n]))
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    slot.0 = None;
                    return;
                }
                if !drain {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}
