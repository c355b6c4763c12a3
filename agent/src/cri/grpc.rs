//! The gRPC face of [`RuntimeService`] and [`ImageService`]: each RPC calls the trait and maps
//! its error through the one mapping ([`super::errors`]). The only thing added here is the
//! external boundary's ownership check ([`super::ownership`]).

use std::sync::Arc;

use minilet_proto::runtime::v1 as cri;
use tonic::{Request, Response, Status};

use super::ownership::{Owner, Owners, client_may_change};
use super::service::{ImageService, RuntimeService};
use crate::runtime::RuntimeError;

type R<T> = Result<Response<T>, Status>;

/// A client's sandbox may not pass for a static pod's: the annotation that says so is the
/// agent's own pod side's.
fn reserved_for_manifests(req: &cri::RunPodSandboxRequest) -> Result<(), Status> {
    let marked = req
        .config
        .as_ref()
        .is_some_and(|c| c.annotations.contains_key(crate::runtime::cri::MANIFEST));
    if marked {
        return Err(Status::from(RuntimeError::InvalidArgument(format!(
            "annotations[{:?}] is reserved for the agent's static pods",
            crate::runtime::cri::MANIFEST
        ))));
    }
    Ok(())
}

fn answer<T>(r: Result<T, RuntimeError>) -> R<T> {
    r.map(Response::new).map_err(Status::from)
}

/// `runtime.v1.RuntimeService` over the socket.
pub struct RuntimeGrpc<S>(pub Arc<S>);

/// `runtime.v1.ImageService` over the socket.
pub struct ImageGrpc<S>(pub Arc<S>);

