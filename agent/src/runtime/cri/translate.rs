//! From a CRI client's configurations to the runtime's: what containerd decides for a
//! `PodSandboxConfig` and a `ContainerConfig`. Every field is either carried out or refused
//! with a reason; none is dropped silently.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use minilet_proto::runtime::v1 as cri;

use crate::cgroups::{DevicePolicy, Resources};
use crate::images::Image;
use crate::pod::command;
use crate::runtime::RuntimeError;
use crate::runtime::container::ContainerConfig;
use crate::runtime::host_ports::{HostPort, Protocol};
use crate::runtime::network::{Bandwidth, bandwidth};
use crate::runtime::sandbox::{MemoryVolume, PauseSecurity};
use crate::runtime::spec::{
    BindMount, HostTree, KernelPaths, ProcessSpec, Propagation, SandboxNamespaces, StdioSpec, UserSpec,
};
use crate::runtime::{capabilities, seccomp};

/// What the runtime makes of a PodSandboxConfig.
#[derive(Debug, Clone)]
pub struct SandboxPlan {
    pub cgroup: String,
    pub namespaces: SandboxNamespaces,
    pub share_pid: bool,
    pub hostname: String,
    pub hosts: String,
    pub resolv_conf: String,
    pub resources: Resources,
    /// `port_mappings` with a host port (none for a host-network sandbox, whose containers
    /// use the node's ports themselves): CNI's `portMappings`, or the forwarder's ports with
    /// `--network=none`.
    pub host_ports: Vec<HostPort>,
    pub sysctls: Vec<crate::runtime::sysctl::Sysctl>,
    pub pause: PauseSecurity,
    /// CNI's `bandwidth` capability, from the sandbox's bandwidth annotations (containerd
    /// reads them there; the kubelet copies the pod's).
    pub bandwidth: Option<Bandwidth>,
    /// From the [`MEMORY_VOLUMES`] annotation.
    pub memory_volumes: Vec<MemoryVolume>,
}

/// minilet's sandbox annotation for memory-backed volumes, which the CRI has no field for:
/// a JSON list of [`MemoryVolume`]s (`[{"path": ..., "sizeBytes": ..., "gid": ...}]`). Its
/// paths must be directories under the agent's pod directories (`<root>/pods/`), where the
/// static pods' side makes them; a container mount of one of these paths is bound from the
/// pod's mount namespace. Static pods' generated configs carry it.
pub const MEMORY_VOLUMES: &str = "minilet.dev/memory-volumes";

/// The sandbox's memory-backed volumes, from its [`MEMORY_VOLUMES`] annotation.
pub fn memory_volumes(config: &cri::PodSandboxConfig, pods_dir: &Path) -> Result<Vec<MemoryVolume>, RuntimeError> {
    let Some(text) = config.annotations.get(MEMORY_VOLUMES) else {
        return Ok(Vec::new());
    };
    let field = format!("annotations[{MEMORY_VOLUMES:?}]");
    let volumes: Vec<MemoryVolume> = serde_json::from_str(text)
        .map_err(|e| invalid(format!("{field}: not a JSON list of {{path, sizeBytes, gid}}: {e}")))?;
    for v in &volumes {
        let inside = v
            .path
            .strip_prefix(pods_dir)
            .ok()
            .filter(|rest| {
                rest.components().next().is_some()
                    && rest.components().all(|c| matches!(c, std::path::Component::Normal(_)))
            })
            .is_some();
        if !inside {
            return Err(invalid(format!(
                "{field}: path {} is not under the agent's pod directories ({})",
                v.path.display(),
                pods_dir.display()
            )));
        }
        if !v.path.is_dir() {
            return Err(invalid(format!(
                "{field}: path {} is not a directory (its owner makes the mount point first)",
                v.path.display()
            )));
        }
    }
    Ok(volumes)
}

fn invalid(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidArgument(msg.into())
}

fn unimplemented(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Unimplemented(msg.into())
}

fn namespace_mode(v: i32, field: &str) -> Result<cri::NamespaceMode, RuntimeError> {
    cri::NamespaceMode::try_from(v).map_err(|_| invalid(format!("{field}: unknown namespace mode {v}")))
}

/// The pod's cgroup: the client's `cgroup_parent` (a kubelet's `/kubepods/burstable/pod<uid>`)
/// placed under the agent's cgroup parent, as minilet never writes outside its own subtree;
/// without one, a BestEffort pod cgroup named after the pod's UID.
fn pod_cgroup(parent: &str, uid: &str) -> Result<String, RuntimeError> {
    let rel = parent.trim_matches('/');
    if rel.is_empty() {
        return Ok(format!("{}/besteffort/pod{}", crate::runtime::KUBEPODS, safe_uid(uid)?));
    }
    if rel.ends_with(".slice") {
        return Err(invalid(format!(
            "cgroup_parent {parent:?} is a systemd slice: minilet uses the cgroupfs driver (see RuntimeConfig)"
        )));
    }
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(invalid(format!(
                "cgroup_parent {parent:?}: {part:?} is not a valid path component"
            )));
        }
    }
    Ok(rel.to_string())
}

