//! Generated gRPC clients (CRI runtime.v1 and minilet.v1) over the agent's unix socket:
//! what any CRI client would use, nothing from the server's internals.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use minilet_proto::{ImageServiceClient, NodeClient, RuntimeServiceClient};
use tonic::transport::{Channel, Endpoint, Uri};

pub struct Clients {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
    pub node: NodeClient<Channel>,
}

/// Connect to the socket at `path`.
pub async fn connect(path: &Path) -> Clients {
    let path: PathBuf = path.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")
        .expect("static URI")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
        }))
        .await
        .expect("connect to the agent's socket");
    Clients {
        // The kubelet's CRI client accepts messages up to 16 MiB (gRPC's default is 4 MiB).
        runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(16 * 1024 * 1024),
        image: ImageServiceClient::new(channel.clone()),
        node: NodeClient::new(channel),
    }
}

/// A current-thread runtime for a test body.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The first container ListContainers lists that `wanted` picks, waited for (30 s at most):
/// a test that saw a pod start through the state directory may ask before it is listed.
pub async fn listed_container(
    c: &mut Clients,
    what: &str,
    wanted: impl Fn(&minilet_proto::runtime::v1::Container) -> bool,
) -> minilet_proto::runtime::v1::Container {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let containers = c
            .runtime
            .list_containers(minilet_proto::runtime::v1::ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers;
        if let Some(found) = containers.iter().find(|x| wanted(x)) {
            return found.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} is never listed: {containers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A GetContainerEvents stream: events from now on, as a kubelet's evented PLEG reads them.
pub async fn container_events(c: &mut Clients) -> tonic::Streaming<minilet_proto::runtime::v1::ContainerEventResponse> {
    c.runtime
        .get_container_events(minilet_proto::runtime::v1::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// The next event on `events` that `wanted` accepts; every event must come within 10 s.
pub async fn next_event(
    events: &mut tonic::Streaming<minilet_proto::runtime::v1::ContainerEventResponse>,
    wanted: impl Fn(&minilet_proto::runtime::v1::ContainerEventResponse) -> bool,
) -> minilet_proto::runtime::v1::ContainerEventResponse {
    loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.message())
            .await
            .expect("an event within 10 s")
            .expect("event stream")
            .expect("the stream stays open");
        if wanted(&event) {
            return event;
        }
    }
}

/// ContainerStatus of `id`, verbose: the status and the runtime's info (`pid`, `cgroupDirs`,
/// ...) as JSON.
pub async fn container_status(
    c: &mut Clients,
    id: &str,
) -> (minilet_proto::runtime::v1::ContainerStatus, serde_json::Value) {
    let r = c
        .runtime
        .container_status(minilet_proto::runtime::v1::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    let info = serde_json::from_str(&r.info["info"]).expect("verbose info is JSON");
    (r.status.expect("status"), info)
}
