//! The seam between pods and the runtime: CRI `runtime.v1` RuntimeService and ImageService as
//! Rust traits, one method per RPC, taking and returning the generated messages.
//!
//! The gRPC server is a thin adapter over these traits ([`super::grpc`]); an in-process caller
//! (the static-pod side, as the kubelet drives containerd) calls them directly, with no socket
//! hop. Refusals that only apply to external clients (changing a static pod's containers) are
//! the adapter's ([`super::ownership`]), not the traits': an in-process caller may do more.

use std::pin::Pin;

use minilet_proto::runtime::v1 as cri;
use tokio_stream::Stream;

use crate::runtime::RuntimeError;

/// The container lifecycle events GetContainerEvents streams.
pub type ContainerEventStream = Pin<Box<dyn Stream<Item = cri::ContainerEventResponse> + Send>>;

type Result<T> = std::result::Result<T, RuntimeError>;

/// The key of a verbose status response's `info` under which the runtime puts its details
/// (`pid`, `cgroup`, ...) as one JSON object, as containerd does.
pub const VERBOSE_INFO: &str = "info";

/// The details of a verbose status response ([`VERBOSE_INFO`]), for an in-process caller.
pub fn verbose_info(info: &std::collections::HashMap<String, String>) -> Option<serde_json::Value> {
    serde_json::from_str(info.get(VERBOSE_INFO)?).ok()
}

/// CRI `runtime.v1.RuntimeService`.
#[tonic::async_trait]
pub trait RuntimeService: Send + Sync {
    async fn version(&self, req: cri::VersionRequest) -> Result<cri::VersionResponse>;
    async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> Result<cri::RunPodSandboxResponse>;
    async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> Result<cri::StopPodSandboxResponse>;
    async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> Result<cri::RemovePodSandboxResponse>;
    async fn pod_sandbox_status(&self, req: cri::PodSandboxStatusRequest) -> Result<cri::PodSandboxStatusResponse>;
    async fn list_pod_sandbox(&self, req: cri::ListPodSandboxRequest) -> Result<cri::ListPodSandboxResponse>;
    async fn create_container(&self, req: cri::CreateContainerRequest) -> Result<cri::CreateContainerResponse>;
    async fn start_container(&self, req: cri::StartContainerRequest) -> Result<cri::StartContainerResponse>;
    async fn stop_container(&self, req: cri::StopContainerRequest) -> Result<cri::StopContainerResponse>;
    async fn remove_container(&self, req: cri::RemoveContainerRequest) -> Result<cri::RemoveContainerResponse>;
    async fn list_containers(&self, req: cri::ListContainersRequest) -> Result<cri::ListContainersResponse>;
    async fn container_status(&self, req: cri::ContainerStatusRequest) -> Result<cri::ContainerStatusResponse>;
    async fn update_container_resources(
        &self,
        req: cri::UpdateContainerResourcesRequest,
    ) -> Result<cri::UpdateContainerResourcesResponse>;
    async fn reopen_container_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse>;
    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse>;
    async fn exec(&self, req: cri::ExecRequest) -> Result<cri::ExecResponse>;
    async fn attach(&self, req: cri::AttachRequest) -> Result<cri::AttachResponse>;
    async fn port_forward(&self, req: cri::PortForwardRequest) -> Result<cri::PortForwardResponse>;
    async fn container_stats(&self, req: cri::ContainerStatsRequest) -> Result<cri::ContainerStatsResponse>;
    async fn list_container_stats(
        &self,
        req: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse>;
    async fn pod_sandbox_stats(&self, req: cri::PodSandboxStatsRequest) -> Result<cri::PodSandboxStatsResponse>;
    async fn list_pod_sandbox_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
    ) -> Result<cri::ListPodSandboxStatsResponse>;
    async fn update_runtime_config(
        &self,
        req: cri::UpdateRuntimeConfigRequest,
    ) -> Result<cri::UpdateRuntimeConfigResponse>;
    async fn status(&self, req: cri::StatusRequest) -> Result<cri::StatusResponse>;
    async fn checkpoint_container(
        &self,
        req: cri::CheckpointContainerRequest,
    ) -> Result<cri::CheckpointContainerResponse>;
    async fn get_container_events(&self, req: cri::GetEventsRequest) -> Result<ContainerEventStream>;
    async fn list_metric_descriptors(
        &self,
        req: cri::ListMetricDescriptorsRequest,
    ) -> Result<cri::ListMetricDescriptorsResponse>;
    async fn list_pod_sandbox_metrics(
        &self,
        req: cri::ListPodSandboxMetricsRequest,
    ) -> Result<cri::ListPodSandboxMetricsResponse>;
    async fn runtime_config(&self, req: cri::RuntimeConfigRequest) -> Result<cri::RuntimeConfigResponse>;
}

/// CRI `runtime.v1.ImageService`. Image failures come back as [`RuntimeError::Image`], so one
/// mapping to gRPC codes serves both services.
#[tonic::async_trait]
pub trait ImageService: Send + Sync {
    async fn list_images(&self, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse>;
    async fn image_status(&self, req: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse>;
    async fn pull_image(&self, req: cri::PullImageRequest) -> Result<cri::PullImageResponse>;
    async fn remove_image(&self, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse>;
    async fn image_fs_info(&self, req: cri::ImageFsInfoRequest) -> Result<cri::ImageFsInfoResponse>;
}
