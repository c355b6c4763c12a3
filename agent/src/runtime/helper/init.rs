//! The container process between fork and exec.
//!
//! Order matters:
//! 1. join the container's cgroup first, so every byte and cycle from here on is accounted
//!    and limited there (the "in its cgroup before it execs");
//! 2. oom_score_adj;
//! 3. setns into the pause's network, IPC, UTS and mount namespaces in one call (a pidfd
//!    names them all), then unshare a private mount namespace copied from the pod's;
//! 4. build the root filesystem and pivot_root into it ([`crate::runtime::rootfs`]);
//! 5. resolve the user inside the new root; drop capabilities; switch user;
//! 6. stdio, signals, umask; execve.
//!
//! Any failure is written to the error pipe and the process exits: the monitor turns it into
//! a `StartError` with this message.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use super::{child_fail, reset_signals, set_oom_score_adj};
use crate::runtime::process::PidFd;
use crate::runtime::spec::{ContainerSpec, ProcessSpec};
use crate::runtime::syscalls::Linux;
use crate::runtime::{capabilities, rootfs, user};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) fn run(spec: &ContainerSpec, pause: &PidFd, stdout: OwnedFd, stderr: OwnedFd, errors: OwnedFd) -> ! {
    let Err(msg) = setup_and_exec(spec, pause, &stdout, &stderr);
    child_fail(&errors, &msg)
}

fn setup_and_exec(
    spec: &ContainerSpec,
    pause: &PidFd,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
) -> Result<Infallible, String> {
    // Device nodes and mount points get exactly the modes we ask for.
    nix::sys::stat::umask(Mode::empty());

    let me = nix::unistd::getpid().as_raw() as u32;
    crate::cgroups::join(&spec.cgroup_dirs, me).map_err(|e| format!("join container cgroup: {e}"))?;
    if let Some(adj) = spec.oom_score_adj {
        set_oom_score_adj(adj)?;
    }

    let shared =
        CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS;
    nix::sched::setns(pause.as_fd(), shared)
        .map_err(|e| format!("setns(net, ipc, uts, mnt) into pause {}: {e}", pause.id()))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(mnt): {e}"))?;

    let privileged = spec.process.capabilities.is_none();
    let cwd = if spec.process.cwd.is_empty() {
        "/"
    } else {
        spec.process.cwd.as_str()
    };
    rootfs::setup(&Linux, &spec.rootfs, &spec.mounts, !privileged, cwd).map_err(|e| format!("rootfs: {e}"))?;
    rootfs::pivot(&Linux, &spec.rootfs.target).map_err(|e| format!("pivot_root: {e}"))?;

    let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    become_and_exec(&spec.process, &spec.process.args, &[], || {
        nix::unistd::dup2_stdin(devnull.as_fd()).map_err(|e| format!("dup2 stdin: {e}"))?;
        nix::unistd::dup2_stdout(stdout.as_fd()).map_err(|e| format!("dup2 stdout: {e}"))?;
        nix::unistd::dup2_stderr(stderr.as_fd()).map_err(|e| format!("dup2 stderr: {e}"))
    })
}

/// The last steps, the same for a container's process and for one exec'd into it: become
/// the container's user (resolved in its own /etc/passwd) with its capabilities, environment
/// and working directory; set up stdio (`stdio`, after the user switch so files it opens are
/// opened as root); exec `args`.
pub(super) fn become_and_exec(
    process: &ProcessSpec,
    args: &[String],
    extra_env: &[String],
    stdio: impl FnOnce() -> Result<(), String>,
) -> Result<Infallible, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    let group = std::fs::read_to_string("/etc/group").ok();
    let who = user::resolve(&process.user, passwd.as_deref(), group.as_deref()).map_err(|e| e.to_string())?;

    let mut env = process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", who.home));
    }
    for extra in extra_env {
        let key = extra.split('=').next().unwrap_or(extra);
        if !env.iter().any(|e| e.split('=').next() == Some(key)) {
            env.push(extra.clone());
        }
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let cwd = if process.cwd.is_empty() {
        "/"
    } else {
        process.cwd.as_str()
    };

    if let Some(keep) = &process.capabilities {
        for cap in capabilities::to_drop(keep, capabilities::last_cap()) {
            drop_bounding(cap)?;
        }
    }
    if process.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("prctl(PR_SET_NO_NEW_PRIVS): {e}"))?;
    }
    stdio()?;
    let groups: Vec<Gid> = who.additional_gids.iter().map(|&g| Gid::from_raw(g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups {:?}: {e}", who.additional_gids))?;
    nix::unistd::setgid(Gid::from_raw(who.gid)).map_err(|e| format!("setgid {}: {e}", who.gid))?;
    nix::unistd::setuid(Uid::from_raw(who.uid)).map_err(|e| format!("setuid {}: {e}", who.uid))?;
    nix::unistd::chdir(cwd).map_err(|e| format!("chdir to working directory {cwd}: {e}"))?;

    let program = args.first().ok_or("no command specified")?;
    let exe = find_executable(program, &path_var)?;
    reset_signals();
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    // Whatever the agent inherited (a shell's or a supervisor's descriptors) must not reach the
    // container: only stdio survives the exec, as runc guarantees.
    cloexec_from(3)?;

    let cstr = |s: &str, what: &str| CString::new(s).map_err(|_| format!("{what} {s:?} contains a NUL byte"));
    let argv = args
        .iter()
        .map(|a| cstr(a, "argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|e| cstr(e, "environment variable"))
        .collect::<Result<Vec<_>, _>>()?;
    let exe_c = CString::new(exe.as_os_str().as_encoded_bytes())
        .map_err(|_| "executable path contains a NUL byte".to_string())?;
    let Err(e) = nix::unistd::execve(&exe_c, &argv, &envp);
    Err(format!("exec {:?}: {e}", exe.display().to_string()))
}

/// Where `program` is, as execvp would find it, with the container's PATH and in its root.
/// Mark every descriptor from `first` up close-on-exec: close_range(2) (Linux 5.11), else each
/// descriptor /proc/self/fd lists.
fn cloexec_from(first: u32) -> Result<(), String> {
    // SAFETY: close_range only changes descriptor flags; no memory is passed.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("list /proc/self/fd: {e}"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= first as i32)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number; a stale number (the read_dir handle) fails harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

fn find_executable(program: &str, path_var: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if let Ok(md) = std::fs::metadata(&candidate)
            && md.is_file()
            && md.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(format!("exec: {program:?}: executable file not found in $PATH"))
}

fn drop_bounding(cap: u32) -> Result<(), String> {
    // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes two integers and touches no memory of ours.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    // EINVAL: a capability this kernel does not know; nothing to drop.
    if ret < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(format!(
            "prctl(PR_CAPBSET_DROP, {cap}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
