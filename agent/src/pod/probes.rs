//! Container probes (liveness, readiness, startup) as the kubelet runs them.
//!
//! One task per (container attempt, probe kind) probes on its period and counts consecutive
//! results against the thresholds; when the thresholded result changes it tells the pod
//! worker ([`super::worker::Event::Probe`]), which owns the container's state: readiness sets
//! `ready`, a liveness or startup failure kills the container (the restart policy and back-off
//! do the rest), a startup success releases the other two probes. The tasks are aborted with
//! their attempt ([`Running`] aborts them when dropped), so a new attempt starts fresh.
//!
//! Handlers: exec through the runtime's ExecSync, as the kubelet runs it (timeout enforced,
//! the helper and the command killed on expiry), httpGet, tcpSocket and grpc from inside the pod's network
//! namespace (see [`connect`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe as ProbeSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::worker::Event;
use crate::events::{Events, ObjectRef};
use crate::pod::attempt::AttemptStatus;
use crate::runtime::RuntimeError;
use crate::runtime::exec::ExecResult;
use crate::runtime::process::ProcessId;

/// The most of a probe's output (exec) or response body (httpGet) that is kept, as the
/// kubelet keeps it.
pub const MAX_OUTPUT: usize = 10 * 1024;

/// How many redirects an HTTP probe follows (Go's http.Client default, which the kubelet keeps).
const MAX_REDIRECTS: usize = 10;

/// The User-Agent the kubelet sends (its version: the API version minilet implements).
const USER_AGENT: &str = "kube-probe/1.33";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 3] = [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness];

    /// The container field.
    pub fn field(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "livenessProbe",
            ProbeKind::Readiness => "readinessProbe",
            ProbeKind::Startup => "startupProbe",
        }
    }

    /// As the kubelet's events name it.
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    pub fn spec(self, c: &Container) -> Option<&ProbeSpec> {
        match self {
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
            ProbeKind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// The result of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Success, with something worth telling (an HTTP redirect not followed).
    Warning(String),
    Failure(String),
}

impl Outcome {
    fn is_success(&self) -> bool {
        !matches!(self, Outcome::Failure(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where a network probe connects. The port is resolved when the probe is built; a named
/// port the container does not declare fails every run, as in the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Empty: the pod's IP, as the kubelet takes `status.podIP` (the node's for a
    /// host-network pod); loopback where the pod has none (`--network=none`).
    pub host: String,
    pub port: Result<u16, String>,
}

/// An httpGet action (a probe's or a lifecycle hook's) with Kubernetes' defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGet {
    pub target: Target,
    pub scheme: Scheme,
    /// Starts with `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl HttpGet {
    pub fn of(h: &HTTPGetAction, c: &Container) -> HttpGet {
        let path = h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
        HttpGet {
            target: Target {
                host: h.host.clone().unwrap_or_default(),
                port: resolve_port(&h.port, c),
            },
            scheme: if h.scheme.as_deref() == Some("HTTPS") {
                Scheme::Https
            } else {
                Scheme::Http
            },
            path: if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            },
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Exec(Vec<String>),
    Http(HttpGet),
    Tcp(Target),
    Grpc { target: Target, service: String },
}

/// A probe with Kubernetes' defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// Grace period for a kill this probe causes (liveness, startup), instead of the pod's.
    pub termination_grace: Option<Duration>,
}

fn seconds(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.filter(|&n| n > 0).map_or(default, |n| n as u64))
}

fn count(v: Option<i32>, default: u32) -> u32 {
    v.filter(|&n| n > 0).map_or(default, |n| n as u32)
}

/// A port by number, or by the name of one of the container's ports.
fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {name} in {}", c.name))
        }
    }
}

