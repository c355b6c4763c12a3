//! The CRI streaming server, as the kubelet's: CRI `Exec`, `Attach` and `PortForward` return a URL
//! on this loopback HTTP server with a random single-use token that expires; the client
//! connects there and upgrades to SPDY/3.1 or WebSocket to speak remotecommand
//! (`v4`/`v5.channel.k8s.io`) or `portforward.k8s.io`.

mod exec;
mod portforward;
mod remotecommand;
pub mod requests;
pub mod spdy;
pub mod spdy_session;
mod status;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;

pub use exec::{ExecParams, Target};
pub use portforward::PROTOCOL as PORT_FORWARD_PROTOCOL;
pub use remotecommand::V4 as EXEC_PROTOCOL;
pub use requests::Request;

use crate::runtime::Runtime;
use crate::runtime::cri::CriPods;
use crate::runtime::state::ContainerFiles;

pub struct Streaming {
    runtime: Arc<Runtime>,
    cri_pods: Arc<CriPods>,
    requests: requests::Requests,
    addr: SocketAddr,
}

type Body = Full<Bytes>;

impl Streaming {
    /// Bind `addr` (loopback; port 0 picks one) and serve until the task is aborted.
    pub async fn start(
        cri: &super::Cri,
        addr: SocketAddr,
        ttl: Duration,
    ) -> std::io::Result<(Arc<Streaming>, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let server = Arc::new(Streaming {
            runtime: cri.runtime.clone(),
            cri_pods: cri.cri_pods.clone(),
            requests: requests::Requests::new(ttl),
            addr,
        });
        let s = server.clone();
        let task = tokio::spawn(async move {
            loop {
                let (conn, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming server: accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, std::convert::Infallible>(s.handle(req)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(conn), service)
                        .with_upgrades();
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "streaming server: connection");
                    }
                });
            }
        });
        tracing::info!(address = %addr, "streaming server listening");
        Ok((server, task))
    }

    /// Keep `req` and return the URL that redeems it.
    pub fn url_for(&self, req: Request) -> Result<String, crate::runtime::RuntimeError> {
        let path = req.path();
        let token = self
            .requests
            .insert(req)
            .map_err(|e| crate::runtime::RuntimeError::ResourceExhausted(e.to_string()))?;
        Ok(format!("http://{}/{path}/{token}", self.addr))
    }

    /// The one place a CRI container ID becomes the files of a running container.
    /// A container of a CRI-owned pod or of a static pod.
    pub(super) async fn container_files(&self, id: &str) -> Result<ContainerFiles, String> {
        let files = self.cri_pods.container_files(id).await.map_err(|e| e.to_string())?;
        if files.state.is_none() || files.exit.is_some() {
            return Err(format!("container {id} is not running"));
        }
        Ok(files)
    }

    /// The pause of a ready sandbox (CRI-owned or static) and whether it uses the host's
    /// network; with the sandbox's full ID.
    pub(super) async fn sandbox_network(
        &self,
        sandbox_id: &str,
    ) -> Result<(String, Option<crate::runtime::process::ProcessId>, bool), crate::runtime::RuntimeError> {
        self.cri_pods.sandbox_network(sandbox_id).await
    }

    /// A TCP connection to `port` on the pod's loopback, made in its network namespace.
    async fn connect_pod_port(&self, sandbox_id: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
        let (_, pause, host) = self.sandbox_network(sandbox_id).await.map_err(|e| e.to_string())?;
        let network = match pause {
            Some(_) if host => crate::pod::probes::Network::Host,
            Some(p) => crate::pod::probes::Network::Pod(p),
            None => return Err(format!("pod sandbox {sandbox_id} is not ready")),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        crate::pod::probes::connect(network, addr)
            .await
            .map_err(|e| format!("failed to connect to localhost:{port} inside the pod {sandbox_id}: {e}"))
    }

    fn handle(self: &Arc<Self>, req: HttpRequest<Incoming>) -> Response<Body> {
        let path = req.uri().path().trim_start_matches('/');
        let Some((kind, token)) = path.split_once('/') else {
            return plain(StatusCode::NOT_FOUND, "not found");
        };
        let Some(pending) = self.requests.take(token) else {
            return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
        };
        if pending.path() != kind {
            return plain(StatusCode::NOT_FOUND, "the token is not for this kind of request");
        }
        let upgrade = header(&req, "upgrade").unwrap_or_default().to_ascii_lowercase();
        if upgrade == "websocket" {
            self.websocket(req, pending)
        } else if upgrade.starts_with("spdy/3") {
            self.spdy(req, pending)
        } else {
            plain(StatusCode::BAD_REQUEST, "expected an upgrade to SPDY/3.1 or websocket")
        }
    }

    fn spdy(self: &Arc<Self>, req: HttpRequest<Incoming>, pending: Request) -> Response<Body> {
        let wanted = match pending {
            Request::Exec(_) => remotecommand::V4,
            Request::PortForward { .. } => portforward::PROTOCOL,
        };
        // client-go sends one X-Stream-Protocol-Version header per protocol it speaks.
        let offered = header_list(&req, "x-stream-protocol-version");
        if !offered.iter().any(|p| p == wanted) {
            return plain(
                StatusCode::FORBIDDEN,
                &format!("unable to upgrade: no common protocol (this server speaks {wanted}; offered {offered:?})"),
            );
        }
        let s = self.clone();
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => return tracing::debug!(error = %e, "SPDY upgrade failed"),
            };
            let session = spdy_session::start(TokioIo::new(upgraded), true);
            match pending {
                Request::Exec(p) => remotecommand::exec(s, session, p).await,
                Request::PortForward { sandbox_id } => portforward::serve(s, session, sandbox_id).await,
            }
        });
        let mut resp = switching_protocols("SPDY/3.1");
        let h = resp.headers_mut();
        h.insert(
            "X-Stream-Protocol-Version",
            hyper::header::HeaderValue::from_static(wanted),
        );
        resp
    }

    fn websocket(self: &Arc<Self>, req: HttpRequest<Incoming>, pending: Request) -> Response<Body> {
        let Some(key) = header(&req, "sec-websocket-key") else {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        let offered = header_list(&req, "sec-websocket-protocol");
        let speaks: &[&str] = match pending {
            Request::Exec(_) => &[websocket::V5, websocket::V4],
            Request::PortForward { .. } => websocket::PORT_FORWARD,
        };
        // The client's order of preference, as the kubelet picks.
        let protocol = offered.iter().find(|p| speaks.contains(&p.as_str())).cloned();
        let protocol = match (protocol, &pending) {
            (Some(p), _) => Some(p),
            (None, Request::PortForward { .. }) if offered.is_empty() => None,
            (None, _) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "unable to upgrade: no common protocol (this server speaks {speaks:?}; offered {offered:?})"
                    ),
                );
            }
        };
        let ports: Vec<u16> = match &pending {
            Request::PortForward { .. } => {
                let query = req.uri().query().unwrap_or_default();
                let mut ports = Vec::new();
                for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
                    if k != "port" {
                        continue;
                    }
                    for p in v.split(',') {
                        match p.parse::<u16>() {
                            Ok(p) if p > 0 => ports.push(p),
                            _ => return plain(StatusCode::BAD_REQUEST, &format!("invalid port {p:?}")),
                        }
                    }
                }
                if ports.is_empty() {
                    return plain(StatusCode::BAD_REQUEST, "query parameter \"port\" is required");
                }
                ports
            }
            Request::Exec(_) => Vec::new(),
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let s = self.clone();
        let chosen = protocol.clone().unwrap_or_default();
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => return tracing::debug!(error = %e, "WebSocket upgrade failed"),
            };
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            match pending {
                Request::Exec(p) => websocket::exec(s, ws, &chosen, p).await,
                Request::PortForward { sandbox_id } => websocket::port_forward(s, ws, sandbox_id, ports).await,
            }
        });
        let mut resp = switching_protocols("websocket");
        let h = resp.headers_mut();
        if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
            h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(p) = protocol.and_then(|p| hyper::header::HeaderValue::from_str(&p).ok()) {
            h.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        resp
    }
}

fn header(req: &HttpRequest<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Every value of a header given once per value or comma-separated.
fn header_list(req: &HttpRequest<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect()
}

/// A 101 answer upgrading to `protocol`.
fn switching_protocols(protocol: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static(protocol),
    );
    resp
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = status;
    resp
}
