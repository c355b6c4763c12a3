//! The container process between fork and exec.
//!
//! Order matters:
//! 1. be in the container's cgroup first, so every byte and cycle from here on is accounted
//!    and limited there: born there on v2 ([`super::fork`]), else join it now; then a cgroup
//!    namespace rooted at it, so the container sees its own cgroup as `/`;
//! 2. oom_score_adj;
//! 3. setns into the pause's network, IPC, UTS and mount namespaces in one call (a pidfd
//!    names them all), then unshare a private mount namespace copied from the pod's;
//! 4. build the root filesystem (with the cgroup view at /sys/fs/cgroup) and pivot_root
//!    into it ([`crate::runtime::rootfs`]);
//! 5. resolve the user inside the new root; stdio (pipes, or a terminal opened here whose
//!    master is sent to the monitor); drop capabilities; no_new_privs; switch
//!    user; signals, umask; the seccomp filter where runc loads it ([`drop_privileges`]);
//! 6. execve.
//!
//! Any failure is written to the error pipe and the process exits: the monitor turns it into
//! a `StartError` with this message.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::{child_fail, reset_signals, set_oom_score_adj};
use crate::runtime::process::PidFd;
use crate::runtime::spec::{CgroupEntry, ContainerSpec, KernelPaths, ProcessSpec};
use crate::runtime::syscalls::{Linux, Syscall};
use crate::runtime::user::ResolvedUser;
use crate::runtime::{capabilities, rootfs, user};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container process's side of its stdio, as the monitor prepared it.
pub(super) enum Stdio {
    /// `stdin`: the read end of the monitor's stdin pipe; `None` reads /dev/null.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A terminal from the container's own devpts, opened once inside its root (so `tty`
    /// names it there); its master goes back to the monitor over `console`.
    Tty { console: OwnedFd },
}

pub(super) fn run(spec: &ContainerSpec, pause: &PidFd, entry: CgroupEntry, stdio: Stdio, errors: OwnedFd) -> ! {
    let Err(msg) = setup_and_exec(spec, pause, entry, &stdio);
    child_fail(&errors, &msg)
}

