//! `minilet __sandbox SPEC`: start a pod's pause process in fresh namespaces.
//!
//! 1. New session (terminal signals aimed at the agent never reach pods); join the pod's
//!    sandbox cgroup; set oom_score_adj. The pause inherits all three.
//! 2. unshare the mount namespace and the pod's network, IPC, UTS and PID namespaces (a
//!    helper started ahead of need has made the last four while it waited: [`Premade`]). The
//!    new mount namespace is a slave of the host's (host mounts still propagate in, nothing
//!    propagates out) and holds the pod's memory-backed filesystems (its /dev/shm and
//!    `medium: Memory` emptyDirs): containers start from a copy of it, and when the pause
//!    exits the namespace and its tmpfs mounts go with it.
//! 3. Set the hostname, bring loopback up, write the pod's sysctls (now the pod's own).
//! 4. fork: the child (PID 1 of the new PID namespace) takes the sandbox's user, groups,
//!    capabilities and seccomp filter, and execs the pause; this process records
//!    the pause's identity in the state directory, reports it and exits. The agent, a child
//!    subreaper, inherits the pause.

use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::unistd::ForkResult;

use super::init::drop_privileges;
use super::{ErrorPipe, child_fail, read_spec, report, reset_signals, set_oom_score_adj};
use crate::atomic_file;
use crate::runtime::process::ProcessId;
use crate::runtime::spec::{SandboxSpec, SandboxState, now_nanos};
use crate::runtime::syscalls::Linux;
use crate::runtime::user;

/// The namespaces a pod of its own gets (network, IPC, UTS, PID), in the order `run` takes
/// them, with their names under `/proc/self/ns`.
const POD_NAMESPACES: [(CloneFlags, &str); 4] = [
    (CloneFlags::CLONE_NEWNET, "net"),
    (CloneFlags::CLONE_NEWIPC, "ipc"),
    (CloneFlags::CLONE_NEWUTS, "uts"),
    (CloneFlags::CLONE_NEWPID, "pid"),
];

/// A pod's namespaces, made by a helper started ahead of need while it waits for its spec
/// (`runtime::warm`): a new network namespace is the dearest step of a sandbox start (about
/// a millisecond of the kernel's work, more with many pods), and nothing in these four
/// depends on the pod until its spec says which it shares with the host. For those the
/// helper goes back to the namespaces it came from, kept open here.
pub struct Premade {
    /// In the order of [`POD_NAMESPACES`].
    came_from: Vec<std::fs::File>,
}

impl Premade {
    /// Unshare the four namespaces and bring loopback up; `None` if that cannot be done (the
    /// helper then makes them again once it has its spec, and reports what fails there).
    pub fn make() -> Option<Premade> {
        let mut came_from = Vec::with_capacity(POD_NAMESPACES.len());
        for (_, name) in POD_NAMESPACES {
            came_from.push(std::fs::File::open(format!("/proc/self/ns/{name}")).ok()?);
        }
        let made = POD_NAMESPACES
            .iter()
            .fold(CloneFlags::empty(), |all, (flag, _)| all | *flag);
        nix::sched::unshare(made).ok()?;
        loopback_up().ok()?;
        Some(Premade { came_from })
    }
}

