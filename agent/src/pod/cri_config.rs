//! A static pod as the kubelet would hand it to a CRI runtime: the `PodSandboxConfig` and
//! `ContainerConfig`s its kuberuntime generates (metadata with the attempt, the kubelet's
//! labels and annotations, hostname, DNS, log paths, port mappings, cgroup parent,
//! namespaces, security contexts, resolved mounts, expanded environment). The static-pod side
//! will drive the runtime through [`crate::cri::service::RuntimeService`] with these
//! (docs/architecture.md, step C).
//!
//! The equivalence tests below check that the runtime's reading of these configurations
//! ([`crate::runtime::cri::translate`]) is what the static pods get today
//! ([`super::config`]), and name every field where it is not.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use minilet_proto::runtime::v1 as cri;

use super::command;
use super::config::{
    ContainerInputs, PodPlan, environment, merged_security_context, pod_hostname, resolv_conf, run_as, spec,
};
use super::node::NodeInfo;
use super::qos;
use crate::cgroups::Resources;
use crate::cri::convert::{
    CONFIG_HASH, CONFIG_SOURCE, CONTAINER_NAME, GRACE_PERIOD, POD_NAME, POD_NAMESPACE, POD_UID, RESTART_COUNT,
    TERMINATION_PATH, TERMINATION_POLICY,
};
use crate::runtime::seccomp::{self, SeccompArgs};
use crate::runtime::state::Layout;

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
    /// The pod's own directory (its volumes are there).
    pub pod_dir: &'a std::path::Path,
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
    let dns = crate::runtime::network::Dns::from_resolv_conf(resolv).unwrap_or_default();
    cri::DnsConfig {
        servers: dns.servers,
        searches: dns.searches,
        options: dns.options,
    }
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

/// The pod's supplemental groups with its fsGroup, as the kubelet passes them.
fn supplemental_groups(spec: &PodSpec) -> Vec<i64> {
    let psc = spec.security_context.as_ref();
    psc.and_then(|p| p.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(psc.and_then(|p| p.fs_group))
        .collect()
}

fn supplemental_groups_policy(spec: &PodSpec) -> i32 {
    let strict = spec
        .security_context
        .as_ref()
        .and_then(|p| p.supplemental_groups_policy.as_deref())
        == Some("Strict");
    if strict {
        cri::SupplementalGroupsPolicy::Strict as i32
    } else {
        cri::SupplementalGroupsPolicy::Merge as i32
    }
}

/// The pod's security context as the sandbox's.
fn sandbox_security_context(spec: &PodSpec) -> cri::LinuxSandboxSecurityContext {
    let psc = spec.security_context.clone().unwrap_or_default();
    cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(spec)),
        run_as_user: psc.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: psc.run_as_group.map(|value| cri::Int64Value { value }),
        supplemental_groups: supplemental_groups(spec),
        supplemental_groups_policy: supplemental_groups_policy(spec),
        privileged: super::config::has_privileged_container(spec),
        // The kubelet always asks for the runtime's default profile for the sandbox, so the
        // pod's own profile may be as strict as it likes without breaking the pause.
        seccomp: Some(security_profile(&seccomp::Request::RuntimeDefault)),
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
        port_mappings: port_mappings(spec),
        labels: pod_labels(i.pod, i.uid),
        annotations: sandbox_annotations(i),
        linux: Some(cri::LinuxPodSandboxConfig {
            // Absolute, as the kubelet's cgroupfs parent is; the runtime places it under its own.
            cgroup_parent: format!("/{}", i.plan.cgroup),
            security_context: Some(sandbox_security_context(spec)),
            sysctls,
            overhead: None,
            resources: Some(linux_resources(&qos::pod_resources(spec, i.plan.qos))),
        }),
        windows: None,
    }
}

/// The kubelet's annotations, and the pod's memory-backed emptyDirs as minilet's runtime
/// takes them (the CRI has no field for them; docs/architecture.md, sandbox difference 7).
fn sandbox_annotations(i: &SandboxInputs) -> HashMap<String, String> {
    let mut a = pod_annotations(i.pod, i.uid);
    let memory = super::volumes::memory_volumes(i.pod_dir, spec(i.pod));
    if !memory.is_empty() {
        // A list of plain structs: serializing it cannot fail.
        a.insert(
            crate::runtime::cri::translate::MEMORY_VOLUMES.into(),
            serde_json::to_string(&memory).unwrap_or_default(),
        );
    }
    a
}

/// The container's labels as the kubelet's newContainerLabels: who the pod is, and the
/// container's name.
pub fn container_labels(pod: &Pod, uid: &str, container: &str) -> HashMap<String, String> {
    HashMap::from([
        (POD_NAME.into(), name(pod)),
        (POD_NAMESPACE.into(), namespace(pod)),
        (POD_UID.into(), uid.into()),
        (CONTAINER_NAME.into(), container.into()),
    ])
}

