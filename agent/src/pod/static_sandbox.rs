//! A static pod's sandbox as the static path made it before its sandboxes went through the
//! runtime's CRI side (docs/architecture.md, step C). Written independently of
//! [`super::cri_config`], it is the equivalence tests' statement of what a static pod's
//! sandbox must be: the runtime's reading of the generated `PodSandboxConfig` is compared
//! with it field by field.

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use super::config::{PodPlan, has_privileged_container, host_network, resolv_conf, sandbox_namespaces, spec};
use super::node::NodeInfo;
use super::static_container::pod_groups;
use super::{qos, volumes};
use crate::runtime::network::{Dns, PodNetwork, PortMapping, bandwidth};
use crate::runtime::sandbox::{EtcFiles, PauseSecurity, SandboxConfig};
use crate::runtime::seccomp;
use crate::runtime::spec::UserSpec;

/// Default size of a pod's /dev/shm (containerd's).
pub const SHM_SIZE: u64 = 64 * 1024 * 1024;

/// The sandbox of a pod as the static path made it before its sandboxes went through the
/// runtime's CRI side (docs/architecture.md, step C): kept, written independently of
/// [`super::cri_config`], as the equivalence tests' statement of what a static pod's
/// sandbox must be.
pub fn sandbox_config(
    rt_layout: &crate::runtime::state::Layout,
    pod: &Pod,
    uid: &str,
    plan: &PodPlan,
    node: &NodeInfo,
) -> Result<SandboxConfig, String> {
    let spec = spec(pod);
    let host_net = host_network(pod);
    let resolv = resolv_conf(pod, &node.resolv_conf);
    let namespaces = sandbox_namespaces(spec);
    // Validated when the manifest was read; checked again, as the runtime takes only these.
    let sysctls = spec
        .security_context
        .iter()
        .flat_map(|sc| sc.sysctls.iter().flatten())
        .enumerate()
        .map(|(i, s)| {
            crate::runtime::sysctl::check(&s.name, &s.value, &namespaces)
                .map_err(|e| format!("spec.securityContext.sysctls[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SandboxConfig {
        pod_uid: uid.to_string(),
        dir: rt_layout.pod_dir(uid),
        hostname: if host_net {
            node.name.clone()
        } else {
            plan.hostname.clone()
        },
        namespaces,
        cgroup: plan.cgroup.clone(),
        resources: qos::pod_resources(spec, plan.qos),
        oom_score_adj: qos::PAUSE_OOM_SCORE_ADJ,
        shm_size: SHM_SIZE,
        memory_volumes: volumes::memory_volumes(&rt_layout.pod_dir(uid), spec),
        etc: EtcFiles {
            hosts: EtcFiles::sandbox_hosts(&plan.hostname, host_net, node),
            hostname: format!("{}\n", if host_net { &node.name } else { &plan.hostname }),
            resolv_conf: resolv.clone(),
        },
        network: PodNetwork {
            dns: Dns::from_resolv_conf(&resolv),
            ..pod_network(pod, uid)?
        },
        sysctls,
        pause: pause_security(spec),
    })
}

/// The pause as the kubelet's sandbox security context asks containerd to run it: as the
/// pod's runAsUser/runAsGroup with its supplemental groups and fsGroup, under the runtime's
/// default seccomp profile (the kubelet always asks for it for the sandbox), which a pod
/// with a privileged container does not get.
fn pause_security(spec: &PodSpec) -> PauseSecurity {
    let psc = spec.security_context.as_ref();
    let (supplemental_groups, strict_groups) = pod_groups(spec);
    PauseSecurity {
        user: UserSpec {
            uid: psc.and_then(|p| p.run_as_user).map(|u| u as u32),
            gid: psc.and_then(|p| p.run_as_group).map(|g| g as u32),
            image_user: String::new(),
            supplemental_groups,
            strict_groups,
        },
        seccomp: if has_privileged_container(spec) {
            seccomp::Request::Unconfined
        } else {
            seccomp::Request::RuntimeDefault
        },
    }
}

/// Who the pod is for its CNI plugins, the hostPorts of its containers (portMappings) and
/// its bandwidth annotations.
fn pod_network(pod: &Pod, uid: &str) -> Result<PodNetwork, String> {
    let spec = spec(pod);
    // The same ports the `--network=none` forwarder would open: app containers' (as the
    // kubelet's portMappings; not sidecars'), none for a hostNetwork pod.
    let port_mappings = super::host_ports::forwarded(spec)
        .iter()
        .map(PortMapping::from)
        .collect();
    let annotations = pod.metadata.annotations.as_ref();
    let bandwidth = bandwidth::from_annotations(|k| annotations?.get(k).map(String::as_str))?;
    Ok(PodNetwork {
        namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: uid.to_string(),
        port_mappings,
        bandwidth,
        dns: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("test manifest")
    }

    #[test]
    fn pod_network_has_host_ports_and_bandwidth() {
        let p = pod(r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  annotations: {kubernetes.io/ingress-bandwidth: 10M, kubernetes.io/egress-bandwidth: 1Mi}
spec:
  containers:
  - name: a
    ports:
    - {containerPort: 80, hostPort: 8080}
    - {containerPort: 53, hostPort: 5353, protocol: UDP, hostIP: 127.0.0.1}
    - {containerPort: 9090}
"#);
        let n = pod_network(&p, "u1").expect("network");
        assert_eq!(
            (n.namespace.as_str(), n.name.as_str(), n.uid.as_str()),
            ("shop", "web", "u1")
        );
        assert_eq!(
            n.port_mappings,
            vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 5353,
                    container_port: 53,
                    protocol: "udp".into(),
                    host_ip: "127.0.0.1".into(),
                },
            ]
        );
        let b = n.bandwidth.expect("bandwidth");
        assert_eq!((b.ingress_rate, b.egress_rate), (Some(10_000_000), Some(1 << 20)));
        assert_eq!(b.ingress_burst, Some(u32::MAX as u64));
        let plain = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: w}\nspec: {containers: []}");
        assert_eq!(pod_network(&plain, "u").expect("network").bandwidth, None);
    }
}
