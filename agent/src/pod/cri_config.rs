//! A static pod as the kubelet would hand it to a CRI runtime: the `PodSandboxConfig` its
//! kuberuntime generates (metadata with the attempt, the kubelet's labels and annotations,
//! hostname, DNS, log directory, port mappings, cgroup parent, namespaces and the pod's
//! security context). The static-pod side will drive the runtime through
//! [`crate::cri::service::RuntimeService`] with these (docs/architecture.md, step C).
//!
//! The equivalence tests below check that the runtime's reading of this configuration
//! ([`crate::runtime::cri::translate::sandbox`]) is what the static pods get today
//! ([`super::config::sandbox_config`]), and name every field where it is not.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use minilet_proto::runtime::v1 as cri;

use super::config::{PodPlan, pod_hostname, resolv_conf};
use super::node::NodeInfo;
use super::qos;
use crate::cgroups::Resources;
use crate::cri::convert::{CONFIG_HASH, CONFIG_SOURCE, POD_NAME, POD_NAMESPACE, POD_UID};

/// What the sandbox of one static pod is made from.
pub struct SandboxInputs<'a> {
    pub pod: &'a Pod,
    pub uid: &'a str,
    pub plan: &'a PodPlan,
    pub node: &'a NodeInfo,
    /// How many sandboxes this pod had before (the kubelet's attempt count).
    pub attempt: u32,
    /// The node's pod log root (`--log-dir`); the pod's directory is made under it.
    pub log_root: &'a std::path::Path,
}

fn spec(pod: &Pod) -> PodSpec {
    pod.spec.clone().unwrap_or_default()
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn namespace(pod: &Pod) -> String {
    pod.metadata.namespace.clone().unwrap_or_else(|| "default".into())
}

/// The kubelet's sandbox labels: the pod's own, and who the pod is.
pub fn pod_labels(pod: &Pod, uid: &str) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    l.insert(POD_NAME.into(), name(pod));
    l.insert(POD_NAMESPACE.into(), namespace(pod));
    l.insert(POD_UID.into(), uid.into());
    l
}

/// The kubelet's sandbox annotations for a pod from a file: the pod's own, its source, and
/// the hash its UID is made of (`kubernetes.io/config.seen` is added by the caller that
/// knows when the pod was first seen).
pub fn pod_annotations(pod: &Pod, uid: &str) -> HashMap<String, String> {
    let mut a: HashMap<String, String> = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    a.insert(CONFIG_SOURCE.into(), "file".into());
    a.insert(CONFIG_HASH.into(), uid.into());
    a
}

/// `resolv.conf` text as the CRI's DnsConfig (servers, searches, options as `name[:value]`).
fn dns_config(resolv: &str) -> cri::DnsConfig {
    let mut d = cri::DnsConfig::default();
    for line in resolv.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => d.servers.extend(words.next().map(str::to_string)),
            Some("search") => d.searches = words.map(str::to_string).collect(),
            Some("options") => d.options = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    d
}

fn protocol(p: Option<&str>) -> i32 {
    match p {
        Some("UDP") => cri::Protocol::Udp as i32,
        Some("SCTP") => cri::Protocol::Sctp as i32,
        _ => cri::Protocol::Tcp as i32,
    }
}

/// Every port of the pod's app containers, as the kubelet's MakePortMappings lists them (a
/// port without a host port documents the container's port; duplicates are dropped).
fn port_mappings(spec: &PodSpec) -> Vec<cri::PortMapping> {
    let mut out: Vec<cri::PortMapping> = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            let m = cri::PortMapping {
                protocol: protocol(p.protocol.as_deref()),
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            };
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}

