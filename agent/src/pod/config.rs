//! From a Pod to runtime configurations: what Kubernetes semantics mean for one sandbox and
//! one container. Everything the runtime needs is decided here; nothing here touches the
//! kernel except to prepare hostPath and subPath directories, as the kubelet does.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVarSource, Pod, PodSpec, SecurityContext};

use super::expansion::expand;
use super::node::NodeInfo;
use super::qos::{self, QosClass};
use super::volumes;
use crate::quantity::Quantity;
use crate::runtime::sandbox::NO_POD_IP;
use crate::runtime::spec::{BindMount, SandboxNamespaces};
use crate::runtime::state::Layout;

/// What is decided once per pod.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub qos: QosClass,
    pub cgroup: String,
    pub share_pid: bool,
    pub hostname: String,
}

impl PodPlan {
    pub fn new(pod: &Pod, uid: &str) -> Self {
        let spec = spec(pod);
        let qos = qos::class(spec);
        PodPlan {
            qos,
            cgroup: qos::pod_cgroup(qos, uid),
            share_pid: spec.share_process_namespace == Some(true) || spec.host_pid == Some(true),
            hostname: pod_hostname(pod),
        }
    }
}

pub(super) fn spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

/// spec.hostname, else the pod name, cut to a DNS label's 63 characters (the kubelet's rule).
pub fn pod_hostname(pod: &Pod) -> String {
    let name = spec(pod)
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

pub(super) fn host_network(pod: &Pod) -> bool {
    spec(pod).host_network == Some(true)
}

/// The namespaces a pod's pause makes of its own (the rest it shares with the host).
pub fn sandbox_namespaces(spec: &k8s_openapi::api::core::v1::PodSpec) -> SandboxNamespaces {
    let host_net = spec.host_network == Some(true);
    SandboxNamespaces {
        network: !host_net,
        pid: spec.host_pid != Some(true),
        ipc: spec.host_ipc != Some(true),
        uts: !host_net,
    }
}

/// Whether any container of the pod is privileged (the kubelet's HasPrivilegedContainer).
pub(super) fn has_privileged_container(spec: &PodSpec) -> bool {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true))
}

/// /etc/hosts as the kubelet writes it (`etc-hosts` in the pod's directory): the node's for
/// a host-network pod, else the standard entries and the hostname at the pod's first IP
/// ([`NO_POD_IP`] for a pod without an address of its own); then the pod's hostAliases.
fn hosts_file(pod: &Pod, plan: &PodPlan, node: &NodeInfo, pod_ips: &[IpAddr]) -> String {
    let mut out = String::new();
    if host_network(pod) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(&node.hosts);
        if !node.hosts.ends_with('\n') && !node.hosts.is_empty() {
            out.push('\n');
        }
    } else {
        out.push_str("# Kubernetes-managed hosts file.\n");
        out.push_str(crate::runtime::sandbox::LOCAL_HOSTS);
        match pod_ips.first() {
            Some(ip) => out.push_str(&format!("{ip}\t{}\n", plan.hostname)),
            None => out.push_str(&format!("{NO_POD_IP}\t{}\n", plan.hostname)),
        }
    }
    let aliases = spec(pod).host_aliases.iter().flatten().collect::<Vec<_>>();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.iter().flatten().cloned().collect::<Vec<_>>().join("\t")
            ));
        }
    }
    out
}

/// /etc/resolv.conf by dnsPolicy. Without cluster DNS, ClusterFirst falls back to the node's
/// resolver (the kubelet does the same, with a warning); None uses only spec.dnsConfig.
/// Settings that name nothing give the node's file as it is: the kubelet sends them as an
/// empty DNS config, and containerd copies the host's file for that.
pub fn resolv_conf(pod: &Pod, node_resolv: &str) -> String {
    let spec = spec(pod);
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::<(String, Option<String>)>::new());
    if spec.dns_policy.as_deref() != Some("None") {
        for line in node_resolv.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => servers.extend(words.next().map(str::to_string)),
                Some("search") | Some("domain") => searches = words.map(str::to_string).collect(),
                Some("options") => options.extend(words.map(split_option)),
                _ => {}
            }
        }
    }
    if let Some(cfg) = &spec.dns_config {
        for s in cfg.nameservers.iter().flatten() {
            if !servers.contains(s) {
                servers.push(s.clone());
            }
        }
        for s in cfg.searches.iter().flatten() {
            if !searches.contains(s) {
                searches.push(s.clone());
            }
        }
        for o in cfg.options.iter().flatten() {
            let Some(name) = o.name.clone() else { continue };
            options.retain(|(n, _)| *n != name);
            options.push((name, o.value.clone()));
        }
    }
    let mut out = String::new();
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        let opts: Vec<String> = options
            .iter()
            .map(|(n, v)| v.as_ref().map_or(n.clone(), |v| format!("{n}:{v}")))
            .collect();
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    if out.is_empty() {
        return node_resolv.to_string();
    }
    out
}

