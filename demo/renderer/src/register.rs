//! `renderer register`: the backends' registration sidecar. It puts one key with an etcd
//! lease and keeps the lease alive while it runs. On SIGTERM (the pod is being deleted) it
//! revokes the lease, which deletes the key at once; if it is killed or its node dies, the
//! lease simply expires after `ttl` seconds and etcd deletes the key then.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use etcd_client::PutOptions;

use crate::etcd::{self, Backoff};

pub struct Registration {
    pub key: String,
    pub value: String,
    pub ttl: i64,
    /// Register only once this address accepts TCP connections (the app is listening).
    pub wait_tcp: Option<String>,
}

pub async fn run(
    endpoints: &[String],
    reg: &Registration,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<()> {
    if let Some(addr) = &reg.wait_tcp {
        tracing::info!("waiting for {addr} to accept connections before registering");
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                connected = tokio::net::TcpStream::connect(addr.as_str()) => if connected.is_ok() { break },
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut backoff = Backoff::new();
    loop {
        match session(endpoints, reg, shutdown.as_mut(), &mut backoff).await {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!("etcd at {}: {e:#}", endpoints.join(",")),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Register and keep the lease alive until `shutdown` (Ok, after revoking) or a failure (Err).
async fn session(
    endpoints: &[String],
    reg: &Registration,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let mut client = etcd::connect(endpoints).await.context("connect")?;
    let lease = client.lease_grant(reg.ttl, None).await.context("grant a lease")?.id();
    client
        .put(
            reg.key.as_str(),
            reg.value.as_str(),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .context("put the key")?;
    tracing::info!(
        "registered {} = {} (lease {lease:x}, ttl {}s)",
        reg.key,
        reg.value,
        reg.ttl
    );
    backoff.reset();
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await.context("keep the lease alive")?;
    // Renew well before expiry: a third of the TTL leaves two chances to miss one.
    let mut tick = tokio::time::interval(Duration::from_secs((reg.ttl as u64 / 3).max(1)));
    loop {
        tokio::select! {
            () = &mut shutdown => {
                let revoked = tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await;
                match revoked {
                    Ok(Ok(_)) => tracing::info!("revoked lease {lease:x}: {} deleted", reg.key),
                    Ok(Err(e)) => tracing::warn!("revoke lease {lease:x}: {e}; {} goes when it expires", reg.key),
                    Err(_) => tracing::warn!("revoke lease {lease:x}: timed out; {} goes when it expires", reg.key),
                }
                return Ok(());
            }
            _ = tick.tick() => {
                keeper.keep_alive().await.context("renew the lease")?;
                match responses.message().await.context("renew the lease")? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => anyhow::bail!("lease {lease:x} expired; registering again"),
                }
            }
        }
    }
}
