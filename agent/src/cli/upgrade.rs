//! Connecting to a CRI streaming URL and upgrading the HTTP connection to SPDY/3.1, as
//! client-go's SPDY round tripper does; the result carries a [`spdy_session`].

use anyhow::{Context, Result, bail};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::cri::streaming::spdy_session::{self, Session};

/// Open `url` (http://host:port/path, as the agent hands out) and speak SPDY with `protocol`.
pub async fn spdy(url: &str, protocol: &str) -> Result<Session> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("streaming URL {url:?}"))?;
    let authority = uri
        .authority()
        .with_context(|| format!("streaming URL {url:?} has no host"))?
        .clone();
    let tcp = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("connect to the streaming server at {authority}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("HTTP handshake with the streaming server")?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = hyper::Request::get(uri.path())
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(Empty::<Bytes>::new())
        .context("build the upgrade request")?;
    let resp = sender.send_request(req).await.context("upgrade request")?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        bail!("unable to upgrade connection: {status}: {body}");
    }
    let upgraded = hyper::upgrade::on(resp).await.context("upgrade to SPDY")?;
    Ok(spdy_session::start(TokioIo::new(upgraded), false))
}
