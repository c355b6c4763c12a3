//! Pod sandboxes: the pod's directory, cgroup, generated /etc files, volumes, and its pause.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::network::PodNetwork;
use super::spec::{ProcessSpec, SandboxNamespaces, SandboxSpec, SandboxState, StdioSpec, TmpfsSpec, UserSpec};
use super::{IoContext, Result, Runtime, blocking, capabilities, helper, process};
use crate::atomic_file;
use crate::cgroups::{DevicePolicy, Resources};
use crate::file_modes;

/// Everything the runtime needs to create a pod's sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub pod_uid: String,
    /// The pod's state directory (a static pod's `pods/<uid>`, a CRI sandbox's
    /// `sandboxes/<id>`): etc files, volumes, sandbox.json and containers live in it.
    pub dir: PathBuf,
    pub hostname: String,
    pub namespaces: SandboxNamespaces,
    /// The pod's cgroup, relative to the cgroup parent.
    pub cgroup: String,
    pub resources: Resources,
    /// The kubelet's value for the pause (clamped by the runtime if not permitted).
    pub oom_score_adj: i32,
    pub shm_size: u64,
    /// Memory-backed volumes of the pod side (a static pod's `medium: Memory` emptyDirs).
    /// The pod side sets up every other volume itself, as the kubelet does.
    pub memory_volumes: Vec<MemoryVolume>,
    pub etc: EtcFiles,
    /// Who the pod is for CNI and what it asks of the network (used with a pod network).
    pub network: PodNetwork,
    /// Namespaced sysctls (checked by [`super::sysctl::check`]).
    pub sysctls: Vec<super::sysctl::Sysctl>,
    pub pause: PauseSecurity,
}

/// A memory-backed volume: a tmpfs the sandbox helper mounts in the pod's mount namespace
/// on a mount point the pod side made, fresh each time the pause starts, so it never
/// appears in the host's or the agent's mount namespace and goes with the pause.
/// Containers get it bound from there. A CRI client names these in the sandbox annotation
/// [`super::cri::translate::MEMORY_VOLUMES`] (the CRI has no field for them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryVolume {
    pub path: PathBuf,
    /// The tmpfs size (`sizeLimit`); the kernel's default (half the memory) without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The pod's fsGroup: the tmpfs root gets it, and setgid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

impl MemoryVolume {
    fn tmpfs(&self) -> TmpfsSpec {
        TmpfsSpec {
            path: self.path.clone(),
            size_bytes: self.size_bytes,
            mode: if self.gid.is_some() { 0o2777 } else { 0o777 },
            gid: self.gid,
        }
    }
}

/// What the sandbox's security context makes of its pause, as containerd applies it to the
/// sandbox container: the user and groups it runs as, and its seccomp profile (unconfined
/// for a privileged sandbox). Its capabilities are the runtime's default set either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseSecurity {
    /// `uid`, `gid` and `supplemental_groups`; no image user (the pause has no image), so
    /// without a uid it runs as root.
    pub user: UserSpec,
    pub seccomp: super::seccomp::Request,
}

impl Default for PauseSecurity {
    /// Root, unconfined: the pause of a sandbox whose client asks for nothing.
    fn default() -> Self {
        PauseSecurity {
            user: UserSpec::default(),
            seccomp: super::seccomp::Request::Unconfined,
        }
    }
}

/// The generated files every container of the pod sees at /etc.
#[derive(Debug, Clone, Default)]
pub struct EtcFiles {
    /// With a pod network, its own entry reads `NO_POD_IP<TAB>hostname` until the pod has
    /// an address (see [`EtcFiles::hosts_with_ip`]).
    pub hosts: String,
    pub hostname: String,
    pub resolv_conf: String,
}

/// What a pod without an address of its own maps its hostname to in /etc/hosts (the Debian
/// convention for a host without a fixed address).
pub const NO_POD_IP: &str = "127.0.1.1";

/// The standard entries every pod's /etc/hosts starts with (the kubelet's and containerd's).
pub const LOCAL_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";

