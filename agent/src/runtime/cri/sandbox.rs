//! RunPodSandbox, StopPodSandbox, RemovePodSandbox and the sandbox's status.

use minilet_proto::runtime::v1 as cri;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::translate;
use super::{CriPods, SANDBOX_CONFIG, SANDBOX_RECORD, Sandbox, SandboxRecord, write_pb};
use crate::atomic_file;
use crate::file_modes;
use crate::runtime::network::{PodNetwork, PortMapping};
use crate::runtime::sandbox::{EtcFiles, SandboxConfig};
use crate::runtime::spec::{SandboxState, now_nanos};
use crate::runtime::state::new_id;
use crate::runtime::{RuntimeError, blocking};

/// Default size of a sandbox's /dev/shm (containerd's).
const SHM_SIZE: u64 = 64 * 1024 * 1024;

impl CriPods {
    /// RunPodSandbox: the pod's directory, cgroup and /etc files, then its pause. Nothing
    /// is left behind when it fails.
    pub async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> Result<String, RuntimeError> {
        if !req.runtime_handler.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!(
                "runtime handler {:?} is not configured (minilet has only the default handler \"\")",
                req.runtime_handler
            )));
        }
        let config = req
            .config
            .ok_or_else(|| RuntimeError::InvalidArgument("config is required".into()))?;
        let plan = translate::sandbox(&config, &self.node, &self.rt.layout.pods_dir())?;
        let id = new_id();
        let dir = self.rt.layout.cri_sandbox_dir(&id);
        let record = SandboxRecord {
            id: id.clone(),
            created_at: now_nanos(),
            cgroup: plan.cgroup.clone(),
            namespaces: plan.namespaces,
            share_pid: plan.share_pid,
            runtime_handler: String::new(),
            memory_volumes: plan.memory_volumes.iter().map(|v| v.path.clone()).collect(),
        };
        let cfg = SandboxConfig {
            pod_uid: config.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default(),
            dir: dir.clone(),
            hostname: plan.hostname.clone(),
            namespaces: plan.namespaces,
            cgroup: plan.cgroup.clone(),
            resources: plan.resources.clone(),
            oom_score_adj: crate::pod::qos::PAUSE_OOM_SCORE_ADJ,
            shm_size: SHM_SIZE,
            memory_volumes: plan.memory_volumes.clone(),
            etc: EtcFiles {
                hosts: plan.hosts.clone(),
                hostname: format!("{}\n", plan.hostname),
                resolv_conf: plan.resolv_conf.clone(),
            },
            network: PodNetwork {
                namespace: config
                    .metadata
                    .as_ref()
                    .map(|m| m.namespace.clone())
                    .unwrap_or_default(),
                name: config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
                uid: config.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default(),
                port_mappings: if self.rt.network.enabled() {
                    plan.host_ports.iter().map(PortMapping::from).collect()
                } else {
                    Vec::new()
                },
                bandwidth: plan.bandwidth.clone(),
                dns: crate::runtime::network::Dns::from_resolv_conf(&plan.resolv_conf),
            },
            sysctls: plan.sysctls.clone(),
            pause: plan.pause.clone(),
        };
        let rt = self.rt.clone();
        let prepared = {
            let (dir, config) = (dir.clone(), config.clone());
            blocking("prepare the sandbox", move || {
                file_modes::create_dir_all(&dir, file_modes::STATE_DIR)
                    .map_err(|e| RuntimeError::io(format!("create {}", dir.display()), e))?;
                write_pb(&dir.join(SANDBOX_CONFIG), &config)
                    .map_err(|e| RuntimeError::io(format!("write {}", dir.join(SANDBOX_CONFIG).display()), e))
            })
            .await
        };
        let started = match prepared {
            Ok(()) => rt.run_sandbox(&cfg, &id).await,
            Err(e) => Err(e),
        };
        // Host ports without CNI (with CNI the portmap plugin has them): open before
        // RunPodSandbox returns, so before any container of the sandbox starts; a port
        // already taken fails the call and undoes the sandbox.
        let started = match started {
            Ok((state, ips)) if !plan.host_ports.is_empty() && !rt.network.enabled() => {
                let pod = config
                    .metadata
                    .as_ref()
                    .map(|m| format!("{}/{}", m.namespace, m.name))
                    .unwrap_or_default();
                match rt.start_host_ports(&dir, &pod, state.pause, &plan.host_ports).await {
                    Ok(_) => Ok((state, ips)),
                    Err(e) => {
                        let _ = rt.stop_sandbox(&state).await;
                        Err(e)
                    }
                }
            }
            other => other,
        };
        let (state, ips) = match started {
            Ok(v) => v,
            Err(e) => {
                self.undo_sandbox(&dir, &record).await;
                return Err(e);
            }
        };
        // The record goes last: a sandbox directory without it is an interrupted
        // RunPodSandbox, cleaned up by the next agent.
        let path = dir.join(SANDBOX_RECORD);
        let written = {
            let record = record.clone();
            blocking("record the sandbox", move || {
                atomic_file::write_json(&path, &record)
                    .map_err(|e| RuntimeError::io(format!("write {}", path.display()), e))
            })
            .await
        };
        if let Err(e) = written {
            let _ = rt.stop_host_ports(&dir).await;
            let _ = rt.stop_sandbox(&state).await;
            let _ = rt.network.remove(&dir).await;
            self.undo_sandbox(&dir, &record).await;
            return Err(e);
        }
        tracing::info!(sandbox = %id, name = ?config.metadata.as_ref().map(|m| &m.name), pause = state.pause.pid, "CRI sandbox running");
        let handle = self.insert(Sandbox {
            dir,
            record,
            config,
            state: Some(state),
            ips,
            containers: BTreeMap::new(),
            network_error: None,
        });
        self.watch_pause(&handle, state);
        Ok(id)
    }

    /// Watch a ready sandbox's pause until it dies (killed, or stopped by StopPodSandbox):
    /// then a CONTAINER_STOPPED event names the sandbox, with its status (NOTREADY from then
    /// on, as the store reads the pause's life), as containerd reports a sandbox's exit. A
    /// static pod's worker learns so that its sandbox died.
    pub(super) fn watch_pause(&self, sb: &Arc<tokio::sync::Mutex<Sandbox>>, state: SandboxState) {
        let (sb, events) = (sb.clone(), self.events.clone());
        tokio::spawn(async move {
            // A pause that is gone already cannot be opened: it died.
            if let Ok(Some(fd)) = state.pause.open() {
                let _ = fd.exited().await;
            }
            let sb = sb.lock().await;
            // Replaced meanwhile (a new pause of the same sandbox is not a thing; the check
            // keeps an event from naming a state that is no longer the sandbox's).
            if sb.state.is_some_and(|s| s.pause != state.pause) {
                return;
            }
            let id = sb.record.id.clone();
            events.send(super::container::sandbox_event(
                &sb,
                &id,
                cri::ContainerEventType::ContainerStoppedEvent,
            ));
        });
    }

    /// Remove what a failed RunPodSandbox made.
    async fn undo_sandbox(&self, dir: &std::path::Path, record: &SandboxRecord) {
        let sandbox_cgroup = crate::runtime::Runtime::sandbox_cgroup(&record.cgroup, &record.id);
        if let Err(e) = self.rt.remove_cgroup(&sandbox_cgroup).await {
            tracing::warn!(cgroup = %sandbox_cgroup, error = %e, "remove cgroup of a failed sandbox");
        }
        let rt = self.rt.clone();
        let (dir, pod_cgroup) = (dir.to_path_buf(), record.cgroup.clone());
        let _ = blocking("remove a failed sandbox", move || {
            remove_pod_cgroup_if_unused(&rt, &pod_cgroup);
            crate::runtime::container::remove_dir_all(&dir)
        })
        .await;
    }

    /// StopPodSandbox: every container is killed (as containerd does: a client that wants a
    /// graceful stop stops the containers first), then the pause. Stopping a stopped or
    /// unknown sandbox succeeds.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let sb = match self.find_sandbox(id) {
            Ok(sb) => sb,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let (containers, state, dir) = {
            let sb = sb.lock().await;
            (
                sb.containers.keys().cloned().collect::<Vec<_>>(),
                sb.state,
                sb.dir.clone(),
            )
        };
        for cid in containers {
            self.stop_container(&cid, 0).await?;
        }
        self.rt.stop_host_ports(&dir).await?;
        if let Some(state) = state {
            self.rt.stop_sandbox(&state).await?;
        }
        // containerd tears the network down here: a stopped sandbox holds no address.
        self.rt.network.remove(&dir).await?;
        sb.lock().await.ips.clear();
        Ok(())
    }

    /// RemovePodSandbox: stop whatever still runs, remove every container, the sandbox's
    /// cgroups and its directory. Removing an unknown sandbox succeeds.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let sb = match self.find_sandbox(id) {
            Ok(sb) => sb,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let full_id = sb.lock().await.record.id.clone();
        self.stop_pod_sandbox(&full_id).await?;
        let containers: Vec<String> = sb.lock().await.containers.keys().cloned().collect();
        for cid in containers {
            self.remove_container(&cid).await?;
        }
        let guard = sb.lock().await;
        let (dir, record) = (guard.dir.clone(), guard.record.clone());
        self.rt
            .remove_cgroup(&crate::runtime::Runtime::sandbox_cgroup(&record.cgroup, &record.id))
            .await?;
        blocking("remove a sandbox's directory", move || {
            crate::runtime::container::remove_dir_all(&dir)
        })
        .await?;
        drop(guard);
        self.map().remove(&full_id);
        // The pod cgroup is shared by the pod's sandboxes: it goes with the last of them.
        let pod_cgroup = sb.lock().await.record.cgroup.clone();
        if !self.cgroups().contains(&pod_cgroup) {
            let rt = self.rt.clone();
            let _ = blocking("remove a pod cgroup", move || {
                remove_pod_cgroup_if_unused(&rt, &pod_cgroup);
                Ok(())
            })
            .await;
        }
        tracing::info!(sandbox = %full_id, "CRI sandbox removed");
        Ok(())
    }

    /// PodSandboxStatus for a CRI sandbox, with the verbose details (pause PID, cgroup,
    /// directory) as JSON.
    pub async fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> Result<(cri::PodSandboxStatus, serde_json::Value), RuntimeError> {
        let sb = self.find_sandbox(id)?;
        let sb = sb.lock().await;
        let info = serde_json::json!({
            "pid": sb.state.filter(|_| sb.ready()).map(|s| s.pause.pid),
            "cgroup": sb.record.cgroup,
            "cgroupDirs": self.rt.cgroups.dirs(&crate::runtime::Runtime::sandbox_cgroup(&sb.record.cgroup, &sb.record.id)),
            "dir": sb.dir,
            "owner": if sb.manifest().is_some() { "manifest" } else { "cri" },
            "manifest": sb.manifest(),
            "networkError": sb.network_error,
        });
        Ok((status(&sb), info))
    }
}

