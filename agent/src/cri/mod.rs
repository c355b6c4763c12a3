//! The gRPC endpoint: CRI `runtime.v1` (RuntimeService, ImageService) and minilet's own
//! `minilet.v1.Node`, on one unix socket.
//!
//! The socket is root's, mode 0660. A second agent refuses to start on a socket another live
//! agent serves; a socket file left by a dead agent is taken over.

pub mod convert;
mod errors;
mod filter;
mod grpc;
mod image;
mod metrics;
mod node;
pub mod ownership;
mod runtime;
pub mod service;
mod stats;
pub mod streaming;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::events::Events;
use crate::pod::node::NodeInfo;
use crate::pod::status::Registry;
use crate::runtime::cri::CriPods;
use crate::runtime::{Runtime, RuntimeError};

/// What the three services share, and the one implementation of the CRI traits
/// ([`service::RuntimeService`], [`service::ImageService`]) over this node's pods and images:
/// for CRI clients through the socket, and for the static pods' side in process.
pub struct Cri {
    pub runtime: Arc<Runtime>,
    /// The runtime's store of sandboxes and containers.
    pub cri_pods: Arc<CriPods>,
    pub node: NodeInfo,
    /// The static pods as their workers publish them, for minilet's own Node service
    /// (`get pods`); CRI clients see every pod from the store.
    pub registry: Registry,
    pub events: Events,
    pub puller: Arc<crate::images::Puller>,
    pub image_gc: Arc<crate::images::gc::ImageGc>,
    pub stats: stats::StatsCache,
    /// The manifests directory, named in refusals of lifecycle calls.
    pub manifests: PathBuf,
    /// Hands out the URLs of Exec, Attach and PortForward, once started ([`Cri::set_streaming`]).
    pub(crate) streaming: std::sync::OnceLock<Arc<streaming::Streaming>>,
}

impl Cri {
    /// The streaming server the URLs of Exec, Attach and PortForward point to (set once).
    pub fn set_streaming(&self, server: Arc<streaming::Streaming>) {
        let _ = self.streaming.set(server);
    }

    fn streaming(&self) -> Result<&streaming::Streaming, RuntimeError> {
        self.streaming
            .get()
            .map(|s| &**s)
            .ok_or_else(|| RuntimeError::FailedPrecondition("the streaming server is not running".into()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another minilet agent is serving {0} (stop it first, or pass --socket)")]
    InUse(PathBuf),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Removes the socket file when the server stops cleanly.
#[must_use = "the socket file is removed when this is dropped"]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bind the socket: refuse a live one, take over a stale one.
pub fn bind(path: &Path) -> Result<(tokio::net::UnixListener, SocketFile), SocketError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let io = |action, source| SocketError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.file_type().is_socket() && std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(path.to_path_buf()));
        }
        tracing::info!(socket = %path.display(), "removing a stale socket left by a previous agent");
        std::fs::remove_file(path).map_err(|e| io("remove the stale socket", e))?;
    }
    // bind() creates the file with the process umask; a chmod afterwards leaves a window in
    // which anyone may connect. So the socket is made in a private (0700) directory beside
    // its place, given its mode there, and renamed into place: it never exists at `path`
    // with any other mode. (umask is process-wide, so changing it would race other threads.)
    let private = tempfile::Builder::new()
        .prefix(".minilet-sock-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
        .map_err(|e| io("create a private directory beside", e))?;
    let staged = private.path().join("s");
    let listener = tokio::net::UnixListener::bind(&staged).map_err(|e| io("bind", e))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o660)).map_err(|e| io("chmod", e))?;
    std::fs::rename(&staged, path).map_err(|e| io("move the socket into place at", e))?;
    Ok((listener, SocketFile(path.to_path_buf())))
}

/// Largest gRPC message either side sends or accepts (tonic decodes at most 4 MiB by
/// default). One pod is at most 1.5 MiB of spec (the source's bound) plus its status, so
/// a list of pods or events stays far below this unless there are very many large pods;
/// the kubelet and containerd allow 16 MiB for CRI calls, and `get pods` lists every pod.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 << 20;

/// Serve the three services on `listener` until the task is dropped or aborted.
pub fn serve(cri: Arc<Cri>, listener: tokio::net::UnixListener) -> tokio::task::JoinHandle<()> {
    use minilet_proto::{ImageServiceServer, NodeServer, RuntimeServiceServer};
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::new(grpc::RuntimeGrpc(cri.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(
            ImageServiceServer::new(grpc::ImageGrpc(cri.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(
            NodeServer::new(node::NodeSvc(cri))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .serve_with_incoming(incoming);
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    })
}
