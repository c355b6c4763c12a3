//! CRI `runtime.v1.RuntimeService` over the node's two kinds of pods: the one implementation
//! of [`RuntimeService`], for in-process callers (the static pods' side) and, through
//! [`super::grpc`], CRI clients.
//!
//! Every sandbox and container lives in [`crate::runtime::cri::CriPods`], the one store: the
//! lifecycle calls work on them as the CRI defines it, and lists, statuses and stats read them,
//! whoever owns them. What an external client may not
//! do to a static pod (remove it: that is stopping it; create, start or update its
//! containers) is [`super::ownership`]'s, in the gRPC adapter.

use std::time::Duration;

use minilet_proto::runtime::v1 as cri;

use super::Cri;
use super::filter;
use super::metrics;
use super::service::{ContainerEventStream, RuntimeService};
use super::stats;
use super::streaming;
use crate::runtime::RuntimeError;
use crate::runtime::spec::now_nanos;

/// The CRI API version we serve, as Version reports it (the kubelet checks this).
const CRI_VERSION: &str = "0.1.0";

impl Cri {
    pub(super) fn pods(&self) -> &crate::runtime::cri::CriPods {
        &self.cri_pods
    }

    /// Check an exec or attach request as the kubelet does (one of stdin/stdout/stderr, not
    /// tty with stderr, a running container) and keep it under a streaming URL.
    async fn streaming_url(&self, mut p: streaming::ExecParams) -> Result<String, RuntimeError> {
        if !(p.stdin || p.stdout || p.stderr) {
            return Err(RuntimeError::InvalidArgument(
                "one of stdin, stdout, or stderr must be set".into(),
            ));
        }
        if p.tty && p.stderr {
            return Err(RuntimeError::InvalidArgument(
                "tty and stderr cannot both be true".into(),
            ));
        }
        let files = self.pods().container_files(&p.container_id).await?;
        if files.state.is_none() || files.exit.is_some() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is not running",
                files.record.id
            )));
        }
        p.container_id = files.record.id.clone();
        self.streaming()?.url_for(streaming::Request::Exec(p))
    }
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, _: cri::VersionRequest) -> Result<cri::VersionResponse, RuntimeError> {
        Ok(cri::VersionResponse {
            version: CRI_VERSION.into(),
            runtime_name: "minilet".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: minilet_proto::CRI_API_VERSION.into(),
        })
    }

    async fn run_pod_sandbox(
        &self,
        req: cri::RunPodSandboxRequest,
    ) -> Result<cri::RunPodSandboxResponse, RuntimeError> {
        let pod_sandbox_id = self.pods().run_pod_sandbox(req).await?;
        Ok(cri::RunPodSandboxResponse { pod_sandbox_id })
    }

    async fn stop_pod_sandbox(
        &self,
        req: cri::StopPodSandboxRequest,
    ) -> Result<cri::StopPodSandboxResponse, RuntimeError> {
        self.pods().stop_pod_sandbox(&req.pod_sandbox_id).await?;
        Ok(cri::StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(
        &self,
        req: cri::RemovePodSandboxRequest,
    ) -> Result<cri::RemovePodSandboxResponse, RuntimeError> {
        self.pods().remove_pod_sandbox(&req.pod_sandbox_id).await?;
        Ok(cri::RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(
        &self,
        req: cri::PodSandboxStatusRequest,
    ) -> Result<cri::PodSandboxStatusResponse, RuntimeError> {
        let (status, verbose) = self.pods().pod_sandbox_status(&req.pod_sandbox_id).await?;
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            info.insert(super::service::VERBOSE_INFO.to_string(), verbose.to_string());
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: Vec::new(),
            timestamp: now_nanos(),
        })
    }

    async fn list_pod_sandbox(
        &self,
        req: cri::ListPodSandboxRequest,
    ) -> Result<cri::ListPodSandboxResponse, RuntimeError> {
        let f = req.filter.unwrap_or_default();
        let items = self
            .pods()
            .list_pod_sandboxes()
            .await
            .into_iter()
            .filter(|s| filter::id_matches(&f.id, &s.id))
            .filter(|s| f.state.as_ref().is_none_or(|st| st.state == s.state))
            .filter(|s| filter::labels_match(&s.labels, &f.label_selector))
            .collect();
        Ok(cri::ListPodSandboxResponse { items })
    }

    async fn create_container(
        &self,
        req: cri::CreateContainerRequest,
    ) -> Result<cri::CreateContainerResponse, RuntimeError> {
        let config = req
            .config
            .ok_or_else(|| RuntimeError::InvalidArgument("config is required".into()))?;
        let container_id = self.pods().create_container(&req.pod_sandbox_id, config).await?;
        Ok(cri::CreateContainerResponse { container_id })
    }

    async fn start_container(
        &self,
        req: cri::StartContainerRequest,
    ) -> Result<cri::StartContainerResponse, RuntimeError> {
        self.pods().start_container(&req.container_id).await?;
        Ok(cri::StartContainerResponse {})
    }

    async fn stop_container(&self, req: cri::StopContainerRequest) -> Result<cri::StopContainerResponse, RuntimeError> {
        self.pods().stop_container(&req.container_id, req.timeout).await?;
        Ok(cri::StopContainerResponse {})
    }

    async fn remove_container(
        &self,
        req: cri::RemoveContainerRequest,
    ) -> Result<cri::RemoveContainerResponse, RuntimeError> {
        self.pods().remove_container(&req.container_id).await?;
        Ok(cri::RemoveContainerResponse {})
    }

    async fn list_containers(
        &self,
        req: cri::ListContainersRequest,
    ) -> Result<cri::ListContainersResponse, RuntimeError> {
        let f = req.filter.unwrap_or_default();
        let mut containers = self.pods().list_containers().await;
        containers.retain(|c| {
            filter::id_matches(&f.pod_sandbox_id, &c.pod_sandbox_id)
                && filter::id_matches(&f.id, &c.id)
                && f.state.as_ref().is_none_or(|s| s.state == c.state)
                && filter::labels_match(&c.labels, &f.label_selector)
        });
        Ok(cri::ListContainersResponse { containers })
    }

    async fn container_status(
        &self,
        req: cri::ContainerStatusRequest,
    ) -> Result<cri::ContainerStatusResponse, RuntimeError> {
        let (sandbox_id, c) = self.pods().container(&req.container_id).await?;
        let mut status = crate::runtime::cri::status(&c);
        status.user = user_of(&c.files).await;
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let files = &c.files;
            let v = serde_json::json!({
                "pid": files.state.map(|s| s.process.pid),
                "monitorPid": files.state.map(|s| s.monitor.pid),
                "sandboxId": sandbox_id,
                "cgroupDirs": self.runtime.cgroups.dirs(&files.record.cgroup),
                "dir": files.dir,
                "exit": files.exit,
            });
            info.insert(super::service::VERBOSE_INFO.to_string(), v.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    async fn update_container_resources(
        &self,
        req: cri::UpdateContainerResourcesRequest,
    ) -> Result<cri::UpdateContainerResourcesResponse, RuntimeError> {
        self.pods()
            .update_container_resources(&req.container_id, req.linux)
            .await?;
        Ok(cri::UpdateContainerResourcesResponse {})
    }

    async fn reopen_container_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse, RuntimeError> {
        let files = self.pods().container_files(&req.container_id).await?;
        self.runtime.reopen_log(&files).await?;
        Ok(cri::ReopenContainerLogResponse {})
    }

    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse, RuntimeError> {
        let files = self.pods().container_files(&req.container_id).await?;
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
        let cmd = req.cmd.clone();
        match self.runtime.exec_sync(&files, req.cmd, timeout).await? {
            Some(r) => Ok(cri::ExecSyncResponse {
                stdout: r.stdout,
                stderr: r.stderr,
                exit_code: r.exit_code,
            }),
            None => Err(RuntimeError::DeadlineExceeded(format!(
                "command {cmd:?} timed out after {}s",
                req.timeout
            ))),
        }
    }

    async fn exec(&self, req: cri::ExecRequest) -> Result<cri::ExecResponse, RuntimeError> {
        // The kubelet's checks, in its words.
        if req.cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("cmd must not be empty".into()));
        }
        let url = self
            .streaming_url(streaming::ExecParams {
                container_id: req.container_id,
                target: streaming::Target::Command(req.cmd),
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            })
            .await?;
        Ok(cri::ExecResponse { url })
    }

    async fn attach(&self, req: cri::AttachRequest) -> Result<cri::AttachResponse, RuntimeError> {
        // stdin reaches the container only if it has stdin (settled when the client connects).
        let url = self
            .streaming_url(streaming::ExecParams {
                container_id: req.container_id,
                target: streaming::Target::Attach,
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            })
            .await?;
        Ok(cri::AttachResponse { url })
    }

    async fn port_forward(&self, req: cri::PortForwardRequest) -> Result<cri::PortForwardResponse, RuntimeError> {
        let (sandbox_id, pause, _) = self.streaming()?.sandbox_network(&req.pod_sandbox_id).await?;
        if pause.is_none() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {sandbox_id} is not ready"
            )));
        }
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(RuntimeError::InvalidArgument(format!(
                "port: {p} is not a valid port number"
            )));
        }
        let url = self
            .streaming()?
            .url_for(streaming::Request::PortForward { sandbox_id })?;
        Ok(cri::PortForwardResponse { url })
    }

    async fn container_stats(
        &self,
        req: cri::ContainerStatsRequest,
    ) -> Result<cri::ContainerStatsResponse, RuntimeError> {
        let id = req.container_id;
        let (attributes, files) = self.pods().container_attributes(&id).await?;
        let cgroup = files.record.cgroup.clone();
        let samples = self
            .stats
            .sample(&self.runtime.cgroups, std::slice::from_ref(&cgroup))
            .await;
        Ok(cri::ContainerStatsResponse {
            stats: Some(container_stats(attributes, &files, samples.get(&cgroup))),
        })
    }

    async fn list_container_stats(
        &self,
        req: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse, RuntimeError> {
        let f = req.filter.unwrap_or_default();
        let mut picked = self.pods().running_container_attributes().await;
        picked.retain(|(sandbox, attrs, _)| {
            filter::id_matches(&f.pod_sandbox_id, sandbox)
                && filter::id_matches(&f.id, &attrs.id)
                && filter::labels_match(&attrs.labels, &f.label_selector)
        });
        let paths: Vec<String> = picked.iter().map(|(_, _, files)| files.record.cgroup.clone()).collect();
        let samples = self.stats.sample(&self.runtime.cgroups, &paths).await;
        let stats = picked
            .into_iter()
            .map(|(_, attrs, files)| {
                let sample = samples.get(&files.record.cgroup);
                container_stats(attrs, &files, sample)
            })
            .collect();
        Ok(cri::ListContainerStatsResponse { stats })
    }

    async fn pod_sandbox_stats(
        &self,
        req: cri::PodSandboxStatsRequest,
    ) -> Result<cri::PodSandboxStatsResponse, RuntimeError> {
        let id = req.pod_sandbox_id;
        let sb = self.pods().find_sandbox(&id)?;
        let input = sandbox_input(&*sb.lock().await);
        let mut all = self.sandbox_stats(vec![input]).await;
        Ok(cri::PodSandboxStatsResponse { stats: all.pop() })
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
    ) -> Result<cri::ListPodSandboxStatsResponse, RuntimeError> {
        let f = req.filter.unwrap_or_default();
        let mut inputs = self.ready_sandbox_inputs().await;
        inputs.retain(|i| {
            filter::id_matches(&f.id, &i.attributes.id) && filter::labels_match(&i.attributes.labels, &f.label_selector)
        });
        Ok(cri::ListPodSandboxStatsResponse {
            stats: self.sandbox_stats(inputs).await,
        })
    }

    async fn update_runtime_config(
        &self,
        _: cri::UpdateRuntimeConfigRequest,
    ) -> Result<cri::UpdateRuntimeConfigResponse, RuntimeError> {
        // The kubelet sends the pod CIDR here; minilet's comes from --pod-cidr or the CNI
        // configuration itself, as containerd's does without a conf template.
        Ok(cri::UpdateRuntimeConfigResponse {})
    }

    async fn status(&self, req: cri::StatusRequest) -> Result<cri::StatusResponse, RuntimeError> {
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let rt = &self.runtime;
            let v = serde_json::json!({
                "root": rt.config.root,
                "logDir": rt.config.log_dir,
                "pause": rt.config.pause_path,
                "cgroupVersion": rt.cgroups.version().to_string(),
                "cgroupParent": rt.cgroups.dirs(""),
                "manifests": self.manifests,
                "node": self.node.name,
            });
            info.insert("config".to_string(), v.to_string());
        }
        let network = {
            let rt = self.runtime.clone();
            tokio::task::spawn_blocking(move || rt.network.readiness())
                .await
                .unwrap_or_else(|e| Err(format!("checking the network: {e}")))
        };
        // containerd's reason when its CNI configuration or plugins are missing.
        let network_ready = match network {
            Ok(message) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                reason: String::new(),
                message,
            },
            Err(message) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message,
            },
        };
        Ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    cri::RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        reason: String::new(),
                        message: String::new(),
                    },
                    network_ready,
                ],
            }),
            info,
            runtime_handlers: super::convert::runtime_handlers(),
            // The container's groups follow its SupplementalGroupsPolicy (Merge or Strict).
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        })
    }

    async fn checkpoint_container(
        &self,
        _: cri::CheckpointContainerRequest,
    ) -> Result<cri::CheckpointContainerResponse, RuntimeError> {
        Err(RuntimeError::Unimplemented(
            "CheckpointContainer is not supported".into(),
        ))
    }

    async fn get_container_events(&self, _: cri::GetEventsRequest) -> Result<ContainerEventStream, RuntimeError> {
        use tokio_stream::StreamExt;
        let rx = self.pods().events().subscribe();
        // A subscriber that fell behind has lost events: its stream ends there, so that it
        // knows and relists (as a kubelet falls back to relisting when its stream breaks).
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
            .map_while(Result::ok)
            .map(std::sync::Arc::unwrap_or_clone);
        Ok(Box::pin(stream))
    }

    async fn list_metric_descriptors(
        &self,
        _: cri::ListMetricDescriptorsRequest,
    ) -> Result<cri::ListMetricDescriptorsResponse, RuntimeError> {
        Ok(cri::ListMetricDescriptorsResponse {
            descriptors: metrics::descriptors(),
        })
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: cri::ListPodSandboxMetricsRequest,
    ) -> Result<cri::ListPodSandboxMetricsResponse, RuntimeError> {
        let inputs = self.ready_sandbox_inputs().await;
        let cgroups = std::sync::Arc::clone(&self.runtime.cgroups);
        let pod_metrics = crate::runtime::blocking("reading metrics", move || {
            Ok(inputs
                .into_iter()
                .map(|i| {
                    let meta = i.attributes.metadata.clone().unwrap_or_default();
                    let container_metrics = i
                        .containers
                        .iter()
                        .filter_map(|(attrs, files)| {
                            let cgroup = &files.record.cgroup;
                            let stats = cgroups.stats(cgroup).ok()?;
                            let reading = metrics::read(stats, &cgroups.dirs(cgroup), now_nanos());
                            let name = attrs.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or_default();
                            Some(metrics::container(
                                &attrs.id,
                                [name, &meta.name, &meta.namespace, &attrs.id],
                                &reading,
                            ))
                        })
                        .collect();
                    cri::PodSandboxMetrics {
                        pod_sandbox_id: i.attributes.id.clone(),
                        metrics: Vec::new(),
                        container_metrics,
                    }
                })
                .collect())
        })
        .await?;
        Ok(cri::ListPodSandboxMetricsResponse { pod_metrics })
    }

    async fn runtime_config(&self, _: cri::RuntimeConfigRequest) -> Result<cri::RuntimeConfigResponse, RuntimeError> {
        Ok(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        })
    }
}

