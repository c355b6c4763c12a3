//! A pod's hostPorts as the node sees them: what admission counts against other pods, and
//! what the forwarder (see [`crate::runtime::host_ports`]) or CNI's portmap opens.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::runtime::host_ports::{HostPort, Protocol};

/// The containers whose ports the pod holds while it runs: app containers and sidecars
/// (init containers with `restartPolicy: Always`); ordinary init containers end first.
fn long_running(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .chain(spec.containers.iter())
}

/// The node ports the pod takes. A hostNetwork pod's container ports are host ports
/// themselves (the API server defaults `hostPort` to `containerPort` for them). An empty
/// `hostIP` is all addresses; one that is not an address is skipped (validation refuses it).
pub fn of_pod(spec: &PodSpec) -> Vec<HostPort> {
    ports_of(long_running(spec), spec.host_network == Some(true))
}

/// The host ports `containers` ask for, each once.
fn ports_of<'a>(containers: impl Iterator<Item = &'a Container>, host_network: bool) -> Vec<HostPort> {
    let mut out: Vec<HostPort> = Vec::new();
    for p in containers.flat_map(|c| c.ports.iter().flatten()) {
        let host_port = match p.host_port {
            Some(h) if h > 0 => h,
            _ if host_network => p.container_port,
            _ => continue,
        };
        let host_ip = match p.host_ip.as_deref().unwrap_or_default() {
            "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            s => match s.parse() {
                Ok(ip) => ip,
                Err(_) => continue,
            },
        };
        let (Ok(host_port), Ok(container_port)) = (u16::try_from(host_port), u16::try_from(p.container_port)) else {
            continue;
        };
        let port = HostPort {
            protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("TCP")).unwrap_or(Protocol::Tcp),
            host_ip,
            host_port,
            container_port,
        };
        if !out.contains(&port) {
            out.push(port);
        }
    }
    out
}

/// The ports opened for the pod: its app containers' only, as the kubelet's `port_mappings`
/// list them (`spec.containers`, not sidecars, though admission counts theirs); none for a
/// hostNetwork pod, whose containers listen on the node's ports themselves. (The runtime
/// opens what the generated `port_mappings` ask for; this is the equivalence tests' rule.)
#[cfg(test)]
pub fn forwarded(spec: &PodSpec) -> Vec<HostPort> {
    if spec.host_network == Some(true) {
        return Vec::new();
    }
    ports_of(spec.containers.iter(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn host_ports_of_apps_and_sidecars_only() {
        let s = spec(
            "containers:\n- {name: a, ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81}, {containerPort: 53, hostPort: 5353, protocol: UDP, hostIP: 127.0.0.1}]}\ninitContainers:\n- {name: s, restartPolicy: Always, ports: [{containerPort: 90, hostPort: 9090}]}\n- {name: i, ports: [{containerPort: 91, hostPort: 9191}]}\n",
        );
        let got: Vec<String> = of_pod(&s)
            .iter()
            .map(|p| format!("{p}->{}", p.container_port))
            .collect();
        assert_eq!(
            got,
            ["0.0.0.0:9090/TCP->90", "0.0.0.0:8080/TCP->80", "127.0.0.1:5353/UDP->53"]
        );
        // Opened: the app container's only, as the kubelet's portMappings.
        let opened: Vec<u16> = forwarded(&s).iter().map(|p| p.host_port).collect();
        assert_eq!(opened, [8080, 5353]);
    }

    #[test]
    fn host_network_ports_are_host_ports_but_not_forwarded() {
        let s = spec("hostNetwork: true\ncontainers:\n- {name: a, ports: [{containerPort: 80}]}\n");
        assert_eq!(of_pod(&s).iter().map(|p| p.host_port).collect::<Vec<_>>(), [80]);
        assert!(forwarded(&s).is_empty());
    }
}