/// The pod's namespaces as the kubelet's namespacesForPod decides them.
fn namespace_options(spec: &PodSpec) -> cri::NamespaceOption {
    let mode = |node: bool, otherwise: cri::NamespaceMode| {
        if node {
            cri::NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    let pid = if spec.host_pid == Some(true) {
        cri::NamespaceMode::Node
    } else if spec.share_process_namespace == Some(true) {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    };
    cri::NamespaceOption {
        network: mode(spec.host_network == Some(true), cri::NamespaceMode::Pod),
        pid: pid as i32,
        ipc: mode(spec.host_ipc == Some(true), cri::NamespaceMode::Pod),
        target_id: String::new(),
        userns_options: None,
    }
}

/// Cgroup settings as the CRI's LinuxContainerResources.
pub fn linux_resources(r: &Resources) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_shares: r.cpu_shares.map_or(0, |s| s as i64),
        cpu_quota: r.cpu_quota.unwrap_or(0),
        cpu_period: r.cpu_period.map_or(0, |p| p as i64),
        memory_limit_in_bytes: r.memory_limit.unwrap_or(0),
        ..Default::default()
    }
}

/// The pod's security context as the sandbox's.
fn sandbox_security_context(spec: &PodSpec) -> cri::LinuxSandboxSecurityContext {
    let psc = spec.security_context.clone().unwrap_or_default();
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true));
    cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(spec)),
        run_as_user: psc.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: psc.run_as_group.map(|value| cri::Int64Value { value }),
        supplemental_groups: psc
            .supplemental_groups
            .iter()
            .flatten()
            .copied()
            .chain(psc.fs_group)
            .collect(),
        supplemental_groups_policy: if psc.supplemental_groups_policy.as_deref() == Some("Strict") {
            cri::SupplementalGroupsPolicy::Strict as i32
        } else {
            cri::SupplementalGroupsPolicy::Merge as i32
        },
        privileged,
        ..Default::default()
    }
}

