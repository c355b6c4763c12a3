//! The local terminal for `exec -t`: raw mode that is always undone (a guard restores the
//! saved settings on drop, which runs on every return, error and unwinding panic), and the
//! window size the remote terminal should have.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use minilet_proto::minilet::v1::TerminalSize;
use nix::sys::termios::{self, SetArg, Termios};

/// Raw mode on a terminal until dropped.
#[derive(Debug)]
pub struct RawMode {
    /// A duplicate of the terminal's descriptor, so the guard does not borrow it.
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    pub fn enable(fd: BorrowedFd<'_>) -> Result<Self> {
        let saved = termios::tcgetattr(fd).context("reading the terminal settings")?;
        let fd = nix::unistd::dup(fd).context("duplicating the terminal descriptor")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&fd, SetArg::TCSANOW, &raw).context("putting the terminal in raw mode")?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

/// The terminal's size in characters, if `fd` is a terminal.
pub fn size(fd: BorrowedFd<'_>) -> Option<TerminalSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points at a live,
    // properly aligned local; the descriptor is borrowed, so it is open for the call.
    unsafe { tiocgwinsz(fd.as_fd().as_raw_fd(), &mut ws) }.ok()?;
    Some(TerminalSize {
        width: u32::from(ws.ws_col),
        height: u32::from(ws.ws_row),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::pty::{Winsize, openpty};
    use nix::sys::termios::LocalFlags;

    #[test]
    fn raw_mode_is_restored_on_drop() {
        let pty = openpty(None, None).unwrap();
        let before = termios::tcgetattr(&pty.slave).unwrap();
        assert!(before.local_flags.contains(LocalFlags::ECHO | LocalFlags::ICANON));
        {
            let _raw = RawMode::enable(pty.slave.as_fd()).unwrap();
            let during = termios::tcgetattr(&pty.slave).unwrap();
            assert!(
                !during
                    .local_flags
                    .intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG)
            );
        }
        let after = termios::tcgetattr(&pty.slave).unwrap();
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
        assert_eq!(after.output_flags, before.output_flags);
    }

    #[test]
    fn raw_mode_is_restored_when_a_panic_unwinds() {
        let pty = openpty(None, None).unwrap();
        let before = termios::tcgetattr(&pty.slave).unwrap();
        let slave = pty.slave.as_fd();
        let r = std::panic::catch_unwind(|| {
            let _raw = RawMode::enable(slave).unwrap();
            panic!("session failed");
        });
        assert!(r.is_err());
        assert_eq!(termios::tcgetattr(&pty.slave).unwrap().local_flags, before.local_flags);
    }

    #[test]
    fn window_size_of_a_pty() {
        let ws = Winsize {
            ws_row: 40,
            ws_col: 132,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&ws, None).unwrap();
        assert_eq!(size(pty.slave.as_fd()), Some(TerminalSize { width: 132, height: 40 }));
        let f = tempfile::tempfile().unwrap();
        assert_eq!(size(f.as_fd()), None);
    }
}
