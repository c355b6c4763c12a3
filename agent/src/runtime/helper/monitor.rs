//! `minilet __monitor SPEC`: start one container process and stay with it until it exits.
//!
//! The monitor owns the read ends of the container's stdout and stderr (or the master of its
//! terminal, whose output is logged as stdout), so the container never writes into a pipe
//! nobody reads (no SIGPIPE, no blocking) whether or not an agent runs; it turns the output
//! into CRI log records; it holds the write end of the container's stdin (with `stdin`) and
//! serves attach clients ([`super::attach`]); when the process exits it records the
//! exit code, signal and OOM kill in `exit.json`. The agent learns of the exit by watching
//! the monitor's pidfd and reading that file, which works just as well for an agent that was
//! restarted in between.
//!
//! When the log cannot be written (a full disk), the monitor blocks rather than drops: it
//! stops reading the pipes, so the container blocks in `write` as it would behind a slow
//! disk, and retries with a back-off until the log takes records again. That is containerd's
//! behaviour (its CRI logger copies pipe to file in one loop, so a stalled file stalls the
//! container) and the only one that loses nothing; a blocked container can still be stopped
//! (signals reach a process blocked in `write`), and the monitor keeps watching its exit and
//! SIGUSR1 meanwhile. Only output left when the container has exited and the log stays
//! unwritable for [`EXIT_FLUSH_TIMEOUT`] is given up: counted, announced by a marker record
//! if the log takes one, and reported. Reports go to `monitor.log` (the first failure, a
//! reminder a minute, the recovery; the file is capped) and to the agent as
//! [`logs::Notice`]s, which it turns into pod events.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::attach::{self, Attach};
use super::fork::Forked;
use super::{ErrorPipe, read_spec, report};
use crate::atomic_file;
use crate::file_modes;
use crate::runtime::log_rotation::Rotator;
use crate::runtime::logs::{self, Flush, LineSplitter, Notice, RecordWriter, Stream};
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
                diag(format_args!("write exit.json: {e}"));
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
    /// `None` with a terminal: its one output is stdout.
    stderr: Option<OwnedFd>,
    attach: Attach,
    log: File,
    notices: Notices,
}

/// The monitor's side of the container's stdio while the child is set up.
enum Ours {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// The child sends the terminal's master over this socket.
    Tty(std::os::unix::net::UnixStream),
}