fn split_option(o: &str) -> (String, Option<String>) {
    match o.split_once(':') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (o.to_string(), None),
    }
}

/// Where a container's termination message file lives on the host.
pub fn termination_log_path(layout: &Layout, uid: &str, container: &str, attempt: u32) -> PathBuf {
    layout
        .pod_dir(uid)
        .join("termination")
        .join(container)
        .join(attempt.to_string())
}

/// Inputs for one container attempt.
pub struct ContainerInputs<'a> {
    pub pod: &'a Pod,
    pub uid: &'a str,
    /// The pod's current sandbox's directory (its /etc/hostname, /etc/resolv.conf, /dev/shm).
    pub sandbox_dir: &'a Path,
    pub plan: &'a PodPlan,
    pub container: &'a Container,
    pub attempt: u32,
    /// The image as ImageStatus reports it.
    pub image: &'a super::images::ImageFacts,
    pub log_path: PathBuf,
    /// The pod's addresses (for `fieldRef: status.podIP`); none without a pod network.
    pub pod_ips: &'a [IpAddr],
}

/// Container-level securityContext fields override the pod's.
pub(super) fn merged_security_context(pod: &PodSpec, c: &Container) -> SecurityContext {
    let mut sc = c.security_context.clone().unwrap_or_default();
    if let Some(p) = &pod.security_context {
        sc.run_as_user = sc.run_as_user.or(p.run_as_user);
        sc.run_as_group = sc.run_as_group.or(p.run_as_group);
        sc.run_as_non_root = sc.run_as_non_root.or(p.run_as_non_root);
    }
    sc
}

/// The user the kubelet puts in a container's ContainerConfig (its getImageUser and
/// determineEffectiveSecurityContext).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RunAs {
    /// `run_as_user`.
    pub uid: Option<i64>,
    /// `run_as_username`, when the image names its user.
    pub username: String,
}

/// runAsUser; else the image's user as containerd's ImageStatus reports it, a uid or a
/// name, without the image's group (so the kubelet never passes that group on:
/// kubernetes#61967); else uid 0 for an image without a user. runAsGroup, sent beside it,
/// is then always given with a user.
pub(super) fn run_as(sc: &SecurityContext, image_user: &str) -> RunAs {
    let from_image = image_user.split(':').next().unwrap_or("");
    // Read as the CRI's ImageStatus reads it (an int64), so that a number no Linux ID can be
    // is refused by CreateContainer naming run_as_user, not looked up as a name.
    let (uid, username) = match (sc.run_as_user, from_image.parse::<i64>()) {
        (Some(uid), _) => (Some(uid), String::new()),
        (None, Ok(uid)) => (Some(uid), String::new()),
        (None, Err(_)) if from_image.is_empty() => (Some(0), String::new()),
        (None, Err(_)) => (None, from_image.to_string()),
    };
    RunAs { uid, username }
}

/// runAsNonRoot, checked as the kubelet does before the container exists (its
/// generateContainerConfig's verifyRunAsNonRoot): both this path and the generated CRI
/// config refuse the container with this message.
pub(super) fn check_non_root(run_as_user: Option<i64>, image_user: &str) -> Result<(), String> {
    match run_as_user {
        Some(0) => Err("container's runAsUser breaks non-root policy".into()),
        Some(_) => Ok(()),
        None => {
            let name = image_user.split(':').next().unwrap_or("");
            match name.parse::<i64>() {
                Ok(0) => Err("container has runAsNonRoot and image will run as root".into()),
                Ok(_) => Ok(()),
                Err(_) if name.is_empty() => Err("container has runAsNonRoot and image will run as root".into()),
                Err(_) => Err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root"
                )),
            }
        }
    }
}

/// A container's variables: `KEY=value` for the process, and the pod's own as pairs.
pub(super) type Environment = (Vec<String>, Vec<(String, String)>);