fn setup_and_exec(
    spec: &ContainerSpec,
    pause: &PidFd,
    entry: CgroupEntry,
    stdio: &Stdio,
) -> Result<Infallible, String> {
    // Device nodes and mount points get exactly the modes we ask for.
    nix::sys::stat::umask(Mode::empty());

    if entry == CgroupEntry::Attached {
        crate::cgroups::join_single_threaded(&spec.cgroup_dirs, 0)
            .map_err(|e| format!("join container cgroup: {e}"))?;
    }
    if spec.cgroup_view.is_some() {
        // Rooted where the process is now: its own cgroup.
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| format!("unshare(cgroup): {e}"))?;
    }
    if let Some(adj) = spec.oom_score_adj {
        set_oom_score_adj(adj)?;
    }

    // Before joining the pod's mount namespace: the host's view of the client's host paths.
    let host_trees = rootfs::open_host_trees(&spec.mounts)?;
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
    let kernel_paths = match &spec.kernel_paths {
        Some(p) => p.clone(),
        None if privileged => KernelPaths::default(),
        None => KernelPaths::defaults(),
    };
    rootfs::setup(
        &Linux,
        &spec.rootfs,
        &spec.mounts,
        spec.cgroup_view.as_ref(),
        &kernel_paths,
        &host_trees,
        cwd,
    )
    .map_err(|e| format!("rootfs: {e}"))?;
    rootfs::pivot(&Linux, &spec.rootfs.target).map_err(|e| format!("pivot_root: {e}"))?;

    let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    // containerd's default for a terminal; the pod's own TERM wins.
    let extra_env: Vec<String> = match stdio {
        Stdio::Tty { .. } => vec!["TERM=xterm".into()],
        Stdio::Pipes { .. } => Vec::new(),
    };
    become_and_exec(&spec.process, &spec.process.args, &extra_env, || match stdio {
        Stdio::Pipes { stdin, stdout, stderr } => {
            let stdin = stdin.as_ref().map_or(devnull.as_fd(), |f| f.as_fd());
            nix::unistd::dup2_stdin(stdin).map_err(|e| format!("dup2 stdin: {e}"))?;
            nix::unistd::dup2_stdout(stdout.as_fd()).map_err(|e| format!("dup2 stdout: {e}"))?;
            nix::unistd::dup2_stderr(stderr.as_fd()).map_err(|e| format!("dup2 stderr: {e}"))
        }
        Stdio::Tty { console } => {
            let (master, slave) = super::pty::open(None)?;
            super::pty::make_controlling(slave.as_fd())?;
            nix::unistd::dup2_stdin(slave.as_fd()).map_err(|e| format!("dup2 stdin: {e}"))?;
            nix::unistd::dup2_stdout(slave.as_fd()).map_err(|e| format!("dup2 stdout: {e}"))?;
            nix::unistd::dup2_stderr(slave.as_fd()).map_err(|e| format!("dup2 stderr: {e}"))?;
            super::pty::send_fd(console.as_fd(), master.as_fd())
        }
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

    let cstr = |s: &str, what: &str| CString::new(s).map_err(|_| format!("{what} {s:?} contains a NUL byte"));
    let argv = args
        .iter()
        .map(|a| cstr(a, "argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|e| cstr(e, "environment variable"))
        .collect::<Result<Vec<_>, _>>()?;
    stdio()?;
    let program = args.first().ok_or("no command specified")?;
    let exe = drop_privileges(&Linux, process, &who, cwd, || {
        let exe = find_executable(program, &path_var)?;
        reset_signals();
        nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
        // Whatever the agent inherited (a shell's or a supervisor's descriptors) must not reach
        // the container: only stdio survives the exec, as runc guarantees.
        cloexec_from(3)?;
        Ok(exe)
    })?;

    let exe_c = CString::new(exe.as_os_str().as_encoded_bytes())
        .map_err(|_| "executable path contains a NUL byte".to_string())?;
    let Err(e) = nix::unistd::execve(&exe_c, &argv, &envp);
    Err(format!("exec {:?}: {e}", exe.display().to_string()))
}

/// What the process gives up before it execs, through the syscall seam, in runc's order:
/// capabilities out of the bounding set; no_new_privs if asked; the seccomp filter, loaded
/// here, while the process still holds CAP_SYS_ADMIN, when no_new_privs is not set (loading
/// a filter needs one or the other); supplementary groups, gid, uid; the working directory;
/// `last` (finding the executable, signals, descriptors); and with no_new_privs the filter
/// as late as possible, right before exec, so it sees the fewest of our own syscalls.
pub(super) fn drop_privileges<S: Syscall, R>(
    sys: &S,
    process: &ProcessSpec,
    who: &ResolvedUser,
    cwd: &str,
    last: impl FnOnce() -> Result<R, String>,
) -> Result<R, String> {
    let err = |e: crate::runtime::syscalls::SysError| e.to_string();
    if let Some(keep) = &process.capabilities {
        for cap in capabilities::to_drop(keep, capabilities::last_cap()) {
            sys.drop_bounding_cap(cap).map_err(err)?;
        }
    }
    if process.no_new_privileges {
        sys.set_no_new_privs().map_err(err)?;
    }
    let seccomp = process.seccomp.as_ref().map(|s| s.filter()).transpose()?;
    if let Some(filter) = seccomp.as_deref().filter(|_| !process.no_new_privileges) {
        sys.seccomp(filter).map_err(err)?;
    }
    sys.setgroups(&who.additional_gids).map_err(err)?;
    sys.setgid(who.gid).map_err(err)?;
    sys.setuid(who.uid).map_err(err)?;
    sys.chdir(Path::new(cwd))
        .map_err(|e| format!("chdir to working directory {cwd}: {}", e.source))?;
    let out = last()?;
    if let Some(filter) = seccomp.as_deref().filter(|_| process.no_new_privileges) {
        sys.seccomp(filter).map_err(err)?;
    }
    Ok(out)
}

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

/// Where `program` is, as execvp would find it, with the container's PATH and in its root.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::seccomp::{BpfFilter, Seccomp};
    use crate::runtime::spec::UserSpec;
    use crate::runtime::syscalls::Recorder;

    fn process(no_new_privileges: bool) -> ProcessSpec {
        ProcessSpec {
            args: vec!["sh".into()],
            env: Vec::new(),
            cwd: "/work".into(),
            user: UserSpec::default(),
            capabilities: Some(capabilities::effective_set(&[], &[])),
            no_new_privileges,
            // BPF_RET | BPF_K, SECCOMP_RET_ALLOW: one instruction.
            seccomp: BpfFilter::new(0, [0x06, 0, 0, 0, 0, 0, 0xff, 0x7f].to_vec())
                .ok()
                .map(Seccomp::Filter),
            stdio: Default::default(),
        }
    }

    fn sequence(p: &ProcessSpec) -> Vec<String> {
        let who = ResolvedUser {
            uid: 1000,
            gid: 2000,
            additional_gids: vec![3000],
            home: "/".into(),
        };
        let rec = Recorder::default();
        drop_privileges(&rec, p, &who, "/work", || {
            rec.push("last (exe, signals, fds)".into()).map_err(|e| e.to_string())
        })
        .unwrap();
        // Capabilities first, each one a call; keep only the first of them for the order.
        let calls = rec.calls();
        assert!(calls[0].starts_with("capbset_drop"), "{calls:?}");
        let mut out = vec!["capbset_drop…".to_string()];
        out.extend(calls.into_iter().filter(|c| !c.starts_with("capbset_drop")));
        out
    }

    #[test]
    fn seccomp_while_privileged_without_no_new_privs() {
        // runc: without no_new_privs the filter needs CAP_SYS_ADMIN, so it goes in before the
        // user switch drops the effective capabilities.
        assert_eq!(
            sequence(&process(false)),
            [
                "capbset_drop…",
                "seccomp 1 instructions, flags 0x0",
                "setgroups [3000]",
                "setgid 2000",
                "setuid 1000",
                "chdir /work",
                "last (exe, signals, fds)",
            ]
        );
    }

    #[test]
    fn seccomp_last_with_no_new_privs() {
        assert_eq!(
            sequence(&process(true)),
            [
                "capbset_drop…",
                "no_new_privs",
                "setgroups [3000]",
                "setgid 2000",
                "setuid 1000",
                "chdir /work",
                "last (exe, signals, fds)",
                "seccomp 1 instructions, flags 0x0",
            ]
        );
    }

    #[test]
    fn unconfined_loads_nothing() {
        let mut p = process(false);
        p.seccomp = None;
        assert!(!sequence(&p).iter().any(|c| c.starts_with("seccomp")));
    }
}
