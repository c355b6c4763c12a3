//! `minilet __portfwd SPEC`: a pod's hostPorts without CNI (see [`crate::runtime::host_ports`]).
//!
//! 1. Bind every host port in the node's network namespace (the agent's). One that fails
//!    fails the helper before anything is forwarded: the agent refuses the pod's start.
//! 2. Join the pause's network namespace. This process is single-threaded here, so the
//!    whole process moves; the sockets bound in 1 stay in the node's namespace, and every
//!    socket made from now on (the connections to the container) is in the pod's.
//! 3. Record its identity, report, let go of the agent's pipes, and forward: each TCP
//!    connection to a new connection to `127.0.0.1:containerPort` (with loopback only,
//!    that is where a container listens), each UDP client to its own socket (a session
//!    that ends after [`UDP_IDLE`] without traffic), until the pause exits or SIGTERM.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::{read_spec, report};
use crate::atomic_file;
use crate::file_modes;
use crate::runtime::host_ports::{HostPort, PortForwardSpec, Protocol};
use crate::runtime::process::{PidFd, ProcessId};

/// A UDP client's session ends after this long without a datagram either way (the
/// kernel's conntrack keeps a replied UDP flow 120s; a forwarder need not hold sockets longer).
const UDP_IDLE: Duration = Duration::from_secs(120);

/// The largest UDP payload.
const DATAGRAM: usize = 65_535;

enum Bound {
    Tcp(std::net::TcpListener, HostPort),
    Udp(std::net::UdpSocket, HostPort),
}

pub fn main(spec_path: &OsStr) -> ExitCode {
    let spec: PortForwardSpec = match read_spec(Path::new(spec_path)) {
        Ok(s) => s,
        Err(e) => {
            report::<ProcessId>(&Err(e));
            return ExitCode::FAILURE;
        }
    };
    match start(&spec) {
        Ok((bound, pause, me)) => {
            report(&Ok(me));
            let log = detach_stdio(&spec.log_path);
            serve(bound, pause, log);
            ExitCode::SUCCESS
        }
        Err(msg) => {
            report::<ProcessId>(&Err(msg));
            ExitCode::FAILURE
        }
    }
}

fn start(spec: &PortForwardSpec) -> Result<(Vec<Bound>, PidFd, ProcessId), String> {
    // Terminal signals aimed at the agent's session never reach the forwarder.
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    let mut bound = Vec::with_capacity(spec.ports.len());
    for p in &spec.ports {
        let addr = SocketAddr::new(p.host_ip, p.host_port);
        // The kubelet's words for a taken port: "cannot open hostport N for pod P: ...".
        let failed = |e: std::io::Error| {
            format!(
                "cannot open hostport {} for pod {}: listen {} {addr}: {e}",
                p.host_port,
                spec.pod,
                p.protocol.as_str().to_lowercase()
            )
        };
        bound.push(match p.protocol {
            // std sets SO_REUSEADDR on listeners, so connections of a previous forwarder
            // in TIME_WAIT do not keep the port from a new one.
            Protocol::Tcp => Bound::Tcp(std::net::TcpListener::bind(addr).map_err(failed)?, *p),
            Protocol::Udp => Bound::Udp(std::net::UdpSocket::bind(addr).map_err(failed)?, *p),
            Protocol::Sctp => return Err(format!("hostPort {p}: SCTP is not forwarded without a CNI network")),
        });
    }
    let pause = spec
        .pause
        .open()
        .map_err(|e| format!("open pidfd of pause {}: {e}", spec.pause))?
        .ok_or_else(|| format!("pod sandbox is not running (pause pid {} is gone)", spec.pause))?;
    nix::sched::setns(pause.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns(net) into pause {}: {e}", spec.pause))?;
    let me = ProcessId::of(nix::unistd::getpid().as_raw()).map_err(|e| format!("own identity: {e}"))?;
    atomic_file::write_json(&spec.state_path, &me).map_err(|e| format!("write {}: {e}", spec.state_path.display()))?;
    Ok((bound, pause, me))
}

/// Stdout to /dev/null (the agent reads it to EOF), stderr to the pod's `portfwd.log`.
/// SIGTERM keeps its default action: the agent stops a forwarder with it, and the kernel
/// closes the ports as the process ends.
fn detach_stdio(log_path: &Path) -> Log {
    use std::os::fd::AsFd;
    if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null.as_fd());
    }
    let file = std::fs::File::options()
        .create(true)
        .append(true)
        .mode(file_modes::STATE_FILE)
        .open(log_path);
    if let Ok(f) = &file {
        let _ = nix::unistd::dup2_stderr(f.as_fd());
    }
    use nix::sys::signal::{SigHandler, Signal, signal};
    for (sig, handler) in [
        (Signal::SIGHUP, SigHandler::SigIgn),
        (Signal::SIGINT, SigHandler::SigIgn),
        (Signal::SIGTERM, SigHandler::SigDfl),
    ] {
        // SAFETY: SIG_IGN and SIG_DFL install no handler code.
        let _ = unsafe { signal(sig, handler) };
    }
    Log(Arc::new(Mutex::new(file.ok())))
}

