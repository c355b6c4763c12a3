//! The monitor's attach endpoint, as conmon's attach socket: a unix socket `attach` in the
//! container's directory (root only), where any number of clients (the agent's streaming
//! sessions, one per CRI Attach) receive the container's output from then on and may write
//! its stdin and resize its terminal. Held by the monitor, it outlives agent restarts with
//! the process it serves.
//!
//! Clients speak the exec helper's frames ([`crate::runtime::exec::frame`]): they send
//! `ATTACH_STDIN` first if their session carries stdin, then `STDIN`, `RESIZE`,
//! `CLOSE_STDIN`; they receive `STDOUT`/`STDERR` (a terminal's output is `STDOUT`) and, when
//! the container exits, `EXIT`.
//!
//! The end of a session's stdin (`CLOSE_STDIN` or the client going away) is containerd's:
//! with `stdinOnce` and no terminal the container's stdin is closed (it reads EOF);
//! otherwise that client is let go. Nothing here ever blocks the monitor: sockets and stdin
//! are non-blocking; input a container does not read waits (at most one read's worth) and
//! holds back further input; a client that does not keep up with the output is let go.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::monitor::diag;
use crate::runtime::exec::frame;
use crate::runtime::logs::Stream;
use crate::runtime::state::ContainerFiles;

/// At most this many clients at once; more are refused (closed at once).
const MAX_CLIENTS: usize = 16;
/// Output queued for one client beyond which it is let go rather than the monitor growing.
const OUT_MAX: usize = 256 * 1024;
/// One read from a client, and the largest frame a client may send.
const READ_CHUNK: usize = 32 * 1024;
const MAX_FRAME: usize = 64 * 1024;
/// How long clients get to take the exit status once the container has exited.
const EXIT_FLUSH: Duration = Duration::from_secs(1);

/// Bind the attach socket in `dir`, mode 0600. `None` (with a diagnostic) if it cannot be:
/// the container runs without attach rather than not at all.
pub(super) fn listen(dir: &Path) -> Option<UnixListener> {
    let bound = (|| {
        let d = std::fs::File::open(dir)?;
        // A socket address holds 108 bytes; the directory's path may be longer.
        let short = ContainerFiles::attach_address(&d);
        let _ = std::fs::remove_file(&short);
        // The monitor is single-threaded: the mask cannot affect anything else meanwhile.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let l = UnixListener::bind(&short);
        nix::sys::stat::umask(old);
        let l = l?;
        l.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(l)
    })();
    match bound {
        Ok(l) => Some(l),
        Err(e) => {
            diag(format_args!(
                "attach socket in {}: {e}; attach is unavailable",
                dir.display()
            ));
            None
        }
    }
}

/// What the poll loop waits on for attach.
#[derive(Debug, Clone, Copy)]
pub(super) enum Token {
    Listener,
    Client(usize),
    Stdin,
}

struct Client {
    sock: UnixStream,
    decoder: frame::Decoder,
    /// Its session carries stdin (it said so with `ATTACH_STDIN`).
    stdin: bool,
    /// Frames not yet taken by the client.
    out: Vec<u8>,
    gone: bool,
}

pub(super) struct Attach {
    listener: Option<UnixListener>,
    path: PathBuf,
    clients: Vec<Client>,
    /// Where input goes: the stdin pipe's write end or the terminal's master; `None` without
    /// stdin or once it is closed.
    stdin: Option<OwnedFd>,
    /// The terminal's master, for resizes.
    terminal: Option<OwnedFd>,
    stdin_once: bool,
    /// Input not yet taken by the container.
    pending: Vec<u8>,
    /// `stdinOnce`: close stdin once `pending` is written.
    close_when_written: bool,
}

impl Attach {
    pub(super) fn new(
        listener: Option<UnixListener>,
        dir: &Path,
        stdin: Option<OwnedFd>,
        terminal: Option<OwnedFd>,
        stdin_once: bool,
    ) -> Attach {
        if let Some(fd) = &stdin {
            set_nonblocking(fd.as_fd());
        }
        Attach {
            listener,
            path: ContainerFiles::attach_path(dir),
            clients: Vec::new(),
            stdin,
            terminal,
            stdin_once,
            pending: Vec::new(),
            close_when_written: false,
        }
    }

