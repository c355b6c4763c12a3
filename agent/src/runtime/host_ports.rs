//! hostPort without CNI: a per-pod forwarder process (`minilet __portfwd`, see
//! [`super::helper::portfwd`]) listens on the node's ports and carries each connection or
//! datagram to `127.0.0.1:containerPort` inside the pod's network namespace.
//!
//! It is a helper process rather than tasks of the agent because minilet promises that the
//! agent can be killed without losing a pod: the forwarder, like a container's monitor,
//! keeps serving while no agent runs, and a restarted agent finds it in `portfwd.json`. No
//! firewall rule is written; what the node's kernel sees is a process listening on the port.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::process::{self, ProcessId};
use super::{IoContext, Result, Runtime, RuntimeError, blocking, helper};
use crate::atomic_file;

/// A port's protocol, as Kubernetes names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// Kubernetes' spelling; `None` for anything else (validation refuses it earlier).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One hostPort of a pod: the node's `host_ip:host_port` (all addresses when unspecified)
/// carried to the pod's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostPort {
    pub protocol: Protocol,
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

impl HostPort {
    /// Whether both would need the same port of the node: same protocol and port, and the
    /// same address or either on all addresses (the kubelet's HostPortInfo conflict rule).
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip || self.host_ip.is_unspecified() || other.host_ip.is_unspecified())
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = std::net::SocketAddr::new(self.host_ip, self.host_port);
        write!(f, "{addr}/{}", self.protocol)
    }
}

/// Input of `minilet __portfwd`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortForwardSpec {
    /// The pod, for messages (`namespace/name`).
    pub pod: String,
    /// The pause whose network namespace the connections go into; the forwarder ends with it.
    pub pause: ProcessId,
    pub ports: Vec<HostPort>,
    /// Where the forwarder records its identity before it reports.
    pub state_path: PathBuf,
    /// Where it writes what goes wrong once it runs (no agent may be listening).
    pub log_path: PathBuf,
}

/// The forwarder's identity in the pod's state directory.
pub const PORTFWD_STATE: &str = "portfwd.json";
const PORTFWD_SPEC: &str = "portfwd-spec.json";
const PORTFWD_LOG: &str = "portfwd.log";

/// How long to wait for a forwarder to go after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl Runtime {
    /// Open the pod's host ports and start forwarding them into the network namespace of
    /// `pause`. Every port is bound before this returns, or none is: a port already taken
    /// fails the whole call (the kubelet's "cannot open hostport") and leaves nothing open.
    pub async fn start_host_ports(
        &self,
        pod_dir: &Path,
        pod: &str,
        pause: ProcessId,
        ports: &[HostPort],
    ) -> Result<ProcessId> {
        if let Some(p) = ports.iter().find(|p| p.protocol == Protocol::Sctp) {
            return Err(RuntimeError::InvalidArgument(format!(
                "hostPort {p}: SCTP is not forwarded without a CNI network (only TCP and UDP are)"
            )));
        }
        let spec = PortForwardSpec {
            pod: pod.to_string(),
            pause,
            ports: ports.to_vec(),
            state_path: pod_dir.join(PORTFWD_STATE),
            log_path: pod_dir.join(PORTFWD_LOG),
        };
        let spec_path = pod_dir.join(PORTFWD_SPEC);
        let write_path = spec_path.clone();
        blocking("write the port forwarder's spec", move || {
            atomic_file::write_json(&write_path, &spec).context(|| format!("write {}", write_path.display()))
        })
        .await?;
        self.run_helper(helper::PORTFWD, &spec_path).await
    }

    /// The pod's forwarder, if one is recorded and still runs.
    pub async fn host_ports_forwarder(&self, pod_dir: &Path) -> Option<ProcessId> {
        let path = pod_dir.join(PORTFWD_STATE);
        let read = blocking("read the port forwarder's state", move || {
            Ok(std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<ProcessId>(&b).ok()))
        });
        read.await.ok().flatten().filter(ProcessId::is_alive)
    }

    /// Close the pod's host ports: stop its forwarder and wait until it is gone (its
    /// sockets with it), so a new sandbox of the pod can bind the same ports at once.
    pub async fn stop_host_ports(&self, pod_dir: &Path) -> Result<()> {
        if let Some(id) = self.host_ports_forwarder(pod_dir).await {
            process::stop(id, Signal::SIGTERM, STOP_GRACE)
                .await
                .context(|| format!("stop port forwarder {id}"))?;
        }
        let path = pod_dir.join(PORTFWD_STATE);
        blocking(
            "remove the port forwarder's state",
            move || match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(RuntimeError::io(format!("remove {}", path.display()), e))
                }
                _ => Ok(()),
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(protocol: Protocol, ip: &str, host_port: u16) -> HostPort {
        HostPort {
            protocol,
            host_ip: ip.parse().unwrap(),
            host_port,
            container_port: 80,
        }
    }

    #[test]
    fn conflicts_follow_the_kubelet_rule() {
        let any = port(Protocol::Tcp, "0.0.0.0", 8080);
        let lo = port(Protocol::Tcp, "127.0.0.1", 8080);
        let lo2 = port(Protocol::Tcp, "127.0.0.2", 8080);
        assert!(
            any.conflicts(&lo) && lo.conflicts(&any),
            "all addresses take every address"
        );
        assert!(lo.conflicts(&lo));
        assert!(!lo.conflicts(&lo2), "two distinct addresses share a port");
        assert!(
            !any.conflicts(&port(Protocol::Udp, "0.0.0.0", 8080)),
            "TCP and UDP are separate"
        );
        assert!(!any.conflicts(&port(Protocol::Tcp, "0.0.0.0", 8081)));
        assert!(port(Protocol::Tcp, "::", 8080).conflicts(&lo));
    }

    #[test]
    fn protocol_spelling_is_kubernetes() {
        assert_eq!(Protocol::parse("UDP"), Some(Protocol::Udp));
        assert_eq!(Protocol::parse("udp"), None);
        assert_eq!(port(Protocol::Udp, "127.0.0.1", 53).to_string(), "127.0.0.1:53/UDP");
        assert_eq!(
            serde_json::to_string(&Protocol::Tcp).unwrap(),
            "\"TCP\"",
            "state files use the Kubernetes names"
        );
    }
}
