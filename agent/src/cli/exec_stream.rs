//! `minilet exec` over CRI Exec: the URL it returns, upgraded to SPDY remotecommand
//! `v4.channel.k8s.io` (as crictl and kubectl do), bridged to the session's own messages so
//! the session loop does not care which transport carries it.

use anyhow::Result;
use minilet_proto::minilet::v1::{ExecRequest, ExecResponse, TerminalSize, exec_request, exec_response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::upgrade;
use crate::cri::streaming::EXEC_PROTOCOL;
use crate::cri::streaming::spdy_session::Stream;

fn headers(kind: &str) -> Vec<(String, String)> {
    vec![("streamtype".to_string(), kind.to_string())]
}

fn size_json(s: &TerminalSize) -> Vec<u8> {
    serde_json::json!({"Width": s.width, "Height": s.height})
        .to_string()
        .into_bytes()
}

/// What the error stream's `Status` says: the exit code, or the failure as an error.
pub fn exit_code(status: &[u8]) -> Result<i32, tonic::Status> {
    if status.is_empty() {
        return Ok(0);
    }
    let v: serde_json::Value = serde_json::from_slice(status)
        .map_err(|e| tonic::Status::internal(format!("error stream: not a Status: {e}")))?;
    if v["status"] == "Success" {
        return Ok(0);
    }
    if v["reason"] == "NonZeroExitCode"
        && let Some(code) = v["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok())
    {
        return Ok(code);
    }
    Err(tonic::Status::unknown(
        v["message"].as_str().unwrap_or("exec failed").to_string(),
    ))
}

async fn drain(
    mut s: mpsc::Receiver<Vec<u8>>,
    wrap: fn(Vec<u8>) -> exec_response::Msg,
    out: mpsc::Sender<Result<ExecResponse, tonic::Status>>,
) {
    while let Some(b) = s.recv().await {
        if out.send(Ok(ExecResponse { msg: Some(wrap(b)) })).await.is_err() {
            return;
        }
    }
}

/// Open the session at `url`: requests (`start`, stdin, resizes, end of stdin) go in, output
/// and the exit code come out, as Node.Exec's messages.
pub async fn open(
    url: String,
    tty: bool,
    stdin: bool,
    mut requests: mpsc::Receiver<ExecRequest>,
) -> Result<ReceiverStream<Result<ExecResponse, tonic::Status>>> {
    let session = upgrade::spdy(&url, EXEC_PROTOCOL).await?;
    let h = &session.handle;
    let closed = || anyhow::anyhow!("the streaming connection closed while opening streams");
    let mut error: Stream = h.open(headers("error")).await.ok_or_else(closed)?;
    let input = if stdin {
        Some(h.open(headers("stdin")).await.ok_or_else(closed)?)
    } else {
        None
    };
    let stdout = h.open(headers("stdout")).await.ok_or_else(closed)?;
    let stderr = if tty {
        None
    } else {
        Some(h.open(headers("stderr")).await.ok_or_else(closed)?)
    };
    let resize = if tty {
        Some(h.open(headers("resize")).await.ok_or_else(closed)?)
    } else {
        None
    };

    let (in_w, resize_w) = (
        input.as_ref().map(|s| s.writer.clone()),
        resize.as_ref().map(|s| s.writer.clone()),
    );
    tokio::spawn(async move {
        while let Some(req) = requests.recv().await {
            match req.msg {
                Some(exec_request::Msg::Start(s)) => {
                    if let (Some(w), Some(size)) = (&resize_w, s.size) {
                        w.write(&size_json(&size)).await;
                    }
                }
                Some(exec_request::Msg::Stdin(b)) => {
                    if let Some(w) = &in_w {
                        w.write(&b).await;
                    }
                }
                Some(exec_request::Msg::CloseStdin(_)) => {
                    if let Some(w) = &in_w {
                        w.close().await;
                    }
                }
                Some(exec_request::Msg::Resize(size)) => {
                    if let Some(w) = &resize_w {
                        w.write(&size_json(&size)).await;
                    }
                }
                None => {}
            }
        }
    });

    let (tx, rx) = mpsc::channel(64);
    let handle = session.handle.clone();
    tokio::spawn(async move {
        // Keep the session (its stream IDs and writer) alive as long as output flows.
        let _session = session;
        let _streams = (input, resize);
        let out = drain(stdout.data, exec_response::Msg::Stdout, tx.clone());
        let err = async {
            if let Some(s) = stderr {
                drain(s.data, exec_response::Msg::Stderr, tx.clone()).await;
            }
        };
        let mut status = Vec::new();
        let status_read = async {
            while let Some(b) = error.data.recv().await {
                status.extend(b);
            }
        };
        tokio::join!(out, err, status_read);
        let msg = exit_code(&status).map(|code| ExecResponse {
            msg: Some(exec_response::Msg::ExitCode(code)),
        });
        let _ = tx.send(msg).await;
        handle.go_away().await;
    });
    Ok(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    #[test]
    fn statuses() {
        assert_eq!(super::exit_code(br#"{"metadata":{},"status":"Success"}"#).unwrap(), 0);
        let failed = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        assert_eq!(super::exit_code(failed).unwrap(), 7);
        let e = super::exit_code(br#"{"status":"Failure","message":"Internal error occurred: boom"}"#).unwrap_err();
        assert!(e.message().contains("boom"));
        assert!(super::exit_code(b"garbage").is_err());
    }
}