impl Probe {
    /// The container's probe of `kind`, with defaults; `None` without one (or without a
    /// handler, which validation refuses).
    pub fn of(kind: ProbeKind, c: &Container) -> Option<Probe> {
        let p = kind.spec(c)?;
        let handler = if let Some(exec) = &p.exec {
            Handler::Exec(exec.command.clone().unwrap_or_default())
        } else if let Some(h) = &p.http_get {
            Handler::Http(HttpGet::of(h, c))
        } else if let Some(t) = &p.tcp_socket {
            Handler::Tcp(Target {
                host: t.host.clone().unwrap_or_default(),
                port: resolve_port(&t.port, c),
            })
        } else if let Some(g) = &p.grpc {
            Handler::Grpc {
                target: Target {
                    host: String::new(),
                    port: resolve_port(&IntOrString::Int(g.port), c),
                },
                service: g.service.clone().unwrap_or_default(),
            }
        } else {
            return None;
        };
        Some(Probe {
            kind,
            handler,
            initial_delay: Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
            period: seconds(p.period_seconds, 10),
            timeout: seconds(p.timeout_seconds, 1),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
            termination_grace: p
                .termination_grace_period_seconds
                .filter(|&s| s > 0)
                .map(|s| Duration::from_secs(s as u64)),
        })
    }
}

/// Consecutive results, as the kubelet counts them: a result is reported once it has been
/// seen `threshold` times in a row.
#[derive(Debug, Default)]
pub struct Thresholds {
    last: Option<bool>,
    run: u32,
}

impl Thresholds {
    /// Count one result; `Some(result)` when it passes its threshold.
    pub fn observe(&mut self, success: bool, probe: &Probe) -> Option<bool> {
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let threshold = if success {
            probe.success_threshold
        } else {
            probe.failure_threshold
        };
        (self.run >= threshold).then_some(success)
    }
}

/// Validation of a container's probes with Kubernetes' rules and wording; each error is
/// `field.path: problem`. `path` is the container's (`spec.containers[0]`).
pub fn validate(path: &str, c: &Container, init: bool) -> Vec<String> {
    let mut errs = Vec::new();
    let sidecar = c.restart_policy.as_deref() == Some("Always");
    for kind in ProbeKind::ALL {
        let Some(p) = kind.spec(c) else { continue };
        let pp = format!("{path}.{}", kind.field());
        if init && !sidecar {
            errs.push(format!(
                "{pp}: Forbidden: may not be set for init containers without restartPolicy=Always"
            ));
            continue;
        }
        let handlers = [
            p.exec.is_some(),
            p.http_get.is_some(),
            p.tcp_socket.is_some(),
            p.grpc.is_some(),
        ]
        .iter()
        .filter(|&&h| h)
        .count();
        match handlers {
            0 => errs.push(format!("{pp}: Required value: must specify a handler type")),
            1 => {}
            _ => errs.push(format!("{pp}: Forbidden: may not specify more than 1 handler type")),
        }
        for (field, v) in [
            ("initialDelaySeconds", p.initial_delay_seconds),
            ("timeoutSeconds", p.timeout_seconds),
            ("periodSeconds", p.period_seconds),
            ("successThreshold", p.success_threshold),
            ("failureThreshold", p.failure_threshold),
        ] {
            if let Some(n) = v.filter(|&n| n < 0) {
                errs.push(format!(
                    "{pp}.{field}: Invalid value: {n}: must be greater than or equal to 0"
                ));
            }
        }
        if kind != ProbeKind::Readiness
            && let Some(n) = p.success_threshold.filter(|&n| n > 1)
        {
            errs.push(format!("{pp}.successThreshold: Invalid value: {n}: must be 1"));
        }
        if let Some(n) = p.termination_grace_period_seconds {
            if kind == ProbeKind::Readiness {
                errs.push(format!(
                    "{pp}.terminationGracePeriodSeconds: Invalid value: {n}: must not be set for readinessProbes"
                ));
            } else if n <= 0 {
                errs.push(format!(
                    "{pp}.terminationGracePeriodSeconds: Invalid value: {n}: must be greater than 0"
                ));
            }
        }
        if let Some(e) = &p.exec
            && e.command.as_ref().is_none_or(|c| c.is_empty())
        {
            errs.push(format!("{pp}.exec.command: Required value"));
        }
        if let Some(h) = &p.http_get {
            validate_port(&format!("{pp}.httpGet.port"), &h.port, &mut errs);
            if let Some(s) = h.scheme.as_deref()
                && s != "HTTP"
                && s != "HTTPS"
            {
                errs.push(format!(
                    "{pp}.httpGet.scheme: Unsupported value: {s:?}: supported values: \"HTTP\", \"HTTPS\""
                ));
            }
            for (k, hd) in h.http_headers.iter().flatten().enumerate() {
                if http::HeaderName::from_bytes(hd.name.as_bytes()).is_err() {
                    errs.push(format!(
                        "{pp}.httpGet.httpHeaders[{k}].name: Invalid value: {:?}: a valid HTTP header must consist of alphanumeric characters or '-'",
                        hd.name
                    ));
                }
            }
        }
        if let Some(t) = &p.tcp_socket {
            validate_port(&format!("{pp}.tcpSocket.port"), &t.port, &mut errs);
        }
        if let Some(g) = &p.grpc
            && !(1..=65535).contains(&g.port)
        {
            errs.push(format!(
                "{pp}.grpc.port: Invalid value: {}: must be between 1 and 65535, inclusive",
                g.port
            ));
        }
    }
    errs
}