fn safe_uid(uid: &str) -> Result<&str, RuntimeError> {
    if uid.is_empty() || !uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(invalid(format!(
            "metadata.uid {uid:?}: must be non-empty letters, digits, '-' or '_'"
        )));
    }
    Ok(uid)
}

/// `pods_dir`: the agent's pod directories, the only place a memory-backed volume may be.
pub fn sandbox(
    config: &cri::PodSandboxConfig,
    node: &crate::pod::node::NodeInfo,
    pods_dir: &Path,
) -> Result<SandboxPlan, RuntimeError> {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("metadata is required"))?;
    if meta.name.is_empty() {
        return Err(invalid("metadata.name is required"));
    }
    if meta.namespace.is_empty() {
        return Err(invalid("metadata.namespace is required"));
    }
    let uid = safe_uid(&meta.uid)?;
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let ns = sc.namespace_options.clone().unwrap_or_default();
    let net = namespace_mode(ns.network, "linux.security_context.namespace_options.network")?;
    let pid = namespace_mode(ns.pid, "linux.security_context.namespace_options.pid")?;
    let ipc = namespace_mode(ns.ipc, "linux.security_context.namespace_options.ipc")?;
    if pid == cri::NamespaceMode::Target || net == cri::NamespaceMode::Target || ipc == cri::NamespaceMode::Target {
        return Err(invalid("namespace mode TARGET is for containers, not sandboxes"));
    }
    if ns
        .userns_options
        .as_ref()
        .is_some_and(|u| u.mode != cri::NamespaceMode::Node as i32)
    {
        return Err(unimplemented("user namespaces are not supported by minilet"));
    }
    let host_ports = if net == cri::NamespaceMode::Node {
        Vec::new()
    } else {
        host_ports(&config.port_mappings)?
    };
    if let Some(sel) = &sc.selinux_options
        && !(sel.user.is_empty() && sel.role.is_empty() && sel.r#type.is_empty() && sel.level.is_empty())
        && selinux_enabled()
    {
        return Err(unimplemented("SELinux labels are not supported by minilet"));
    }
    if let Some(w) = &config.windows
        && *w != cri::WindowsPodSandboxConfig::default()
    {
        return Err(invalid("windows settings on a Linux node"));
    }
    let host_net = net == cri::NamespaceMode::Node;
    let namespaces = SandboxNamespaces {
        network: !host_net,
        pid: pid != cri::NamespaceMode::Node,
        ipc: ipc != cri::NamespaceMode::Node,
        uts: !host_net,
    };
    let hostname = hostname(config, node);
    let hosts = crate::runtime::sandbox::EtcFiles::sandbox_hosts(&hostname, host_net, node);
    // containerd's rule: the client's DNS config when it gives one, else the node's file.
    let resolv_conf = match &config.dns_config {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut out = String::new();
            for s in &d.servers {
                out.push_str(&format!("nameserver {s}\n"));
            }
            if !d.searches.is_empty() {
                out.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            if !d.options.is_empty() {
                out.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            out
        }
        _ => node.resolv_conf.clone(),
    };
    let mut sysctls = Vec::new();
    for (name, value) in &linux.sysctls {
        sysctls.push(
            crate::runtime::sysctl::check(name, value, &namespaces)
                .map_err(|e| invalid(format!("linux.sysctls[{name:?}]: {e}")))?,
        );
    }
    let resources = match linux.resources.as_ref() {
        Some(r) => resources(r, "linux.resources")?.0,
        None => Resources::default(),
    };
    let pause = pause_security(&sc)?;
    let bandwidth = bandwidth::from_annotations(|k| config.annotations.get(k).map(String::as_str)).map_err(invalid)?;
    let memory_volumes = memory_volumes(config, pods_dir)?;
    Ok(SandboxPlan {
        cgroup: pod_cgroup(&linux.cgroup_parent, uid)?,
        namespaces,
        share_pid: pid != cri::NamespaceMode::Container,
        hostname,
        hosts,
        resolv_conf,
        resources,
        host_ports,
        sysctls,
        pause,
        bandwidth,
        memory_volumes,
    })
}

/// A user or group ID from the CRI's int64. Linux IDs are u32, and u32::MAX is the kernel's
/// "no ID" (-1). Anything else is refused, naming the field: cast, 4294967296 would be root.
fn linux_id(v: i64, field: &str) -> Result<u32, RuntimeError> {
    u32::try_from(v)
        .ok()
        .filter(|id| *id != u32::MAX)
        .ok_or_else(|| invalid(format!("{field}: {v} is not a valid ID (0-4294967294)")))
}

/// What the sandbox's security context asks of its pause, containerd's way: it runs as
/// `run_as_user`:`run_as_group` with the supplemental groups, confined by `seccomp` unless
/// the sandbox is privileged. The pause has no root filesystem of its own (it runs from the
/// node's), so a read-only one cannot be given and is refused.
fn pause_security(sc: &cri::LinuxSandboxSecurityContext) -> Result<PauseSecurity, RuntimeError> {
    const FIELD: &str = "linux.security_context";
    let id = |v: i64, field: &str| linux_id(v, &format!("{FIELD}.{field}"));
    if sc.readonly_rootfs {
        return Err(invalid(format!(
            "{FIELD}.readonly_rootfs: the pause runs from the node's filesystem, not an image, and cannot be given a read-only root"
        )));
    }
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() {
        return Err(invalid(format!(
            "{FIELD}.run_as_group is only allowed with run_as_user"
        )));
    }
    check_apparmor(sc.apparmor.as_ref(), "")?;
    let supplemental_groups = sc
        .supplemental_groups
        .iter()
        .enumerate()
        .map(|(i, g)| id(*g, &format!("supplemental_groups[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let seccomp = seccomp_request(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?;
    Ok(PauseSecurity {
        user: UserSpec {
            uid: sc
                .run_as_user
                .as_ref()
                .map(|u| id(u.value, "run_as_user"))
                .transpose()?,
            gid: sc
                .run_as_group
                .as_ref()
                .map(|g| id(g.value, "run_as_group"))
                .transpose()?,
            image_user: String::new(),
            supplemental_groups,
            strict_groups: sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32,
        },
        seccomp: if sc.privileged {
            seccomp::Request::Unconfined
        } else {
            seccomp
        },
    })
}

/// The sandbox's hostname: the node's for a host-network sandbox (containerd's rule; the
/// node's name here, as the static pods'), else the client's, else the pod's name cut to a
/// DNS label.
pub fn hostname(config: &cri::PodSandboxConfig, node: &crate::pod::node::NodeInfo) -> String {
    let host_net = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|sc| sc.namespace_options.as_ref())
        .is_some_and(|ns| ns.network == cri::NamespaceMode::Node as i32);
    if host_net {
        node.name.clone()
    } else if config.hostname.is_empty() {
        config
            .metadata
            .as_ref()
            .map(|m| m.name.chars().take(63).collect())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    }
}

/// `KEY=value` variables with `overrides` applied as containerd applies them: a variable
/// already there is replaced where it stands, a new one is appended.
fn override_env(env: &mut Vec<String>, overrides: impl IntoIterator<Item = String>) {
    for kv in overrides {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k).to_string();
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(e) => *e = kv,
            None => env.push(kv),
        }
    }
}

/// The sandbox's `port_mappings` with a host port (a mapping without one only documents the
/// container's port): the forwarder's ports, or CNI's `portMappings`. An empty `host_ip` is
/// all addresses.
pub fn host_ports(mappings: &[cri::PortMapping]) -> Result<Vec<HostPort>, RuntimeError> {
    let mut out = Vec::new();
    for (i, m) in mappings.iter().enumerate().filter(|(_, m)| m.host_port != 0) {
        let field = format!("port_mappings[{i}]");
        let port = |v: i32, name: &str| {
            u16::try_from(v)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid(format!("{field}.{name}: {v} is not a port (1-65535)")))
        };
        let protocol = match cri::Protocol::try_from(m.protocol) {
            Ok(cri::Protocol::Tcp) => Protocol::Tcp,
            Ok(cri::Protocol::Udp) => Protocol::Udp,
            Ok(cri::Protocol::Sctp) => Protocol::Sctp,
            Err(_) => return Err(invalid(format!("{field}.protocol: unknown protocol {}", m.protocol))),
        };
        let host_ip = match m.host_ip.as_str() {
            "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ip => ip
                .parse()
                .map_err(|_| invalid(format!("{field}.host_ip: {ip:?} is not an IP address")))?,
        };
        out.push(HostPort {
            protocol,
            host_ip,
            host_port: port(m.host_port, "host_port")?,
            container_port: port(m.container_port, "container_port")?,
        });
    }
    Ok(out)
}

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