/// Remove a pod cgroup that holds no sandbox or container any more (its children are the
/// sandboxes' and containers' cgroups, which are removed before).
fn remove_pod_cgroup_if_unused(rt: &crate::runtime::Runtime, cgroup: &str) {
    let busy = rt.cgroups.dirs(cgroup).iter().any(|d| {
        std::fs::read_dir(d)
            .map(|entries| entries.flatten().any(|e| e.path().is_dir()))
            .unwrap_or(false)
    });
    if busy {
        return;
    }
    if let Err(e) = rt.cgroups.remove(cgroup) {
        tracing::warn!(%cgroup, error = %e, "remove pod cgroup");
    }
}

/// How a namespace is shared, as PodSandboxStatus reports it.
fn mode(own: bool, shared: bool) -> cri::NamespaceMode {
    if !own {
        cri::NamespaceMode::Node
    } else if shared {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    }
}

pub(super) fn status(sb: &Sandbox) -> cri::PodSandboxStatus {
    let ns = &sb.record.namespaces;
    cri::PodSandboxStatus {
        id: sb.record.id.clone(),
        metadata: sb.config.metadata.clone(),
        state: sb.cri_state() as i32,
        created_at: sb.record.created_at,
        // The pod network's addresses (none with `--network=none` or host network).
        network: Some(cri::PodSandboxNetworkStatus {
            ip: sb.ips.first().map(|ip| ip.to_string()).unwrap_or_default(),
            additional_ips: sb
                .ips
                .iter()
                .skip(1)
                .map(|ip| cri::PodIp { ip: ip.to_string() })
                .collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: mode(ns.network, true) as i32,
                    pid: mode(ns.pid, sb.record.share_pid) as i32,
                    ipc: mode(ns.ipc, true) as i32,
                    target_id: String::new(),
                    userns_options: None,
                }),
            }),
        }),
        labels: sb.config.labels.clone(),
        annotations: sb.config.annotations.clone(),
        runtime_handler: sb.record.runtime_handler.clone(),
    }
}

pub(super) fn summary(sb: &Sandbox) -> cri::PodSandbox {
    cri::PodSandbox {
        id: sb.record.id.clone(),
        metadata: sb.config.metadata.clone(),
        state: sb.cri_state() as i32,
        created_at: sb.record.created_at,
        labels: sb.config.labels.clone(),
        annotations: sb.config.annotations.clone(),
        runtime_handler: sb.record.runtime_handler.clone(),
    }
}

impl CriPods {
    /// ListPodSandbox over the CRI sandboxes.
    pub async fn list_pod_sandboxes(&self) -> Vec<cri::PodSandbox> {
        self.list(|sb| Some(summary(sb))).await
    }
}