/// The process environment: HOSTNAME, then the image's, then the pod's (which wins); and the
/// pod's own variables, used for `$(VAR)` in command and args.
pub(super) fn environment(
    pod: &Pod,
    c: &Container,
    node: &NodeInfo,
    pod_ips: &[IpAddr],
    image_env: &[String],
    hostname: &str,
) -> Result<Environment, String> {
    let mut pod_env: Vec<(String, String)> = Vec::new();
    for (idx, var) in c.env.iter().flatten().enumerate() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                match env_from_source(pod, c, node, pod_ips, from)
                    .map_err(|e| format!("env[{idx}] ({}): {e}", var.name))?
                {
                    Some(v) => v,
                    None => continue,
                }
            }
            (Some(v), None) => {
                let known = pod_env.clone();
                expand(v, |n| known.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
            }
            (None, None) => String::new(),
        };
        pod_env.push((var.name.clone(), value));
    }

    let mut env: Vec<(String, String)> = vec![(
        "HOSTNAME".into(),
        if host_network(pod) {
            node.name.clone()
        } else {
            hostname.to_string()
        },
    )];
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for (k, v) in &pod_env {
        set(k, v);
    }
    Ok((env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(), pod_env))
}

/// `valueFrom`: the downward API (fieldRef, resourceFieldRef). ConfigMaps and Secrets need an
/// API server; optional references to them resolve to nothing, as when the object is absent.
fn env_from_source(
    pod: &Pod,
    c: &Container,
    node: &NodeInfo,
    pod_ips: &[IpAddr],
    from: &EnvVarSource,
) -> Result<Option<String>, String> {
    if let Some(f) = &from.field_ref {
        return field_value(pod, node, pod_ips, &f.field_path).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        return resource_value(pod, c, node, r).map(Some);
    }
    if from
        .config_map_key_ref
        .as_ref()
        .is_some_and(|r| r.optional == Some(true))
        || from.secret_key_ref.as_ref().is_some_and(|r| r.optional == Some(true))
    {
        return Ok(None);
    }
    Err("only fieldRef and resourceFieldRef are available without an API server".into())
}

pub(super) fn field_value(pod: &Pod, node: &NodeInfo, pod_ips: &[IpAddr], path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = spec(pod);
    let (pod_ip, pod_ips) = if host_network(pod) {
        let ip = node.host_ip.clone().unwrap_or_default();
        (ip.clone(), ip)
    } else {
        let all: Vec<String> = pod_ips.iter().map(IpAddr::to_string).collect();
        (all.first().cloned().unwrap_or_default(), all.join(","))
    };
    let keyed = |prefix: &str, map: &Option<std::collections::BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_prefix("['")?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let all = |map: &Option<std::collections::BTreeMap<String, String>>| -> String {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => all(&meta.labels),
        "metadata.annotations" => all(&meta.annotations),
        "spec.nodeName" => spec.node_name.clone().unwrap_or_else(|| node.name.clone()),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => node.host_ip.clone().unwrap_or_default(),
        "status.podIP" => pod_ip,
        "status.podIPs" => pod_ips,
        _ => {
            if let Some(v) =
                keyed("metadata.labels", &meta.labels).or_else(|| keyed("metadata.annotations", &meta.annotations))
            {
                v
            } else {
                return Err(format!("unsupported fieldRef {path:?}"));
            }
        }
    })
}

pub(super) fn resource_value(
    pod: &Pod,
    c: &Container,
    node: &NodeInfo,
    r: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String, String> {
    let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => spec(pod)
            .containers
            .iter()
            .chain(spec(pod).init_containers.iter().flatten())
            .find(|x| x.name == name)
            .ok_or(format!("no container {name:?}"))?,
        None => c,
    };
    let divisor = match &r.divisor {
        Some(d) => Quantity::parse(&d.0).map_err(|e| e.to_string())?,
        None => Quantity::parse("1").map_err(|e| e.to_string())?,
    };
    let (list, resource) = r
        .resource
        .split_once('.')
        .ok_or(format!("unsupported resource {:?}", r.resource))?;
    let res = target.resources.as_ref();
    let map = match list {
        "limits" => res.and_then(|x| x.limits.as_ref()),
        "requests" => res.and_then(|x| x.requests.as_ref()),
        _ => return Err(format!("unsupported resource {:?}", r.resource)),
    };
    let given = map
        .and_then(|m| m.get(resource))
        .and_then(|q| Quantity::parse(&q.0).ok());
    // Unset limits resolve to the node's allocatable amount, as in Kubernetes.
    let value_milli: i128 = match (resource, given) {
        (_, Some(q)) => q.milli_value() as i128,
        ("cpu", None) if list == "limits" => node.cpus as i128 * 1000,
        ("memory", None) if list == "limits" => node.memory_bytes as i128 * 1000,
        _ => 0,
    };
    let div = (divisor.milli_value() as i128).max(1);
    Ok(((value_milli + div - 1) / div).to_string())
}