/// The forwarder's own log (what goes wrong with a connection), capped so a client that
/// keeps failing cannot fill the state directory.
#[derive(Clone)]
struct Log(Arc<Mutex<Option<std::fs::File>>>);

const LOG_CAP: u64 = 1 << 20;

impl Log {
    fn line(&self, msg: std::fmt::Arguments<'_>) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = guard.as_mut()
            && f.metadata().map(|m| m.len()).unwrap_or(0) < LOG_CAP
        {
            let _ = writeln!(f, "{} {msg}", jiff::Timestamp::now());
        }
    }
}

fn serve(bound: Vec<Bound>, pause: PidFd, log: Log) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log.line(format_args!("cannot start: {e}"));
            return;
        }
    };
    rt.block_on(async move {
        for b in bound {
            let started = match b {
                Bound::Tcp(l, p) => l
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(l))
                    .map(|l| drop(tokio::spawn(tcp(l, p, log.clone())))),
                Bound::Udp(s, p) => s
                    .set_nonblocking(true)
                    .and_then(|()| UdpSocket::from_std(s))
                    .map(|s| drop(tokio::spawn(udp(s, p, log.clone())))),
            };
            if let Err(e) = started {
                log.line(format_args!("cannot serve a host port: {e}"));
            }
        }
        // The pod's network is gone with its pause: nothing left to forward to.
        if let Err(e) = pause.exited().await {
            log.line(format_args!("cannot watch the pause: {e}"));
        }
    });
}

/// Where a pod's container listens: its loopback, in the family of the host address.
fn target(p: &HostPort) -> SocketAddr {
    let lo = match p.host_ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(lo, p.container_port)
}

async fn tcp(listener: TcpListener, p: HostPort, log: Log) {
    loop {
        let (mut client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                log.line(format_args!("accept on {p}: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let log = log.clone();
        tokio::spawn(async move {
            // Nothing listening in the pod: the client's connection is closed at once.
            let mut pod = match TcpStream::connect(target(&p)).await {
                Ok(s) => s,
                Err(e) => {
                    log.line(format_args!(
                        "{peer} -> {p}: connect to pod port {}: {e}",
                        p.container_port
                    ));
                    return;
                }
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut pod).await;
        });
    }
}

/// One UDP client's socket in the pod and when it last carried a datagram either way.
struct Session {
    pod: Arc<UdpSocket>,
    last: Instant,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

fn lock(sessions: &Sessions) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Session>> {
    sessions.lock().unwrap_or_else(|e| e.into_inner())
}

async fn udp(host: UdpSocket, p: HostPort, log: Log) {
    let host = Arc::new(host);
    // One socket in the pod per client address; replies from the container go back to
    // that client from the host port.
    let sessions: Sessions = Arc::default();
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let (n, client) = match host.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                log.line(format_args!("receive on {p}: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let existing = lock(&sessions).get_mut(&client).map(|s| {
            s.last = Instant::now();
            s.pod.clone()
        });
        let pod = match existing {
            Some(s) => s,
            None => match open_session(&p).await {
                Ok(s) => {
                    let s = Arc::new(s);
                    let session = Session {
                        pod: s.clone(),
                        last: Instant::now(),
                    };
                    lock(&sessions).insert(client, session);
                    tokio::spawn(replies(s.clone(), host.clone(), client, sessions.clone()));
                    s
                }
                Err(e) => {
                    log.line(format_args!("{client} -> {p}: open a socket to the pod: {e}"));
                    continue;
                }
            },
        };
        // A refused send (nothing listens yet) drops the datagram, as the network would.
        let _ = pod.send(&buf[..n]).await;
    }
}

async fn open_session(p: &HostPort) -> std::io::Result<UdpSocket> {
    let to = target(p);
    let s = UdpSocket::bind(SocketAddr::new(to.ip(), 0)).await?;
    s.connect(to).await?;
    Ok(s)
}

/// Carry the container's replies to `client` until the session has been idle for
/// [`UDP_IDLE`] in both directions; then its socket in the pod closes.
async fn replies(pod: Arc<UdpSocket>, host: Arc<UdpSocket>, client: SocketAddr, sessions: Sessions) {
    let mut buf = vec![0u8; DATAGRAM];
    let mut deadline = Instant::now() + UDP_IDLE;
    loop {
        match tokio::time::timeout_at(deadline.into(), pod.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let _ = host.send_to(&buf[..n], client).await;
                if let Some(s) = lock(&sessions).get_mut(&client) {
                    s.last = Instant::now();
                }
            }
            // ECONNREFUSED for an earlier datagram nobody took: the session stays.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Ok(Err(_)) => {
                lock(&sessions).remove(&client);
                return;
            }
            Err(_) => {
                let mut map = lock(&sessions);
                let last = map.get(&client).map_or(deadline - UDP_IDLE, |s| s.last);
                if last.elapsed() >= UDP_IDLE {
                    map.remove(&client);
                    return;
                }
                deadline = last + UDP_IDLE;
            }
        }
    }
}