impl EtcFiles {
    /// The sandbox's own /etc/hosts: the node's for a host-network sandbox; otherwise the
    /// standard entries and the hostname at [`NO_POD_IP`] until the pod has an address.
    pub fn sandbox_hosts(hostname: &str, host_network: bool, node: &crate::pod::node::NodeInfo) -> String {
        if host_network {
            node.hosts.clone()
        } else {
            format!("{LOCAL_HOSTS}{NO_POD_IP}\t{hostname}\n")
        }
    }
}

impl EtcFiles {
    /// /etc/hosts once the pod has `ip`: its own entry maps the hostname to it, as the
    /// kubelet writes it.
    pub fn hosts_with_ip(&self, ip: IpAddr) -> String {
        let own = format!("{NO_POD_IP}\t");
        self.hosts
            .lines()
            .map(|l| match l.strip_prefix(&own) {
                Some(names) => format!("{ip}\t{names}\n"),
                None => format!("{l}\n"),
            })
            .collect()
    }
}

/// The pause's identity in a pod's state directory (written by the launcher).
pub const SANDBOX_STATE: &str = "sandbox.json";

impl Runtime {
    /// The pause's cgroup: a child of the pod's, named after the sandbox (as the kubelet's).
    pub fn sandbox_cgroup(pod_cgroup: &str, sandbox_id: &str) -> String {
        format!("{pod_cgroup}/{sandbox_id}")
    }

    /// Prepare the pod's files and cgroup, start its pause, then (with a pod network of its
    /// own) its network through CNI: the sandbox and the pod's IPs. If the network fails the
    /// pause is stopped again and the plugins have undone their part.
    pub async fn run_sandbox(
        self: &Arc<Self>,
        cfg: &SandboxConfig,
        sandbox_id: &str,
    ) -> Result<(SandboxState, Vec<IpAddr>)> {
        let (rt, prepared, id) = (self.clone(), cfg.clone(), sandbox_id.to_string());
        let spec_path = blocking("prepare the sandbox", move || rt.prepare_sandbox(&prepared, &id)).await?;
        let state: SandboxState = self.run_helper(helper::SANDBOX, &spec_path).await?;
        if !cfg.namespaces.network || !self.network.enabled() {
            return Ok((state, Vec::new()));
        }
        let ips = match self
            .network
            .add(&cfg.network, &cfg.dir, sandbox_id, state.pause.pid)
            .await
        {
            Ok(ips) => ips,
            Err(e) => {
                let _ = self.stop_sandbox(&state).await;
                return Err(e.into());
            }
        };
        if let Some(ip) = ips.first().copied() {
            let (path, hosts) = (cfg.dir.join("etc").join("hosts"), cfg.etc.hosts_with_ip(ip));
            let written = blocking("write the pod's /etc/hosts", move || {
                atomic_file::write_mode(&path, hosts.as_bytes(), file_modes::SHARED_FILE)
                    .context(|| format!("write {}", path.display()))
            })
            .await;
            if let Err(e) = written {
                let _ = self.stop_sandbox(&state).await;
                let _ = self.network.remove(&cfg.dir).await;
                return Err(e);
            }
        }
        Ok((state, ips))
    }

