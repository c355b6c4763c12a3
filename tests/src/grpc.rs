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