fn container_stats(
    attributes: cri::ContainerAttributes,
    files: &crate::runtime::state::ContainerFiles,
    sample: Option<&stats::Sample>,
) -> cri::ContainerStats {
    cri::ContainerStats {
        attributes: Some(attributes),
        cpu: sample.map(stats::cpu),
        memory: sample.map(stats::memory),
        writable_layer: Some(stats::writable_layer(&files.dir.join("upper"))),
        swap: None,
    }
}

impl Cri {
    /// Every ready sandbox of either kind, with its running containers.
    async fn ready_sandbox_inputs(&self) -> Vec<SandboxStatsInput> {
        self.pods().list(|sb| sb.ready().then(|| sandbox_input(sb))).await
    }

    async fn sandbox_stats(&self, inputs: Vec<SandboxStatsInput>) -> Vec<cri::PodSandboxStats> {
        let mut paths: Vec<String> = Vec::new();
        for i in &inputs {
            paths.push(i.cgroup.clone());
            paths.extend(i.containers.iter().map(|(_, f)| f.record.cgroup.clone()));
        }
        let samples = self.stats.sample(&self.runtime.cgroups, &paths).await;
        inputs
            .into_iter()
            .map(|i| {
                let pod = samples.get(&i.cgroup);
                let containers = i
                    .containers
                    .into_iter()
                    .map(|(attrs, files)| {
                        let sample = samples.get(&files.record.cgroup);
                        container_stats(attrs, &files, sample)
                    })
                    .collect();
                cri::PodSandboxStats {
                    attributes: Some(i.attributes),
                    linux: Some(cri::LinuxPodSandboxStats {
                        cpu: pod.map(stats::cpu),
                        memory: pod.map(stats::memory),
                        network: None,
                        process: pod.map(|s| cri::ProcessUsage {
                            timestamp: s.timestamp,
                            process_count: Some(cri::UInt64Value {
                                value: s.stats.pids_current,
                            }),
                        }),
                        containers,
                    }),
                    windows: None,
                }
            })
            .collect()
    }
}