/// LinuxContainerResources as cgroup settings, and the oom_score_adj. Fields minilet cannot
/// enforce are refused.
pub fn resources(r: &cri::LinuxContainerResources, field: &str) -> Result<(Resources, Option<i32>), RuntimeError> {
    if !r.cpuset_cpus.is_empty() || !r.cpuset_mems.is_empty() {
        return Err(unimplemented(format!(
            "{field}: cpusets are not supported by minilet yet"
        )));
    }
    if let Some(h) = r.hugepage_limits.iter().find(|h| h.limit != 0) {
        return Err(unimplemented(format!(
            "{field}: hugepage limits are not supported by minilet (asked {} of {})",
            h.limit, h.page_size
        )));
    }
    if !r.unified.is_empty() {
        return Err(unimplemented(format!(
            "{field}: unified cgroup settings are not supported by minilet yet"
        )));
    }
    if r.memory_swap_limit_in_bytes > 0 && r.memory_swap_limit_in_bytes != r.memory_limit_in_bytes {
        return Err(unimplemented(format!(
            "{field}: swap limits are not supported by minilet (containers get no swap beyond their memory limit)"
        )));
    }
    let oom = (r.oom_score_adj != 0).then(|| r.oom_score_adj.clamp(-1000, 1000) as i32);
    Ok((
        Resources {
            cpu_shares: (r.cpu_shares > 0).then_some(r.cpu_shares as u64),
            cpu_quota: (r.cpu_quota > 0).then_some(r.cpu_quota),
            cpu_period: (r.cpu_period > 0).then_some(r.cpu_period as u64),
            memory_limit: (r.memory_limit_in_bytes > 0).then_some(r.memory_limit_in_bytes),
            pids_limit: None,
        },
        oom,
    ))
}