#[tonic::async_trait]
impl<S: RuntimeService + Owners + 'static> cri::runtime_service_server::RuntimeService for RuntimeGrpc<S> {
    async fn version(&self, r: Request<cri::VersionRequest>) -> R<cri::VersionResponse> {
        answer(self.0.version(r.into_inner()).await)
    }

    async fn run_pod_sandbox(&self, r: Request<cri::RunPodSandboxRequest>) -> R<cri::RunPodSandboxResponse> {
        let req = r.into_inner();
        reserved_for_manifests(&req)?;
        answer(self.0.run_pod_sandbox(req).await)
    }

    async fn stop_pod_sandbox(&self, r: Request<cri::StopPodSandboxRequest>) -> R<cri::StopPodSandboxResponse> {
        answer(self.0.stop_pod_sandbox(r.into_inner()).await)
    }

    async fn remove_pod_sandbox(&self, r: Request<cri::RemovePodSandboxRequest>) -> R<cri::RemovePodSandboxResponse> {
        let req = r.into_inner();
        // A static pod's sandbox comes back while its manifest is there: removing it is
        // stopping it (its worker makes a new one, as a kubelet would).
        if self.0.sandbox_owner(&req.pod_sandbox_id).await == Owner::Manifest {
            let stop = cri::StopPodSandboxRequest {
                pod_sandbox_id: req.pod_sandbox_id,
            };
            return answer(
                self.0
                    .stop_pod_sandbox(stop)
                    .await
                    .map(|_| cri::RemovePodSandboxResponse {}),
            );
        }
        answer(self.0.remove_pod_sandbox(req).await)
    }

    async fn pod_sandbox_status(&self, r: Request<cri::PodSandboxStatusRequest>) -> R<cri::PodSandboxStatusResponse> {
        answer(self.0.pod_sandbox_status(r.into_inner()).await)
    }

    async fn list_pod_sandbox(&self, r: Request<cri::ListPodSandboxRequest>) -> R<cri::ListPodSandboxResponse> {
        answer(self.0.list_pod_sandbox(r.into_inner()).await)
    }

    async fn create_container(&self, r: Request<cri::CreateContainerRequest>) -> R<cri::CreateContainerResponse> {
        let req = r.into_inner();
        let owner = self.0.sandbox_owner(&req.pod_sandbox_id).await;
        client_may_change(owner, "CreateContainer in a static pod's sandbox", self.0.manifests())?;
        answer(self.0.create_container(req).await)
    }

    async fn start_container(&self, r: Request<cri::StartContainerRequest>) -> R<cri::StartContainerResponse> {
        let req = r.into_inner();
        let owner = self.0.container_owner(&req.container_id).await;
        client_may_change(
            owner,
            "StartContainer of a static pod's container (its worker starts it)",
            self.0.manifests(),
        )?;
        answer(self.0.start_container(req).await)
    }

    async fn stop_container(&self, r: Request<cri::StopContainerRequest>) -> R<cri::StopContainerResponse> {
        answer(self.0.stop_container(r.into_inner()).await)
    }

    async fn remove_container(&self, r: Request<cri::RemoveContainerRequest>) -> R<cri::RemoveContainerResponse> {
        let req = r.into_inner();
        // A static pod's attempt is its worker's to remove: stopping it is what a client can
        // do (the worker then restarts it per policy, and retires old attempts).
        if self.0.container_owner(&req.container_id).await == Owner::Manifest {
            let stop = cri::StopContainerRequest {
                container_id: req.container_id,
                timeout: 0,
            };
            return answer(
                self.0
                    .stop_container(stop)
                    .await
                    .map(|_| cri::RemoveContainerResponse {}),
            );
        }
        answer(self.0.remove_container(req).await)
    }

    async fn list_containers(&self, r: Request<cri::ListContainersRequest>) -> R<cri::ListContainersResponse> {
        answer(self.0.list_containers(r.into_inner()).await)
    }

    async fn container_status(&self, r: Request<cri::ContainerStatusRequest>) -> R<cri::ContainerStatusResponse> {
        answer(self.0.container_status(r.into_inner()).await)
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        let req = r.into_inner();
        let owner = self.0.container_owner(&req.container_id).await;
        client_may_change(
            owner,
            "UpdateContainerResources of a static pod's container",
            self.0.manifests(),
        )?;
        answer(self.0.update_container_resources(req).await)
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        answer(self.0.reopen_container_log(r.into_inner()).await)
    }

    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        answer(self.0.exec_sync(r.into_inner()).await)
    }

    async fn exec(&self, r: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        answer(self.0.exec(r.into_inner()).await)
    }

    async fn attach(&self, r: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        answer(self.0.attach(r.into_inner()).await)
    }

    async fn port_forward(&self, r: Request<cri::PortForwardRequest>) -> R<cri::PortForwardResponse> {
        answer(self.0.port_forward(r.into_inner()).await)
    }

    async fn container_stats(&self, r: Request<cri::ContainerStatsRequest>) -> R<cri::ContainerStatsResponse> {
        answer(self.0.container_stats(r.into_inner()).await)
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        answer(self.0.list_container_stats(r.into_inner()).await)
    }

    async fn pod_sandbox_stats(&self, r: Request<cri::PodSandboxStatsRequest>) -> R<cri::PodSandboxStatsResponse> {
        answer(self.0.pod_sandbox_stats(r.into_inner()).await)
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        answer(self.0.list_pod_sandbox_stats(r.into_inner()).await)
    }

    async fn update_runtime_config(
        &self,
        r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        answer(self.0.update_runtime_config(r.into_inner()).await)
    }

    async fn status(&self, r: Request<cri::StatusRequest>) -> R<cri::StatusResponse> {
        answer(self.0.status(r.into_inner()).await)
    }

    async fn checkpoint_container(
        &self,
        r: Request<cri::CheckpointContainerRequest>,
    ) -> R<cri::CheckpointContainerResponse> {
        answer(self.0.checkpoint_container(r.into_inner()).await)
    }

    type GetContainerEventsStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

    async fn get_container_events(&self, r: Request<cri::GetEventsRequest>) -> R<Self::GetContainerEventsStream> {
        use tokio_stream::StreamExt;
        let events = self
            .0
            .get_container_events(r.into_inner())
            .await
            .map_err(Status::from)?;
        Ok(Response::new(Box::pin(events.map(Ok))))
    }

    async fn list_metric_descriptors(
        &self,
        r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> R<cri::ListMetricDescriptorsResponse> {
        answer(self.0.list_metric_descriptors(r.into_inner()).await)
    }

    async fn list_pod_sandbox_metrics(
        &self,
        r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> R<cri::ListPodSandboxMetricsResponse> {
        answer(self.0.list_pod_sandbox_metrics(r.into_inner()).await)
    }

    async fn runtime_config(&self, r: Request<cri::RuntimeConfigRequest>) -> R<cri::RuntimeConfigResponse> {
        answer(self.0.runtime_config(r.into_inner()).await)
    }
}

#[tonic::async_trait]
impl<S: ImageService + 'static> cri::image_service_server::ImageService for ImageGrpc<S> {
    async fn list_images(&self, r: Request<cri::ListImagesRequest>) -> R<cri::ListImagesResponse> {
        answer(self.0.list_images(r.into_inner()).await)
    }

    async fn image_status(&self, r: Request<cri::ImageStatusRequest>) -> R<cri::ImageStatusResponse> {
        answer(self.0.image_status(r.into_inner()).await)
    }

    async fn pull_image(&self, r: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        answer(self.0.pull_image(r.into_inner()).await)
    }

    async fn remove_image(&self, r: Request<cri::RemoveImageRequest>) -> R<cri::RemoveImageResponse> {
        answer(self.0.remove_image(r.into_inner()).await)
    }

    async fn image_fs_info(&self, r: Request<cri::ImageFsInfoRequest>) -> R<cri::ImageFsInfoResponse> {
        answer(self.0.image_fs_info(r.into_inner()).await)
    }
}
