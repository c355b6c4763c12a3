//! CRI `runtime.v1.RuntimeService` over the node's two kinds of pods.
//!
//! Pods a CRI client made (RunPodSandbox) are its own: every call works on them as the CRI
//! defines it ([`crate::runtime::cri`]). Static pods are owned by their manifests: a client
//! may stop their containers or sandbox, and the pod's worker then does what the kubelet
//! does (restart per policy, recreate the sandbox), so the manifest still wins; creating
//! containers in them or changing their resources is refused with where to make the change.

use std::time::Duration;

use minilet_proto::runtime::v1 as cri;
use tonic::{Request, Response, Status};

use super::Cri;
use super::convert;
use super::filter;
use super::metrics;
use super::stats;
use super::streaming;
use crate::runtime::RuntimeError;
use crate::runtime::spec::now_nanos;

/// The CRI API version we serve, as Version reports it (the kubelet checks this).
const CRI_VERSION: &str = "0.1.0";

pub struct RuntimeSvc(pub std::sync::Arc<Cri>);

impl RuntimeSvc {
    fn pods(&self) -> &crate::runtime::cri::CriPods {
        &self.0.ctx.cri_pods
    }

    /// The files of a container of either kind of pod (for exec and logs).
    async fn container_files(&self, id: &str) -> Result<crate::runtime::state::ContainerFiles, Status> {
        match self.pods().container_files(id).await {
            Ok(f) => Ok(f),
            Err(RuntimeError::NotFound { .. }) => Ok(filter::container(&self.0.ctx.registry, id)?.1.files),
            Err(e) => Err(e.into()),
        }
    }

    /// Stop a static pod's running attempt; its worker then restarts it per policy. An
    /// unknown container is already stopped.
    async fn stop_static_container(&self, id: &str, timeout: i64) -> Result<(), Status> {
        let Ok((_, a)) = filter::container(&self.0.ctx.registry, id) else {
            return Ok(());
        };
        if a.files.state.is_none() || a.files.exit.is_some() {
            return Ok(());
        }
        self.0.ctx.runtime.stop_container_within(&a.files, timeout).await;
        Ok(())
    }

    /// Stop a static pod's pause; its worker recreates the sandbox. Unknown: already gone.
    async fn stop_static_sandbox(&self, id: &str) -> Result<(), Status> {
        let Ok(e) = filter::sandbox(&self.0.ctx.registry, id) else {
            return Ok(());
        };
        if let Some(pause) = e.sandbox.pause {
            let state = crate::runtime::spec::SandboxState {
                pause,
                created_at: e.sandbox.created_at,
            };
            self.0.ctx.runtime.stop_sandbox(&state).await.map_err(Status::from)?;
        }
        Ok(())
    }

    /// Check an exec or attach request as the kubelet does (one of stdin/stdout/stderr, not
    /// tty with stderr, a running container) and keep it under a streaming URL.
    async fn streaming_url(&self, mut p: streaming::ExecParams) -> Result<String, Status> {
        if !(p.stdin || p.stdout || p.stderr) {
            return Err(Status::invalid_argument("one of stdin, stdout, or stderr must be set"));
        }
        if p.tty && p.stderr {
            return Err(Status::invalid_argument("tty and stderr cannot both be true"));
        }
        let files = self.container_files(&p.container_id).await?;
        if files.state.is_none() || files.exit.is_some() {
            return Err(
                RuntimeError::FailedPrecondition(format!("container {} is not running", files.record.id)).into(),
            );
        }
        p.container_id = files.record.id.clone();
        self.0.streaming.url_for(streaming::Request::Exec(p))
    }

