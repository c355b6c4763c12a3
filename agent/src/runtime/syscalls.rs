//! The syscalls that build a container's filesystem and take its process's privileges,
//! behind a trait.
//!
//! The real implementation calls the kernel; the test implementation records the calls, so
//! the order and arguments of the mount sequence and of the privilege steps (capabilities,
//! no_new_privs, seccomp, ids) can be checked without root (youki's approach).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use super::seccomp::BpfFilter;

/// A failed syscall: which one, on what, and why.
#[derive(Debug, thiserror::Error)]
#[error("{op}{}{detail}: {source}", on(.path))]
pub struct SysError {
    pub op: &'static str,
    pub path: PathBuf,
    /// Extra context, e.g. the filesystem type and options of a mount (starts with a space).
    pub detail: String,
    pub source: std::io::Error,
}

impl SysError {
    pub fn new(op: &'static str, path: &Path, detail: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        SysError {
            op,
            path: path.to_path_buf(),
            detail: detail.into(),
            source: source.into(),
        }
    }
}

fn on(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        String::new()
    } else {
        format!(" {}", path.display())
    }
}

pub type SysResult<T = ()> = Result<T, SysError>;

/// An error of a call that names no file.
fn no_path(op: &'static str, detail: impl Into<String>, source: impl Into<std::io::Error>) -> SysError {
    SysError::new(op, Path::new(""), detail, source)
}

pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult;
    fn umount(&self, target: &Path, flags: MntFlags) -> SysResult;
    /// Attach a detached mount tree (from `open_tree(OPEN_TREE_CLONE)`) at `target`.
    fn move_mount(&self, tree: BorrowedFd<'_>, target: &Path) -> SysResult;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult;
    fn chdir(&self, path: &Path) -> SysResult;
    fn mkdir_all(&self, path: &Path) -> SysResult;
    /// Create an empty file (a mount point for a file bind mount) if it does not exist.
    fn create_file(&self, path: &Path) -> SysResult;
    fn mknod(&self, path: &Path, kind: SFlag, mode: u32, major: u64, minor: u64) -> SysResult;
    fn symlink(&self, target: &Path, link: &Path) -> SysResult;
    /// Remove one capability from the bounding set (one the kernel does not know is gone).
    fn drop_bounding_cap(&self, cap: u32) -> SysResult;
    fn set_no_new_privs(&self) -> SysResult;
    /// Load a seccomp filter into this (single-threaded) process.
    fn seccomp(&self, filter: &BpfFilter) -> SysResult;
    fn setgroups(&self, gids: &[u32]) -> SysResult;
    fn setgid(&self, gid: u32) -> SysResult;
    fn setuid(&self, uid: u32) -> SysResult;
}

