//! Forking a container process into its cgroup.
//!
//! On cgroup v2 the child is born there: clone3 with `CLONE_INTO_CGROUP` and a descriptor of
//! the cgroup's directory, so it never runs, allocates or counts anywhere else. Elsewhere (v1,
//! whose processes are one per hierarchy; a kernel before 5.7, which refuses the flag) it is
//! a plain fork and the child joins the cgroup before doing anything else (on v1 through
//! `tasks`: it has one thread).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};

use crate::runtime::spec::CgroupEntry;

/// Which side of the fork this is, and how the child enters its cgroup.
pub(super) enum Forked {
    /// `Attached`: the child must join its cgroup itself.
    Child(CgroupEntry),
    Parent(Pid, CgroupEntry),
}

/// Fork, into the cgroup at `dirs` where the kernel can. The caller is single-threaded.
pub(super) fn fork_into(dirs: &[PathBuf]) -> Result<Forked, String> {
    if let Some(dir) = unified_dir(dirs)? {
        match clone_into(dir.as_fd()) {
            Ok(Some(child)) => return Ok(Forked::Parent(child, CgroupEntry::Born)),
            Ok(None) => return Ok(Forked::Child(CgroupEntry::Born)),
            Err(e) if refused(e) => refused_once(&dirs[0], e),
            Err(e) => return Err(format!("clone3 into cgroup {}: {e}", dirs[0].display())),
        }
    }
    // SAFETY: the helpers are single-threaded (dispatched before any thread starts), so the
    // child may run ordinary code until it execs.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => Ok(Forked::Child(CgroupEntry::Attached)),
        ForkResult::Parent { child } => Ok(Forked::Parent(child, CgroupEntry::Attached)),
    }
}

/// The cgroup's directory, opened, when it is a cgroup2 one (v2 has a single directory).
fn unified_dir(dirs: &[PathBuf]) -> Result<Option<File>, String> {
    let [dir] = dirs else { return Ok(None) };
    let f = File::open(dir).map_err(|e| format!("open cgroup {}: {e}", dir.display()))?;
    let fs = nix::sys::statfs::fstatfs(&f).map_err(|e| format!("statfs cgroup {}: {e}", dir.display()))?;
    Ok((fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC).then_some(f))
}

/// Errors by which a kernel says it does not know clone3 (ENOSYS, before 5.3), its larger
/// argument struct (E2BIG, before 5.7) or the flag (EINVAL).
fn refused(e: Errno) -> bool {
    matches!(e, Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL)
}

/// Said once per process; the agent also warns once when it reads `Attached` on v2.
fn refused_once(dir: &Path, e: Errno) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        super::monitor::diag(format_args!(
            "the kernel refused clone3(CLONE_INTO_CGROUP) for {}: {e}; forking and attaching instead",
            dir.display()
        ));
    }
}

/// `struct clone_args` of linux/sched.h, up to `cgroup` (the size the kernel 5.7 knows).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// clone3 as a fork (no new stack: the child continues on a copy of ours) into `cgroup`.
/// `Ok(None)` in the child.
fn clone_into(cgroup: BorrowedFd) -> Result<Option<Pid>, Errno> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: the kernel reads `args` (valid for the call, its size passed with it). With no
    // stack given, the child resumes here on a copy-on-write copy of our stack, as with fork;
    // callers are single-threaded, so no lock is held by a thread the child lacks. glibc's
    // cached thread id stays the parent's in the child, which only its pthread_kill/raise
    // read, and tgkill refuses a thread of another process, so nothing reaches the parent.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>()) };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_kernels_fall_back_other_errors_do_not() {
        for e in [Errno::ENOSYS, Errno::E2BIG, Errno::EINVAL] {
            assert!(refused(e), "{e}");
        }
        // A full pids limit or no memory would fail an attach just the same.
        for e in [Errno::EAGAIN, Errno::ENOMEM, Errno::EBUSY, Errno::EPERM] {
            assert!(!refused(e), "{e}");
        }
    }

    #[test]
    fn v1_or_a_plain_directory_is_not_unified() {
        let dir = tempfile::tempdir().unwrap();
        assert!(unified_dir(&[dir.path().into()]).unwrap().is_none());
        assert!(unified_dir(&[dir.path().into(), dir.path().into()]).unwrap().is_none());
        assert!(unified_dir(&[]).unwrap().is_none());
        assert!(unified_dir(&[dir.path().join("gone")]).is_err());
    }

    #[test]
    fn clone_args_have_the_kernel_5_7_size() {
        // CLONE_ARGS_SIZE_VER2 in linux/sched.h.
        assert_eq!(size_of::<CloneArgs>(), 88);
    }
}