/// Bind mounts: the generated /etc files (unless the pod mounts its own there), /dev/shm,
/// the termination log, then the volumes, parents before children.
pub(super) fn mounts(layout: &Layout, i: &ContainerInputs) -> Result<Vec<BindMount>, String> {
    let c = i.container;
    let spec = spec(i.pod);
    let user_dests: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    let mut out = Vec::new();
    // The kubelet's own /etc/hosts (written with each sandbox, [`write_hosts_file`]), then
    // the sandbox's hostname and resolv.conf.
    if !user_dests.contains(&"/etc/hosts") {
        out.push(BindMount {
            source: layout.etc_hosts(i.uid),
            destination: "/etc/hosts".into(),
            readonly: false,
            file: true,
            from_host: None,
        });
    }
    for name in ["hostname", "resolv.conf"] {
        let dest = format!("/etc/{name}");
        if !user_dests.contains(&dest.as_str()) {
            out.push(BindMount {
                source: i.sandbox_dir.join("etc").join(name),
                destination: dest,
                readonly: false,
                file: true,
                from_host: None,
            });
        }
    }
    let shm = if spec.host_ipc == Some(true) {
        PathBuf::from("/dev/shm")
    } else {
        i.sandbox_dir.join("shm")
    };
    out.push(BindMount {
        source: shm,
        destination: "/dev/shm".into(),
        readonly: false,
        file: false,
        from_host: None,
    });

    let term_dest = c
        .termination_message_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/dev/termination-log".into());
    let term = termination_log_path(layout, i.uid, &c.name, i.attempt);
    create_file(&term, 0o666)?;
    out.push(BindMount {
        source: term,
        destination: term_dest,
        readonly: false,
        file: true,
        from_host: None,
    });

    let mut volume_mounts = Vec::new();
    for (idx, vm) in c.volume_mounts.iter().flatten().enumerate() {
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == vm.name)
            .ok_or(format!("volumeMounts[{idx}]: no volume named {:?}", vm.name))?;
        let written = volumes::written_volume_source(&layout.pod_dir(i.uid), vol);
        let mut source = if vol.empty_dir.is_some() {
            volumes::disk::volume_dir(&layout.pod_dir(i.uid), volumes::disk::EMPTY_DIR_PLUGIN, &vol.name)
        } else if let Some(hp) = &vol.host_path {
            prepare_host_path(&hp.path, hp.type_.as_deref().unwrap_or(""))?
        } else if let Some(dir) = &written {
            dir.clone()
        } else {
            return Err(format!(
                "volume {:?}: only emptyDir, hostPath, downwardAPI and projected downwardAPI volumes are supported",
                vol.name
            ));
        };
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if Path::new(sub).is_absolute()
                || Path::new(sub)
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(format!(
                    "volumeMounts[{idx}].subPath {sub:?} must be a relative path without '..'"
                ));
            }
            source = source.join(sub);
            if !source.exists() && written.is_none() {
                std::fs::create_dir_all(&source).map_err(|e| format!("create subPath {}: {e}", source.display()))?;
            }
        }
        let file = std::fs::metadata(&source).map(|m| !m.is_dir()).unwrap_or(false);
        volume_mounts.push(BindMount {
            source,
            destination: vm.mount_path.clone(),
            readonly: vm.read_only == Some(true) || written.is_some(),
            file,
            from_host: None,
        });
    }
    volume_mounts.sort_by_key(|m| Path::new(&m.destination).components().count());
    out.extend(volume_mounts);
    Ok(out)
}