/// The kernel.
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        nix::mount::mount(source, target, fstype, flags, data).map_err(|e| {
            let detail = match (fstype, data) {
                (Some(t), Some(d)) => format!(" (type {t}, options {d})"),
                (Some(t), None) => format!(" (type {t})"),
                (None, _) => match source {
                    Some(s) => format!(" (from {})", s.display()),
                    None => String::new(),
                },
            };
            SysError::new("mount", target, detail, e)
        })
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> SysResult {
        nix::mount::umount2(target, flags).map_err(|e| SysError::new("umount", target, "", e))
    }

    fn move_mount(&self, tree: BorrowedFd<'_>, target: &Path) -> SysResult {
        let to = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|e| SysError::new("move_mount", target, "", std::io::Error::other(e)))?;
        // SAFETY: move_mount(2) with a valid fd, an empty C string and a NUL-terminated
        // target path; it only reads them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(SysError::new("move_mount", target, "", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        nix::unistd::pivot_root(new_root, put_old).map_err(|e| SysError::new("pivot_root", new_root, "", e))
    }

    fn chdir(&self, path: &Path) -> SysResult {
        nix::unistd::chdir(path).map_err(|e| SysError::new("chdir", path, "", e))
    }

    fn mkdir_all(&self, path: &Path) -> SysResult {
        std::fs::create_dir_all(path).map_err(|e| SysError::new("mkdir", path, "", e))
    }

    fn create_file(&self, path: &Path) -> SysResult {
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent)?;
        }
        match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(SysError::new("create", path, "", e)),
        }
    }

    fn mknod(&self, path: &Path, kind: SFlag, mode: u32, major: u64, minor: u64) -> SysResult {
        let dev = nix::sys::stat::makedev(major, minor);
        nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(mode), dev)
            .map_err(|e| SysError::new("mknod", path, format!(" ({major}:{minor})"), e))
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult {
        std::os::unix::fs::symlink(target, link)
            .map_err(|e| SysError::new("symlink", link, format!(" -> {}", target.display()), e))
    }

    fn drop_bounding_cap(&self, cap: u32) -> SysResult {
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes two integers and touches no memory of ours.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        let err = std::io::Error::last_os_error();
        // EINVAL: a capability this kernel does not know; nothing to drop.
        if ret < 0 && err.raw_os_error() != Some(libc::EINVAL) {
            return Err(no_path("prctl(PR_CAPBSET_DROP)", format!(" {cap}"), err));
        }
        Ok(())
    }

    fn set_no_new_privs(&self) -> SysResult {
        nix::sys::prctl::set_no_new_privs().map_err(|e| no_path("prctl(PR_SET_NO_NEW_PRIVS)", "", e))
    }

    fn seccomp(&self, filter: &BpfFilter) -> SysResult {
        filter.load().map_err(|e| no_path("seccomp", "", e))
    }

    fn setgroups(&self, gids: &[u32]) -> SysResult {
        let groups: Vec<Gid> = gids.iter().map(|&g| Gid::from_raw(g)).collect();
        nix::unistd::setgroups(&groups).map_err(|e| no_path("setgroups", format!(" {gids:?}"), e))
    }

    fn setgid(&self, gid: u32) -> SysResult {
        nix::unistd::setgid(Gid::from_raw(gid)).map_err(|e| no_path("setgid", format!(" {gid}"), e))
    }

    fn setuid(&self, uid: u32) -> SysResult {
        nix::unistd::setuid(Uid::from_raw(uid)).map_err(|e| no_path("setuid", format!(" {uid}"), e))
    }
}

/// Records calls instead of making them (tests).
#[cfg(test)]
#[derive(Default)]
pub struct Recorder {
    pub calls: std::cell::RefCell<Vec<String>>,
}

#[cfg(test)]
impl Recorder {
    pub fn push(&self, s: String) -> SysResult {
        self.calls.borrow_mut().push(s);
        Ok(())
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

#[cfg(test)]
impl Syscall for Recorder {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        self.push(format!(
            "mount {} {} {} {:?} {}",
            source.map(|s| s.display().to_string()).unwrap_or("-".into()),
            target.display(),
            fstype.unwrap_or("-"),
            flags,
            data.unwrap_or("-")
        ))
    }
    fn umount(&self, target: &Path, _flags: MntFlags) -> SysResult {
        self.push(format!("umount {}", target.display()))
    }
    fn move_mount(&self, _tree: BorrowedFd<'_>, target: &Path) -> SysResult {
        self.push(format!("move_mount {}", target.display()))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        self.push(format!("pivot_root {} {}", new_root.display(), put_old.display()))
    }
    fn chdir(&self, path: &Path) -> SysResult {
        self.push(format!("chdir {}", path.display()))
    }
    fn mkdir_all(&self, path: &Path) -> SysResult {
        self.push(format!("mkdir {}", path.display()))
    }
    fn create_file(&self, path: &Path) -> SysResult {
        self.push(format!("touch {}", path.display()))
    }
    fn mknod(&self, path: &Path, _kind: SFlag, mode: u32, major: u64, minor: u64) -> SysResult {
        self.push(format!("mknod {} {mode:o} {major}:{minor}", path.display()))
    }
    fn symlink(&self, target: &Path, link: &Path) -> SysResult {
        self.push(format!("symlink {} -> {}", link.display(), target.display()))
    }
    fn drop_bounding_cap(&self, cap: u32) -> SysResult {
        self.push(format!("capbset_drop {cap}"))
    }
    fn set_no_new_privs(&self) -> SysResult {
        self.push("no_new_privs".into())
    }
    fn seccomp(&self, filter: &BpfFilter) -> SysResult {
        self.push(format!(
            "seccomp {} instructions, flags {:#x}",
            filter.instructions(),
            filter.flags()
        ))
    }
    fn setgroups(&self, gids: &[u32]) -> SysResult {
        self.push(format!("setgroups {gids:?}"))
    }
    fn setgid(&self, gid: u32) -> SysResult {
        self.push(format!("setgid {gid}"))
    }
    fn setuid(&self, uid: u32) -> SysResult {
        self.push(format!("setuid {uid}"))
    }
}
