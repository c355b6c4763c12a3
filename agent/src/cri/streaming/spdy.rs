//! SPDY/3.1 framing, as the Kubernetes streaming protocols use it (client-go and the
//! kubelet speak it through moby/spdystream): frames, and header blocks compressed with one
//! zlib stream per direction primed with the SPDY/3 dictionary.
//!
//! Only what exec/attach/port-forward need is given meaning; every frame type still parses,
//! and malformed input is an error, never a panic.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const VERSION: u16 = 3;
/// Frames larger than this are refused (spdystream's limit is the 24-bit length; a peer of
/// ours never needs more than a DATA frame's worth).
pub const MAX_FRAME: usize = 1 << 24;
/// The most header block bytes one frame may inflate to.
const MAX_HEADER_BLOCK: usize = 1 << 20;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_CANCEL: u32 = 5;

pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping(u32),
    GoAway {
        last_stream: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("SPDY frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("malformed SPDY {kind} frame: {problem}")]
    Malformed { kind: &'static str, problem: &'static str },
    #[error("SPDY header block: {0}")]
    Compression(String),
}

fn malformed(kind: &'static str, problem: &'static str) -> SpdyError {
    SpdyError::Malformed { kind, problem }
}

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1):
/// length-prefixed header names and values, then a run of common text. It must be
/// byte-exact or the peer's inflate fails.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

/// One direction's header compressor: a single zlib stream for the connection's life.
pub struct HeaderEncoder {
    z: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // The dictionary must be set before the first byte; it cannot fail on a fresh stream.
        let _ = z.set_dictionary(&dictionary());
        HeaderEncoder { z }
    }
}

impl HeaderEncoder {
    pub fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            // SPDY header names are lowercase on the wire.
            let k = k.to_ascii_lowercase();
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            // A sync flush is complete when the input is consumed and output space is left over.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// One direction's header decompressor.
pub struct HeaderDecoder {
    z: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder {
            z: Decompress::new(true),
        }
    }
}