    /// The pod's files, cgroups and the pause's spec (blocking); returns the spec's path.
    fn prepare_sandbox(&self, cfg: &SandboxConfig, sandbox_id: &str) -> Result<PathBuf> {
        let uid = cfg.pod_uid.as_str();
        let pod_dir = cfg.dir.clone();
        let etc = pod_dir.join("etc");
        file_modes::create_dir_all(&etc, file_modes::STATE_DIR).context(|| format!("create {}", etc.display()))?;
        for (name, content) in [
            ("hosts", &cfg.etc.hosts),
            ("hostname", &cfg.etc.hostname),
            ("resolv.conf", &cfg.etc.resolv_conf),
        ] {
            let path = etc.join(name);
            atomic_file::write_mode(&path, content.as_bytes(), file_modes::SHARED_FILE)
                .context(|| format!("write {}", path.display()))?;
        }
        let mut tmpfs = vec![TmpfsSpec {
            path: pod_dir.join("shm"),
            size_bytes: Some(cfg.shm_size),
            mode: 0o1777,
            gid: None,
        }];
        tmpfs.extend(cfg.memory_volumes.iter().map(MemoryVolume::tmpfs));

        self.cgroups.create(&cfg.cgroup)?;
        self.cgroups.apply(&cfg.cgroup, &cfg.resources)?;
        let cgroup = Self::sandbox_cgroup(&cfg.cgroup, sandbox_id);
        self.cgroups.create(&cgroup)?;
        // The pause opens /dev/null only; it gets the containers' default device list.
        self.cgroups.set_devices(&cgroup, DevicePolicy::Default)?;

        let spec = SandboxSpec {
            id: sandbox_id.to_string(),
            pod_uid: uid.to_string(),
            hostname: cfg.hostname.clone(),
            namespaces: cfg.namespaces,
            pause_path: self.config.pause_path.clone(),
            cgroup_dirs: self.cgroups.dirs(&cgroup),
            oom_score_adj: Some(self.oom_score_adj(cfg.oom_score_adj)),
            tmpfs,
            sysctls: cfg.sysctls.clone(),
            process: pause_process(&cfg.pause)?,
            state_path: pod_dir.join(SANDBOX_STATE),
        };
        let spec_path = pod_dir.join("sandbox-spec.json");
        atomic_file::write_json(&spec_path, &spec).context(|| format!("write {}", spec_path.display()))?;
        Ok(spec_path)
    }

    /// Stop the pause (SIGTERM, then SIGKILL after a short grace) and wait for it to be gone,
    /// so its namespaces, and with them the pod's tmpfs mounts, are released.
    pub async fn stop_sandbox(&self, state: &SandboxState) -> Result<()> {
        process::stop(state.pause, Signal::SIGTERM, Duration::from_secs(2))
            .await
            .context(|| format!("stop pause {}", state.pause))
    }
}

/// The pause's process: no arguments, no environment, `/` as its working directory, the
/// sandbox's user, the default capabilities and the seccomp filter resolved for them.
fn pause_process(pause: &PauseSecurity) -> Result<ProcessSpec> {
    let capabilities = capabilities::effective_set(&[], &[]);
    let seccomp = super::seccomp::for_container(&pause.seccomp, Some(&capabilities))?;
    Ok(ProcessSpec {
        args: vec!["minilet-pause".into()],
        env: Vec::new(),
        cwd: "/".into(),
        user: pause.user.clone(),
        capabilities: Some(capabilities),
        no_new_privileges: false,
        seccomp: seccomp.map(super::seccomp::Seccomp::Filter),
        stdio: StdioSpec::default(),
    })
}

impl Runtime {
    /// Remove every trace of a pod whose processes have been stopped: whatever is still in
    /// its cgroup is killed, the cgroups go, then the log directory and, last, the state
    /// directory: while it exists the pod is not fully gone (a restarted agent finishes the job).
    pub async fn remove_pod(&self, uid: &str, cgroup: &str, log_dir: &std::path::Path) -> Result<()> {
        self.remove_cgroup(cgroup).await?;
        // DEL before the directory (and the cache in it) goes: a failure keeps both for a retry.
        self.network.remove(&self.layout.pod_dir(uid)).await?;
        let (log_dir, pod_dir) = (log_dir.to_path_buf(), self.layout.pod_dir(uid));
        blocking("remove a pod's directories", move || {
            super::container::remove_dir_all(&log_dir)?;
            super::container::remove_dir_all(&pod_dir)
        })
        .await
    }

    /// Pod cgroups (relative paths) under the QoS groups whose UID is not in `known`: left by
    /// a pod whose state was lost. The kubelet cleans these up too.
    pub fn orphan_pod_cgroups(&self, known: &std::collections::HashSet<String>) -> Vec<String> {
        let mut out = Vec::new();
        for qos in [
            super::KUBEPODS.to_string(),
            format!("{}/burstable", super::KUBEPODS),
            format!("{}/besteffort", super::KUBEPODS),
        ] {
            for dir in self.cgroups.dirs(&qos) {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(uid) = name.strip_prefix("pod")
                        && e.path().is_dir()
                        && !known.contains(uid)
                    {
                        let rel = format!("{qos}/{name}");
                        if !out.contains(&rel) {
                            out.push(rel);
                        }
                    }
                }
            }
        }
        out
    }
}
