//! Terminals for helpers: a pty pair opened from the devpts of the mount namespace we are
//! in, its size, and handing a master to another process (as runc's console socket does).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::OFlag;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// A pty pair (master, slave) from `/dev/ptmx` of the current mount namespace, the slave
/// sized `size` (width, height) if given.
pub(super) fn open(size: Option<(u16, u16)>) -> Result<(OwnedFd, OwnedFd), String> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master =
        posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(|e| format!("open /dev/ptmx: {e}"))?;
    grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .map_err(|e| format!("open {name}: {e}"))?;
    let master: OwnedFd = master.into();
    if let Some((w, h)) = size {
        set_size(master.as_fd(), w, h);
    }
    Ok((master, slave.into()))
}

/// Make `slave` the controlling terminal of a new session led by the caller.
pub(super) fn make_controlling(slave: BorrowedFd<'_>) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY on our pty slave makes it the controlling terminal; no memory.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!("TIOCSCTTY: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Set the terminal's size; the kernel tells its foreground process group (SIGWINCH).
pub(super) fn set_size(fd: BorrowedFd<'_>, width: u16, height: u16) {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer we pass.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// Send `fd` over the unix socket `sock` (SCM_RIGHTS), with one byte of data.
pub(super) fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<(), String> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(b"m")], &cmsg, MsgFlags::empty(), None)
        .map_err(|e| format!("send the terminal to the monitor: {e}"))?;
    Ok(())
}

/// Receive one descriptor sent by [`send_fd`].
pub(super) fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd, String> {
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| format!("receive the terminal: {e}"))?;
    for c in msg.cmsgs().map_err(|e| format!("receive the terminal: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor in our table for us alone.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err("the container process sent no terminal".into())
}