/// The PodSandboxConfig the kubelet's generatePodSandboxConfig makes of a static pod.
pub fn pod_sandbox_config(i: &SandboxInputs) -> cri::PodSandboxConfig {
    let spec = spec(i.pod);
    let host_network = spec.host_network == Some(true);
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name(i.pod),
            uid: i.uid.to_string(),
            namespace: namespace(i.pod),
            attempt: i.attempt,
        }),
        // A host-network pod has the node's hostname: the kubelet leaves it empty.
        hostname: if host_network {
            String::new()
        } else {
            pod_hostname(i.pod)
        },
        log_directory: crate::runtime::logs::pod_log_dir(i.log_root, &namespace(i.pod), &name(i.pod), i.uid)
            .display()
            .to_string(),
        dns_config: Some(dns_config(&resolv_conf(i.pod, &i.node.resolv_conf))),
        port_mappings: port_mappings(&spec),
        labels: pod_labels(i.pod, i.uid),
        annotations: pod_annotations(i.pod, i.uid),
        linux: Some(cri::LinuxPodSandboxConfig {
            // Absolute, as the kubelet's cgroupfs parent is; the runtime places it under its own.
            cgroup_parent: format!("/{}", i.plan.cgroup),
            security_context: Some(sandbox_security_context(&spec)),
            sysctls,
            overhead: None,
            resources: Some(linux_resources(&qos::pod_resources(&spec, i.plan.qos))),
        }),
        windows: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cri::translate;
    use crate::runtime::network::PortMapping;
    use crate::runtime::state::Layout;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("test manifest")
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "node1".into(),
            host_ip: Some("10.0.0.5".into()),
            cpus: 2,
            memory_bytes: 4 << 30,
            resolv_conf: "nameserver 10.0.0.2\nsearch corp.example\noptions ndots:2 edns0\n".into(),
            hosts: "127.0.0.1 localhost\n".into(),
        }
    }

    /// Where the runtime's reading of the generated config and today's static sandbox differ.
    #[derive(Debug, PartialEq, Eq)]
    enum Difference {
        /// The generated config lists only app containers' ports, as the kubelet does; the
        /// static path also forwards sidecars' host ports.
        SidecarHostPorts,
    }

    /// The generated config, read by the runtime as a CRI client's would be, against what
    /// the static path decides today, field by field: the differences found.
    fn compare(yaml: &str) -> Vec<Difference> {
        let p = pod(yaml);
        let uid = "u1";
        let plan = PodPlan::new(&p, uid);
        let node = node();
        let layout = Layout::new(std::path::Path::new("/nonexistent/minilet-root"));
        let today = super::super::config::sandbox_config(&layout, &p, uid, &plan, &node).expect("today's config");
        let generated = pod_sandbox_config(&SandboxInputs {
            pod: &p,
            uid,
            plan: &plan,
            node: &node,
            attempt: 0,
            log_root: std::path::Path::new("/nonexistent/minilet-logs"),
        });
        let read = translate::sandbox(&generated, &node).expect("the runtime accepts the generated config");
        assert_eq!(read.cgroup, today.cgroup, "cgroup");
        assert_eq!(read.namespaces, today.namespaces, "namespaces");
        assert_eq!(read.share_pid, plan.share_pid, "shared PID namespace");
        assert_eq!(read.hostname, today.hostname, "hostname");
        assert_eq!(read.resolv_conf, today.etc.resolv_conf, "resolv.conf");
        assert_eq!(read.resources, today.resources, "pod cgroup resources");
        let mut diffs = Vec::new();
        let read_ports: Vec<PortMapping> = read.host_ports.iter().map(PortMapping::from).collect();
        if read_ports != today.network.port_mappings {
            let sidecars = super::super::host_ports::forwarded(&spec(&p)).len();
            assert!(
                sidecars > read_ports.len(),
                "host ports differ other than by sidecars: {read_ports:?} vs {:?}",
                today.network.port_mappings
            );
            diffs.push(Difference::SidecarHostPorts);
        }
        diffs
    }

    #[test]
    fn kubelet_metadata_labels_annotations_and_log_directory() {
        let p = pod(
            "metadata: {name: web, namespace: shop, labels: {app: web}, annotations: {note: x}}\nspec: {containers: [{name: a, image: busybox}]}",
        );
        let plan = PodPlan::new(&p, "u1");
        let node = node();
        let c = pod_sandbox_config(&SandboxInputs {
            pod: &p,
            uid: "u1",
            plan: &plan,
            node: &node,
            attempt: 2,
            log_root: std::path::Path::new("/logs"),
        });
        let m = c.metadata.expect("metadata");
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str(), m.uid.as_str(), m.attempt),
            ("web", "shop", "u1", 2)
        );
        for (k, v) in [
            ("app", "web"),
            (POD_NAME, "web"),
            (POD_NAMESPACE, "shop"),
            (POD_UID, "u1"),
        ] {
            assert_eq!(c.labels.get(k).map(String::as_str), Some(v), "label {k}");
        }
        for (k, v) in [("note", "x"), (CONFIG_SOURCE, "file"), (CONFIG_HASH, "u1")] {
            assert_eq!(c.annotations.get(k).map(String::as_str), Some(v), "annotation {k}");
        }
        assert_eq!(c.log_directory, "/logs/shop_web_u1");
        assert_eq!(c.hostname, "web");
        let dns = c.dns_config.expect("dns");
        assert_eq!(dns.servers, ["10.0.0.2"]);
        assert_eq!(dns.searches, ["corp.example"]);
        assert_eq!(dns.options, ["ndots:2", "edns0"]);
        let linux = c.linux.expect("linux");
        assert_eq!(linux.cgroup_parent, "/kubepods/besteffort/podu1");
        let ns = linux
            .security_context
            .and_then(|s| s.namespace_options)
            .expect("namespaces");
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
        assert_eq!(ns.ipc, cri::NamespaceMode::Pod as i32);
    }

    #[test]
    fn the_runtime_reads_a_plain_pod_as_the_static_path_makes_it() {
        assert_eq!(
            compare("metadata: {name: plain}\nspec: {containers: [{name: a, image: busybox}]}"),
            []
        );
    }

    #[test]
    fn the_runtime_reads_host_namespaces_and_host_ports_as_the_static_path_makes_them() {
        let host = "metadata: {name: h, namespace: kube-system}
spec:
  hostNetwork: true
  hostPID: true
  hostIPC: true
  containers: [{name: a, image: busybox, ports: [{containerPort: 8080, hostPort: 8080}]}]";
        assert_eq!(compare(host), []);
        let shared = "metadata: {name: s}
spec:
  shareProcessNamespace: true
  hostname: a-very-long-hostname-that-is-cut-to-sixty-three-characters-by-the-kubelet-x
  containers:
  - name: a
    image: busybox
    ports:
    - {containerPort: 80, hostPort: 8080}
    - {containerPort: 53, hostPort: 5353, protocol: UDP, hostIP: 127.0.0.1}
    - {containerPort: 9090}";
        assert_eq!(compare(shared), []);
    }

    #[test]
    fn the_runtime_reads_resources_and_dns_as_the_static_path_makes_them() {
        let guaranteed = "metadata: {name: g}
spec:
  containers:
  - {name: a, image: busybox, resources: {limits: {cpu: 500m, memory: 64Mi}}}
  - {name: b, image: busybox, resources: {limits: {cpu: '1', memory: 32Mi}}}";
        assert_eq!(compare(guaranteed), []);
        let burstable = "metadata: {name: b}
spec:
  dnsPolicy: None
  dnsConfig: {nameservers: [1.1.1.1], searches: [a.example, b.example], options: [{name: ndots, value: '5'}, {name: rotate}]}
  containers:
  - {name: a, image: busybox, resources: {requests: {cpu: 100m, memory: 16Mi}, limits: {memory: 32Mi}}}";
        assert_eq!(compare(burstable), []);
        let merged = "metadata: {name: m}
spec:
  dnsConfig: {nameservers: [10.0.0.2, 9.9.9.9], options: [{name: ndots, value: '1'}]}
  containers: [{name: a, image: busybox}]";
        assert_eq!(compare(merged), []);
    }

    #[test]
    fn sidecar_host_ports_are_the_known_difference() {
        let sidecar = "metadata: {name: sc}
spec:
  initContainers:
  - {name: proxy, image: busybox, restartPolicy: Always, ports: [{containerPort: 90, hostPort: 9090}]}
  containers:
  - {name: a, image: busybox, ports: [{containerPort: 80, hostPort: 8080}]}";
        assert_eq!(compare(sidecar), [Difference::SidecarHostPorts]);
    }

    #[test]
    fn pod_sysctls_are_carried_and_the_runtime_refuses_them() {
        // The static path ignores spec.securityContext.sysctls today; the kubelet passes them
        // and the CRI runtime refuses what it cannot apply. Either the runtime learns sysctls
        // or the static path refuses the pod, before static pods go through the CRI.
        let p = pod("metadata: {name: sy}
spec:
  securityContext: {sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: '0'}]}
  containers: [{name: a, image: busybox}]");
        let plan = PodPlan::new(&p, "u1");
        let node = node();
        let c = pod_sandbox_config(&SandboxInputs {
            pod: &p,
            uid: "u1",
            plan: &plan,
            node: &node,
            attempt: 0,
            log_root: std::path::Path::new("/logs"),
        });
        let linux = c.linux.clone().expect("linux");
        assert_eq!(
            linux
                .sysctls
                .get("net.ipv4.ip_unprivileged_port_start")
                .map(String::as_str),
            Some("0")
        );
        let err = translate::sandbox(&c, &node).expect_err("sysctls refused");
        assert!(matches!(err, crate::runtime::RuntimeError::Unimplemented(_)), "{err:?}");
    }
}
