//! The pod's sandbox through the runtime's `RuntimeService`, as the kubelet asks containerd
//! for it:
//! RunPodSandbox with the pod's generated `PodSandboxConfig` (marked as this manifest's), and
//! StopPodSandbox + RemovePodSandbox when the pod or its sandbox goes. The runtime opens and
//! closes the hostPorts (without CNI) and the pod network with the sandbox.

use std::net::IpAddr;
use std::path::PathBuf;

use minilet_proto::runtime::v1 as cri;

use super::Worker;
use crate::pod::cri_config::{self, SandboxInputs};
use crate::runtime::process::ProcessId;
use crate::runtime::spec::SandboxState;

/// A sandbox as PodSandboxStatus (verbose) reports it to the pod's worker.
pub(in crate::pod) struct SandboxView {
    /// The pause, while the sandbox is ready.
    pub state: Option<SandboxState>,
    /// The pod's addresses from its network.
    pub ips: Vec<IpAddr>,
    /// Why its network failed the runtime's check when it re-adopted the sandbox.
    pub network_error: Option<String>,
}

impl Worker {
    /// The current sandbox's directory (its /etc/hostname, /etc/resolv.conf, /dev/shm).
    pub(in crate::pod) fn sandbox_dir(&self) -> PathBuf {
        self.ctx.runtime.layout.cri_sandbox_dir(&self.record.sandbox_id)
    }

    /// A new sandbox for the pod: its ID, pause and addresses. Nothing of it is left when
    /// this fails.
    pub(in crate::pod) async fn run_sandbox(&self) -> Result<(String, SandboxState, Vec<IpAddr>), String> {
        let rt = &self.ctx.runtime;
        let mut config = cri_config::pod_sandbox_config(&SandboxInputs {
            pod: &self.pod,
            uid: &self.uid,
            plan: &self.plan,
            node: &self.ctx.node,
            attempt: self.record.sandbox_attempt,
            log_root: &rt.config.log_dir,
            pod_dir: &rt.layout.pod_dir(&self.uid),
        });
        config.annotations.insert(
            crate::runtime::cri::MANIFEST.into(),
            self.record.manifest.display().to_string(),
        );
        let id = self
            .ctx
            .runtime_service()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|e| e.to_string())?
            .pod_sandbox_id;
        let (state, ips) = match self.sandbox_status(&id).await {
            Some(SandboxView {
                state: Some(state),
                ips,
                ..
            }) => (state, ips),
            _ => return Err(format!("sandbox {id} has no pause after RunPodSandbox")),
        };
        // The kubelet's /etc/hosts, with the pod's address: once per sandbox, before any
        // container of it is created.
        let written = {
            let (layout, uid, pod) = (rt.layout.clone(), self.uid.clone(), self.pod.clone());
            let (plan, node, ips) = (self.plan.clone(), self.ctx.node.clone(), ips.clone());
            tokio::task::spawn_blocking(move || {
                crate::pod::config::write_hosts_file(&layout, &uid, &pod, &plan, &node, &ips)
            })
            .await
            .unwrap_or_else(|e| Err(format!("write the pod's /etc/hosts: {e}")))
        };
        if let Err(e) = written {
            // RemovePodSandbox stops it first: nothing of the sandbox is left.
            if let Err(undo) = self.remove_pod_sandbox(&id).await {
                tracing::warn!(pod = %self.obj.name, sandbox = %id, error = %undo, "remove the sandbox whose /etc/hosts failed");
            }
            return Err(e);
        }
        Ok((id, state, ips))
    }

    /// PodSandboxStatus of `id`: its pause while the sandbox is ready (the verbose info's
    /// `pid`, as containerd reports it), and the pod's addresses. `None` for a sandbox the
    /// runtime does not know.
    pub(in crate::pod) async fn sandbox_status(&self, id: &str) -> Option<SandboxView> {
        if id.is_empty() {
            return None; // a RunPodSandbox that was interrupted
        }
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        let resp = match self.ctx.runtime_service().pod_sandbox_status(req).await {
            Ok(r) => r,
            Err(e) => {
                if !matches!(e, crate::runtime::RuntimeError::NotFound { .. }) {
                    tracing::warn!(pod = %self.obj.name, sandbox = %id, error = %e, "PodSandboxStatus");
                }
                return None;
            }
        };
        let status = resp.status?;
        let ready = status.state == cri::PodSandboxState::SandboxReady as i32;
        let info = crate::cri::service::verbose_info(&resp.info).unwrap_or_default();
        let pid = info["pid"].as_i64().and_then(|pid| i32::try_from(pid).ok());
        // Named by PID only: read its start time now, while it is the pause just reported.
        let pause = pid.filter(|_| ready).and_then(|pid| ProcessId::of(pid).ok());
        let state = pause.map(|pause| SandboxState {
            pause,
            created_at: status.created_at,
        });
        let ips = status.network.map_or_else(Vec::new, |n| {
            std::iter::once(n.ip)
                .chain(n.additional_ips.into_iter().map(|p| p.ip))
                .filter_map(|ip| ip.parse().ok())
                .collect()
        });
        Some(SandboxView {
            state,
            ips,
            network_error: info["networkError"].as_str().map(str::to_string),
        })
    }

    /// StopPodSandbox: the pause, the hostPorts and the pod network go; the sandbox stays
    /// listed (a completed pod's, as the kubelet leaves it).
    pub(in crate::pod) async fn stop_sandbox(&mut self) {
        self.sandbox = None;
        self.pod_ips.clear();
        if self.record.sandbox_id.is_empty() {
            return;
        }
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: self.record.sandbox_id.clone(),
        };
        if let Err(e) = self.ctx.runtime_service().stop_pod_sandbox(req).await {
            self.ctx.events.warning(
                &self.obj,
                "FailedKillPod",
                format!("error stopping the pod sandbox: {e}"),
            );
        }
    }

    /// The stopped current sandbox becomes an earlier one, to be replaced: it stays while it
    /// holds an attempt the pod still shows ([`Worker::remove_old_sandboxes`]).
    pub(in crate::pod) async fn retire_sandbox(&mut self) {
        if !self.record.sandbox_id.is_empty() {
            let id = std::mem::take(&mut self.record.sandbox_id);
            self.record.old_sandboxes.push(id);
        }
        self.remove_old_sandboxes().await;
        self.save_record();
    }

    /// StopPodSandbox, then RemovePodSandbox, for the current sandbox and every earlier one:
    /// nothing of them stays (the pod's own directory, volumes and cgroup are the pod
    /// side's).
    pub(in crate::pod) async fn remove_sandbox(&mut self) {
        self.stop_sandbox().await;
        let ids = std::mem::take(&mut self.record.old_sandboxes)
            .into_iter()
            .chain(Some(self.record.sandbox_id.clone()).filter(|id| !id.is_empty()));
        for id in ids {
            if let Err(e) = self.remove_pod_sandbox(&id).await {
                tracing::warn!(pod = %self.obj.name, sandbox = %id, error = %e, "remove the pod sandbox");
            }
        }
    }

    /// RemovePodSandbox `id`: it is stopped first, its containers go with it.
    pub(in crate::pod) async fn remove_pod_sandbox(&self, id: &str) -> Result<(), crate::runtime::RuntimeError> {
        let req = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.ctx.runtime_service().remove_pod_sandbox(req).await.map(|_| ())
    }
}