/// hostPath `type` checks (and creations) as the kubelet performs them. An unset type makes
/// a missing path a directory, as containerd does.
fn prepare_host_path(path: &str, kind: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::FileTypeExt;
    let p = PathBuf::from(path);
    let md = std::fs::metadata(&p);
    let bad = |what: &str| Err(format!("hostPath type check failed: {path} is not a {what}"));
    match (kind, &md) {
        ("" | "DirectoryOrCreate", Err(_)) => {
            std::fs::create_dir_all(&p).map_err(|e| format!("create hostPath {path}: {e}"))?;
        }
        ("FileOrCreate", Err(_)) => create_file(&p, 0o644)?,
        ("Directory" | "File" | "Socket" | "CharDevice" | "BlockDevice", Err(_)) => {
            return Err(format!("hostPath type check failed: {path} does not exist"));
        }
        ("DirectoryOrCreate" | "Directory", Ok(m)) if !m.is_dir() => return bad("directory"),
        ("FileOrCreate" | "File", Ok(m)) if !m.is_file() => return bad("file"),
        ("Socket", Ok(m)) if !m.file_type().is_socket() => return bad("socket"),
        ("CharDevice", Ok(m)) if !m.file_type().is_char_device() => return bad("character device"),
        ("BlockDevice", Ok(m)) if !m.file_type().is_block_device() => return bad("block device"),
        _ => {}
    }
    Ok(p)
}

