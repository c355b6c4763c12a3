//! Port-forward over SPDY (`portforward.k8s.io`): the client opens an error and a data
//! stream per connection, paired by their `requestid` header and naming the pod's `port`;
//! the data stream is spliced to a TCP connection made inside the pod's network namespace.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spdy_session::{Handle, Session, Stream};
use super::{Streaming, spdy};

pub const PROTOCOL: &str = "portforward.k8s.io";

pub async fn serve(server: Arc<Streaming>, mut session: Session, sandbox_id: String) {
    // Half-arrived pairs by request ID.
    let mut waiting: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    while let Some(stream) = session.incoming.recv().await {
        let (Some(kind), Some(id)) = (
            spdy::header(&stream.headers, "streamtype").map(str::to_string),
            spdy::header(&stream.headers, "requestid").map(str::to_string),
        ) else {
            tracing::debug!("port-forward: a stream without streamtype or requestid");
            stream.writer.close().await;
            continue;
        };
        let entry = waiting.entry(id.clone()).or_default();
        match kind.as_str() {
            "error" => entry.0 = Some(stream),
            "data" => entry.1 = Some(stream),
            _ => {
                stream.writer.close().await;
                continue;
            }
        }
        if entry.0.is_some()
            && entry.1.is_some()
            && let Some((Some(error), Some(data))) = waiting.remove(&id)
        {
            tokio::spawn(forward(
                server.clone(),
                session.handle.clone(),
                sandbox_id.clone(),
                error,
                data,
            ));
        }
    }
}

async fn forward(server: Arc<Streaming>, conn_handle: Handle, sandbox_id: String, error: Stream, data: Stream) {
    let port = spdy::header(&data.headers, "port").and_then(|p| p.parse::<u16>().ok());
    let conn = match port {
        Some(p) if p > 0 => server.connect_pod_port(&sandbox_id, p).await,
        _ => Err("invalid port header".to_string()),
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            error.writer.write(e.as_bytes()).await;
            error.writer.close().await;
            data.writer.close().await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    let (mut from_client, writer) = (data.data, data.writer);
    // The client's FIN half-closes the connection: the pod sees end of file and may still
    // answer. The pair ends when the pod's side closes, as the kubelet's does.
    let to_pod = tokio::spawn(async move {
        while let Some(chunk) = from_client.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let from_pod = async {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 || !writer.write(&buf[..n]).await {
                break;
            }
        }
    };
    tokio::select! {
        () = from_pod => {}
        // The client is gone: close the pod's side now, not whenever the pod next writes.
        () = conn_handle.ended() => {}
    }
    writer.close().await;
    error.writer.close().await;
    to_pod.abort();
}
