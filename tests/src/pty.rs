//! A pseudo-terminal for a child process: what a person's terminal is to `crictl exec -it` or
//! `crictl attach -it`. The child gets the slave side as stdin, stdout and stderr; the test
//! types on the master side and reads back what the child printed.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, poll};
use nix::pty::{Winsize, openpty};

pub struct Pty {
    master: File,
    child: Option<Child>,
    out: Vec<u8>,
    eof: bool,
}

impl Pty {
    /// Run `cmd` on a new 80x24 terminal. `cmd` is consumed: it holds copies of the slave
    /// side, and only the child may keep one, so that reads end when it exits.
    pub fn spawn(mut cmd: Command) -> Pty {
        let size = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        let slave = |what| {
            Stdio::from(
                pty.slave
                    .try_clone()
                    .unwrap_or_else(|e| panic!("dup the pty for {what}: {e}")),
            )
        };
        cmd.stdin(slave("stdin"))
            .stdout(slave("stdout"))
            .stderr(slave("stderr"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?} on a pty: {e}", cmd.get_program()));
        drop(cmd);
        drop(pty.slave);
        Pty {
            master: File::from(pty.master),
            child: Some(child),
            out: Vec::new(),
            eof: false,
        }
    }

    /// Type `text` (a person's keystrokes: end a line with `\r` or `\n`).
    pub fn type_text(&mut self, text: &str) {
        self.master
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("type {text:?} on the pty: {e}"));
    }

    /// Everything the child printed so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Read until the output so far satisfies `done` (it gets the whole text); panic naming
    /// `what`, with the output, after `timeout` or when the child closed the terminal first.
    pub fn read_until<T>(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&str) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = done(&self.text()) {
                return v;
            }
            assert!(
                !self.eof,
                "the terminal closed before {what}; it showed:\n{}",
                self.text()
            );
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; the terminal showed:\n{}",
                self.text()
            );
            self.read_some(Duration::from_millis(50));
        }
    }

    /// Read what the child printed until it closes the terminal, then its exit status.
    pub fn finish(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        while !self.eof {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for the program on the pty to end; it showed:\n{}",
                self.text()
            );
            self.read_some(Duration::from_millis(50));
        }
        let mut child = self.child.take().expect("the child is waited for once");
        crate::wait_for("the program on the pty to exit", timeout, || {
            child.try_wait().expect("wait for the program on the pty")
        })
    }

    /// One read, if the master has something within `wait`. EIO is the end: every slave
    /// descriptor is closed.
    fn read_some(&mut self, wait: Duration) {
        let ready = {
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
            poll(&mut fds, ms).expect("poll the pty")
        };
        if ready == 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => self.out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => self.eof = true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read the pty: {e}"),
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // A test that failed half way leaves no program behind: the one child it started.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