/// The container's annotations as the kubelet's newContainerAnnotations (without the spec
/// hash, which minilet does not compute: a changed manifest replaces the whole pod). Without
/// the container's spec (an attempt of a container the manifest no longer has), only what
/// the attempt and the pod say.
pub fn container_annotations(spec: Option<&PodSpec>, c: Option<&Container>, attempt: u32) -> HashMap<String, String> {
    let mut m = HashMap::from([(RESTART_COUNT.to_string(), attempt.to_string())]);
    if let Some(c) = c {
        m.insert(
            TERMINATION_PATH.into(),
            c.termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        );
        m.insert(
            TERMINATION_POLICY.into(),
            c.termination_message_policy.clone().unwrap_or_else(|| "File".into()),
        );
    }
    if let Some(g) = spec.and_then(|s| s.termination_grace_period_seconds) {
        m.insert(GRACE_PERIOD.into(), g.to_string());
    }
    m
}

/// A seccomp request as the CRI's SecurityProfile.
fn security_profile(r: &seccomp::Request) -> cri::SecurityProfile {
    use cri::security_profile::ProfileType;
    let (profile_type, localhost_ref) = match r {
        seccomp::Request::RuntimeDefault => (ProfileType::RuntimeDefault, String::new()),
        seccomp::Request::Unconfined => (ProfileType::Unconfined, String::new()),
        seccomp::Request::Localhost(p) => (ProfileType::Localhost, p.display().to_string()),
    };
    cri::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref,
    }
}

/// Where the pod's container's log goes, relative to the sandbox's `log_directory`
/// (`<container>/<attempt>.log`, the kubelet's BuildContainerLogsPath).
fn relative_log_path(container: &str, attempt: u32) -> String {
    crate::runtime::logs::container_log_path(std::path::Path::new(""), container, attempt)
        .display()
        .to_string()
}