/// What the stats of one sandbox are made of: its attributes, the pod cgroup, its running
/// containers.
struct SandboxStatsInput {
    attributes: cri::PodSandboxAttributes,
    cgroup: String,
    containers: Vec<(cri::ContainerAttributes, crate::runtime::state::ContainerFiles)>,
}

fn sandbox_input(sb: &crate::runtime::cri::Sandbox) -> SandboxStatsInput {
    SandboxStatsInput {
        attributes: cri::PodSandboxAttributes {
            id: sb.record.id.clone(),
            metadata: sb.config.metadata.clone(),
            labels: sb.config.labels.clone(),
            annotations: sb.config.annotations.clone(),
        },
        cgroup: sb.record.cgroup.clone(),
        containers: sb
            .containers
            .values()
            .filter(|c| c.cri_state() == cri::ContainerState::ContainerRunning)
            .map(|c| (crate::runtime::cri::attributes(c), c.files.clone()))
            .collect(),
    }
}

/// The identity of a running container's first process as the kernel has it, for
/// ContainerStatus.user: its user and group, and as supplementary groups what `id -G` shows
/// in it (its group first among them, as containerd reports them). None when it does not run.
async fn user_of(files: &crate::runtime::state::ContainerFiles) -> Option<cri::ContainerUser> {
    let process = files.state.filter(|_| files.exit.is_none())?.process;
    let id = tokio::task::spawn_blocking(move || process.identity()).await.ok()??;
    let mut groups = vec![i64::from(id.gid)];
    groups.extend(
        id.groups
            .iter()
            .map(|&g| i64::from(g))
            .filter(|&g| g != i64::from(id.gid)),
    );
    Some(cri::ContainerUser {
        linux: Some(cri::LinuxContainerUser {
            uid: i64::from(id.uid),
            gid: i64::from(id.gid),
            supplemental_groups: groups,
        }),
    })
}