impl HeaderDecoder {
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate(block)?;
        parse_header_block(&raw)
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::Compression("header block too large".into()));
            }
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.z.total_in();
            match self.z.decompress_vec(input, &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&dictionary())
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn parse_header_block(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut r = Reader {
        b: raw,
        kind: "header block",
    };
    let n = r.u32()? as usize;
    if n > raw.len() / 8 + 1 {
        return Err(malformed("header block", "more pairs than bytes"));
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.string()?;
        let v = r.string()?;
        if k.is_empty() {
            return Err(malformed("header block", "empty header name"));
        }
        // Several values of one name are NUL-separated.
        for v in v.split('\0') {
            headers.push((k.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

struct Reader<'a> {
    b: &'a [u8],
    kind: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SpdyError> {
        if self.b.len() < n {
            return Err(malformed(self.kind, "truncated"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, SpdyError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u31(&mut self) -> Result<u32, SpdyError> {
        Ok(self.u32()? & 0x7fff_ffff)
    }
    fn string(&mut self) -> Result<String, SpdyError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| malformed(self.kind, "header not UTF-8"))
    }
}

/// The header of a frame: how many bytes the whole frame has, once `buf` holds 8 bytes.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let h = buf.get(..8)?;
    Some(8 + (u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize))
}

/// Parse one complete frame (`buf` is exactly one frame, see [`frame_len`]).
pub fn decode(buf: &[u8], headers: &mut HeaderDecoder) -> Result<Frame, SpdyError> {
    let len = frame_len(buf).ok_or_else(|| malformed("frame", "shorter than its header"))?;
    if len != buf.len() {
        return Err(malformed("frame", "length does not match"));
    }
    let flags = buf[4];
    let body = &buf[8..];
    if buf[0] & 0x80 == 0 {
        let stream = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        return Ok(Frame::Data {
            stream,
            flags,
            data: body.to_vec(),
        });
    }
    let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let kind = u16::from_be_bytes([buf[2], buf[3]]);
    Ok(match kind {
        SYN_STREAM => {
            let mut r = Reader {
                b: body,
                kind: "SYN_STREAM",
            };
            let stream = r.u31()?;
            let associated = r.u31()?;
            let pri = r.take(2)?;
            Frame::SynStream {
                stream,
                associated,
                priority: pri[0] >> 5,
                flags,
                headers: headers.decode(r.b)?,
            }
        }
        SYN_REPLY => {
            let mut r = Reader {
                b: body,
                kind: "SYN_REPLY",
            };
            let stream = r.u31()?;
            Frame::SynReply {
                stream,
                flags,
                headers: headers.decode(r.b)?,
            }
        }
        HEADERS => {
            let mut r = Reader {
                b: body,
                kind: "HEADERS",
            };
            let stream = r.u31()?;
            Frame::Headers {
                stream,
                flags,
                headers: headers.decode(r.b)?,
            }
        }
        RST_STREAM => {
            let mut r = Reader {
                b: body,
                kind: "RST_STREAM",
            };
            Frame::RstStream {
                stream: r.u31()?,
                status: r.u32()?,
            }
        }
        SETTINGS => {
            let mut r = Reader {
                b: body,
                kind: "SETTINGS",
            };
            let n = r.u32()? as usize;
            if n.checked_mul(8) != Some(r.b.len()) {
                return Err(malformed("SETTINGS", "entry count does not match length"));
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let id = r.u32()?;
                entries.push(((id >> 24) as u8, id & 0x00ff_ffff, r.u32()?));
            }
            Frame::Settings { flags, entries }
        }
        PING => {
            let mut r = Reader { b: body, kind: "PING" };
            Frame::Ping(r.u32()?)
        }
        GOAWAY => {
            let mut r = Reader {
                b: body,
                kind: "GOAWAY",
            };
            Frame::GoAway {
                last_stream: r.u31()?,
                status: r.u32()?,
            }
        }
        WINDOW_UPDATE => {
            let mut r = Reader {
                b: body,
                kind: "WINDOW_UPDATE",
            };
            Frame::WindowUpdate {
                stream: r.u31()?,
                delta: r.u31()?,
            }
        }
        _ => return Err(malformed("control", "unknown frame type")),
    })
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Result<Vec<u8>, SpdyError> {
    if body.len() >= MAX_FRAME {
        return Err(SpdyError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    Ok(out)
}

/// Serialize a frame (header blocks through `headers`, which must see every frame in order).
pub fn encode(frame: &Frame, headers: &mut HeaderEncoder) -> Result<Vec<u8>, SpdyError> {
    let be = |v: u32| v.to_be_bytes();
    match frame {
        Frame::SynStream {
            stream,
            associated,
            priority,
            flags,
            headers: h,
        } => {
            let mut body = Vec::new();
            body.extend_from_slice(&be(stream & 0x7fff_ffff));
            body.extend_from_slice(&be(associated & 0x7fff_ffff));
            body.extend_from_slice(&[(priority & 0x7) << 5, 0]);
            body.extend(headers.encode(h)?);
            control(SYN_STREAM, *flags, &body)
        }
        Frame::SynReply {
            stream,
            flags,
            headers: h,
        } => {
            let mut body = be(stream & 0x7fff_ffff).to_vec();
            body.extend(headers.encode(h)?);
            control(SYN_REPLY, *flags, &body)
        }
        Frame::Headers {
            stream,
            flags,
            headers: h,
        } => {
            let mut body = be(stream & 0x7fff_ffff).to_vec();
            body.extend(headers.encode(h)?);
            control(HEADERS, *flags, &body)
        }
        Frame::RstStream { stream, status } => {
            control(RST_STREAM, 0, &[be(stream & 0x7fff_ffff), be(*status)].concat())
        }
        Frame::Settings { flags, entries } => {
            let mut body = be(entries.len() as u32).to_vec();
            for (f, id, v) in entries {
                body.extend_from_slice(&be((u32::from(*f) << 24) | (id & 0x00ff_ffff)));
                body.extend_from_slice(&be(*v));
            }
            control(SETTINGS, *flags, &body)
        }
        Frame::Ping(id) => control(PING, 0, &be(*id)),
        Frame::GoAway { last_stream, status } => {
            control(GOAWAY, 0, &[be(last_stream & 0x7fff_ffff), be(*status)].concat())
        }
        Frame::WindowUpdate { stream, delta } => control(
            WINDOW_UPDATE,
            0,
            &[be(stream & 0x7fff_ffff), be(delta & 0x7fff_ffff)].concat(),
        ),
        Frame::Data { stream, flags, data } => {
            if data.len() >= MAX_FRAME {
                return Err(SpdyError::TooLarge(data.len()));
            }
            let mut out = Vec::with_capacity(8 + data.len());
            out.extend_from_slice(&be(stream & 0x7fff_ffff));
            out.push(*flags);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
            Ok(out)
        }
    }
}

/// The first value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn every_frame() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream: 3,
                associated: 1,
                priority: 7,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream: 3,
                flags: 0,
                headers: Vec::new(),
            },
            Frame::Headers {
                stream: 5,
                flags: FLAG_FIN,
                headers: h(&[("a", "b")]),
            },
            Frame::RstStream { stream: 7, status: 5 },
            Frame::Settings {
                flags: 1,
                entries: vec![(0, 4, 100), (1, 7, 65536)],
            },
            Frame::Ping(0xdead_beef),
            Frame::GoAway {
                last_stream: 9,
                status: 0,
            },
            Frame::WindowUpdate {
                stream: 1,
                delta: 65536,
            },
            Frame::Data {
                stream: 1,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream: 0x7fff_ffff,
                flags: 0,
                data: Vec::new(),
            },
        ]
    }

    #[test]
    fn every_frame_type_round_trips_over_one_compression_context() {
        let (mut enc, mut dec) = (HeaderEncoder::default(), HeaderDecoder::default());
        let mut wire = Vec::new();
        for f in every_frame() {
            wire.extend(encode(&f, &mut enc).unwrap());
        }
        let mut got = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = frame_len(rest).unwrap();
            got.push(decode(&rest[..n], &mut dec).unwrap());
            rest = &rest[n..];
        }
        assert_eq!(got, every_frame());
    }

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // The dictionary ID every SPDY/3 peer puts in its zlib header.
        let mut z = Compress::new(Compression::default(), true);
        assert_eq!(z.set_dictionary(&d).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn header_blocks_use_the_dictionary_and_fold_case_and_values() {
        let mut enc = HeaderEncoder::default();
        let block = enc
            .encode(&h(&[
                ("StreamType", "stdout"),
                ("x", "a\0b"),
                ("content-type", "text/plain"),
            ]))
            .unwrap();
        // FDICT set in the zlib header, with the SPDY/3 dictionary's ID.
        assert_eq!(block[1] & 0x20, 0x20, "{block:?}");
        assert_eq!(&block[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        let got = HeaderDecoder::default().decode(&block).unwrap();
        assert_eq!(
            got,
            h(&[
                ("streamtype", "stdout"),
                ("x", "a"),
                ("x", "b"),
                ("content-type", "text/plain")
            ])
        );
        assert_eq!(header(&got, "STREAMTYPE"), Some("stdout"));
        // A second block continues the same stream: a fresh decoder cannot read it.
        let second = enc.encode(&h(&[("streamtype", "stdin")])).unwrap();
        assert!(HeaderDecoder::default().decode(&second).is_err());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut dec = HeaderDecoder::default();
        let mut enc = HeaderEncoder::default();
        let good = encode(&every_frame()[1], &mut enc).unwrap();
        // Every truncation and every single-byte corruption of a SYN_STREAM.
        for n in 0..good.len() {
            let _ = decode(&good[..n], &mut HeaderDecoder::default());
        }
        for i in 0..good.len() {
            for b in [0x00, 0xff, 0x80, 0x7f] {
                let mut bad = good.clone();
                bad[i] = b;
                let n = frame_len(&bad).unwrap();
                if n == bad.len() {
                    let _ = decode(&bad, &mut HeaderDecoder::default());
                }
            }
        }
        assert!(matches!(
            decode(&control(PING, 0, &[1, 2]).unwrap(), &mut dec),
            Err(SpdyError::Malformed { .. })
        ));
        assert!(matches!(
            decode(&control(42, 0, &[]).unwrap(), &mut dec),
            Err(SpdyError::Malformed { .. })
        ));
        let mut v2 = control(PING, 0, &[0, 0, 0, 1]).unwrap();
        v2[1] = 2;
        assert_eq!(decode(&v2, &mut dec), Err(SpdyError::Version(2)));
        // Settings whose count lies about the length.
        assert!(decode(&control(SETTINGS, 0, &[0, 0, 0, 9]).unwrap(), &mut dec).is_err());
        // A header block that says it holds a billion pairs.
        let mut raw_enc = HeaderEncoder::default();
        let mut lie = raw_enc.encode(&Vec::new()).unwrap();
        lie.extend_from_slice(&[0xff; 16]);
        assert!(HeaderDecoder::default().decode(&lie).is_err());
        assert!(parse_header_block(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1]).is_err());
        assert!(parse_header_block(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, b'a']).is_err());
        assert!(HeaderDecoder::default().decode(b"not zlib at all").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 8..200)) {
            let mut dec = HeaderDecoder::default();
            if frame_len(&bytes) == Some(bytes.len()) {
                let _ = decode(&bytes, &mut dec);
            }
            let _ = decode(&bytes, &mut dec);
            let _ = dec.decode(&bytes);
        }

        #[test]
        fn data_round_trips(stream in 1u32..0x7fff_ffff, data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let f = Frame::Data { stream, flags: 0, data };
            let wire = encode(&f, &mut HeaderEncoder::default()).unwrap();
            proptest::prop_assert_eq!(decode(&wire, &mut HeaderDecoder::default()).unwrap(), f);
        }
    }
}