/// A SecurityProfile (or the deprecated profile path) as a seccomp request. No profile at
/// all runs unconfined, as containerd does.
fn seccomp_request(profile: Option<&cri::SecurityProfile>, path: &str) -> Result<seccomp::Request, RuntimeError> {
    use cri::security_profile::ProfileType;
    if !path.is_empty() {
        return match path {
            "unconfined" => Ok(seccomp::Request::Unconfined),
            "runtime/default" | "docker/default" => Ok(seccomp::Request::RuntimeDefault),
            p => match p.strip_prefix("localhost/") {
                Some(file) if file.starts_with('/') => Ok(seccomp::Request::Localhost(PathBuf::from(file))),
                _ => Err(invalid(format!(
                    "seccomp_profile_path {p:?}: want unconfined, runtime/default or localhost/<absolute path>"
                ))),
            },
        };
    }
    let Some(p) = profile else {
        return Ok(seccomp::Request::Unconfined);
    };
    match ProfileType::try_from(p.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(seccomp::Request::RuntimeDefault),
        Ok(ProfileType::Unconfined) => Ok(seccomp::Request::Unconfined),
        Ok(ProfileType::Localhost) if p.localhost_ref.starts_with('/') => {
            Ok(seccomp::Request::Localhost(PathBuf::from(&p.localhost_ref)))
        }
        Ok(ProfileType::Localhost) => Err(invalid(format!(
            "seccomp localhost_ref {:?} must be an absolute path",
            p.localhost_ref
        ))),
        Err(_) => Err(invalid(format!("unknown seccomp profile type {}", p.profile_type))),
    }
}

/// AppArmor: unconfined always works; a default profile is what an AppArmor-less host has
/// anyway (containerd applies none there either); a named profile cannot be honoured.
fn check_apparmor(profile: Option<&cri::SecurityProfile>, name: &str) -> Result<(), RuntimeError> {
    use cri::security_profile::ProfileType;
    let localhost = match profile {
        Some(p) if ProfileType::try_from(p.profile_type) == Ok(ProfileType::Localhost) => Some(p.localhost_ref.clone()),
        _ => (!name.is_empty() && name != "unconfined" && name != "runtime/default").then(|| name.to_string()),
    };
    match localhost {
        Some(p) if !apparmor_enabled() => Err(invalid(format!(
            "AppArmor profile {p:?} cannot be applied: AppArmor is not enabled on this host"
        ))),
        Some(p) => Err(unimplemented(format!(
            "AppArmor profile {p:?}: AppArmor profiles are not supported by minilet"
        ))),
        None => Ok(()),
    }
}

/// Everything CreateContainer needs from the client's request, checked.
pub struct ContainerInputs<'a> {
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a super::Sandbox,
    pub image: &'a Image,
    pub log_path: PathBuf,
    /// For a host-network sandbox's hostname.
    pub node: &'a crate::pod::node::NodeInfo,
}

