//! A SPDY/3.1 connection carrying many streams, as either end: one task reads frames and
//! hands each stream's data to it, one task writes frames (all header blocks go through one
//! compressor, so frames are serialized in that one place).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, FLAG_FIN, Frame, HeaderDecoder, HeaderEncoder, Headers};

/// Frames queued for the writer before senders wait.
const QUEUE: usize = 64;
/// The most bytes of one DATA frame we send (client-go's is 32 KiB too).
pub const CHUNK: usize = 32 * 1024;

/// A stream the peer opened or we opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// Data from the peer; ends (None) at the peer's FIN or reset, or when the connection ends.
    pub data: mpsc::Receiver<Vec<u8>>,
    pub writer: StreamWriter,
}

/// Our half of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    frames: mpsc::Sender<Frame>,
}

impl StreamWriter {
    /// Send data (split into frames); false if the connection is gone.
    pub async fn write(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            let f = Frame::Data {
                stream: self.id,
                flags: 0,
                data: chunk.to_vec(),
            };
            if self.frames.send(f).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Half-close our side (FIN).
    pub async fn close(&self) {
        let _ = self
            .frames
            .send(Frame::Data {
                stream: self.id,
                flags: FLAG_FIN,
                data: Vec::new(),
            })
            .await;
    }
}

/// The connection: streams the peer opens arrive on `incoming`.
pub struct Session {
    pub incoming: mpsc::Receiver<Stream>,
    pub handle: Handle,
}

/// What can open streams and end the connection.
#[derive(Clone)]
pub struct Handle {
    frames: mpsc::Sender<Frame>,
    /// Becomes true when the peer's side of the connection ends.
    ended: tokio::sync::watch::Receiver<bool>,
    next_id: Arc<AtomicU32>,
    routes: Routes,
}

type Routes = Arc<std::sync::Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>>;

fn lock(routes: &Routes) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::Sender<Vec<u8>>>> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handle {
    /// Open a stream from our side.
    pub async fn open(&self, headers: Headers) -> Option<Stream> {
        let id = self.next_id.fetch_add(2, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(QUEUE);
        lock(&self.routes).insert(id, tx);
        let syn = Frame::SynStream {
            stream: id,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: headers.clone(),
        };
        self.frames.send(syn).await.ok()?;
        Some(Stream {
            id,
            headers,
            data: rx,
            writer: StreamWriter {
                id,
                frames: self.frames.clone(),
            },
        })
    }

    /// Resolves once the connection has ended (the peer closed it, broke it, or said GOAWAY).
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }

    /// Say GOAWAY; the writer then ends the connection once what is queued is sent.
    pub async fn go_away(&self) {
        let _ = self
            .frames
            .send(Frame::GoAway {
                last_stream: 0,
                status: 0,
            })
            .await;
    }
}

/// Run a session over `io`. `server` picks stream ID parity (servers open even IDs).
pub fn start<S>(io: S, server: bool) -> Session
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (frames_tx, frames_rx) = mpsc::channel(QUEUE);
    let (incoming_tx, incoming_rx) = mpsc::channel(QUEUE);
    let routes: Routes = Arc::default();
    let (ended_tx, ended) = tokio::sync::watch::channel(false);
    tokio::spawn(write_loop(wr, frames_rx));
    let reader = read_loop(rd, frames_tx.clone(), incoming_tx, routes.clone(), server);
    tokio::spawn(async move {
        reader.await;
        let _ = ended_tx.send(true);
    });
    Session {
        incoming: incoming_rx,
        handle: Handle {
            frames: frames_tx,
            ended,
            next_id: Arc::new(AtomicU32::new(if server { 2 } else { 1 })),
            routes,
        },
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut frames: mpsc::Receiver<Frame>) {
    let mut enc = HeaderEncoder::default();
    while let Some(f) = frames.recv().await {
        let last = matches!(f, Frame::GoAway { .. });
        let bytes = match spdy::encode(&f, &mut enc) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "SPDY: cannot encode a frame");
                break;
            }
        };
        if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() || last {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    frames: mpsc::Sender<Frame>,
    incoming: mpsc::Sender<Stream>,
    routes: Routes,
    server: bool,
) {
    let mut dec = HeaderDecoder::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'conn: loop {
        // Every complete frame in the buffer.
        while let Some(n) = spdy::frame_len(&buf).filter(|n| *n <= buf.len()) {
            let frame = match spdy::decode(&buf[..n], &mut dec) {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY: ending the connection");
                    let _ = frames
                        .send(Frame::GoAway {
                            last_stream: 0,
                            status: spdy::RST_PROTOCOL_ERROR,
                        })
                        .await;
                    break 'conn;
                }
            };
            buf.drain(..n);
            if !handle_frame(frame, &frames, &incoming, &routes, server).await {
                break 'conn;
            }
        }
        if let Some(n) = spdy::frame_len(&buf)
            && n > spdy::MAX_FRAME + 8
        {
            break;
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // Every stream's reader sees the end.
    lock(&routes).clear();
}

/// Act on one frame; false to end the connection.
async fn handle_frame(
    frame: Frame,
    frames: &mpsc::Sender<Frame>,
    incoming: &mpsc::Sender<Stream>,
    routes: &Routes,
    server: bool,
) -> bool {
    match frame {
        Frame::SynStream {
            stream, flags, headers, ..
        } => {
            let (tx, rx) = mpsc::channel(QUEUE);
            if flags & FLAG_FIN == 0 {
                lock(routes).insert(stream, tx);
            }
            let reply = Frame::SynReply {
                stream,
                flags: 0,
                headers: Vec::new(),
            };
            if frames.send(reply).await.is_err() {
                return false;
            }
            let s = Stream {
                id: stream,
                headers,
                data: rx,
                writer: StreamWriter {
                    id: stream,
                    frames: frames.clone(),
                },
            };
            incoming.send(s).await.is_ok()
        }
        Frame::Data { stream, flags, data } => {
            let route = lock(routes).get(&stream).cloned();
            if let Some(tx) = route {
                let n = data.len() as u32;
                if !data.is_empty() && tx.send(data).await.is_err() {
                    // The reader is gone: nothing more to deliver.
                    lock(routes).remove(&stream);
                }
                if n > 0 {
                    // Give the window back so a peer that honours SPDY/3.1 flow control keeps sending.
                    let _ = frames.send(Frame::WindowUpdate { stream, delta: n }).await;
                }
            }
            if flags & FLAG_FIN != 0 {
                lock(routes).remove(&stream);
            }
            true
        }
        Frame::RstStream { stream, .. } => {
            lock(routes).remove(&stream);
            true
        }
        // Answer the peer's pings (odd IDs are the client's), never echo our own.
        Frame::Ping(id) if (id % 2 == 1) == server => frames.send(Frame::Ping(id)).await.is_ok(),
        Frame::Ping(_) => true,
        Frame::GoAway { .. } => false,
        Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Settings { .. } | Frame::WindowUpdate { .. } => true,
    }
}