/// The ContainerConfig the kubelet's generateContainerConfig makes of one container of a
/// static pod: its volumes resolved to host paths (with the kubelet's own /etc/hosts and the
/// termination-log file), the environment expanded, `$(VAR)` in command and args expanded;
/// the image's entrypoint and cmd are left to the runtime, as the kubelet leaves them to
/// containerd. The sandbox's /etc/hostname, /etc/resolv.conf and /dev/shm are the runtime's.
/// Without runAsUser the image's user is sent as `run_as_user`/`run_as_username`, as the
/// kubelet sends what the runtime's ImageStatus reports ([`run_as`]).
pub fn container_config(
    layout: &Layout,
    seccomp_args: &SeccompArgs,
    node: &NodeInfo,
    i: &ContainerInputs,
) -> Result<cri::ContainerConfig, String> {
    let c = i.container;
    let spec = spec(i.pod);
    let sc = merged_security_context(spec, c);
    // The kubelet's verifyRunAsNonRoot, before anything is asked of the runtime.
    if sc.run_as_non_root == Some(true) {
        super::config::check_non_root(sc.run_as_user, &i.image.user)?;
    }
    let (_, pod_env) = environment(i.pod, c, node, i.pod_ips, &[], &i.plan.hostname)?;
    let runtime_supplied = [
        i.sandbox_dir.join("etc").join("hostname"),
        i.sandbox_dir.join("etc").join("resolv.conf"),
        i.sandbox_dir.join("shm"),
    ];
    let mounts = super::config::mounts(layout, i)?
        .into_iter()
        .filter(|m| {
            !(runtime_supplied.contains(&m.source)
                || (m.destination == "/dev/shm" && m.source == std::path::Path::new("/dev/shm")))
        })
        .map(|m| cri::Mount {
            container_path: m.destination,
            host_path: m.source.display().to_string(),
            readonly: m.readonly,
            ..Default::default()
        })
        .collect();
    let privileged = sc.privileged == Some(true);
    let run_as = run_as(&sc, &i.image.user);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let seccomp = super::security::seccomp_request(spec, c, seccomp_args)?;
    let mut resources = linux_resources(&qos::container_resources(c));
    resources.oom_score_adj = i64::from(qos::oom_score_adj(spec, i.plan.qos, c, node.memory_bytes));
    let default_paths = |paths: &[&str]| -> Vec<String> {
        if privileged {
            Vec::new()
        } else {
            paths.iter().map(|p| p.to_string()).collect()
        }
    };
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: i.attempt,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: command::expand_args(c.command.as_deref().unwrap_or_default(), &pod_env),
        args: command::expand_args(c.args.as_deref().unwrap_or_default(), &pod_env),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: pod_env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        labels: container_labels(i.pod, i.uid, &c.name),
        annotations: container_annotations(Some(spec), Some(c), i.attempt),
        log_path: relative_log_path(&c.name, i.attempt),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                    add_ambient_capabilities: Vec::new(),
                }),
                privileged,
                namespace_options: Some(namespace_options(spec)),
                run_as_user: run_as.uid.map(|value| cri::Int64Value { value }),
                run_as_username: run_as.username,
                run_as_group: sc.run_as_group.map(|value| cri::Int64Value { value }),
                readonly_rootfs: sc.read_only_root_filesystem == Some(true),
                supplemental_groups: supplemental_groups(spec),
                supplemental_groups_policy: supplemental_groups_policy(spec),
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                masked_paths: default_paths(crate::runtime::rootfs::MASKED_PATHS),
                readonly_paths: default_paths(crate::runtime::rootfs::READONLY_PATHS),
                seccomp: Some(security_profile(&seccomp)),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
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

    use super::super::config::tests::node;

    /// The generated sandbox config of `p` (uid u1, attempt 0) on `node`.
    fn generated_sandbox(p: &Pod, node: &NodeInfo) -> cri::PodSandboxConfig {
        let plan = PodPlan::new(p, "u1");
        pod_sandbox_config(&SandboxInputs {
            pod: p,
            uid: "u1",
            plan: &plan,
            node,
            attempt: 0,
            log_root: std::path::Path::new("/logs"),
            pod_dir: std::path::Path::new("/nonexistent/minilet-root/pods/u1"),
        })
    }

    /// What the static path makes of `p`'s sandbox (uid u1) today.
    fn static_sandbox(p: &Pod) -> crate::runtime::sandbox::SandboxConfig {
        let plan = PodPlan::new(p, "u1");
        let layout = Layout::new(std::path::Path::new("/nonexistent/minilet-root"));
        super::super::static_sandbox::sandbox_config(&layout, p, "u1", &plan, &node()).expect("config")
    }

    /// The generated config, read by the runtime as a CRI client's would be, against what
    /// the static path decides today, field by field: no difference is known.
    fn compare(yaml: &str) {
        compare_on(yaml, &node());
    }

    fn compare_on(yaml: &str, node: &NodeInfo) {
        let p = pod(yaml);
        let uid = "u1";
        let plan = PodPlan::new(&p, uid);
        let layout = Layout::new(std::path::Path::new("/nonexistent/minilet-root"));
        let today =
            super::super::static_sandbox::sandbox_config(&layout, &p, uid, &plan, node).expect("today's config");
        let generated = pod_sandbox_config(&SandboxInputs {
            pod: &p,
            uid,
            plan: &plan,
            node,
            attempt: 0,
            log_root: std::path::Path::new("/nonexistent/minilet-logs"),
            pod_dir: &layout.pod_dir(uid),
        });
        let read =
            translate::sandbox(&generated, node, &layout.pods_dir()).expect("the runtime accepts the generated config");
        assert_eq!(read.cgroup, today.cgroup, "cgroup");
        assert_eq!(read.namespaces, today.namespaces, "namespaces");
        assert_eq!(read.share_pid, plan.share_pid, "shared PID namespace");
        assert_eq!(read.hostname, today.hostname, "hostname");
        assert_eq!(read.resolv_conf, today.etc.resolv_conf, "resolv.conf");
        assert_eq!(read.hosts, today.etc.hosts, "the sandbox's own /etc/hosts");
        let read_dns = crate::runtime::network::Dns::from_resolv_conf(&read.resolv_conf);
        assert_eq!(read_dns, today.network.dns, "the CNI dns capability");
        assert_eq!(read.resources, today.resources, "pod cgroup resources");
        let sorted = |mut v: Vec<crate::runtime::sysctl::Sysctl>| {
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        assert_eq!(sorted(read.sysctls.clone()), sorted(today.sysctls.clone()), "sysctls");
        assert_eq!(read.pause, today.pause, "the pause's user, groups and seccomp");
        assert_eq!(read.bandwidth, today.network.bandwidth, "bandwidth");
        let read_ports: Vec<PortMapping> = read.host_ports.iter().map(PortMapping::from).collect();
        assert_eq!(read_ports, today.network.port_mappings, "host ports");
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
            pod_dir: std::path::Path::new("/nonexistent/minilet-root/pods/u1"),
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
        compare("metadata: {name: plain}\nspec: {containers: [{name: a, image: busybox}]}");
    }

    #[test]
    fn the_runtime_reads_host_namespaces_and_host_ports_as_the_static_path_makes_them() {
        let host = "metadata: {name: h, namespace: kube-system}
spec:
  hostNetwork: true
  hostPID: true
  hostIPC: true
  containers: [{name: a, image: busybox, ports: [{containerPort: 8080, hostPort: 8080}]}]";
        compare(host);
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
        compare(shared);
    }

    #[test]
    fn the_runtime_reads_resources_and_dns_as_the_static_path_makes_them() {
        let guaranteed = "metadata: {name: g}
spec:
  containers:
  - {name: a, image: busybox, resources: {limits: {cpu: 500m, memory: 64Mi}}}
  - {name: b, image: busybox, resources: {limits: {cpu: '1', memory: 32Mi}}}";
        compare(guaranteed);
        let burstable = "metadata: {name: b}
spec:
  dnsPolicy: None
  dnsConfig: {nameservers: [1.1.1.1], searches: [a.example, b.example], options: [{name: ndots, value: '5'}, {name: rotate}]}
  containers:
  - {name: a, image: busybox, resources: {requests: {cpu: 100m, memory: 16Mi}, limits: {memory: 32Mi}}}";
        compare(burstable);
        let merged = "metadata: {name: m}
spec:
  dnsConfig: {nameservers: [10.0.0.2, 9.9.9.9], options: [{name: ndots, value: '1'}]}
  containers: [{name: a, image: busybox}]";
        compare(merged);
    }

    /// A resolver naming nothing is sent as an empty DnsConfig; the runtime then gives the
    /// node's file as it is (containerd's rule), and so does the static path. (`dnsPolicy:
    /// None` with no nameserver does not get here: validation refuses it, as the kubelet's.)
    #[test]
    fn an_empty_dns_config_gives_the_nodes_file_on_both_paths() {
        let mut quiet = node();
        quiet.resolv_conf = "# no resolver configured\nsortlist 10.0.0.0/8\n".into();
        for yaml in [
            "metadata: {name: d}\nspec: {dnsPolicy: Default, containers: [{name: a, image: busybox}]}",
            "metadata: {name: e}\nspec: {dnsConfig: {searches: [], options: []}, containers: [{name: a, image: busybox}]}",
            "metadata: {name: n}\nspec: {dnsPolicy: None, dnsConfig: {searches: []}, containers: [{name: a, image: busybox}]}",
        ] {
            compare_on(yaml, &quiet);
            let c = generated_sandbox(&pod(yaml), &quiet);
            let dns = c.dns_config.expect("dns");
            assert!(
                dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty(),
                "{yaml}: {dns:?}"
            );
        }
    }

    #[test]
    fn the_runtime_runs_the_pause_as_the_static_path_does() {
        let user = "metadata: {name: u}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000], fsGroup: 2000, supplementalGroupsPolicy: Strict}
  containers: [{name: a, image: busybox}]";
        compare(user);
        let pause = static_sandbox(&pod(user)).pause;
        assert_eq!((pause.user.uid, pause.user.gid), (Some(1000), Some(3000)));
        let mut groups = pause.user.supplemental_groups.clone();
        groups.sort();
        assert_eq!(groups, [2000, 4000], "supplemental groups and fsGroup");
        assert!(pause.user.strict_groups);
        assert_eq!(
            pause.seccomp,
            seccomp::Request::RuntimeDefault,
            "the kubelet's sandbox profile"
        );
        // A privileged container makes the sandbox privileged: an unconfined pause.
        let privileged = "metadata: {name: p}
spec:
  initContainers: [{name: i, image: busybox, securityContext: {privileged: true}}]
  containers: [{name: a, image: busybox}]";
        compare(privileged);
        let pause = static_sandbox(&pod(privileged)).pause;
        assert_eq!(pause.seccomp, seccomp::Request::Unconfined);
        assert_eq!(pause.user.uid, None, "root without runAsUser");
    }

    #[test]
    fn a_pod_run_as_group_without_a_user_gets_no_sandbox_on_either_path() {
        let yaml = "metadata: {name: g}
spec:
  securityContext: {runAsGroup: 3000}
  containers: [{name: a, image: busybox}]";
        let p = pod(yaml);
        let node = node();
        let generated = generated_sandbox(&p, &node);
        let sc = generated.linux.as_ref().and_then(|l| l.security_context.clone());
        let sc = sc.expect("security context");
        assert_eq!(
            (sc.run_as_user, sc.run_as_group.map(|g| g.value)),
            (None, Some(3000)),
            "the kubelet sends the group alone"
        );
        let refused = translate::sandbox(&generated, &node, std::path::Path::new("/nonexistent"))
            .expect_err("the runtime refuses it");
        assert!(refused.to_string().contains("run_as_group"), "{refused}");
        let problem = super::super::security::sandbox_user_problem(&p).expect("the static path refuses it");
        assert!(problem.contains("spec.securityContext.runAsGroup (3000)"), "{problem}");
        // With runAsUser, or runAsGroup on a container only, the sandbox is made.
        let with_user = pod("metadata: {name: g}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 3000}
  containers: [{name: a, image: busybox}]");
        assert_eq!(super::super::security::sandbox_user_problem(&with_user), None);
        let container_only = pod("metadata: {name: g}
spec: {containers: [{name: a, image: busybox, securityContext: {runAsGroup: 3000}}]}");
        assert_eq!(super::super::security::sandbox_user_problem(&container_only), None);
    }

    #[test]
    fn the_runtime_reads_bandwidth_annotations_as_the_static_path_does() {
        let yaml = "metadata: {name: bw, annotations: {kubernetes.io/ingress-bandwidth: 10M, kubernetes.io/egress-bandwidth: 1Mi}}
spec: {containers: [{name: a, image: busybox}]}";
        compare(yaml);
        let today = static_sandbox(&pod(yaml));
        assert!(today.network.bandwidth.is_some(), "the fixture asks for limits");
    }

    #[test]
    fn sidecar_host_ports_are_left_out_on_both_paths() {
        let sidecar = "metadata: {name: sc}
spec:
  initContainers:
  - {name: proxy, image: busybox, restartPolicy: Always, ports: [{containerPort: 90, hostPort: 9090}]}
  containers:
  - {name: a, image: busybox, ports: [{containerPort: 80, hostPort: 8080}]}";
        compare(sidecar);
        let today = static_sandbox(&pod(sidecar));
        let ports: Vec<u16> = today.network.port_mappings.iter().map(|m| m.host_port).collect();
        assert_eq!(
            ports,
            [8080],
            "the app container's port only, as the kubelet's portMappings"
        );
    }

    #[test]
    fn pod_sysctls_are_carried_and_both_paths_apply_them() {
        let yaml = "metadata: {name: sy}
spec:
  securityContext: {sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: '0'}, {name: kernel/shm_rmid_forced, value: '1'}]}
  containers: [{name: a, image: busybox}]";
        let p = pod(yaml);
        let node = node();
        let c = generated_sandbox(&p, &node);
        let linux = c.linux.clone().expect("linux");
        assert_eq!(
            linux
                .sysctls
                .get("net.ipv4.ip_unprivileged_port_start")
                .map(String::as_str),
            Some("0")
        );
        // Read back by the runtime, the same sysctls as the static path applies.
        compare(yaml);
    }

    fn image() -> crate::images::Image {
        crate::images::Image {
            summary: crate::images::ImageSummary {
                name: "docker.io/library/busybox:latest".into(),
                id: "sha256:0123".into(),
                manifest_digest: String::new(),
                size: 0,
                created: None,
            },
            config: crate::images::RuntimeConfig {
                cmd: vec!["sh".into()],
                env: vec!["PATH=/usr/bin:/bin".into(), "SHELL=/bin/sh".into()],
                ..Default::default()
            },
            layers: Vec::new(),
        }
    }

    /// One app container of `yaml` (the first), generated as the kubelet would, read by the
    /// runtime as a CRI client's, against today's static configuration, field by field: no
    /// difference is known.
    fn compare_container(yaml: &str) {
        compare_container_with(yaml, image());
    }

    /// [`compare_container`] with the container's image.
    fn compare_container_with(yaml: &str, image: crate::images::Image) {
        compare_one(yaml, image, false);
    }

    /// [`compare_container_with`] for the first init container (`init`) or app container.
    fn compare_one(yaml: &str, image: crate::images::Image, init: bool) {
        let root = tempfile::tempdir().expect("temp dir");
        let yaml = yaml.replace("@TMP@", &root.path().display().to_string());
        let p = pod(&yaml);
        let uid = "u1";
        let plan = PodPlan::new(&p, uid);
        let node = node();
        let layout = Layout::new(&root.path().join("state"));
        // What RunPodSandbox has made by the time containers are created: the runtime makes
        // a missing host path a directory (as containerd), so the kubelet's /etc/hosts must
        // exist first.
        std::fs::create_dir_all(layout.pod_dir(uid).join("shm")).expect("shm dir");
        std::fs::create_dir_all(layout.pod_dir(uid).join("etc")).expect("etc dir");
        for f in ["hostname", "resolv.conf"] {
            std::fs::write(layout.pod_dir(uid).join("etc").join(f), "").expect("etc file");
        }
        // And the pod side's own /etc/hosts, written with the sandbox.
        super::super::config::write_hosts_file(&layout, uid, &p, &plan, &node, &[]).expect("etc-hosts");
        let log_root = root.path().join("logs");
        let seccomp_args = SeccompArgs::default();
        let spec = spec(&p);
        let c = if init {
            &spec.init_containers.as_deref().unwrap_or_default()[0]
        } else {
            &spec.containers[0]
        };
        let pod_log_dir = crate::runtime::logs::pod_log_dir(&log_root, &namespace(&p), &name(&p), uid);
        let inputs = ContainerInputs {
            pod: &p,
            uid,
            sandbox_dir: &layout.pod_dir(uid),
            plan: &plan,
            container: c,
            attempt: 1,
            image: &crate::pod::images::ImageFacts::of_store_image(&image),
            log_path: crate::runtime::logs::container_log_path(&pod_log_dir, &c.name, 1),
            pod_ips: &[],
        };
        let today = super::super::static_container::container_config(&layout, &seccomp_args, &node, &inputs, &image)
            .expect("today");
        let generated = container_config(&layout, &seccomp_args, &node, &inputs).expect("generated");

        let sandbox_config = pod_sandbox_config(&SandboxInputs {
            pod: &p,
            uid,
            plan: &plan,
            node: &node,
            attempt: 0,
            log_root: &log_root,
            pod_dir: &layout.pod_dir(uid),
        });
        // The pod side's volumes, as before RunPodSandbox.
        crate::pod::volumes::set_up(&layout.pod_dir(uid), &p, &node).expect("volumes");
        let today_sandbox =
            super::super::static_sandbox::sandbox_config(&layout, &p, uid, &plan, &node).expect("today's sandbox");
        let read_plan = translate::sandbox(&sandbox_config, &node, &layout.pods_dir()).expect("sandbox");
        assert_eq!(
            read_plan.memory_volumes, today_sandbox.memory_volumes,
            "memory-backed volumes"
        );
        let sandbox = crate::runtime::cri::Sandbox {
            dir: layout.pod_dir(uid),
            record: crate::runtime::cri::SandboxRecord {
                id: "sb".into(),
                created_at: 0,
                cgroup: read_plan.cgroup,
                namespaces: read_plan.namespaces,
                share_pid: read_plan.share_pid,
                runtime_handler: String::new(),
                memory_volumes: read_plan.memory_volumes.iter().map(|v| v.path.clone()).collect(),
            },
            config: sandbox_config,
            state: None,
            ips: Vec::new(),
            containers: Default::default(),
            network_error: None,
        };
        let log_path = translate::log_path(&sandbox, &generated).expect("log path");
        let read = translate::container(&translate::ContainerInputs {
            config: &generated,
            sandbox: &sandbox,
            image: &image,
            log_path,
            node: &node,
        })
        .expect("the runtime accepts the generated config");

        assert_eq!(read.pod_uid, today.pod_uid, "pod uid");
        assert_eq!(read.pod_dir, today.pod_dir, "pod dir");
        assert_eq!(
            (&read.name, read.attempt),
            (&today.name, today.attempt),
            "name, attempt"
        );
        assert_eq!(read.image_ref, today.image_ref, "image");
        assert_eq!(read.pod_cgroup, today.pod_cgroup, "pod cgroup");
        assert_eq!(read.resources, today.resources, "resources");
        assert_eq!(read.devices, today.devices, "devices");
        assert_eq!(read.oom_score_adj, today.oom_score_adj, "oom_score_adj");
        assert_eq!(read.share_pid, today.share_pid, "shared PID");
        assert_eq!(read.process.args, today.process.args, "argv");
        assert_eq!(read.process.cwd, today.process.cwd, "working dir");
        assert_eq!(read.process.user, today.process.user, "user");
        assert_eq!(read.process.capabilities, today.process.capabilities, "capabilities");
        assert_eq!(
            read.process.no_new_privileges, today.process.no_new_privileges,
            "no_new_privs"
        );
        assert_eq!(read.process.stdio, today.process.stdio, "stdio");
        assert_eq!(read.readonly_rootfs, today.readonly_rootfs, "readonly rootfs");
        assert_eq!(read.log_path, today.log_path, "log path");
        assert_eq!(read.seccomp, today.seccomp, "seccomp");
        // Mount order differs (the runtime puts the client's after the sandbox's own files);
        // what is mounted where does not. Where the source is opened does: the CRI path takes
        // a client's mounts from the host's mount namespace at start (difference C9 in
        // docs/architecture.md), the static path from the pod's copy of it; both bind a
        // memory-backed volume from the pod's namespace, where its tmpfs is.
        let memory: Vec<_> = today_sandbox.memory_volumes.iter().map(|v| v.path.clone()).collect();
        let sorted = |m: &[crate::runtime::spec::BindMount]| {
            let mut m = m.to_vec();
            m.iter_mut()
                .filter(|b| !memory.contains(&b.source))
                .for_each(|b| b.from_host = None);
            m.sort_by(|a, b| a.destination.cmp(&b.destination));
            m
        };
        assert_eq!(sorted(&read.mounts), sorted(&today.mounts), "mounts");
        // HOSTNAME first, then the image's and the pod's variables, an override in place.
        assert_eq!(read.process.env, today.process.env, "environment");
    }

    #[test]
    fn the_runtime_reads_a_plain_container_as_the_static_path_makes_it() {
        compare_container("metadata: {name: plain}\nspec: {containers: [{name: a, image: busybox}]}");
    }

    #[test]
    fn the_runtime_reads_volumes_env_and_security_as_the_static_path_makes_them() {
        let yaml = "metadata: {name: full, namespace: shop, labels: {app: full}}
spec:
  shareProcessNamespace: true
  securityContext: {runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000], fsGroup: 2000}
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
  - {name: data, hostPath: {path: '@TMP@/data', type: DirectoryOrCreate}}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  containers:
  - name: app
    image: busybox
    command: [sh, -c]
    args: ['echo $(GREETING) $(POD_NAME)']
    workingDir: /work
    stdin: true
    tty: true
    env:
    - {name: GREETING, value: hello}
    - {name: SHELL, value: /bin/ash}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    resources: {requests: {cpu: 100m, memory: 16Mi}, limits: {cpu: 200m, memory: 32Mi}}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {add: [NET_ADMIN], drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: mem, mountPath: /mem}
    - {name: data, mountPath: /data, readOnly: true}
    - {name: data, mountPath: /scratch/sub, subPath: sub}
    - {name: info, mountPath: /etc/podinfo}";
        compare_container(yaml);
    }

    #[test]
    fn the_runtime_reads_an_init_container_as_the_static_path_makes_it() {
        // Nothing in the runtime depends on a container being an init container (container
        // difference 6): the pod side knows its init containers by name.
        let yaml = "metadata: {name: init}
spec:
  volumes: [{name: scratch, emptyDir: {}}]
  initContainers:
  - {name: prepare, image: busybox, command: [sh, -c, 'echo ok > /scratch/x'], volumeMounts: [{name: scratch, mountPath: /scratch}], securityContext: {runAsGroup: 3000}}
  containers: [{name: a, image: busybox, volumeMounts: [{name: scratch, mountPath: /scratch}]}]";
        compare_one(yaml, image(), true);
    }

    #[test]
    fn dollar_references_in_the_images_cmd_stay_literal_on_both_paths() {
        let mut img = image();
        img.config.entrypoint = vec!["/bin/echo".into(), "$(X)".into()];
        img.config.cmd = vec!["$(X)".into()];
        // Only the image's: argv is Entrypoint + Cmd, unexpanded (container difference 5).
        compare_container_with(
            "metadata: {name: lit}\nspec: {containers: [{name: a, image: busybox, env: [{name: X, value: y}]}]}",
            img.clone(),
        );
        // The pod's args are expanded; the image's Entrypoint still is not.
        compare_container_with(
            "metadata: {name: lit}\nspec: {containers: [{name: a, image: busybox, args: ['$(X)'], env: [{name: X, value: y}]}]}",
            img,
        );
    }

    #[test]
    fn a_containers_run_as_group_alone_goes_with_the_images_user_on_both_paths() {
        let yaml = "metadata: {name: g}
spec: {containers: [{name: a, image: busybox, securityContext: {runAsGroup: 3000}}]}";
        let p = pod(yaml);
        let plan = PodPlan::new(&p, "u1");
        let spec = spec(&p);
        let root = tempfile::tempdir().expect("temp dir");
        let layout = Layout::new(root.path());
        for (image_user, uid, username, user) in [
            ("", Some(0), "", (Some(0), "")),
            ("101:33", Some(101), "", (Some(101), "101:33")),
            ("nginx:www", None, "nginx", (None, "nginx")),
        ] {
            let mut img = image();
            img.config.user = image_user.into();
            // Both paths read the same user: runtime and static compared field by field.
            compare_container_with(yaml, img.clone());
            let inputs = ContainerInputs {
                pod: &p,
                uid: "u1",
                sandbox_dir: std::path::Path::new("/sandbox"),
                plan: &plan,
                container: &spec.containers[0],
                attempt: 0,
                image: &crate::pod::images::ImageFacts::of_store_image(&img),
                log_path: root.path().join("unused.log"),
                pod_ips: &[],
            };
            let c = container_config(&layout, &SeccompArgs::default(), &node(), &inputs).expect("config");
            let sc = c.linux.and_then(|l| l.security_context).expect("security context");
            assert_eq!(
                (sc.run_as_user.map(|u| u.value), sc.run_as_username.as_str()),
                (uid, username),
                "the kubelet's user for image user {image_user:?}"
            );
            assert_eq!(sc.run_as_group.map(|g| g.value), Some(3000));
            let today = super::super::static_container::container_config(
                &layout,
                &SeccompArgs::default(),
                &node(),
                &inputs,
                &img,
            )
            .expect("today");
            let u = &today.process.user;
            assert_eq!(
                (u.uid.map(i64::from), u.image_user.as_str(), u.gid),
                (user.0, user.1, Some(3000)),
                "the static path's user for image user {image_user:?}"
            );
        }
    }

    #[test]
    fn the_runtime_reads_host_namespaces_and_privileged_as_the_static_path_makes_them() {
        let yaml = "metadata: {name: host, namespace: kube-system}
spec:
  hostNetwork: true
  hostPID: true
  hostIPC: true
  containers:
  - name: agent
    image: busybox
    securityContext: {privileged: true}
    terminationMessagePath: /tmp/done";
        compare_container(yaml);
    }

    #[test]
    fn both_paths_refuse_run_as_non_root_with_a_root_image_user_alike() {
        // Container difference 7: the kubelet checks it in generateContainerConfig.
        let root = tempfile::tempdir().expect("temp dir");
        let layout = Layout::new(root.path());
        for (yaml, user, refused) in [
            (
                "securityContext: {runAsNonRoot: true}",
                "",
                Some("image will run as root"),
            ),
            (
                "securityContext: {runAsNonRoot: true}",
                "nginx",
                Some("non-numeric user (nginx)"),
            ),
            (
                "securityContext: {runAsNonRoot: true, runAsUser: 0}",
                "1000",
                Some("runAsUser breaks non-root"),
            ),
            ("securityContext: {runAsNonRoot: true}", "101:101", None),
            ("securityContext: {runAsNonRoot: true, runAsUser: 1000}", "", None),
        ] {
            let p = pod(&format!(
                "metadata: {{name: nr}}\nspec:\n  {yaml}\n  containers: [{{name: a, image: busybox}}]"
            ));
            let plan = PodPlan::new(&p, "u1");
            let mut img = image();
            img.config.user = user.into();
            let spec = spec(&p);
            let inputs = ContainerInputs {
                pod: &p,
                uid: "u1",
                sandbox_dir: std::path::Path::new("/sandbox"),
                plan: &plan,
                container: &spec.containers[0],
                attempt: 0,
                image: &crate::pod::images::ImageFacts::of_store_image(&img),
                log_path: root.path().join("unused.log"),
                pod_ips: &[],
            };
            let generated = container_config(&layout, &SeccompArgs::default(), &node(), &inputs);
            let today = super::super::static_container::container_config(
                &layout,
                &SeccompArgs::default(),
                &node(),
                &inputs,
                &img,
            );
            match refused {
                Some(words) => {
                    let (g, t) = (generated.expect_err(yaml), today.expect_err(yaml));
                    assert_eq!(g, t, "{yaml} / {user:?}");
                    assert!(g.contains(words), "{yaml} / {user:?}: {g}");
                }
                None => {
                    assert!(generated.is_ok() && today.is_ok(), "{yaml} / {user:?}");
                }
            }
        }
    }

    #[test]
    fn kubelet_container_labels_annotations_and_log_path() {
        let root = tempfile::tempdir().expect("temp dir");
        let p = pod("metadata: {name: web, namespace: shop}
spec:
  terminationGracePeriodSeconds: 5
  containers: [{name: a, image: busybox, command: [echo, $(X)], env: [{name: X, value: y}]}]");
        let plan = PodPlan::new(&p, "u1");
        let image = image();
        let spec = spec(&p);
        let inputs = ContainerInputs {
            pod: &p,
            uid: "u1",
            sandbox_dir: std::path::Path::new("/sandbox"),
            plan: &plan,
            container: &spec.containers[0],
            attempt: 3,
            image: &crate::pod::images::ImageFacts::of_store_image(&image),
            log_path: root.path().join("unused.log"),
            pod_ips: &[],
        };
        let layout = Layout::new(root.path());
        let c = container_config(&layout, &SeccompArgs::default(), &node(), &inputs).expect("config");
        let m = c.metadata.expect("metadata");
        assert_eq!((m.name.as_str(), m.attempt), ("a", 3));
        assert_eq!(c.command, ["echo", "y"], "$(VAR) expanded as the kubelet does");
        assert_eq!(c.log_path, "a/3.log");
        for (k, v) in [
            (CONTAINER_NAME, "a"),
            (POD_NAME, "web"),
            (POD_NAMESPACE, "shop"),
            (POD_UID, "u1"),
        ] {
            assert_eq!(c.labels.get(k).map(String::as_str), Some(v), "label {k}");
        }
        for (k, v) in [
            (RESTART_COUNT, "3"),
            (TERMINATION_PATH, "/dev/termination-log"),
            (TERMINATION_POLICY, "File"),
            (GRACE_PERIOD, "5"),
        ] {
            assert_eq!(c.annotations.get(k).map(String::as_str), Some(v), "annotation {k}");
        }
        let hosts = c
            .mounts
            .iter()
            .find(|m| m.container_path == "/etc/hosts")
            .expect("/etc/hosts");
        assert_eq!(hosts.host_path, layout.etc_hosts("u1").display().to_string());
        assert!(
            !c.mounts
                .iter()
                .any(|m| m.container_path == "/etc/resolv.conf" || m.container_path == "/dev/shm"),
            "the sandbox's resolv.conf and /dev/shm are the runtime's: {:?}",
            c.mounts
        );
    }
}