pub fn container(i: &ContainerInputs) -> Result<ContainerConfig, RuntimeError> {
    let c = i.config;
    let meta = c.metadata.as_ref().ok_or_else(|| invalid("metadata is required"))?;
    if meta.name.is_empty() {
        return Err(invalid("metadata.name is required"));
    }
    if !c.devices.is_empty() {
        return Err(unimplemented("devices are not supported by minilet yet"));
    }
    if !c.cdi_devices.is_empty() {
        return Err(unimplemented("CDI devices are not supported by minilet"));
    }
    if let Some(w) = &c.windows
        && *w != cri::WindowsContainerConfig::default()
    {
        return Err(invalid("windows settings on a Linux node"));
    }
    let linux = c.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let ns = sc.namespace_options.clone().unwrap_or_default();
    let pid = namespace_mode(ns.pid, "linux.security_context.namespace_options.pid")?;
    if pid == cri::NamespaceMode::Target {
        return Err(unimplemented(
            "sharing a target container's PID namespace is not supported by minilet yet",
        ));
    }
    let sb_ns = &i.sandbox.record.namespaces;
    // A container cannot have namespaces its sandbox does not: containerd takes network and
    // IPC from the sandbox whatever the container says, and so does minilet; PID is the one a
    // container chooses (its own, or the pod's).
    let share_pid = !sb_ns.pid || pid != cri::NamespaceMode::Container;
    if ns
        .userns_options
        .as_ref()
        .is_some_and(|u| u.mode != cri::NamespaceMode::Node as i32)
    {
        return Err(unimplemented("user namespaces are not supported by minilet"));
    }
    if let Some(sel) = &sc.selinux_options
        && !(sel.user.is_empty() && sel.role.is_empty() && sel.r#type.is_empty() && sel.level.is_empty())
        && selinux_enabled()
    {
        return Err(unimplemented("SELinux labels are not supported by minilet"));
    }
    check_apparmor(sc.apparmor.as_ref(), &sc.apparmor_profile)?;
    let caps = sc.capabilities.clone().unwrap_or_default();
    if !caps.add_ambient_capabilities.is_empty() {
        return Err(unimplemented("ambient capabilities are not supported by minilet"));
    }
    let kernel_paths = kernel_paths(&sc)?;

    let (resources, oom) = match linux.resources.as_ref() {
        Some(r) => resources(r, "linux.resources")?,
        None => (Resources::default(), None),
    };

    let image_cfg = &i.image.config;
    let args = command::resolve(&c.command, &c.args, &image_cfg.entrypoint, &image_cfg.cmd);
    if args.is_empty() {
        return Err(invalid(format!(
            "no command specified: the image {} has no Entrypoint or Cmd and the container sets no command",
            i.image.summary.name
        )));
    }
    if let Some(kv) = c.envs.iter().find(|kv| kv.key.is_empty() || kv.key.contains('=')) {
        return Err(invalid(format!("envs: invalid variable name {:?}", kv.key)));
    }
    // containerd's order: HOSTNAME (the sandbox's), then the image's variables, then the
    // client's, each replacing a variable of the same name where it stands.
    let mut env = vec![format!("HOSTNAME={}", hostname(&i.sandbox.config, i.node))];
    override_env(&mut env, image_cfg.env.iter().cloned());
    override_env(&mut env, c.envs.iter().map(|kv| format!("{}={}", kv.key, kv.value)));
    let cwd = if !c.working_dir.is_empty() {
        c.working_dir.clone()
    } else if !image_cfg.working_dir.is_empty() {
        image_cfg.working_dir.clone()
    } else {
        "/".into()
    };
    if !cwd.starts_with('/') {
        return Err(invalid(format!("working_dir {cwd:?} must be an absolute path")));
    }
    let user = container_user(&sc, &image_cfg.user)?;
    let capabilities = (!sc.privileged).then(|| {
        let add: Vec<String> = caps.add_capabilities.iter().map(|c| strip_cap(c)).collect();
        let drop: Vec<String> = caps.drop_capabilities.iter().map(|c| strip_cap(c)).collect();
        capabilities::effective_set(&add, &drop)
    });

    // As containerd does: the sandbox's /etc files and /dev/shm, unless the client mounts
    // its own there (a kubelet brings its managed /etc/hosts), then the client's mounts.
    let mut mounts = Vec::new();
    let asked = |dest: &str| c.mounts.iter().any(|m| m.container_path == dest);
    for name in ["hosts", "hostname", "resolv.conf"] {
        let dest = format!("/etc/{name}");
        if !asked(&dest) {
            mounts.push(BindMount {
                source: i.sandbox.dir.join("etc").join(name),
                destination: dest,
                readonly: false,
                file: true,
                from_host: None,
            });
        }
    }
    if !asked("/dev/shm") {
        mounts.push(BindMount {
            source: if i.sandbox.record.namespaces.ipc {
                i.sandbox.dir.join("shm")
            } else {
                PathBuf::from("/dev/shm")
            },
            destination: "/dev/shm".into(),
            readonly: false,
            file: false,
            from_host: None,
        });
    }
    for (n, m) in c.mounts.iter().enumerate() {
        mounts.push(mount(m, n, &i.sandbox.record.memory_volumes)?);
    }

    Ok(ContainerConfig {
        pod_uid: i
            .sandbox
            .config
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default(),
        pod_dir: i.sandbox.dir.clone(),
        name: meta.name.clone(),
        attempt: meta.attempt,
        image_ref: c.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
        image: i.image.clone(),
        pod_cgroup: i.sandbox.record.cgroup.clone(),
        resources,
        devices: if sc.privileged {
            DevicePolicy::AllowAll
        } else {
            DevicePolicy::Default
        },
        oom_score_adj: oom.unwrap_or(0),
        share_pid,
        process: ProcessSpec {
            args,
            env,
            cwd,
            user,
            capabilities,
            no_new_privileges: sc.no_new_privs,
            seccomp: None,
            stdio: StdioSpec {
                stdin: c.stdin,
                stdin_once: c.stdin_once,
                tty: c.tty,
            },
        },
        mounts,
        readonly_rootfs: sc.readonly_rootfs,
        kernel_paths: Some(kernel_paths),
        log_path: i.log_path.clone(),
        seccomp: if sc.privileged {
            seccomp::Request::Unconfined
        } else {
            seccomp_request(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?
        },
    })
}

/// Who the container runs as: run_as_user / run_as_username, else the image's user; the
/// IDs range-checked (see [`linux_id`]).
fn container_user(sc: &cri::LinuxContainerSecurityContext, image_user: &str) -> Result<UserSpec, RuntimeError> {
    const FIELD: &str = "linux.security_context";
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err(invalid(format!(
            "{FIELD}.run_as_group is only allowed with run_as_user or run_as_username"
        )));
    }
    let id = |v: &cri::Int64Value, field: &str| linux_id(v.value, &format!("{FIELD}.{field}"));
    Ok(UserSpec {
        uid: sc.run_as_user.as_ref().map(|u| id(u, "run_as_user")).transpose()?,
        gid: sc.run_as_group.as_ref().map(|g| id(g, "run_as_group")).transpose()?,
        image_user: if sc.run_as_username.is_empty() {
            image_user.to_string()
        } else {
            sc.run_as_username.clone()
        },
        supplemental_groups: sc
            .supplemental_groups
            .iter()
            .enumerate()
            .map(|(i, g)| linux_id(*g, &format!("{FIELD}.supplemental_groups[{i}]")))
            .collect::<Result<_, _>>()?,
        strict_groups: sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32,
    })
}

/// `CAP_NET_ADMIN` and `NET_ADMIN` both name a capability (the kubelet passes the latter).
fn strip_cap(c: &str) -> String {
    c.strip_prefix("CAP_").unwrap_or(c).to_string()
}

/// The paths a container has masked and read-only, containerd's rule: a privileged container
/// gets none; otherwise a list the client gives replaces the runtime's default list (the
/// kubelet sends the defaults), an empty one keeps it.
fn kernel_paths(sc: &cri::LinuxContainerSecurityContext) -> Result<KernelPaths, RuntimeError> {
    if sc.privileged {
        return Ok(KernelPaths::default());
    }
    let defaults = KernelPaths::defaults();
    let pick = |asked: &[String], default: Vec<String>, field: &str| -> Result<Vec<String>, RuntimeError> {
        if let Some(p) = asked.iter().find(|p| !p.starts_with('/') || p.contains('\0')) {
            return Err(invalid(format!(
                "linux.security_context.{field}: {p:?} must be an absolute path"
            )));
        }
        Ok(if asked.is_empty() { default } else { asked.to_vec() })
    };
    Ok(KernelPaths {
        masked: pick(&sc.masked_paths, defaults.masked, "masked_paths")?,
        readonly: pick(&sc.readonly_paths, defaults.readonly, "readonly_paths")?,
    })
}

/// One client mount. A host path that is one of the sandbox's `memory_volumes` is bound from
/// the pod's mount namespace, where its tmpfs is.
fn mount(m: &cri::Mount, n: usize, memory_volumes: &[PathBuf]) -> Result<BindMount, RuntimeError> {
    let field = format!("mounts[{n}]");
    if !m.container_path.starts_with('/') {
        return Err(invalid(format!(
            "{field}.container_path {:?} must be an absolute path",
            m.container_path
        )));
    }
    if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        return Err(unimplemented(format!(
            "{field}: image volumes are not supported by minilet"
        )));
    }
    let propagation = match cri::MountPropagation::try_from(m.propagation) {
        Ok(cri::MountPropagation::PropagationPrivate) => Propagation::Private,
        Ok(cri::MountPropagation::PropagationHostToContainer) => Propagation::HostToContainer,
        Ok(cri::MountPropagation::PropagationBidirectional) => Propagation::Bidirectional,
        Err(_) => {
            return Err(invalid(format!(
                "{field}.propagation: unknown mount propagation {}",
                m.propagation
            )));
        }
    };
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(unimplemented(format!(
            "{field}: idmapped mounts are not supported by minilet"
        )));
    }
    if m.recursive_read_only && !m.readonly {
        return Err(invalid(format!(
            "{field}.recursive_read_only needs readonly: a recursively read-only mount is read-only"
        )));
    }
    if m.recursive_read_only && propagation != Propagation::Private {
        return Err(invalid(format!(
            "{field}.recursive_read_only needs PROPAGATION_PRIVATE: a mount propagated in later would not be read-only"
        )));
    }
    if !m.host_path.starts_with('/') {
        return Err(invalid(format!(
            "{field}.host_path {:?} must be an absolute path",
            m.host_path
        )));
    }
    let source = PathBuf::from(&m.host_path);
    if memory_volumes.contains(&source) {
        if propagation != Propagation::Private {
            return Err(invalid(format!(
                "{field}: {} is a memory-backed volume that lives inside the pod: mount propagation cannot reach it (use PROPAGATION_PRIVATE)",
                m.host_path
            )));
        }
        return Ok(BindMount {
            source,
            destination: m.container_path.clone(),
            readonly: m.readonly,
            file: false,
            from_host: None,
        });
    }
    // containerd (like Docker) creates a missing host path as a directory.
    let file = match std::fs::metadata(&source) {
        Ok(md) => !md.is_dir(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&source)
                .map_err(|e| RuntimeError::io(format!("{field}: create host path {}", source.display()), e))?;
            false
        }
        Err(e) => return Err(RuntimeError::io(format!("{field}: host path {}", source.display()), e)),
    };
    Ok(BindMount {
        source,
        destination: m.container_path.clone(),
        readonly: m.readonly,
        file,
        from_host: Some(HostTree {
            propagation,
            recursive_readonly: m.recursive_read_only,
        }),
    })
}

