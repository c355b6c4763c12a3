//! `minilet port-forward POD [LOCAL:]REMOTE...`: like kubectl, listen on local ports and
//! carry each connection to the pod's port over one SPDY `portforward.k8s.io` connection
//! to the URL CRI PortForward hands out.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{SocketArgs, client, pods, upgrade};
use crate::cri::streaming::spdy_session::Handle;

#[derive(Debug, Clone, clap::Args)]
pub struct PortForwardArgs {
    /// The pod.
    pub pod: String,
    /// Ports: REMOTE (same local port), LOCAL:REMOTE, or :REMOTE (a free local port).
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// Addresses to listen on, comma-separated (localhost: 127.0.0.1 and ::1).
    #[arg(long, default_value = "localhost", value_delimiter = ',')]
    pub address: Vec<String>,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `[LOCAL:]REMOTE` as kubectl reads it: (local, remote), local 0 for "pick one".
pub fn parse_port(spec: &str) -> Result<(u16, u16)> {
    let parse = |s: &str, what: &str| -> Result<u16> {
        s.parse::<u16>()
            .with_context(|| format!("error parsing {what} port {s:?} of {spec:?}: not a number from 0 to 65535"))
    };
    let (local, remote) = match spec.split_once(':') {
        Some(("", r)) => (0, parse(r, "remote")?),
        Some((l, r)) => (parse(l, "local")?, parse(r, "remote")?),
        None => {
            let p = parse(spec, "remote")?;
            (p, p)
        }
    };
    if remote == 0 {
        bail!("remote port must be > 0 in {spec:?}");
    }
    Ok((local, remote))
}

fn addresses(names: &[String]) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for n in names {
        match n.as_str() {
            "localhost" => out.extend([
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ]),
            s => out.push(
                s.parse()
                    .with_context(|| format!("--address {s:?}: not an IP address or localhost"))?,
            ),
        }
    }
    Ok(out)
}

pub async fn run(args: PortForwardArgs) -> Result<ExitCode> {
    let ports = args.ports.iter().map(|p| parse_port(p)).collect::<Result<Vec<_>>>()?;
    let addrs = addresses(&args.address)?;
    let client = client::connect(&args.socket.socket).await?;
    let np = pods::get(&client, &args.namespace, &args.pod, client::Details::Dirs).await?;
    if np.info.sandbox_id.is_empty() {
        bail!("unable to forward port because pod is not running");
    }
    let remotes: Vec<i32> = ports.iter().map(|(_, r)| i32::from(*r)).collect();
    let url = client.port_forward(&np.info.sandbox_id, remotes).await?;
    let mut session = upgrade::spdy(&url, crate::cri::streaming::PORT_FORWARD_PROTOCOL).await?;
    let handle = session.handle.clone();
    let ids = Arc::new(AtomicU64::new(0));
    let mut listening = 0;
    for (local, remote) in &ports {
        let mut local = *local;
        for ip in &addrs {
            let listener = match tokio::net::TcpListener::bind(SocketAddr::new(*ip, local)).await {
                Ok(l) => l,
                // kubectl goes on when one of localhost's two addresses is unavailable.
                Err(e) if args.address.iter().any(|a| a == "localhost") && ip.is_ipv6() => {
                    tracing::debug!(error = %e, "no IPv6 loopback listener");
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("unable to listen on {ip}:{local}")),
            };
            let bound = listener.local_addr()?;
            // ":REMOTE" picks one free port, then uses it on every address.
            local = bound.port();
            println!("Forwarding from {bound} -> {remote}");
            listening += 1;
            tokio::spawn(accept(listener, *remote, handle.clone(), ids.clone()));
        }
    }
    if listening == 0 {
        bail!("unable to listen on any of the requested ports: {:?}", args.ports);
    }
    // The agent opens no streams of its own: this ends when the connection does.
    tokio::select! {
        _ = session.incoming.recv() => bail!("lost connection to pod"),
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
    }
}

async fn accept(listener: tokio::net::TcpListener, remote: u16, handle: Handle, ids: Arc<AtomicU64>) {
    while let Ok((conn, _)) = listener.accept().await {
        println!("Handling connection for {remote}");
        let id = ids.fetch_add(1, Ordering::SeqCst).to_string();
        tokio::spawn(forward(conn, remote, id, handle.clone()));
    }
}

async fn forward(conn: tokio::net::TcpStream, remote: u16, id: String, handle: Handle) {
    let headers = |kind: &str| {
        vec![
            ("streamtype".to_string(), kind.to_string()),
            ("port".to_string(), remote.to_string()),
            ("requestid".to_string(), id.clone()),
        ]
    };
    let Some(mut error) = handle.open(headers("error")).await else {
        return;
    };
    // Nothing is ever sent on the error stream from this side.
    error.writer.close().await;
    let Some(mut data) = handle.open(headers("data")).await else {
        return;
    };
    tokio::spawn(async move {
        let mut msg = Vec::new();
        while let Some(b) = error.data.recv().await {
            msg.extend(b);
        }
        if !msg.is_empty() {
            eprintln!(
                "error: an error occurred forwarding {remote}: {}",
                String::from_utf8_lossy(&msg)
            );
        }
    });
    let (mut rd, mut wr) = conn.into_split();
    let writer = data.writer.clone();
    let to_pod = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 || !writer.write(&buf[..n]).await {
                break;
            }
        }
        writer.close().await;
    });
    while let Some(chunk) = data.data.recv().await {
        if wr.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
    to_pod.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_as_kubectl() {
        assert_eq!(parse_port("80").unwrap(), (80, 80));
        assert_eq!(parse_port("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_port(":80").unwrap(), (0, 80));
        assert!(parse_port("80:0").is_err());
        assert!(parse_port("x:80").unwrap_err().to_string().contains("local port"));
        assert!(parse_port("70000").is_err());
        assert_eq!(addresses(&["localhost".into()]).unwrap().len(), 2);
        assert!(addresses(&["nowhere".into()]).is_err());
    }
}