pub fn main(spec_path: &OsStr, premade: Option<Premade>) -> ExitCode {
    let result = read_spec::<SandboxSpec>(Path::new(spec_path)).and_then(|spec| run(&spec, premade));
    report(&result);
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(spec: &SandboxSpec, premade: Option<Premade>) -> Result<SandboxState, String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    crate::cgroups::join_single_threaded(&spec.cgroup_dirs, 0).map_err(|e| format!("join sandbox cgroup: {e}"))?;
    if let Some(adj) = spec.oom_score_adj {
        set_oom_score_adj(adj)?;
    }

    let mut flags = CloneFlags::CLONE_NEWNS;
    for (i, (wanted, (flag, name))) in [
        spec.namespaces.network,
        spec.namespaces.ipc,
        spec.namespaces.uts,
        spec.namespaces.pid,
    ]
    .into_iter()
    .zip(POD_NAMESPACES)
    .enumerate()
    {
        match &premade {
            None if wanted => flags |= flag,
            // Shared with the host: back to the helper's (the agent's) namespace.
            Some(p) if !wanted => {
                let host = p
                    .came_from
                    .get(i)
                    .ok_or_else(|| format!("the {name} namespace the helper came from is not at hand"))?;
                nix::sched::setns(host, flag).map_err(|e| format!("setns back to the host's {name} namespace: {e}"))?;
            }
            _ => {}
        }
    }
    nix::sched::unshare(flags).map_err(|e| format!("unshare({flags:?}): {e}"))?;

    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("make / a recursive slave in the pod mount namespace: {e}"))?;
    for t in &spec.tmpfs {
        std::fs::create_dir_all(&t.path).map_err(|e| format!("mkdir {}: {e}", t.path.display()))?;
        let mut data = format!("mode={:o}", t.mode);
        if let Some(size) = t.size_bytes {
            data.push_str(&format!(",size={size}"));
        }
        if let Some(gid) = t.gid {
            data.push_str(&format!(",gid={gid}"));
        }
        nix::mount::mount(
            Some("tmpfs"),
            &t.path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|e| format!("mount tmpfs ({data}) on {}: {e}", t.path.display()))?;
    }

    if spec.namespaces.uts {
        nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname {:?}: {e}", spec.hostname))?;
    }
    if spec.namespaces.network && premade.is_none() {
        loopback_up().map_err(|e| format!("bring up lo in the pod network namespace: {e}"))?;
    }
    for s in &spec.sysctls {
        s.apply()?;
    }

    // Opened here, as root: a pause that runs as another user execs it through this
    // descriptor, so that user needs execute permission on the file alone, not on the
    // directories above it (the agent's own, possibly private).
    let pause =
        std::fs::File::open(&spec.pause_path).map_err(|e| format!("open {}: {e}", spec.pause_path.display()))?;
    let argv = spec
        .process
        .args
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("pause argument {a:?} contains a NUL byte")))
        .collect::<Result<Vec<_>, _>>()?;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    let errors = ErrorPipe::new()?;

    // SAFETY: this helper is single-threaded (dispatched before any thread starts), so the
    // child may run ordinary code until it execs.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let fail = |what: &str, e: nix::Error| -> ! { child_fail(&errors.write, &format!("{what}: {e}")) };
            for dup in [
                nix::unistd::dup2_stdin,
                nix::unistd::dup2_stdout,
                nix::unistd::dup2_stderr,
            ] {
                if let Err(e) = dup(devnull.as_fd()) {
                    fail("dup2 /dev/null", e);
                }
            }
            // The sandbox's user and confinement, with the code a container's process uses
            // (no passwd file: the pause has no image of its own).
            let became = user::resolve(&spec.process.user, None, None)
                .map_err(|e| e.to_string())
                .and_then(|who| {
                    drop_privileges(&Linux, &spec.process, &who, &spec.process.cwd, || {
                        reset_signals();
                        Ok(())
                    })
                });
            if let Err(msg) = became {
                child_fail(&errors.write, &format!("pause user {:?}: {msg}", spec.process.user));
            }
            let env: [&std::ffi::CStr; 0] = [];
            let Err(e) = nix::unistd::fexecve(pause.as_fd(), &argv, &env);
            fail(&format!("exec {}", spec.pause_path.display()), e)
        }
        ForkResult::Parent { child } => {
            if let Some(msg) = errors.wait() {
                return Err(msg);
            }
            let state = SandboxState {
                pause: ProcessId::of(child.as_raw()).map_err(|e| format!("pause {child}: {e}"))?,
                created_at: now_nanos(),
            };
            atomic_file::write_json(&spec.state_path, &state)
                .map_err(|e| format!("write {}: {e}", spec.state_path.display()))?;
            Ok(state)
        }
    }
}

/// `ip link set lo up`, with the two ioctls it takes.
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) returns a new fd or -1.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just created and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills ifr_ifru.ifru_flags of a valid ifreq naming an interface.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union member SIOCGIFFLAGS just initialised.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the same ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