/// Where a container's log goes: the sandbox's log directory joined with the container's
/// log path, as the CRI says; without one, into the sandbox's own directory (removed with the
/// sandbox), since the monitor always writes somewhere.
pub fn log_path(sandbox: &super::Sandbox, config: &cri::ContainerConfig) -> Result<PathBuf, RuntimeError> {
    if config.log_path.is_empty() {
        let meta = config.metadata.clone().unwrap_or_default();
        return Ok(sandbox
            .dir
            .join("logs")
            .join(&*crate::runtime::state::path_component(&format!(
                "{}_{}.log",
                meta.name, meta.attempt
            ))));
    }
    let rel = Path::new(&config.log_path);
    if rel.is_absolute() && sandbox.config.log_directory.is_empty() {
        return Ok(rel.to_path_buf());
    }
    if sandbox.config.log_directory.is_empty() {
        return Err(invalid(format!(
            "log_path {:?} is relative and the sandbox has no log_directory",
            config.log_path
        )));
    }
    if rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(invalid(format!(
            "log_path {:?} must not contain \"..\"",
            config.log_path
        )));
    }
    Ok(Path::new(&sandbox.config.log_directory).join(rel.strip_prefix("/").unwrap_or(rel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(protocol: i32, container_port: i32, host_port: i32) -> cri::PortMapping {
        cri::PortMapping {
            protocol,
            container_port,
            host_port,
            host_ip: String::new(),
        }
    }

    fn sandbox_with(sc: cri::LinuxSandboxSecurityContext) -> Result<SandboxPlan, RuntimeError> {
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "n".into(),
                attempt: 0,
            }),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        };
        sandbox(
            &config,
            &crate::pod::config::tests::node(),
            Path::new("/nonexistent/pods"),
        )
    }

    #[test]
    fn the_pause_gets_the_sandboxs_user_groups_and_seccomp() {
        use cri::security_profile::ProfileType;
        let runtime_default = Some(cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        let plan = sandbox_with(cri::LinuxSandboxSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            run_as_group: Some(cri::Int64Value { value: 3000 }),
            supplemental_groups: vec![4000, 5000],
            seccomp: runtime_default.clone(),
            ..Default::default()
        })
        .expect("plan");
        assert_eq!(
            (
                plan.pause.user.uid,
                plan.pause.user.gid,
                plan.pause.user.supplemental_groups.as_slice()
            ),
            (Some(1000), Some(3000), [4000, 5000].as_slice())
        );
        assert_eq!(plan.pause.user.image_user, "", "the pause has no image user");
        assert_eq!(plan.pause.seccomp, seccomp::Request::RuntimeDefault);
        let privileged = sandbox_with(cri::LinuxSandboxSecurityContext {
            privileged: true,
            seccomp: runtime_default,
            ..Default::default()
        })
        .expect("plan");
        assert_eq!(privileged.pause.seccomp, seccomp::Request::Unconfined, "privileged");
        assert_eq!(
            sandbox_with(Default::default()).expect("plan").pause,
            PauseSecurity::default(),
            "nothing asked: root, unconfined"
        );
    }

    #[test]
    fn a_container_id_outside_linuxs_range_is_refused_not_wrapped() {
        let with = |uid: Option<i64>, gid: Option<i64>, groups: Vec<i64>| {
            container_user(
                &cri::LinuxContainerSecurityContext {
                    run_as_user: uid.map(|value| cri::Int64Value { value }),
                    run_as_group: gid.map(|value| cri::Int64Value { value }),
                    supplemental_groups: groups,
                    ..Default::default()
                },
                "",
            )
        };
        let ok = with(Some(0), Some(4_294_967_294), vec![1, 2]).expect("in range");
        assert_eq!(
            (ok.uid, ok.gid, ok.supplemental_groups),
            (Some(0), Some(4_294_967_294), vec![1, 2])
        );
        for (user, field) in [
            (
                with(Some(1 << 32), None, vec![]),
                "linux.security_context.run_as_user: 4294967296",
            ),
            (with(Some(-1), None, vec![]), "linux.security_context.run_as_user: -1"),
            (
                with(Some(0), Some(4_294_967_295), vec![]),
                "linux.security_context.run_as_group: 4294967295",
            ),
            (
                with(Some(0), None, vec![5, 1 << 40]),
                "linux.security_context.supplemental_groups[1]: 1099511627776",
            ),
            (
                with(None, Some(5), vec![]),
                "linux.security_context.run_as_group is only allowed",
            ),
        ] {
            let e = user.expect_err(field);
            assert!(e.to_string().contains(field), "{e} should name {field}");
        }
    }

    #[test]
    fn sandbox_security_fields_the_pause_cannot_take_are_refused_by_name() {
        for (sc, field) in [
            (
                cri::LinuxSandboxSecurityContext {
                    readonly_rootfs: true,
                    ..Default::default()
                },
                "linux.security_context.readonly_rootfs",
            ),
            (
                cri::LinuxSandboxSecurityContext {
                    run_as_group: Some(cri::Int64Value { value: 5 }),
                    ..Default::default()
                },
                "linux.security_context.run_as_group",
            ),
            (
                cri::LinuxSandboxSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: -1 }),
                    ..Default::default()
                },
                "linux.security_context.run_as_user: -1",
            ),
            (
                cri::LinuxSandboxSecurityContext {
                    supplemental_groups: vec![1, 1 << 40],
                    ..Default::default()
                },
                "linux.security_context.supplemental_groups[1]",
            ),
            (
                cri::LinuxSandboxSecurityContext {
                    seccomp_profile_path: "relative.json".into(),
                    ..Default::default()
                },
                "seccomp_profile_path",
            ),
        ] {
            match sandbox_with(sc) {
                Err(RuntimeError::InvalidArgument(msg)) => assert!(msg.contains(field), "{msg}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn bandwidth_annotations_become_cnis_bandwidth_or_are_refused_by_name() {
        let with = |value: &str| {
            let mut config = cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: "p".into(),
                    uid: "u".into(),
                    namespace: "n".into(),
                    attempt: 0,
                }),
                ..Default::default()
            };
            config.annotations.insert(bandwidth::INGRESS.into(), value.into());
            sandbox(
                &config,
                &crate::pod::config::tests::node(),
                Path::new("/nonexistent/pods"),
            )
        };
        let b = with("5M").expect("plan").bandwidth.expect("bandwidth");
        assert_eq!((b.ingress_rate, b.egress_rate), (Some(5_000_000), None));
        assert_eq!(sandbox_with(Default::default()).expect("plan").bandwidth, None);
        match with("10") {
            Err(RuntimeError::InvalidArgument(msg)) => {
                assert!(
                    msg.contains(bandwidth::INGRESS) && msg.contains("unreasonably small"),
                    "{msg}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn port_mappings_name_the_bad_field_and_become_cni_port_mappings() {
        use crate::runtime::network::PortMapping;
        let ok = host_ports(&[mapping(1, 53, 5353), mapping(0, 80, 0)]).unwrap();
        assert_eq!(
            ok.iter().map(PortMapping::from).collect::<Vec<_>>(),
            vec![PortMapping {
                host_port: 5353,
                container_port: 53,
                protocol: "udp".into(),
                host_ip: String::new(),
            }],
            "UDP kept, the one without a host port left out"
        );
        let err = host_ports(&[mapping(0, 80, 70000)]).unwrap_err().to_string();
        assert!(err.contains("port_mappings[0].host_port: 70000"), "{err}");
        let err = host_ports(&[mapping(0, 0, 8080)]).unwrap_err().to_string();
        assert!(err.contains("port_mappings[0].container_port"), "{err}");
        let err = host_ports(&[mapping(9, 80, 8080)]).unwrap_err().to_string();
        assert!(err.contains("port_mappings[0].protocol"), "{err}");
    }
}

#[cfg(test)]
mod memory_volume_tests {
    use super::*;

    fn config_with(annotation: &str) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            annotations: [(MEMORY_VOLUMES.to_string(), annotation.to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn memory_volumes_are_taken_only_as_directories_under_the_pod_directories() {
        let root = tempfile::tempdir().expect("temp dir");
        let pods = root.path().join("pods");
        let vol = pods.join("u1/volumes/kubernetes.io~empty-dir/mem");
        std::fs::create_dir_all(&vol).expect("mount point");
        std::fs::create_dir_all(root.path().join("elsewhere")).expect("dir");

        let ok = format!(
            r#"[{{"path": "{}", "sizeBytes": 1048576, "gid": 2000}}]"#,
            vol.display()
        );
        let read = memory_volumes(&config_with(&ok), &pods).expect("accepted");
        assert_eq!(
            read,
            vec![MemoryVolume {
                path: vol.clone(),
                size_bytes: Some(1 << 20),
                gid: Some(2000)
            }]
        );
        assert!(
            memory_volumes(&cri::PodSandboxConfig::default(), &pods)
                .expect("none")
                .is_empty()
        );

        for (annotation, says) in [
            (
                format!(r#"[{{"path": "{}/elsewhere"}}]"#, root.path().display()),
                "is not under the agent's pod directories",
            ),
            (
                format!(r#"[{{"path": "{}/u1/../../elsewhere"}}]"#, pods.display()),
                "is not under the agent's pod directories",
            ),
            (
                format!(r#"[{{"path": "{}"}}]"#, pods.display()),
                "is not under the agent's pod directories",
            ),
            (
                format!(r#"[{{"path": "{}/u2/missing"}}]"#, pods.display()),
                "is not a directory",
            ),
            (r#"{"path": "/x"}"#.to_string(), "not a JSON list"),
            (
                format!(r#"[{{"path": "{}", "medium": "x"}}]"#, vol.display()),
                "not a JSON list",
            ),
        ] {
            let err = memory_volumes(&config_with(&annotation), &pods).expect_err(&annotation);
            assert!(matches!(err, RuntimeError::InvalidArgument(_)), "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains(MEMORY_VOLUMES) && text.contains(says),
                "{annotation}: {text}"
            );
        }
    }

    #[test]
    fn a_mount_of_a_memory_volume_is_bound_from_the_pod_and_only_privately() {
        let vol = PathBuf::from("/state/pods/u1/volumes/kubernetes.io~empty-dir/mem");
        let m = cri::Mount {
            container_path: "/mem".into(),
            host_path: vol.display().to_string(),
            readonly: true,
            ..Default::default()
        };
        let bound = mount(&m, 0, std::slice::from_ref(&vol)).expect("private mount");
        assert_eq!(
            bound,
            BindMount {
                source: vol.clone(),
                destination: "/mem".into(),
                readonly: true,
                file: false,
                from_host: None,
            }
        );
        let shared = cri::Mount {
            propagation: cri::MountPropagation::PropagationBidirectional as i32,
            ..m
        };
        let err = mount(&shared, 3, std::slice::from_ref(&vol)).expect_err("propagation");
        let text = err.to_string();
        assert!(
            text.contains("mounts[3]") && text.contains("memory-backed volume"),
            "{text}"
        );
    }
}