fn start(spec: &ContainerSpec) -> Result<Running, String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;

    if let Some(dir) = spec.log_path.parent() {
        file_modes::create_dir_all(dir, file_modes::LOG_DIR).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    let log = file_modes::open_log(&spec.log_path).map_err(|e| format!("open log {}: {e}", spec.log_path.display()))?;
    // Before the report: the agent opens it as soon as it hears the container runs.
    let notices = Notices::create(&spec.dir);

    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"));
    let stdio = spec.process.stdio;
    let (ours, theirs) = if stdio.tty {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        (Ours::Tty(ours), super::init::Stdio::Tty { console: theirs.into() })
    } else {
        let (in_r, in_w) = if stdio.stdin {
            pipe().map(|(r, w)| (Some(r), Some(w)))?
        } else {
            (None, None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        (
            Ours::Pipes {
                stdin: in_w,
                stdout: out_r,
                stderr: err_r,
            },
            super::init::Stdio::Pipes {
                stdin: in_r,
                stdout: out_w,
                stderr: err_w,
            },
        )
    };
    // Before state.json: an agent may attach as soon as it sees the container running.
    let listener = attach::listen(&spec.dir);
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

    match super::fork::fork_into(&spec.cgroup_dirs)? {
        Forked::Child(entry) => super::init::run(spec, &pause, entry, theirs, errors.write),
        Forked::Parent(child, cgroup_entry) => {
            drop(theirs);
            if let Some(msg) = errors.wait() {
                let _ = waitpid(child, None);
                return Err(msg);
            }
            let (stdout, stderr, stdin, terminal) = match ours {
                Ours::Pipes { stdin, stdout, stderr } => (stdout, Some(stderr), stdin, None),
                Ours::Tty(sock) => {
                    let master = super::pty::recv_fd(sock.as_fd()).and_then(|m| {
                        let dup = || m.try_clone().map_err(|e| format!("dup terminal: {e}"));
                        let input = if stdio.stdin { Some(dup()?) } else { None };
                        let resize = dup()?;
                        Ok((m, input, resize))
                    });
                    match master {
                        Ok((m, input, resize)) => (m, None, input, Some(resize)),
                        Err(msg) => {
                            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                            let _ = waitpid(child, None);
                            return Err(msg);
                        }
                    }
                }
            };
            let attach = Attach::new(listener, &spec.dir, stdin, terminal, stdio.stdin_once);
            let state = ContainerState {
                monitor: ProcessId::of(nix::unistd::getpid().as_raw()).map_err(|e| format!("own identity: {e}"))?,
                process: ProcessId::of(child.as_raw()).map_err(|e| format!("container process {child}: {e}"))?,
                started_at: now_nanos(),
                cgroup_entry,
            };
            let path = ContainerFiles::state_path(&spec.dir);
            atomic_file::write_json(&path, &state).map_err(|e| format!("write {}: {e}", path.display()))?;
            Ok(Running {
                state,
                child,
                stdout,
                stderr,
                attach,
                log,
                notices,
            })
        }
    }
}

/// After reporting, the agent's pipes are no longer ours to write: stdout goes to /dev/null
/// and our own diagnostics to `monitor.log`. Stray signals meant for a terminal session are
/// ignored: the monitor must outlive the agent. So is SIGXFSZ: a log over a file size limit
/// is a failed write (EFBIG), handled like a full disk, not the monitor's death.
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
    for sig in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGPIPE,
        Signal::SIGXFSZ,
    ] {
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

/// How long the output of an exited container may wait for its log to take records again
/// before it is given up (the exit is recorded only afterwards).
const EXIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Back-off between attempts to write a log that failed: from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// While writes keep failing, a reminder (monitor.log, a notice) this often.
const REMIND_EVERY: Duration = Duration::from_secs(60);
/// Output is read from the pipes in chunks of this size. The buffer is zeroed, i.e. written,
/// so all of it is private memory of every monitor: 16 KiB (conmon reads 8 KiB), not the
/// pipe's 64 KiB; a pipe holding more is simply read again.
const READ_BUF: usize = 16 * 1024;
/// After giving up, at most this much of what is still in a pipe is read (to count it).
const DISCARD_MAX: usize = 1 << 20;

/// What the poll loop waits on.
#[derive(Clone, Copy)]
enum Waiting {
    Output(usize),
    Reopen,
    Child,
    Attach(attach::Token),
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
            fd: run.stderr,
            stream: Stream::Stderr,
            lines: LineSplitter::default(),
        },
    ];
    let mut log = Log::new(run.log, spec.log_path.clone(), run.notices);
    let attach = &mut run.attach;
    log.rotator = Some(Rotator::new(spec.log_path.clone(), spec.log_rotation, diag));
    let mut buf = vec![0u8; READ_BUF];
    let mut record = Vec::with_capacity(logs::MAX_LINE + 64);

    let mut exited = child_fd.is_none();
    while !exited {
        // While the log takes nothing, the pipes are not read: the container blocks writing.
        let blocked = log.blocked();
        let mut fds = Vec::with_capacity(4);
        let mut what = Vec::with_capacity(4);
        for (i, o) in outputs.iter().enumerate() {
            if let Some(fd) = o.fd.as_ref().filter(|_| !blocked) {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                what.push(Waiting::Output(i));
            }
        }
        if let Some(sfd) = &reopen {
            fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
            what.push(Waiting::Reopen);
        }
        if let Some(fd) = &child_fd {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            what.push(Waiting::Child);
        }
        let interest = attach.interest();
        for (fd, flags, token) in &interest {
            fds.push(PollFd::new(*fd, *flags));
            what.push(Waiting::Attach(*token));
        }
        let timeout = if blocked {
            let ms = log.retry_at.saturating_duration_since(Instant::now()).as_millis();
            PollTimeout::from(ms.min(u128::from(u16::MAX)) as u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                diag(format_args!("poll: {e}"));
                break;
            }
            Ok(_) => {}
        }
        let ready: Vec<(Waiting, PollFlags)> = fds
            .iter()
            .zip(&what)
            .filter_map(|(f, w)| f.revents().filter(|r| !r.is_empty()).map(|r| (*w, r)))
            .collect();
        drop(fds);
        drop(interest);
        for (w, revents) in ready {
            match w {
                Waiting::Attach(token) => attach.handle(token, revents),
                Waiting::Child => exited = true,
                Waiting::Reopen => {
                    if let Some(sfd) = &reopen {
                        while let Ok(Some(_)) = sfd.read_signal() {}
                    }
                    log.reopen();
                }
                Waiting::Output(i) => pump(&mut outputs[i], &mut buf, &mut record, &mut log, attach, false),
            }
        }
        attach.sweep();
        if log.blocked() && Instant::now() >= log.retry_at {
            log.flush();
        }
    }

    let status = loop {
        match waitpid(run.child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    finish_output(&mut outputs, &mut buf, &mut record, &mut log, attach);

    let finished_at = now_nanos();
    let (exit_code, signal) = match status {
        Ok(WaitStatus::Exited(_, code)) => (code, None),
        Ok(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, Some(sig as i32)),
        other => {
            diag(format_args!("waitpid {}: {other:?}", run.child));
            (255, None)
        }
    };
    let oom_killed = match crate::cgroups::oom_kills(&spec.cgroup_dirs) {
        Ok(n) => n > 0,
        Err(e) => {
            diag(format_args!("read OOM counter: {e}"));
            false
        }
    };
    let exit = ContainerExit::from_status(exit_code, signal, oom_killed, finished_at);
    if let Err(e) = atomic_file::write_json(&ContainerFiles::exit_path(&spec.dir), &exit) {
        diag(format_args!("write exit.json: {e}"));
    }
    attach.finish(exit_code);
}

/// The container has exited: log what is still buffered in the pipes and the line splitters,
/// waiting up to [`EXIT_FLUSH_TIMEOUT`] for a log that does not take it; then give the rest
/// up, counted and reported.
fn finish_output(outputs: &mut [Output], buf: &mut [u8], record: &mut Vec<u8>, log: &mut Log, attach: &mut Attach) {
    // Background processes of a container in the pod's shared PID namespace may keep the
    // pipes open; do not wait for those.
    for o in outputs.iter_mut() {
        if let Some(fd) = &o.fd {
            let _ = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        }
    }
    let deadline = Instant::now() + EXIT_FLUSH_TIMEOUT;
    let mut split_rest = false;
    loop {
        if !log.blocked() {
            for o in outputs.iter_mut() {
                pump(o, buf, record, log, attach, true);
            }
        }
        if !log.blocked() && !split_rest {
            split_rest = true;
            for o in outputs.iter_mut() {
                finish_lines(o, record);
                log.write(record);
            }
        }
        if !log.blocked() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(log.retry_at.min(deadline).saturating_duration_since(now));
        log.flush();
    }

    log.give_up();
    // What is still in the pipes is lost too: read it (bounded) to count it.
    for o in outputs.iter_mut() {
        let mut read = 0;
        while read < DISCARD_MAX
            && let Some(fd) = &o.fd
        {
            match nix::unistd::read(fd.as_fd(), buf) {
                Ok(0) => o.fd = None,
                Ok(n) => {
                    read += n;
                    split(o, &buf[..n], record);
                    log.writer.queue(record);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        if !split_rest {
            finish_lines(o, record);
            log.writer.queue(record);
        }
    }
    log.announce_loss();
}

/// Read what is available on one output and log it. With `drain`, keep reading until the
/// pipe is empty (non-blocking) or closed. Stops as soon as the log is blocked.
fn pump(o: &mut Output, buf: &mut [u8], record: &mut Vec<u8>, log: &mut Log, attach: &mut Attach, drain: bool) {
    loop {
        if log.blocked() {
            return;
        }
        let Some(fd) = &o.fd else { return };
        match nix::unistd::read(fd.as_fd(), buf) {
            // EOF: every writer is gone (EIO: a terminal's, every holder of its slave).
            Ok(0) | Err(nix::errno::Errno::EIO) => {
                o.fd = None;
                return;
            }
            Ok(n) => {
                attach.output(o.stream, &buf[..n]);
                split(o, &buf[..n], record);
                // One write per read keeps records of the two streams from interleaving.
                log.write(record);
                if !drain {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(e) => {
                diag(format_args!("read {}: {e}", o.stream.as_str()));
                o.fd = None;
                return;
            }
        }
    }
}

/// `data` from `o` as records, in `record`.
fn split(o: &mut Output, data: &[u8], record: &mut Vec<u8>) {
    let now = jiff::Timestamp::now();
    let stream = o.stream;
    record.clear();
    o.lines.feed(data, &mut |tag, content| {
        logs::encode(record, now, stream, tag, content)
    });
}

/// The end of `o`'s output (a last line without its newline) as a record, in `record`.
fn finish_lines(o: &mut Output, record: &mut Vec<u8>) {
    let now = jiff::Timestamp::now();
    let stream = o.stream;
    record.clear();
    o.lines
        .finish(&mut |tag, content| logs::encode(record, now, stream, tag, content));
}

/// The log file, the writer that keeps it whole, and the reports about it.
struct Log {
    file: File,
    /// Rotates `file` after whole writes (see [`crate::runtime::log_rotation`]).
    rotator: Option<Rotator>,
    path: PathBuf,
    writer: RecordWriter,
    notices: Notices,
    /// When a blocked write is tried again, and the pause before the attempt after that.
    retry_at: Instant,
    retry_delay: Duration,
    /// When the next reminder that writes still fail is due.
    remind_at: Instant,
}

impl Log {
    fn new(file: File, path: PathBuf, notices: Notices) -> Self {
        let now = Instant::now();
        Log {
            file,
            rotator: None,
            path,
            writer: RecordWriter::default(),
            notices,
            retry_at: now,
            retry_delay: RETRY_FIRST,
            remind_at: now,
        }
    }

    /// Writes fail and records wait: nothing more is read until they are written.
    fn blocked(&self) -> bool {
        self.writer.stall().is_some()
    }

    fn write(&mut self, records: &[u8]) {
        if records.is_empty() {
            return;
        }
        self.writer.queue(records);
        self.flush();
    }

    /// Try to write what waits, and report how it went: the first failure, a reminder a
    /// minute, the recovery. Never a line per attempt.
    fn flush(&mut self) {
        let now = now_nanos();
        let flushed = self.writer.flush(&mut self.file, now);
        if let (Flush::Done | Flush::Resumed(_), Some(r)) = (&flushed, self.rotator.as_mut()) {
            r.after_write(&mut self.file);
        }
        match flushed {
            Flush::Done => {}
            Flush::Resumed(stall) => {
                self.retry_delay = RETRY_FIRST;
                diag(format_args!(
                    "writing {} works again after {:.1}s ({} failed attempts); nothing was lost",
                    self.path.display(),
                    (now - stall.since) as f64 / 1e9,
                    stall.attempts
                ));
                self.notices.send(&Notice::Resumed {
                    since: stall.since,
                    until: now,
                });
            }
            Flush::Failed { first } => {
                let Some(stall) = self.writer.stall().cloned() else {
                    return;
                };
                let instant = Instant::now();
                if first {
                    self.retry_delay = RETRY_FIRST;
                    self.remind_at = instant + REMIND_EVERY;
                    diag(format_args!(
                        "cannot write {}: {}; holding the container's output back (it blocks writing) \
                         and retrying until the log takes it",
                        self.path.display(),
                        stall.error
                    ));
                    self.notices.send(&Notice::Failing { error: stall.error });
                } else if instant >= self.remind_at {
                    self.remind_at = instant + REMIND_EVERY;
                    diag(format_args!(
                        "still cannot write {} after {:.0}s ({} attempts): {}",
                        self.path.display(),
                        (now - stall.since) as f64 / 1e9,
                        stall.attempts,
                        stall.error
                    ));
                    self.notices.send(&Notice::StillFailing {
                        error: stall.error,
                        since: stall.since,
                        attempts: stall.attempts,
                    });
                }
                self.retry_at = instant + self.retry_delay;
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
            }
        }
    }

    /// SIGUSR1: write to a new file at the log path (the old one was renamed away). A
    /// blocked write is tried again at once: the new file may be on a disk with room.
    fn reopen(&mut self) {
        match file_modes::open_log(&self.path) {
            Ok(f) => self.file = f,
            Err(e) => diag(format_args!("reopen {}: {e}", self.path.display())),
        }
        if self.blocked() {
            self.retry_delay = RETRY_FIRST;
            self.flush();
        }
    }

    /// Give up what waits (the container is gone, the log still takes nothing).
    fn give_up(&mut self) {
        self.writer.give_up(&mut self.file);
    }

    /// After giving up: one attempt at the marker record, then the reports.
    fn announce_loss(&mut self) {
        let loss = self.writer.lost();
        if loss.lines == 0 {
            return;
        }
        let error = self.writer.stall().map(|s| s.error.clone()).unwrap_or_default();
        let marker = matches!(
            self.writer.flush(&mut self.file, now_nanos()),
            Flush::Done | Flush::Resumed(_)
        );
        diag(format_args!(
            "gave up {} lines ({} bytes) of output of the exited container after {}s: cannot write {}: {error}{}",
            loss.lines,
            loss.bytes,
            EXIT_FLUSH_TIMEOUT.as_secs(),
            self.path.display(),
            if marker {
                " (a marker record in the log says so)"
            } else {
                ""
            }
        ));
        self.notices.send(&Notice::Lost { error, loss, marker });
    }
}

/// The monitor's end of the notices FIFO (see [`logs::notices_path`]).
struct Notices(Option<File>);

impl Notices {
    /// Create the FIFO and hold it open read-write: writes never block or hit a missing
    /// reader (no SIGPIPE, no ENXIO), and what is sent while no agent listens waits.
    fn create(dir: &Path) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let path = logs::notices_path(dir);
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        match nix::unistd::mkfifo(&path, mode) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => {
                eprintln!("minilet monitor: mkfifo {}: {e}", path.display());
                return Notices(None);
            }
        }
        match File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => Notices(Some(f)),
            Err(e) => {
                eprintln!("minilet monitor: open {}: {e}", path.display());
                Notices(None)
            }
        }
    }

    /// Best effort: a full FIFO (an agent away for a very long time) drops the notice; the
    /// reminders and monitor.log still tell.
    fn send(&mut self, notice: &Notice) {
        if let Some(f) = &mut self.0 {
            let _ = f.write(&notice.encode());
        }
    }
}

/// Most bytes the monitor writes to `monitor.log`: a container that runs for months, or a
/// fault that keeps recurring, must not fill the state disk with diagnostics.
const DIAG_LIMIT: u64 = 32 * 1024;
static DIAG_WRITTEN: AtomicU64 = AtomicU64::new(0);

/// One line of diagnostics to stderr (`monitor.log` once detached), up to [`DIAG_LIMIT`].
pub(super) fn diag(args: std::fmt::Arguments) {
    capped_line(&DIAG_WRITTEN, &mut std::io::stderr().lock(), args);
}

/// Write one timestamped line to `out` if `written` (bytes so far) stays within
/// [`DIAG_LIMIT`]; the line that would cross it is replaced by one saying so, once.
fn capped_line(written: &AtomicU64, out: &mut impl Write, args: std::fmt::Arguments) {
    let line = format!("{} minilet monitor: {args}\n", jiff::Timestamp::now());
    let len = line.len() as u64;
    let before = written.fetch_add(len, Ordering::Relaxed);
    if before + len <= DIAG_LIMIT {
        let _ = out.write_all(line.as_bytes());
    } else if before <= DIAG_LIMIT {
        let _ = writeln!(
            out,
            "{} minilet monitor: monitor.log reached {DIAG_LIMIT} bytes; further diagnostics are dropped",
            jiff::Timestamp::now()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_stop_at_the_cap_with_one_line_saying_so() {
        let written = AtomicU64::new(0);
        let mut out = Vec::new();
        for i in 0..100_000 {
            capped_line(
                &written,
                &mut out,
                format_args!("write log: No space left on device, attempt {i}"),
            );
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.len() as u64 <= DIAG_LIMIT + 200, "{} bytes", text.len());
        assert!(text.len() as u64 > DIAG_LIMIT - 200);
        let last = text.lines().last().unwrap();
        assert!(last.ends_with("further diagnostics are dropped"), "{last}");
        assert_eq!(text.matches("further diagnostics").count(), 1);
    }
}
