//! Starting the process a streaming exec request names (or attaching to the container's
//! own), and the pieces of its protocols that SPDY and WebSocket share.

use std::sync::Arc;

use crate::runtime::exec::{ExecInput, ExecSession};

use super::Streaming;

/// What a remotecommand session runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A new process in the container (CRI Exec).
    Command(Vec<String>),
    /// The container's own process (CRI Attach).
    Attach,
}

/// What an exec or attach request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecParams {
    pub container_id: String,
    pub target: Target,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// Start the command, or attach; the error is the message for the client's error stream.
pub async fn start(server: &Arc<Streaming>, p: &ExecParams) -> Result<ExecSession, String> {
    let files = server.container_files(&p.container_id).await?;
    let runtime = &server.runtime;
    match &p.target {
        Target::Command(cmd) => runtime.exec(&files, cmd.clone(), p.tty, p.stdin, None).await,
        Target::Attach => runtime.attach(&files, p.stdin).await,
    }
    .map_err(|e| e.to_string())
}

/// A terminal size message (`{"Width":80,"Height":24}`, remotecommand's TerminalSize),
/// several of which may arrive back to back or split across frames.
#[derive(Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

impl ResizeDecoder {
    /// Feed bytes; the complete sizes so far. Garbage is dropped rather than kept forever.
    pub fn feed(&mut self, data: &[u8]) -> Vec<ExecInput> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
        loop {
            match stream.next() {
                Some(Ok(s)) => {
                    consumed = stream.byte_offset();
                    out.push(ExecInput::Resize(s.width, s.height));
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    consumed = self.buf.len();
                    break;
                }
                None => {
                    consumed = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..consumed);
        if self.buf.len() > 4096 {
            self.buf.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_split_and_joined() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.feed(br#"{"Width":80,"Hei"#), vec![]);
        assert_eq!(
            d.feed(br#"ght":24}{"Width":100,"Height":40}"#),
            vec![ExecInput::Resize(80, 24), ExecInput::Resize(100, 40)]
        );
        assert_eq!(d.feed(b"nonsense"), vec![]);
        assert_eq!(d.feed(br#"{"Width":1,"Height":2}"#), vec![ExecInput::Resize(1, 2)]);
    }
}