fn validate_port(path: &str, port: &IntOrString, errs: &mut Vec<String>) {
    match port {
        IntOrString::Int(n) if !(1..=65535).contains(n) => {
            errs.push(format!("{path}: Invalid value: {n}: must be between 1 and 65535, inclusive"))
        }
        IntOrString::String(s)
            if s.is_empty()
                || s.len() > 15
                || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                || !s.bytes().any(|b| b.is_ascii_lowercase())
                || s.starts_with('-')
                || s.ends_with('-')
                || s.contains("--") =>
        {
            errs.push(format!(
                "{path}: Invalid value: {s:?}: must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), at least one letter, at most 15 characters"
            ))
        }
        _ => {}
    }
}

/// Which network namespace network probes connect from.
#[derive(Debug, Clone, Copy)]
pub enum Network {
    /// hostNetwork pods: the agent's own.
    Host,
    /// The pod's: the one its pause holds.
    Pod(ProcessId),
}

/// What a probe task (or a lifecycle hook) needs to reach its container.
pub struct Context {
    pub cri: Arc<dyn crate::cri::service::RuntimeService>,
    pub attempt: AttemptStatus,
    pub network: Network,
    /// `status.podIP`: where a probe or hook that names no host connects.
    pub pod_ip: Option<IpAddr>,
    pub events: Events,
    pub object: ObjectRef,
}

