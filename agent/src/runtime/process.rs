//! Processes the runtime started, named so that a recycled PID is never mistaken for them.
//!
//! A PID alone is not an identity: after a process exits the kernel may hand its number to
//! another one. Pairing it with the start time from `/proc/<pid>/stat` is (containerd and
//! conmon do the same). Everything the agent waits on or signals goes through a pidfd opened
//! from such an identity, so it works the same for processes the agent spawned and for those
//! it re-adopts after a restart (which are not its children).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

/// A process as recorded in state files: its PID and its start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.pid)
    }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: i32,
    /// The kernel's `PF_*` flags.
    pub flags: u64,
    pub start_time: u64,
}

/// `PF_EXITING`: the process is in `do_exit`.
const PF_EXITING: u64 = 0x4;

/// Parse `/proc/<pid>/stat`. The command name may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the man page, ppid 4, flags 9, starttime 22.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        flags: fields.get(6)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is on its way out: gone, a zombie, in `do_exit`, or with a SIGKILL sent and
/// not yet acted on (a process that has not run since, as on a loaded machine). Such a
/// process leaves its cgroup by itself; a live one never will.
pub fn is_dying(pid: i32) -> bool {
    let Some(st) = stat(pid) else { return true };
    if matches!(st.state, 'Z' | 'X') || st.flags & PF_EXITING != 0 {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    sigkill_pending(&status)
}

/// SIGKILL in the thread's or the process's pending set of a `/proc/<pid>/status`.
fn sigkill_pending(status: &str) -> bool {
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    status.lines().any(|l| {
        ["SigPnd:", "ShdPnd:"].iter().any(|k| {
            l.strip_prefix(k)
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .is_some_and(|m| m & SIGKILL_BIT != 0)
        })
    })
}

/// A process's effective user and group and its supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The effective IDs (the second of the four on the `Uid:` and `Gid:` lines) and `Groups:`
/// of a `/proc/<pid>/status`.
pub fn parse_identity(status: &str) -> Option<Identity> {
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|rest| {
            rest.split_whitespace()
                .map(str::parse::<u32>)
                .collect::<Result<Vec<_>, _>>()
        })
    };
    let effective = |ids: Vec<u32>| ids.get(1).copied();
    Some(Identity {
        uid: effective(field("Uid:")?.ok()?)?,
        gid: effective(field("Gid:")?.ok()?)?,
        groups: field("Groups:")?.ok()?,
    })
}

/// Read the stat of `pid`; `None` if there is no such process.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

impl ProcessId {
    /// The identity of a live process.
    pub fn of(pid: i32) -> io::Result<Self> {
        let st = stat(pid).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no process {pid}")))?;
        Ok(ProcessId {
            pid,
            start_time: st.start_time,
        })
    }

    /// Alive and still the same process. A zombie counts as dead (it has exited), and so
    /// does a process already in `do_exit`: a PID namespace's init (the pause) killed by a
    /// signal first waits there for every other process of its namespace to die, so its
    /// containers' exits are seen while it is not a zombie yet, but it is gone for good and
    /// nothing can join its namespaces any more.
    pub fn is_alive(&self) -> bool {
        matches!(stat(self.pid), Some(st) if st.start_time == self.start_time
            && st.state != 'Z' && st.state != 'X' && st.flags & PF_EXITING == 0)
    }

    /// The credentials the kernel gives this process (`/proc/<pid>/status`): the user and
    /// group it runs as and its supplementary groups. `None` once it is gone or the PID is
    /// someone else's (checked after the read, so the answer is this process's).
    pub fn identity(&self) -> Option<Identity> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let id = parse_identity(&text)?;
        self.is_alive().then_some(id)
    }

    /// Open a pidfd on this process. `Ok(None)` when it is gone or the PID now belongs to
    /// someone else. The check happens after opening, so the fd can only refer to our process.
    pub fn open(&self) -> io::Result<Option<PidFd>> {
        let fd = match pidfd_open(self.pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(e) => return Err(e),
        };
        match stat(self.pid) {
            Some(st) if st.start_time == self.start_time => Ok(Some(PidFd { fd, id: *self })),
            _ => Ok(None),
        }
    }
}

/// An open pidfd: signals and exit notifications that cannot hit a recycled PID.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    id: ProcessId,
}

impl PidFd {
    /// A pidfd on a child of ours that has not been reaped: its PID cannot have been reused,
    /// so no identity check through /proc is needed (or possible, once we are in another
    /// mount namespace with another /proc).
    pub fn of_child(pid: i32) -> io::Result<Self> {
        Ok(PidFd {
            fd: pidfd_open(pid)?,
            id: ProcessId { pid, start_time: 0 },
        })
    }

