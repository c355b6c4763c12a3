//! The gRPC connection to the agent's unix socket, and one thin method per RPC the CLI uses,
//! each turning a failure into kubectl's words (see [`super::errors`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use hyper_util::rt::TokioIo;
use minilet_proto::minilet::v1 as node;
use minilet_proto::runtime::v1 as cri;
use minilet_proto::{ImageServiceClient, NodeClient, RuntimeServiceClient};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::errors::{ConnectError, from_status};
use crate::cri::MAX_GRPC_MESSAGE_BYTES;

/// One connection to the agent, shared by its services.
/// How much of each pod's cgroups a pod listing carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Details {
    /// The cgroup directories only (get, logs, exec).
    Dirs,
    /// Also the applied limits and pressure figures (describe).
    Cgroups,
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
    node: NodeClient<Channel>,
}

/// Connect to the agent's socket. The URI is a placeholder tonic requires; every connection
/// goes to the unix socket.
pub async fn connect(socket: &Path) -> Result<Client> {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| ConnectError::new(socket, &e))?;
    Ok(Client {
        socket: socket.to_path_buf(),
        // As large as the agent sends: a big pod must not make a listing fail for everyone.
        runtime: RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        image: ImageServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        node: NodeClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
    })
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Client {
    fn err(&self, status: tonic::Status) -> anyhow::Error {
        from_status(status, &self.socket)
    }

    /// Node.ListPods; empty strings match everything. `details`: with each cgroup's applied
    /// limits and pressure (what `describe` shows; costly with many pods).
    pub async fn list_pods(&self, namespace: &str, name: &str, details: Details) -> Result<Vec<node::PodInfo>> {
        let req = node::ListPodsRequest {
            namespace: namespace.into(),
            name: name.into(),
            cgroup_details: details == Details::Cgroups,
        };
        let resp = self.node.clone().list_pods(req).await.map_err(|s| self.err(s))?;
        Ok(resp.into_inner().pods)
    }

    /// Node.ListEvents (JSON-encoded core/v1 Events, oldest first); empty strings match everything.
    pub async fn list_events(&self, namespace: &str, name: &str, uid: &str) -> Result<Vec<String>> {
        let req = node::ListEventsRequest {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        };
        let resp = self.node.clone().list_events(req).await.map_err(|s| self.err(s))?;
        Ok(resp.into_inner().event_json)
    }

    /// CRI Exec: the streaming URL of the session.
    pub async fn cri_exec(&self, req: cri::ExecRequest) -> Result<String> {
        let resp = self.runtime.clone().exec(req).await.map_err(|s| self.err(s))?;
        Ok(resp.into_inner().url)
    }

    /// CRI Attach: the streaming URL for a session with the container's own process.
    pub async fn cri_attach(&self, req: cri::AttachRequest) -> Result<String> {
        let resp = self.runtime.clone().attach(req).await.map_err(|s| self.err(s))?;
        Ok(resp.into_inner().url)
    }

    /// CRI PortForward: the streaming URL for the sandbox's ports.
    pub async fn port_forward(&self, sandbox_id: &str, port: Vec<i32>) -> Result<String> {
        let req = cri::PortForwardRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            port,
        };
        let resp = self.runtime.clone().port_forward(req).await.map_err(|s| self.err(s))?;
        Ok(resp.into_inner().url)
    }

    pub async fn version(&self) -> Result<cri::VersionResponse> {
        let req = cri::VersionRequest { version: "v1".into() };
        let resp = self.runtime.clone().version(req).await.map_err(|s| self.err(s))?;
        Ok(resp.into_inner())
    }

    /// ListPodSandbox with a label selector (exact matches).
    pub async fn list_sandboxes(&self, selector: &[(&str, &str)]) -> Result<Vec<cri::PodSandbox>> {
        let req = cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: labels(selector),
                ..Default::default()
            }),
        };
        let resp = self
            .runtime
            .clone()
            .list_pod_sandbox(req)
            .await
            .map_err(|s| self.err(s))?;
        Ok(resp.into_inner().items)
    }

    /// ListContainers of one sandbox with a label selector (exact matches).
    pub async fn list_containers(&self, sandbox_id: &str, selector: &[(&str, &str)]) -> Result<Vec<cri::Container>> {
        let req = cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sandbox_id.into(),
                label_selector: labels(selector),
                ..Default::default()
            }),
        };
        let resp = self
            .runtime
            .clone()
            .list_containers(req)
            .await
            .map_err(|s| self.err(s))?;
        Ok(resp.into_inner().containers)
    }

    pub async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let req = cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let resp = self
            .runtime
            .clone()
            .container_status(req)
            .await
            .map_err(|s| self.err(s))?;
        resp.into_inner()
            .status
            .ok_or_else(|| anyhow::anyhow!("the agent sent no status for container {id}"))
    }

    /// ListPodSandboxStats, unfiltered (the CLI filters by namespace and name itself).
    pub async fn pod_stats(&self) -> Result<Vec<cri::PodSandboxStats>> {
        let req = cri::ListPodSandboxStatsRequest { filter: None };
        let resp = self
            .runtime
            .clone()
            .list_pod_sandbox_stats(req)
            .await
            .map_err(|s| self.err(s))?;
        Ok(resp.into_inner().stats)
    }

    /// ListContainerStats, unfiltered.
    pub async fn container_stats(&self) -> Result<Vec<cri::ContainerStats>> {
        let req = cri::ListContainerStatsRequest { filter: None };
        let resp = self
            .runtime
            .clone()
            .list_container_stats(req)
            .await
            .map_err(|s| self.err(s))?;
        Ok(resp.into_inner().stats)
    }

    /// An image call's failure in the agent's own words (`error: …`, as the same failure on a
    /// local store reads); only an unreachable agent is reported as such.
    fn image_err(&self, status: tonic::Status) -> anyhow::Error {
        if status.code() == tonic::Code::Unavailable {
            return self.err(status);
        }
        anyhow::anyhow!("{}", status.message())
    }

    /// ImageService.ListImages, unfiltered: one entry per image with all its names.
    pub async fn list_images(&self) -> Result<Vec<cri::Image>> {
        let req = cri::ListImagesRequest { filter: None };
        let resp = self
            .image
            .clone()
            .list_images(req)
            .await
            .map_err(|s| self.image_err(s))?;
        Ok(resp.into_inner().images)
    }

    /// ImageService.ImageStatus: the image and, with `verbose`, its "info" JSON.
    pub async fn image_status(&self, reference: &str, verbose: bool) -> Result<Option<(cri::Image, Option<String>)>> {
        let req = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: reference.into(),
                ..Default::default()
            }),
            verbose,
        };
        let resp = self
            .image
            .clone()
            .image_status(req)
            .await
            .map_err(|s| self.image_err(s))?
            .into_inner();
        let mut info = resp.info;
        Ok(resp.image.map(|i| (i, info.remove("info"))))
    }

    /// ImageService.PullImage; returns the image ID.
    pub async fn pull_image(&self, reference: &str, auth: Option<cri::AuthConfig>) -> Result<String> {
        let req = cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: reference.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        };
        let resp = self
            .image
            .clone()
            .pull_image(req)
            .await
            .map_err(|s| self.image_err(s))?;
        Ok(resp.into_inner().image_ref)
    }

    /// ImageService.RemoveImage (by name: that name; by ID: the image).
    pub async fn remove_image(&self, reference: &str) -> Result<()> {
        let req = cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: reference.into(),
                ..Default::default()
            }),
        };
        self.image
            .clone()
            .remove_image(req)
            .await
            .map_err(|s| self.image_err(s))?;
        Ok(())
    }
}