/// Write the kubelet's /etc/hosts of pod `uid` (blocking), once its sandbox has `pod_ips`:
/// what the file holds changes only with a new sandbox, and every container of this one
/// mounts it. Atomically, so a container of an older sandbox keeps the file it bound.
pub fn write_hosts_file(
    layout: &Layout,
    uid: &str,
    pod: &Pod,
    plan: &PodPlan,
    node: &NodeInfo,
    pod_ips: &[IpAddr],
) -> Result<(), String> {
    let path = layout.etc_hosts(uid);
    let content = hosts_file(pod, plan, node, pod_ips);
    if let Some(parent) = path.parent() {
        crate::file_modes::create_dir_all(parent, crate::file_modes::STATE_DIR)
            .map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    crate::atomic_file::write_mode(&path, content.as_bytes(), crate::file_modes::SHARED_FILE)
        .map_err(|e| format!("write {}: {e}", path.display()))
}

fn create_file(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    // The umask may have narrowed the mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// A node for configuration tests (cri_config's and the CRI translator's too).
    pub(crate) fn node() -> NodeInfo {
        NodeInfo {
            name: "node1".into(),
            host_ip: Some("10.0.0.5".into()),
            cpus: 2,
            memory_bytes: 4 << 30,
            resolv_conf: "nameserver 10.0.0.2\nsearch corp.example\noptions ndots:2 edns0\n".into(),
            hosts: "127.0.0.1 localhost\n".into(),
        }
    }

    #[test]
    fn the_kubelets_hosts_file_has_the_pod_ip_and_host_aliases() {
        let p = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [], hostAliases: [{ip: 10.1.1.1, hostnames: [db]}]}",
        );
        let plan = PodPlan::new(&p, "u");
        let hosts = hosts_file(&p, &plan, &node(), &["10.244.0.7".parse().unwrap()]);
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n"), "{hosts}");
        assert!(hosts.contains("10.244.0.7\tweb\n"), "{hosts}");
        assert!(!hosts.contains(NO_POD_IP), "{hosts}");
        assert!(
            hosts.contains("10.1.1.1\tdb\n") && hosts.contains("127.0.0.1\tlocalhost\n"),
            "{hosts}"
        );
        // Without an address of its own, the hostname maps to the placeholder.
        let none = hosts_file(&p, &plan, &node(), &[]);
        assert!(none.contains(&format!("{NO_POD_IP}\tweb\n")), "{none}");
    }

    #[test]
    fn hostname_and_resolv_conf() {
        let p = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {hostname: front, containers: []}");
        assert_eq!(pod_hostname(&p), "front");
        // A static pod's name (<name>-<node>) past 63 characters is cut, then loses the
        // '-' and '.' it would end with, as the kubelet's truncatePodHostnameIfNeeded.
        let long = format!("{}-node.example", "a".repeat(57));
        let p = pod(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {long}}}\nspec: {{containers: []}}"
        ));
        assert_eq!(pod_hostname(&p), "a".repeat(57) + "-node");
        let p = pod(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}-n1}}\nspec: {{containers: []}}",
            "b".repeat(62)
        ));
        assert_eq!(pod_hostname(&p), "b".repeat(62));
        assert_eq!(
            resolv_conf(&p, &node().resolv_conf),
            "nameserver 10.0.0.2\nsearch corp.example\noptions ndots:2 edns0\n"
        );
        let p = pod(r#"apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  dnsPolicy: None
  dnsConfig: {nameservers: [1.1.1.1], searches: [a.b], options: [{name: ndots, value: "5"}]}
  containers: []
"#);
        assert_eq!(
            resolv_conf(&p, &node().resolv_conf),
            "nameserver 1.1.1.1\nsearch a.b\noptions ndots:5\n"
        );
        // Nothing named: the node's file as it is, as containerd copies it for an empty config.
        let quiet = "# no resolver configured\nsortlist 10.0.0.0/8\n";
        let p = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {dnsConfig: {}, containers: []}");
        assert_eq!(resolv_conf(&p, quiet), quiet);
        assert_eq!(resolv_conf(&p, ""), "");
    }

    #[test]
    fn environment_order_expansion_and_downward_api() {
        let p = pod(r#"apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, uid: u-1, labels: {app: shop}}
spec:
  containers:
  - name: app
    resources: {limits: {memory: 64Mi}}
    env:
    - {name: PATH, value: /opt/bin}
    - {name: GREETING, value: hello}
    - {name: MSG, value: "$(GREETING) world $(MISSING)"}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
    - {name: OPT, valueFrom: {configMapKeyRef: {name: x, key: y, optional: true}}}
"#);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let (env, pod_env) = environment(
            &p,
            c,
            &node(),
            &[],
            &["PATH=/usr/bin:/bin".into(), "LANG=C".into()],
            "web",
        )
        .unwrap();
        assert_eq!(
            env,
            vec![
                "HOSTNAME=web",
                "PATH=/opt/bin",
                "LANG=C",
                "GREETING=hello",
                "MSG=hello world $(MISSING)",
                "POD=web",
                "APP=shop",
                "MEM=64",
                "CPU=2"
            ]
        );
        assert_eq!(pod_env.len(), 7);
        let bad = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: w}\nspec: {containers: [{name: a, env: [{name: S, valueFrom: {secretKeyRef: {name: s, key: k}}}]}]}",
        );
        let c = &bad.spec.as_ref().unwrap().containers[0];
        assert!(
            environment(&bad, c, &node(), &[], &[], "w")
                .unwrap_err()
                .contains("env[0] (S)")
        );
    }

    #[test]
    fn non_root_policy() {
        assert!(check_non_root(Some(1000), "").is_ok());
        assert!(check_non_root(Some(0), "").is_err());
        assert!(check_non_root(None, "").is_err());
        assert!(check_non_root(None, "101:101").is_ok());
        assert!(check_non_root(None, "nginx").unwrap_err().contains("non-numeric"));
        assert!(
            check_non_root(None, "4294967296").is_ok(),
            "numeric, not root (refused later)"
        );
    }

    #[test]
    fn the_kubelets_user_for_a_container() {
        let sc = |uid: Option<i64>, gid: Option<i64>| SecurityContext {
            run_as_user: uid,
            run_as_group: gid,
            ..Default::default()
        };
        let uid = |u: i64| RunAs {
            uid: Some(u),
            username: String::new(),
        };
        assert_eq!(run_as(&sc(Some(7), None), "nginx:www"), uid(7), "runAsUser wins");
        // The image's user, its group left out; root for an image without one.
        assert_eq!(run_as(&sc(None, Some(3000)), ""), uid(0));
        assert_eq!(run_as(&sc(None, Some(3000)), "101:33"), uid(101));
        // A number past u32 stays a number, as ImageStatus reports it: CreateContainer
        // refuses it naming run_as_user.
        assert_eq!(run_as(&sc(None, None), "4294967296"), uid(1 << 32));
        assert_eq!(
            run_as(&sc(None, None), "nginx:www"),
            RunAs {
                uid: None,
                username: "nginx".into()
            }
        );
    }

    #[test]
    fn host_path_types() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("made/here");
        assert!(prepare_host_path(d.to_str().unwrap(), "DirectoryOrCreate").is_ok() && d.is_dir());
        let f = dir.path().join("file");
        assert!(prepare_host_path(f.to_str().unwrap(), "FileOrCreate").is_ok() && f.is_file());
        assert!(
            prepare_host_path(f.to_str().unwrap(), "Directory")
                .unwrap_err()
                .contains("not a directory")
        );
        assert!(
            prepare_host_path(dir.path().join("nope").to_str().unwrap(), "File")
                .unwrap_err()
                .contains("does not exist")
        );
    }
}