    pub fn id(&self) -> ProcessId {
        self.id
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Send `signal`. A process that already exited is not an error: the goal is reached.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        match pidfd_send_signal(self.fd.as_raw_fd(), signal as i32) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// Whether the process has exited (non-blocking).
    pub fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Wait until the process exits. A pidfd becomes readable when its process terminates;
    /// tokio's reactor watches it like any other fd. The reactor watches this descriptor
    /// itself, not a duplicate: the agent waits on two processes per pod, and every
    /// descriptor it holds is copied and closed again at each helper it spawns.
    pub async fn exited(&self) -> io::Result<()> {
        // SAFETY: the descriptor is borrowed from `self.fd` for the whole life of the AsyncFd
        // (dropped, and so deregistered, before this returns), so it stays open and the same.
        let afd = unsafe { AsyncFd::register_with_interest(self.fd.as_fd(), tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let _guard = afd.readable().await?;
        Ok(())
    }
}

/// Ask a process to stop with `signal`; SIGKILL it if it is still there after `grace`.
/// Returns once it is gone (or after a last bounded wait if even SIGKILL does not end it,
/// e.g. a process stuck in uninterruptible sleep).
pub async fn stop(id: ProcessId, signal: Signal, grace: std::time::Duration) -> io::Result<()> {
    let Some(fd) = id.open()? else { return Ok(()) };
    fd.signal(signal)?;
    if tokio::time::timeout(grace, fd.exited()).await.is_ok() {
        return Ok(());
    }
    tracing::debug!(pid = id.pid, ?signal, "grace period over, sending SIGKILL");
    fd.signal(Signal::SIGKILL)?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), fd.exited()).await;
    Ok(())
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

fn pidfd_send_signal(fd: RawFd, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(2) with a valid pidfd, a signal number, no siginfo, no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `SIGQUIT`, `QUIT` or `3` (an image's STOPSIGNAL, a CLI's `--signal`).
pub fn parse_signal(name: &str) -> Option<Signal> {
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_killed_process_is_dying_before_it_is_reaped() {
        assert!(super::sigkill_pending(
            "Name:\tx\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\n"
        ));
        assert!(super::sigkill_pending("ShdPnd:\t0000000000000100\n"));
        assert!(!super::sigkill_pending(
            "SigPnd:\t0000000000004000\nShdPnd:\t0000000000000000\n"
        ));
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        assert!(!super::is_dying(pid), "a sleeping process is alive");
        child.kill().expect("SIGKILL");
        // Not reaped yet: SIGKILL pending, exiting, or a zombie.
        assert!(super::is_dying(pid));
        child.wait().expect("reap");
        assert!(super::is_dying(pid), "gone");
    }

    #[test]
    fn signal_names() {
        assert_eq!(super::parse_signal("SIGQUIT"), Some(nix::sys::signal::Signal::SIGQUIT));
        assert_eq!(super::parse_signal("quit"), Some(nix::sys::signal::Signal::SIGQUIT));
        assert_eq!(super::parse_signal("15"), Some(nix::sys::signal::Signal::SIGTERM));
        assert_eq!(super::parse_signal("NOPE"), None);
    }

    use super::*;

    #[test]
    fn identity_is_the_effective_ids_and_the_groups() {
        let status =
            "Name:\tsh\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nGroups:\t4 1234 50000 \nNSpid:\t7\n";
        assert_eq!(
            parse_identity(status),
            Some(Identity {
                uid: 1001,
                gid: 51,
                groups: vec![4, 1234, 50000]
            })
        );
        let none = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert_eq!(parse_identity(none).map(|i| i.groups), Some(vec![]));
        assert_eq!(parse_identity("Uid:\t0\t0\t0\t0\n"), None);
    }

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.flags, 4194560);
        assert_eq!(st.start_time, 987654);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn identity_detects_exit_and_signals_through_pidfd() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = ProcessId::of(child.id() as i32).unwrap();
        assert!(id.is_alive());
        let fd = id.open().unwrap().expect("alive");
        assert!(!fd.has_exited());
        fd.signal(Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(fd.has_exited());
        assert!(!id.is_alive());
        // The same pid with another start time is someone else.
        let other = ProcessId {
            pid: id.pid,
            start_time: id.start_time + 1,
        };
        assert!(other.open().unwrap().is_none());
    }
}