impl Context {
    /// Run `cmd` in the container to its end, as the kubelet runs exec probes and hooks:
    /// CRI ExecSync, with `timeout` in whole seconds (none for a hook). `None` when it did
    /// not end in time (it is killed).
    pub async fn exec_sync(
        &self,
        cmd: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<Option<ExecResult>, RuntimeError> {
        let req = minilet_proto::runtime::v1::ExecSyncRequest {
            container_id: self.attempt.id.clone(),
            cmd,
            timeout: timeout.map_or(0, |t| t.as_secs().max(1) as i64),
        };
        match self.cri.exec_sync(req).await {
            Ok(r) => Ok(Some(ExecResult {
                stdout: r.stdout,
                stderr: r.stderr,
                exit_code: r.exit_code,
            })),
            Err(RuntimeError::DeadlineExceeded(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The probe tasks of one running container attempt; dropping it stops them.
pub struct Running {
    tasks: Vec<tokio::task::AbortHandle>,
    /// Set once the startup probe succeeded (at once without one): liveness and readiness
    /// wait for it.
    started: watch::Sender<bool>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("tasks", &self.tasks.len()).finish()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Running {
    /// Start the container's probes; `None` if it has none.
    pub(super) fn start(spec: &Container, ctx: Context, tx: &mpsc::UnboundedSender<Event>) -> Option<Running> {
        let probes: Vec<Probe> = ProbeKind::ALL.iter().filter_map(|&k| Probe::of(k, spec)).collect();
        if probes.is_empty() {
            return None;
        }
        let gated = probes.iter().any(|p| p.kind == ProbeKind::Startup);
        let (started, _) = watch::channel(!gated);
        let ctx = Arc::new(ctx);
        let tasks = probes
            .into_iter()
            .map(|p| {
                let gate = (p.kind != ProbeKind::Startup).then(|| started.subscribe());
                tokio::spawn(run(p, ctx.clone(), gate, tx.clone())).abort_handle()
            })
            .collect();
        Some(Running { tasks, started })
    }

    /// The startup probe passed: liveness and readiness begin.
    pub fn set_started(&self) {
        self.started.send_replace(true);
    }
}

/// One probe's loop for one container attempt.
async fn run(probe: Probe, ctx: Arc<Context>, gate: Option<watch::Receiver<bool>>, tx: mpsc::UnboundedSender<Event>) {
    if let Some(mut gate) = gate
        && gate.wait_for(|started| *started).await.is_err()
    {
        return;
    }
    // initialDelaySeconds counts from the container's start, as in the kubelet.
    let started_at = ctx.attempt.started_at.unwrap_or(0);
    let since_start = Duration::from_nanos((crate::runtime::spec::now_nanos() - started_at).max(0) as u64);
    tokio::time::sleep(probe.initial_delay.saturating_sub(since_start)).await;

    let mut ticker = tokio::time::interval(probe.period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut thresholds = Thresholds::default();
    let mut reported: Option<bool> = None;
    let id = ctx.attempt.id.clone();
    loop {
        ticker.tick().await;
        let outcome = run_once(&probe, &ctx).await;
        tracing::debug!(container = %ctx.attempt.name, kind = ?probe.kind, ?outcome, "probe");
        match &outcome {
            Outcome::Failure(msg) => ctx.events.warning(
                &ctx.object,
                "Unhealthy",
                format!("{} probe failed: {msg}", probe.kind.title()),
            ),
            Outcome::Warning(msg) => ctx.events.warning(
                &ctx.object,
                "ProbeWarning",
                format!("{} probe warning: {msg}", probe.kind.title()),
            ),
            Outcome::Success => {}
        }
        let Some(result) = thresholds.observe(outcome.is_success(), &probe) else {
            continue;
        };
        if reported != Some(result) {
            reported = Some(result);
            let _ = tx.send(Event::Probe {
                id: id.clone(),
                kind: probe.kind,
                success: result,
            });
        }
        // A liveness or startup failure kills the container; a passed startup probe is done.
        if (probe.kind != ProbeKind::Readiness && !result) || (probe.kind == ProbeKind::Startup && result) {
            return;
        }
    }
}

/// Run the probe once, within its timeout.
pub async fn run_once(probe: &Probe, ctx: &Context) -> Outcome {
    match &probe.handler {
        Handler::Exec(cmd) => exec(ctx, cmd, probe.timeout).await,
        Handler::Http(get) => {
            let url_for_error = || {
                let host = match (get.target.host.as_str(), &get.target.port) {
                    ("", Ok(port)) => SocketAddr::new(default_ip(ctx.pod_ip), *port).to_string(),
                    (host, _) => host.to_string(),
                };
                format!(
                    "{}://{host}{}",
                    if get.scheme == Scheme::Https { "https" } else { "http" },
                    get.path
                )
            };
            match tokio::time::timeout(probe.timeout, http_get(ctx, get)).await {
                Ok(o) => o,
                Err(_) => Outcome::Failure(format!(
                    "Get {:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                    url_for_error()
                )),
            }
        }
        Handler::Tcp(target) => tcp(ctx, target, probe.timeout).await,
        Handler::Grpc { target, service } => grpc(ctx, target, service, probe.timeout).await,
    }
}

async fn exec(ctx: &Context, cmd: &[String], timeout: Duration) -> Outcome {
    // A timed-out command is killed with its helper (the session's guard, when dropped).
    match ctx.exec_sync(cmd.to_vec(), Some(timeout)).await {
        Err(e) => Outcome::Failure(e.to_string()),
        Ok(None) => Outcome::Failure(format!("command {:?} timed out", cmd.join(" "))),
        Ok(Some(r)) => {
            if r.exit_code == 0 {
                Outcome::Success
            } else {
                let mut out = r.stdout;
                out.extend_from_slice(&r.stderr);
                out.truncate(MAX_OUTPUT);
                Outcome::Failure(String::from_utf8_lossy(&out).into_owned())
            }
        }
    }
}

/// Where a probe naming no host goes: the pod's IP (the kubelet's `status.podIP`), else
/// loopback (a pod without a network has nothing else).
fn default_ip(pod_ip: Option<IpAddr>) -> IpAddr {
    pod_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The address a network probe connects to.
async fn address(target: &Target, pod_ip: Option<IpAddr>) -> Result<SocketAddr, String> {
    let port = target.port.clone()?;
    if target.host.is_empty() {
        return Ok(SocketAddr::new(default_ip(pod_ip), port));
    }
    if target.host == "localhost" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    // A host name: the node's resolver (the kubelet resolves it in its own namespace too).
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("lookup {host}: no such host")),
        Err(e) => Err(format!("lookup {host}: {}", go_error(&e))),
    }
}

/// An I/O error in Go's words ("connection refused"), as the kubelet's messages have them.
fn go_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => s,
    }
}

/// A TCP connection to `addr` from `network`.
///
/// For a pod's namespace, a fresh thread (never one of tokio's pooled ones) enters the
/// pause's network namespace with setns(CLONE_NEWNET), which affects that thread alone,
/// creates the socket there and exits; a socket belongs to the namespace it was created in
/// for its whole life, so the agent connects it from any thread. Nothing runs in a forked
/// copy of the agent and no other thread ever changes namespace.
pub async fn connect(network: Network, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let pause = match network {
        Network::Host => return TcpStream::connect(addr).await,
        Network::Pod(pause) => pause,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("probe-netns".into()).spawn(move || {
        let _ = tx.send(socket_in(pause, addr.is_ipv6()));
    })?;
    let socket = rx
        .await
        .map_err(|_| std::io::Error::other("the netns thread ended without an answer"))??;
    tokio::net::TcpSocket::from_std_stream(socket).connect(addr).await
}

/// On a thread of its own: a non-blocking TCP socket in `pause`'s network namespace.
fn socket_in(pause: ProcessId, v6: bool) -> std::io::Result<std::net::TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let pidfd = pause
        .open()?
        .ok_or_else(|| std::io::Error::other("the pod's sandbox is not running"))?;
    nix::sched::setns(pidfd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
    let family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    Ok(std::net::TcpStream::from(fd))
}

async fn tcp(ctx: &Context, target: &Target, timeout: Duration) -> Outcome {
    let addr = match address(target, ctx.pod_ip).await {
        Ok(a) => a,
        Err(e) => return Outcome::Failure(e),
    };
    match tokio::time::timeout(timeout, connect(ctx.network, addr)).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: connect: {}", go_error(&e))),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// What a redirect's `Location` means from `base` (`scheme://authority/path`): the next URL.
pub fn resolve_location(base: &http::Uri, location: &str) -> Option<http::Uri> {
    if location.contains("://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    let authority = base.authority()?;
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    format!("{scheme}://{authority}{path}").parse().ok()
}

/// The verdict on an HTTP probe's final response, as the kubelet gives it.
pub fn http_outcome(status: u16, body: &[u8]) -> Outcome {
    match status {
        200..=299 => Outcome::Success,
        300..=399 => Outcome::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            String::from_utf8_lossy(body)
        )),
        _ => Outcome::Failure(format!("HTTP probe failed with statuscode: {status}")),
    }
}

async fn http_get(ctx: &Context, get: &HttpGet) -> Outcome {
    match http_response(ctx, get).await {
        Ok((status, body)) => http_outcome(status, &body),
        Err(e) => Outcome::Failure(e),
    }
}

/// A GET as the kubelet's probes (and lifecycle hooks) make it, following redirects to the
/// same host: the final status and up to [`MAX_OUTPUT`] bytes of its body, or why there is
/// no answer.
pub(crate) async fn http_response(ctx: &Context, get: &HttpGet) -> Result<(u16, Vec<u8>), String> {
    let HttpGet {
        target,
        scheme,
        path,
        headers,
    } = get;
    let network = ctx.network;
    let addr = address(target, ctx.pod_ip).await?;
    let host = if target.host.is_empty() {
        addr.ip().to_string()
    } else {
        target.host.clone()
    };
    let scheme_str = if *scheme == Scheme::Https { "https" } else { "http" };
    let authority = match addr {
        SocketAddr::V6(a) => format!("[{}]:{}", host.trim_start_matches('[').trim_end_matches(']'), a.port()),
        SocketAddr::V4(a) => format!("{host}:{}", a.port()),
    };
    let first = format!("{scheme_str}://{authority}{path}");
    let Ok(mut url) = first.parse::<http::Uri>() else {
        return Err(format!("parse {first:?}: invalid URL"));
    };
    let original_host = url.host().map(str::to_string);
    for _ in 0..=MAX_REDIRECTS {
        let (status, location, body) = http_once(network, addr, &url, headers)
            .await
            .map_err(|e| format!("Get {:?}: {e}", url.to_string()))?;
        let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
        let next = location
            .as_deref()
            .filter(|_| redirect)
            .and_then(|l| resolve_location(&url, l));
        match next {
            // Only redirects to the same host are followed (the kubelet's rule); others end
            // the probe with the redirect as its answer.
            Some(next) if next.host().map(str::to_string) == original_host => url = next,
            _ => return Ok((status, body)),
        }
    }
    Err(format!(
        "Get {:?}: stopped after {MAX_REDIRECTS} redirects",
        url.to_string()
    ))
}

/// One GET on a fresh connection (the kubelet disables keep-alive for probes): the status,
/// the `Location` header and up to [`MAX_OUTPUT`] bytes of the body.
async fn http_once(
    network: Network,
    default_addr: SocketAddr,
    url: &http::Uri,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>, Vec<u8>), String> {
    // A redirect may name another port of the same host.
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = SocketAddr::new(default_addr.ip(), port);
    let stream = connect(network, addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: connect: {}", go_error(&e)))?;
    if !https {
        return get_over(stream, url, headers).await;
    }
    let name = url
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("TLS server name {name:?}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(tls_config()?)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    get_over(tls, url, headers).await
}

/// The GET itself, over a connection (plain or TLS).
async fn get_over<S>(
    io: S,
    url: &http::Uri,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>, Vec<u8>), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let _abort = AbortOnDrop(conn.abort_handle());

    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let mut req = hyper::Request::get(path)
        .header(http::header::HOST, url.authority().map_or("", |a| a.as_str()))
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(http::header::ACCEPT, "*/*")
        .header(http::header::CONNECTION, "close")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    // The manifest's headers replace the defaults of the same name (Host included).
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) else {
            continue;
        };
        req.headers_mut().insert(name, value);
    }
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = resp.into_body();
    let mut kept = Vec::new();
    while kept.len() < MAX_OUTPUT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = MAX_OUTPUT - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    Ok((status, location, kept))
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// grpc.health.v1 `Check` of `service`, as the kubelet's grpc prober calls it: SERVING
/// passes, any other answer or error fails.
/// The client side of HTTPS probes: like the kubelet, any certificate is accepted (a probe
/// checks that the server answers, not who it is); the handshake's signatures are still
/// checked, so the connection is a real TLS one.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS configuration: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn grpc(ctx: &Context, target: &Target, service: &str, timeout: Duration) -> Outcome {
    use minilet_proto::grpc::health::v1::health_check_response::ServingStatus;
    use minilet_proto::grpc::health::v1::{HealthCheckRequest, health_client::HealthClient};
    let network = ctx.network;
    let addr = match address(target, ctx.pod_ip).await {
        Ok(a) => a,
        Err(e) => return Outcome::Failure(e),
    };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(USER_AGENT))
    {
        Ok(e) => e,
        Err(e) => return Outcome::Failure(format!("invalid address {addr}: {e}")),
    };
    let check = async {
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: http::Uri| async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connect(network, addr).await?))
            }))
            .await
            .map_err(|e| {
                let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |c| c.to_string());
                format!(
                    "failed to connect service {addr:?} within {}s: {cause}",
                    timeout.as_secs()
                )
            })?;
        let resp = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|s| format!("rpc error: code = {:?} desc = {}", s.code(), s.message()))?;
        Ok::<_, String>(resp.into_inner().status())
    };
    match tokio::time::timeout(timeout, check).await {
        Err(_) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
        Ok(Err(msg)) => Outcome::Failure(msg),
        Ok(Ok(ServingStatus::Serving)) => Outcome::Success,
        Ok(Ok(other)) => Outcome::Failure(format!("service unhealthy (responded with {:?})", other.as_str_name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Container {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_as_kubernetes() {
        let c = container("{name: a, livenessProbe: {exec: {command: [true]}}}");
        let p = Probe::of(ProbeKind::Liveness, &c).unwrap();
        assert_eq!(p.handler, Handler::Exec(vec!["true".into()]));
        assert_eq!(p.initial_delay, Duration::ZERO);
        assert_eq!(p.period, Duration::from_secs(10));
        assert_eq!(p.timeout, Duration::from_secs(1));
        assert_eq!((p.success_threshold, p.failure_threshold), (1, 3));
        assert_eq!(p.termination_grace, None);
        assert!(Probe::of(ProbeKind::Readiness, &c).is_none());
    }

    #[test]
    fn ports_by_name_and_http_defaults() {
        let c = container(
            "{name: a, ports: [{name: web, containerPort: 8080}], readinessProbe: {httpGet: {port: web, path: healthz, httpHeaders: [{name: X-A, value: b}]}, periodSeconds: 2, timeoutSeconds: 3, successThreshold: 2, failureThreshold: 5}, startupProbe: {tcpSocket: {port: nope}}}",
        );
        let p = Probe::of(ProbeKind::Readiness, &c).unwrap();
        assert_eq!(
            p.handler,
            Handler::Http(HttpGet {
                target: Target {
                    host: String::new(),
                    port: Ok(8080)
                },
                scheme: Scheme::Http,
                path: "/healthz".into(),
                headers: vec![("X-A".into(), "b".into())],
            })
        );
        assert_eq!((p.period, p.timeout), (Duration::from_secs(2), Duration::from_secs(3)));
        assert_eq!((p.success_threshold, p.failure_threshold), (2, 5));
        let s = Probe::of(ProbeKind::Startup, &c).unwrap();
        assert_eq!(
            s.handler,
            Handler::Tcp(Target {
                host: String::new(),
                port: Err("couldn't find port: nope in a".into())
            })
        );
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let c =
            container("{name: a, readinessProbe: {exec: {command: [x]}, successThreshold: 2, failureThreshold: 3}}");
        let p = Probe::of(ProbeKind::Readiness, &c).unwrap();
        let mut t = Thresholds::default();
        assert_eq!(t.observe(false, &p), None);
        assert_eq!(t.observe(false, &p), None);
        assert_eq!(t.observe(true, &p), None);
        assert_eq!(t.observe(false, &p), None, "a success resets the failure run");
        assert_eq!(t.observe(false, &p), None);
        assert_eq!(t.observe(false, &p), Some(false));
        assert_eq!(t.observe(false, &p), Some(false));
        assert_eq!(t.observe(true, &p), None);
        assert_eq!(t.observe(true, &p), Some(true));
    }

    #[test]
    fn http_status_verdicts() {
        assert_eq!(http_outcome(200, b""), Outcome::Success);
        assert_eq!(http_outcome(204, b""), Outcome::Success);
        assert!(matches!(http_outcome(302, b"moved"), Outcome::Warning(m) if m.ends_with("Response body: moved")));
        assert_eq!(
            http_outcome(500, b""),
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert!(!http_outcome(199, b"").is_success());
        assert!(!http_outcome(400, b"").is_success());
    }

    #[test]
    fn redirect_locations() {
        let base: http::Uri = "http://127.0.0.1:8080/a/b?x=1".parse().unwrap();
        let r = |l: &str| resolve_location(&base, l).map(|u| u.to_string());
        assert_eq!(r("/c").as_deref(), Some("http://127.0.0.1:8080/c"));
        assert_eq!(r("c").as_deref(), Some("http://127.0.0.1:8080/a/c"));
        assert_eq!(r("//10.0.0.1:81/d").as_deref(), Some("http://10.0.0.1:81/d"));
        assert_eq!(r("http://example.com/e").as_deref(), Some("http://example.com/e"));
    }

    #[test]
    fn validation_as_kubernetes() {
        let errs = |y: &str, init: bool| validate("spec.containers[0]", &container(y), init);
        assert!(errs("{name: a, livenessProbe: {exec: {command: [x]}}}", false).is_empty());
        let e = errs(
            "{name: a, livenessProbe: {exec: {command: [x]}, tcpSocket: {port: 1}, successThreshold: 2, terminationGracePeriodSeconds: 0}}",
            false,
        );
        assert!(
            e.contains(&"spec.containers[0].livenessProbe: Forbidden: may not specify more than 1 handler type".into()),
            "{e:?}"
        );
        assert!(e.contains(&"spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1".into()));
        assert!(
            e.iter()
                .any(|e| e.contains("terminationGracePeriodSeconds: Invalid value: 0: must be greater than 0"))
        );
        let e = errs(
            "{name: a, readinessProbe: {periodSeconds: -1, terminationGracePeriodSeconds: 5}}",
            false,
        );
        assert!(
            e.iter()
                .any(|e| e.ends_with("readinessProbe: Required value: must specify a handler type"))
        );
        assert!(e.iter().any(|e| e.contains("periodSeconds: Invalid value: -1")));
        assert!(e.iter().any(|e| e.contains("must not be set for readinessProbes")));
        let e = errs("{name: a, startupProbe: {httpGet: {port: 0, scheme: FTP}}}", false);
        assert_eq!(e.len(), 2, "{e:?}");
        let e = errs("{name: a, startupProbe: {exec: {command: [x]}}}", true);
        assert!(e[0].contains("Forbidden: may not be set for init containers"), "{e:?}");
        assert!(
            errs(
                "{name: a, readinessProbe: {successThreshold: 3, grpc: {port: 9000}}}",
                false
            )
            .is_empty()
        );
    }

    #[test]
    fn manifest_validation_reports_probe_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: i, livenessProbe: {exec: {command: [x]}, successThreshold: 2}}], initContainers: [{name: b, image: i, readinessProbe: {exec: {command: [x]}}}]}\n",
        )
        .unwrap();
        let err = crate::source::load_file(&path, "node").unwrap_err().message;
        assert!(
            err.contains("spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"),
            "{err}"
        );
        assert!(
            err.contains("spec.initContainers[0].readinessProbe: Forbidden"),
            "{err}"
        );
    }

    #[test]
    fn go_style_errors() {
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(go_error(&e), "connection refused");
    }
}