    /// The descriptors to poll, with what to wait for on each.
    pub(super) fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags, Token)> {
        let mut v = Vec::new();
        if let Some(l) = &self.listener {
            v.push((l.as_fd(), PollFlags::POLLIN, Token::Listener));
        }
        for (i, c) in self.clients.iter().enumerate().filter(|(_, c)| !c.gone) {
            let mut flags = PollFlags::empty();
            // Input from a session with stdin waits while earlier input is not taken.
            if !c.stdin || self.pending.is_empty() {
                flags |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            v.push((c.sock.as_fd(), flags, Token::Client(i)));
        }
        if let Some(fd) = self.stdin.as_ref().filter(|_| !self.pending.is_empty()) {
            v.push((fd.as_fd(), PollFlags::POLLOUT, Token::Stdin));
        }
        v
    }

    /// Act on what poll reported for `token`. Call [`Attach::sweep`] after a round.
    pub(super) fn handle(&mut self, token: Token, revents: PollFlags) {
        match token {
            Token::Listener => self.accept(),
            Token::Stdin => self.write_stdin(),
            Token::Client(i) => {
                if revents.contains(PollFlags::POLLOUT) && !flush(&mut self.clients[i]) {
                    self.let_go(i);
                }
                if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.read_client(i);
                }
            }
        }
    }

    /// Forget the clients that are gone (closing their sockets).
    pub(super) fn sweep(&mut self) {
        self.clients.retain(|c| !c.gone);
    }

    /// Output of the container, for every client.
    pub(super) fn output(&mut self, stream: Stream, data: &[u8]) {
        let kind = match stream {
            Stream::Stdout => frame::STDOUT,
            Stream::Stderr => frame::STDERR,
        };
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.gone {
                continue;
            }
            if c.out.len() + data.len() + 5 > OUT_MAX {
                diag(format_args!(
                    "an attached client does not keep up with the output; letting it go"
                ));
                self.let_go(i);
                continue;
            }
            c.out.extend_from_slice(&frame::encode(kind, data));
            if !flush(c) {
                self.let_go(i);
            }
        }
    }

    /// The container exited with `code`: no new clients; tell the attached ones (for up to
    /// [`EXIT_FLUSH`]) and close them.
    pub(super) fn finish(&mut self, code: i32) {
        let _ = std::fs::remove_file(&self.path);
        self.listener = None;
        self.stdin = None;
        self.terminal = None;
        self.sweep();
        for c in &mut self.clients {
            c.out
                .extend_from_slice(&frame::encode(frame::EXIT, &code.to_be_bytes()));
        }
        let deadline = Instant::now() + EXIT_FLUSH;
        loop {
            for c in &mut self.clients {
                if !c.gone && !flush(c) {
                    c.gone = true;
                }
            }
            self.clients.retain(|c| !c.gone && !c.out.is_empty());
            let left = deadline.saturating_duration_since(Instant::now());
            if self.clients.is_empty() || left.is_zero() {
                break;
            }
            let mut fds: Vec<PollFd> = self
                .clients
                .iter()
                .map(|c| PollFd::new(c.sock.as_fd(), PollFlags::POLLOUT))
                .collect();
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            if let Err(e) = poll(&mut fds, PollTimeout::from(ms))
                && e != nix::errno::Errno::EINTR
            {
                break;
            }
        }
        self.clients.clear();
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        loop {
            match l.accept() {
                Ok((sock, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || sock.set_nonblocking(true).is_err() {
                        diag(format_args!("refused an attach client: {MAX_CLIENTS} are attached"));
                        continue;
                    }
                    self.clients.push(Client {
                        sock,
                        decoder: frame::Decoder::default(),
                        stdin: false,
                        out: Vec::new(),
                        gone: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = vec![0u8; READ_CHUNK];
        let n = match self.clients[i].sock.read(&mut buf) {
            Ok(0) => return self.let_go(i),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                return;
            }
            Err(_) => return self.let_go(i),
        };
        self.clients[i].decoder.feed(&buf[..n]);
        while let Some((kind, payload)) = self.clients[i].decoder.next_frame() {
            self.input(i, kind, payload);
        }
        if self.clients[i].decoder.buffered() > MAX_FRAME + 5 {
            diag(format_args!(
                "an attach client sent a frame over {MAX_FRAME} bytes; letting it go"
            ));
            self.let_go(i);
        }
        self.write_stdin();
    }

    fn input(&mut self, i: usize, kind: u8, payload: Vec<u8>) {
        match kind {
            frame::ATTACH_STDIN => self.clients[i].stdin = true,
            frame::STDIN if self.clients[i].stdin && self.stdin.is_some() && !self.close_when_written => {
                self.pending.extend_from_slice(&payload);
            }
            frame::RESIZE if payload.len() == 4 => {
                if let Some(t) = &self.terminal {
                    let w = u16::from_be_bytes([payload[0], payload[1]]);
                    let h = u16::from_be_bytes([payload[2], payload[3]]);
                    super::pty::set_size(t.as_fd(), w, h);
                }
            }
            frame::CLOSE_STDIN => self.end_stdin(i),
            _ => {}
        }
    }

    /// A session's stdin ended: containerd's rule (see the module's doc).
    fn end_stdin(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if !c.stdin {
            return;
        }
        c.stdin = false;
        if self.stdin_once && self.terminal.is_none() {
            self.close_when_written = true;
            self.write_stdin();
        } else {
            c.gone = true;
        }
    }

    /// The client is done or cannot be served: its stdin ends, then it goes.
    fn let_go(&mut self, i: usize) {
        self.end_stdin(i);
        self.clients[i].gone = true;
    }

    fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match nix::unistd::write(fd.as_fd(), &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                // The process closed its stdin (or exited): nothing will read more.
                Err(_) => {
                    self.stdin = None;
                    self.pending.clear();
                    return;
                }
            }
        }
        if self.close_when_written {
            // The pipe's only write end: the process reads EOF.
            self.stdin = None;
        }
    }
}

/// Write what the client can take now. `false`: it is gone.
fn flush(c: &mut Client) -> bool {
    while !c.out.is_empty() {
        match c.sock.write(&c.out) {
            Ok(0) => return false,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;

    /// Poll once (briefly) and act on what is ready, as the monitor's loop does.
    fn round(a: &mut Attach) {
        let interest = a.interest();
        let mut fds: Vec<PollFd> = interest.iter().map(|(fd, f, _)| PollFd::new(*fd, *f)).collect();
        poll(&mut fds, PollTimeout::from(200u16)).unwrap();
        let ready: Vec<(Token, PollFlags)> = fds
            .iter()
            .zip(&interest)
            .filter_map(|(f, (_, _, t))| f.revents().filter(|r| !r.is_empty()).map(|r| (*t, r)))
            .collect();
        drop(fds);
        drop(interest);
        for (t, r) in ready {
            a.handle(t, r);
        }
        a.sweep();
    }

    fn connect(dir: &Path) -> UnixStream {
        let d = std::fs::File::open(dir).unwrap();
        UnixStream::connect(ContainerFiles::attach_address(&d)).unwrap()
    }

    /// Read frames from `c` until one of `kind` arrives; its payload.
    fn until(c: &mut UnixStream, kind: u8) -> Vec<u8> {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut d = frame::Decoder::default();
        let mut buf = [0u8; 4096];
        loop {
            while let Some((k, p)) = d.next_frame() {
                if k == kind {
                    return p;
                }
            }
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed before a frame of kind {kind}");
            d.feed(&buf[..n]);
        }
    }

    #[test]
    fn input_output_stdin_once_and_exit() {
        let dir = tempfile::tempdir().unwrap();
        let (stdin_r, stdin_w) = nix::unistd::pipe().unwrap();
        let mut a = Attach::new(listen(dir.path()), dir.path(), Some(stdin_w), None, true);
        let sock = dir.path().join("attach");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);

        let mut writer = connect(dir.path());
        let mut watcher = connect(dir.path());
        writer.write_all(&frame::encode(frame::ATTACH_STDIN, &[])).unwrap();
        writer.write_all(&frame::encode(frame::STDIN, b"abc")).unwrap();
        // A watcher's input is not the container's.
        watcher.write_all(&frame::encode(frame::STDIN, b"nope")).unwrap();
        for _ in 0..5 {
            round(&mut a);
        }
        a.output(Stream::Stderr, b"out");
        assert_eq!(until(&mut writer, frame::STDERR), b"out");
        assert_eq!(until(&mut watcher, frame::STDERR), b"out");

        // The writer's stdin ends: stdinOnce closes the container's stdin after what waits.
        writer.write_all(&frame::encode(frame::CLOSE_STDIN, &[])).unwrap();
        for _ in 0..5 {
            round(&mut a);
        }
        let mut got = Vec::new();
        std::fs::File::from(stdin_r).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abc", "then EOF");

        a.finish(3);
        assert_eq!(until(&mut writer, frame::EXIT), 3i32.to_be_bytes());
        assert_eq!(until(&mut watcher, frame::EXIT), 3i32.to_be_bytes());
        assert!(!sock.exists(), "the socket goes with the process");
    }

    #[test]
    fn without_stdin_once_an_ended_session_is_let_go_and_stdin_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let (stdin_r, stdin_w) = nix::unistd::pipe().unwrap();
        let mut a = Attach::new(listen(dir.path()), dir.path(), Some(stdin_w), None, false);
        let mut c = connect(dir.path());
        c.write_all(&frame::encode(frame::ATTACH_STDIN, &[])).unwrap();
        c.write_all(&frame::encode(frame::STDIN, b"x")).unwrap();
        c.write_all(&frame::encode(frame::CLOSE_STDIN, &[])).unwrap();
        for _ in 0..5 {
            round(&mut a);
        }
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(c.read(&mut [0u8; 16]).unwrap(), 0, "the session was let go");
        assert!(a.stdin.is_some(), "stdin stays open for the next session");
        set_nonblocking(stdin_r.as_fd());
        let mut got = [0u8; 4];
        assert_eq!(nix::unistd::read(stdin_r.as_fd(), &mut got), Ok(1));
    }

    #[test]
    fn a_client_that_does_not_read_is_let_go_and_memory_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Attach::new(listen(dir.path()), dir.path(), None, None, false);
        let _lazy = connect(dir.path());
        round(&mut a);
        assert_eq!(a.clients.len(), 1);
        let chunk = vec![b'y'; 32 * 1024];
        for _ in 0..200 {
            a.output(Stream::Stdout, &chunk);
            assert!(a.clients.iter().all(|c| c.out.len() <= OUT_MAX));
        }
        a.sweep();
        assert!(a.clients.is_empty(), "let go");
    }
}