    fn refuse<T>(&self, what: &str) -> Result<Response<T>, Status> {
        Err(RuntimeError::FailedPrecondition(format!(
            "{what}: minilet runs static pods from its manifests directory ({}); add, edit or remove a manifest there instead",
            self.0.manifests.display()
        ))
        .into())
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl cri::runtime_service_server::RuntimeService for RuntimeSvc {
    async fn version(&self, _: Request<cri::VersionRequest>) -> R<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: CRI_VERSION.into(),
            runtime_name: "minilet".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: minilet_proto::CRI_API_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(&self, req: Request<cri::RunPodSandboxRequest>) -> R<cri::RunPodSandboxResponse> {
        let pod_sandbox_id = self
            .pods()
            .run_pod_sandbox(req.into_inner())
            .await
            .map_err(Status::from)?;
        Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(&self, req: Request<cri::StopPodSandboxRequest>) -> R<cri::StopPodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        if self.pods().has_sandbox(&id) {
            self.pods().stop_pod_sandbox(&id).await.map_err(Status::from)?;
        } else {
            self.stop_static_sandbox(&id).await?;
        }
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(&self, req: Request<cri::RemovePodSandboxRequest>) -> R<cri::RemovePodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        if self.pods().has_sandbox(&id) {
            self.pods().remove_pod_sandbox(&id).await.map_err(Status::from)?;
        } else {
            // A static pod's sandbox comes back while its manifest is there: removing it is
            // stopping it (the worker recreates it, as a kubelet would).
            self.stop_static_sandbox(&id).await?;
        }
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(&self, req: Request<cri::PodSandboxStatusRequest>) -> R<cri::PodSandboxStatusResponse> {
        let req = req.into_inner();
        if self.pods().has_sandbox(&req.pod_sandbox_id) {
            let (status, verbose) = self
                .pods()
                .pod_sandbox_status(&req.pod_sandbox_id)
                .await
                .map_err(Status::from)?;
            let containers_statuses = Vec::new();
            let mut info = std::collections::HashMap::new();
            if req.verbose {
                info.insert("info".to_string(), verbose.to_string());
            }
            return Ok(Response::new(cri::PodSandboxStatusResponse {
                status: Some(status),
                info,
                containers_statuses,
                timestamp: now_nanos(),
            }));
        }
        let e = filter::sandbox(&self.0.ctx.registry, &req.pod_sandbox_id)?;
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let v = serde_json::json!({
                "pid": e.sandbox.pause.map(|p| p.pid),
                "uid": e.uid,
                "manifest": e.manifest,
                "cgroupDirs": self.0.ctx.runtime.cgroups.dirs(&e.sandbox.cgroup),
                "namespaces": {"network": e.sandbox.namespaces.network, "pid": e.sandbox.namespaces.pid, "ipc": e.sandbox.namespaces.ipc, "uts": e.sandbox.namespaces.uts, "sharedPid": e.sandbox.share_pid},
                "pod": convert::v1_pod(&e, &self.0.ctx.node),
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(convert::pod_sandbox_status(&e, &self.0.ctx.node)),
            info,
            containers_statuses: Vec::new(),
            timestamp: now_nanos(),
        }))
    }

    async fn list_pod_sandbox(&self, req: Request<cri::ListPodSandboxRequest>) -> R<cri::ListPodSandboxResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let items = self
            .0
            .ctx
            .registry
            .list()
            .iter()
            // A pod refused at admission never reached the runtime: it has no sandbox.
            .filter(|e| e.status.rejection.is_none())
            .map(convert::pod_sandbox)
            .chain(self.pods().list_pod_sandboxes().await)
            .filter(|s| filter::id_matches(&f.id, &s.id))
            .filter(|s| f.state.as_ref().is_none_or(|st| st.state == s.state))
            .filter(|s| filter::labels_match(&s.labels, &f.label_selector))
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(&self, req: Request<cri::CreateContainerRequest>) -> R<cri::CreateContainerResponse> {
        let req = req.into_inner();
        if !self.pods().has_sandbox(&req.pod_sandbox_id)
            && filter::sandbox(&self.0.ctx.registry, &req.pod_sandbox_id).is_ok()
        {
            return self.refuse("CreateContainer in a static pod's sandbox");
        }
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        let container_id = self
            .pods()
            .create_container(&req.pod_sandbox_id, config)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(cri::CreateContainerResponse { container_id }))
    }

    async fn start_container(&self, req: Request<cri::StartContainerRequest>) -> R<cri::StartContainerResponse> {
        let id = req.into_inner().container_id;
        match self.pods().start_container(&id).await {
            Err(RuntimeError::NotFound { .. }) if filter::container(&self.0.ctx.registry, &id).is_ok() => {
                self.refuse("StartContainer of a static pod's container (its worker starts it)")
            }
            other => {
                other.map_err(Status::from)?;
                Ok(Response::new(cri::StartContainerResponse {}))
            }
        }
    }

    async fn stop_container(&self, req: Request<cri::StopContainerRequest>) -> R<cri::StopContainerResponse> {
        let req = req.into_inner();
        match self.pods().find_container(&req.container_id).await {
            Ok(_) => self
                .pods()
                .stop_container(&req.container_id, req.timeout)
                .await
                .map_err(Status::from)?,
            Err(_) => self.stop_static_container(&req.container_id, req.timeout).await?,
        }
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(&self, req: Request<cri::RemoveContainerRequest>) -> R<cri::RemoveContainerResponse> {
        let id = req.into_inner().container_id;
        match self.pods().find_container(&id).await {
            Ok(_) => self.pods().remove_container(&id).await.map_err(Status::from)?,
            // A static pod's attempt is its worker's to remove: stopping it is what a client
            // can do (the worker then restarts it per policy, and retires old attempts).
            Err(_) => self.stop_static_container(&id, 0).await?,
        }
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(&self, req: Request<cri::ListContainersRequest>) -> R<cri::ListContainersResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let mut containers = Vec::new();
        for e in self.0.ctx.registry.list() {
            if !filter::id_matches(&f.pod_sandbox_id, &e.sandbox.id) {
                continue;
            }
            for a in &e.attempts {
                containers.push(convert::container(&e, a));
            }
        }
        containers.extend(
            self.pods()
                .list_containers()
                .await
                .into_iter()
                .filter(|c| filter::id_matches(&f.pod_sandbox_id, &c.pod_sandbox_id)),
        );
        containers.retain(|c| {
            filter::id_matches(&f.id, &c.id)
                && f.state.as_ref().is_none_or(|s| s.state == c.state)
                && filter::labels_match(&c.labels, &f.label_selector)
        });
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(&self, req: Request<cri::ContainerStatusRequest>) -> R<cri::ContainerStatusResponse> {
        let req = req.into_inner();
        if let Ok((sandbox_id, c)) = self.pods().container(&req.container_id).await {
            let status = crate::runtime::cri::status(&c);
            let mut info = std::collections::HashMap::new();
            if req.verbose {
                let files = &c.files;
                let v = serde_json::json!({
                    "pid": files.state.map(|s| s.process.pid),
                    "monitorPid": files.state.map(|s| s.monitor.pid),
                    "sandboxId": sandbox_id,
                    "cgroupDirs": self.0.ctx.runtime.cgroups.dirs(&files.record.cgroup),
                    "dir": files.dir,
                    "exit": files.exit,
                });
                info.insert("info".to_string(), v.to_string());
            }
            return Ok(Response::new(cri::ContainerStatusResponse {
                status: Some(status),
                info,
            }));
        }
        let (e, a) = filter::container(&self.0.ctx.registry, &req.container_id)?;
        let spec = convert::read_spec(&a.files);
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let v = serde_json::json!({
                "pid": a.files.state.map(|s| s.process.pid),
                "monitorPid": a.files.state.map(|s| s.monitor.pid),
                "sandboxId": e.sandbox.id,
                "cgroupDirs": self.0.ctx.runtime.cgroups.dirs(&a.files.record.cgroup),
                "dir": a.files.dir,
                "exit": a.files.exit,
                "spec": spec,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(convert::container_status(&e, &a, spec.as_ref())),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        if self.pods().find_container(&req.container_id).await.is_err()
            && filter::container(&self.0.ctx.registry, &req.container_id).is_ok()
        {
            return self.refuse("UpdateContainerResources of a static pod's container");
        }
        self.pods()
            .update_container_resources(&req.container_id, req.linux)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        let files = self.container_files(&req.into_inner().container_id).await?;
        self.0.ctx.runtime.reopen_log(&files).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        let req = req.into_inner();
        let files = self.container_files(&req.container_id).await?;
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
        let cmd = req.cmd.clone();
        match self
            .0
            .ctx
            .runtime
            .exec_sync(&files, req.cmd, timeout)
            .await
            .map_err(Status::from)?
        {
            Some(r) => Ok(Response::new(cri::ExecSyncResponse {
                stdout: r.stdout,
                stderr: r.stderr,
                exit_code: r.exit_code,
            })),
            None => {
                Err(RuntimeError::DeadlineExceeded(format!("command {cmd:?} timed out after {}s", req.timeout)).into())
            }
        }
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        let req = req.into_inner();
        // The kubelet's checks, in its words.
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd must not be empty"));
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
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        let req = req.into_inner();
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
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(&self, req: Request<cri::PortForwardRequest>) -> R<cri::PortForwardResponse> {
        let req = req.into_inner();
        let (sandbox_id, pause, _) = self
            .0
            .streaming
            .sandbox_network(&req.pod_sandbox_id)
            .await
            .map_err(Status::not_found)?;
        if pause.is_none() {
            return Err(RuntimeError::FailedPrecondition(format!("pod sandbox {sandbox_id} is not ready")).into());
        }
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!(
                "port: {p} is not a valid port number"
            )));
        }
        let url = self
            .0
            .streaming
            .url_for(streaming::Request::PortForward { sandbox_id })?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(&self, req: Request<cri::ContainerStatsRequest>) -> R<cri::ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        let (attributes, files) = match self.pods().container_attributes(&id).await {
            Ok(v) => v,
            Err(RuntimeError::NotFound { .. }) => {
                let (e, a) = filter::container(&self.0.ctx.registry, &id)?;
                (static_attributes(&e, &a), a.files)
            }
            Err(e) => return Err(e.into()),
        };
        let cgroup = files.record.cgroup.clone();
        let samples = self
            .0
            .stats
            .sample(&self.0.ctx.runtime.cgroups, std::slice::from_ref(&cgroup))
            .await;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(container_stats(attributes, &files, samples.get(&cgroup))),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let mut picked: Vec<(String, cri::ContainerAttributes, crate::runtime::state::ContainerFiles)> = Vec::new();
        for e in self.0.ctx.registry.list() {
            for a in e
                .attempts
                .iter()
                .filter(|a| a.files.state.is_some() && a.files.exit.is_none())
            {
                picked.push((e.sandbox.id.clone(), static_attributes(&e, a), a.files.clone()));
            }
        }
        picked.extend(self.pods().running_container_attributes().await);
        picked.retain(|(sandbox, attrs, _)| {
            filter::id_matches(&f.pod_sandbox_id, sandbox)
                && filter::id_matches(&f.id, &attrs.id)
                && filter::labels_match(&attrs.labels, &f.label_selector)
        });
        let paths: Vec<String> = picked.iter().map(|(_, _, files)| files.record.cgroup.clone()).collect();
        let samples = self.0.stats.sample(&self.0.ctx.runtime.cgroups, &paths).await;
        let stats = picked
            .into_iter()
            .map(|(_, attrs, files)| {
                let sample = samples.get(&files.record.cgroup);
                container_stats(attrs, &files, sample)
            })
            .collect();
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(&self, req: Request<cri::PodSandboxStatsRequest>) -> R<cri::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let input = if self.pods().has_sandbox(&id) {
            let sb = self.pods().find_sandbox(&id)?;
            let sb = sb.lock().await.clone();
            cri_sandbox_input(&sb)
        } else {
            static_sandbox_input(&filter::sandbox(&self.0.ctx.registry, &id)?)
        };
        let mut all = self.sandbox_stats(vec![input]).await;
        Ok(Response::new(cri::PodSandboxStatsResponse { stats: all.pop() }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let mut inputs = self.ready_sandbox_inputs().await;
        inputs.retain(|i| {
            filter::id_matches(&f.id, &i.attributes.id) && filter::labels_match(&i.attributes.labels, &f.label_selector)
        });
        Ok(Response::new(cri::ListPodSandboxStatsResponse {
            stats: self.sandbox_stats(inputs).await,
        }))
    }

    async fn update_runtime_config(
        &self,
        _: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        // The kubelet sends the pod CIDR here; minilet's comes from --pod-cidr or the CNI
        // configuration itself, as containerd's does without a conf template.
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, req: Request<cri::StatusRequest>) -> R<cri::StatusResponse> {
        let mut info = std::collections::HashMap::new();
        if req.into_inner().verbose {
            let rt = &self.0.ctx.runtime;
            let v = serde_json::json!({
                "root": rt.config.root,
                "logDir": rt.config.log_dir,
                "pause": rt.config.pause_path,
                "cgroupVersion": rt.cgroups.version().to_string(),
                "cgroupParent": rt.cgroups.dirs(""),
                "manifests": self.0.manifests,
                "node": self.0.ctx.node.name,
            });
            info.insert("config".to_string(), v.to_string());
        }
        let cond = |kind: &str, message: &str| cri::RuntimeCondition {
            r#type: kind.into(),
            status: true,
            reason: String::new(),
            message: message.into(),
        };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    cond("RuntimeReady", ""),
                    cond(
                        "NetworkReady",
                        "pods get their own network namespace with loopback only (no CNI); hostNetwork pods use the node's",
                    ),
                ],
            }),
            info,
            runtime_handlers: super::convert::runtime_handlers(),
            features: None,
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> R<cri::CheckpointContainerResponse> {
        Err(RuntimeError::Unimplemented("CheckpointContainer is not supported".into()).into())
    }

    type GetContainerEventsStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

    async fn get_container_events(&self, _: Request<cri::GetEventsRequest>) -> R<Self::GetContainerEventsStream> {
        use tokio_stream::StreamExt;
        let rx = self.pods().events().subscribe();
        // A subscriber that fell behind skips what it missed (a kubelet relists then).
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|ev| ev.ok().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> R<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> R<cri::ListPodSandboxMetricsResponse> {
        let inputs = self.ready_sandbox_inputs().await;
        let cgroups = std::sync::Arc::clone(&self.0.ctx.runtime.cgroups);
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
        Ok(Response::new(cri::ListPodSandboxMetricsResponse { pod_metrics }))
    }

    async fn runtime_config(&self, _: Request<cri::RuntimeConfigRequest>) -> R<cri::RuntimeConfigResponse> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

/// A static pod's container as CRI stats name it.
fn static_attributes(e: &crate::pod::status::PodEntry, a: &crate::pod::status::Attempt) -> cri::ContainerAttributes {
    cri::ContainerAttributes {
        id: a.files.record.id.clone(),
        metadata: Some(cri::ContainerMetadata {
            name: a.files.record.name.clone(),
            attempt: a.files.record.attempt,
        }),
        labels: convert::container_labels(e, a),
        annotations: convert::container_annotations(e, a),
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

impl RuntimeSvc {
    /// Every ready sandbox of either kind, with its running containers.
    async fn ready_sandbox_inputs(&self) -> Vec<SandboxStatsInput> {
        let mut inputs: Vec<SandboxStatsInput> = self
            .0
            .ctx
            .registry
            .list()
            .iter()
            .filter(|e| convert::sandbox_state(e) == cri::PodSandboxState::SandboxReady)
            .map(static_sandbox_input)
            .collect();
        inputs.extend(
            self.pods()
                .list()
                .await
                .iter()
                .filter(|sb| sb.ready())
                .map(cri_sandbox_input),
        );
        inputs
    }

    async fn sandbox_stats(&self, inputs: Vec<SandboxStatsInput>) -> Vec<cri::PodSandboxStats> {
        let mut paths: Vec<String> = Vec::new();
        for i in &inputs {
            paths.push(i.cgroup.clone());
            paths.extend(i.containers.iter().map(|(_, f)| f.record.cgroup.clone()));
        }
        let samples = self.0.stats.sample(&self.0.ctx.runtime.cgroups, &paths).await;
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

fn static_sandbox_input(e: &crate::pod::status::PodEntry) -> SandboxStatsInput {
    SandboxStatsInput {
        attributes: cri::PodSandboxAttributes {
            id: e.sandbox.id.clone(),
            metadata: Some(convert::sandbox_metadata(e)),
            labels: convert::sandbox_labels(e),
            annotations: convert::sandbox_annotations(e),
        },
        cgroup: e.sandbox.cgroup.clone(),
        containers: e
            .attempts
            .iter()
            .filter(|a| a.files.state.is_some() && a.files.exit.is_none())
            .map(|a| (static_attributes(e, a), a.files.clone()))
            .collect(),
    }
}

fn cri_sandbox_input(sb: &crate::runtime::cri::Sandbox) -> SandboxStatsInput {
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
