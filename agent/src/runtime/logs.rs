//! Container logs in the CRI format, as the kubelet and `kubectl logs` expect them.
//!
//! Each record is one line: `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>`.
//! `F` closes a line; `P` is a piece of a line that was split because it exceeded 16 KiB, or
//! trailing output that never got its newline (containerd does the same). Files live at
//! `<log-dir>/<namespace>_<name>_<uid>/<container>/<restartCount>.log`.

use std::path::{Path, PathBuf};

/// Longest piece of a line written as one record (containerd's default).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// The record ends a line.
    Full,
    /// The record is a piece of a longer line.
    Partial,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Full => "F",
            Tag::Partial => "P",
        }
    }
}

/// `<log-dir>/<namespace>_<name>_<uid>`: the pod's log directory, as the kubelet names it.
pub fn pod_log_dir(log_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    log_dir.join(format!("{namespace}_{name}_{uid}"))
}

/// `<pod log dir>/<container>/<restartCount>.log`.
pub fn container_log_path(pod_log_dir: &Path, container: &str, restart_count: u32) -> PathBuf {
    pod_log_dir.join(container).join(format!("{restart_count}.log"))
}

/// Append one record to `out`.
pub fn encode(out: &mut Vec<u8>, time: jiff::Timestamp, stream: Stream, tag: Tag, content: &[u8]) {
    use std::io::Write;
    // jiff prints RFC 3339 with the shortest exact fraction, as Go's RFC3339Nano does.
    let _ = write!(out, "{time} {} {} ", stream.as_str(), tag.as_str());
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Turns one output stream into records: whole lines, and 16 KiB pieces of longer ones.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Consume `data`, calling `emit` for every complete record it makes available.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) if self.pending.len() + nl <= MAX_LINE => {
                    if self.pending.is_empty() {
                        emit(Tag::Full, &data[..nl]);
                    } else {
                        self.pending.extend_from_slice(&data[..nl]);
                        emit(Tag::Full, &self.pending);
                        self.pending.clear();
                    }
                    data = &data[nl + 1..];
                }
                _ => {
                    // No newline within reach of the limit: take what fits and cut a piece
                    // once the pending line reaches the limit.
                    let room = MAX_LINE - self.pending.len();
                    let take = room.min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() == MAX_LINE && data.first().is_none_or(|&b| b != b'\n') {
                        emit(Tag::Partial, &self.pending);
                        self.pending.clear();
                    }
                }
            }
        }
    }

    /// The stream ended: output without a final newline becomes a partial record.
    pub fn finish(&mut self, emit: &mut impl FnMut(Tag, &[u8])) {
        if !self.pending.is_empty() {
            emit(Tag::Partial, &self.pending);
            self.pending.clear();
        }
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub time: jiff::Timestamp,
    pub stream: Stream,
    pub tag: Tag,
    pub content: Vec<u8>,
}

/// Parse one line of a CRI log file (without its newline).
pub fn parse(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = match parts.next()? {
        b"F" => Tag::Full,
        b"P" => Tag::Partial,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        tag,
        content: parts.next().unwrap_or_default().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(Tag, Vec<u8>)> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut |t, b| out.push((t, b.to_vec())));
        }
        s.finish(&mut |t, b| out.push((t, b.to_vec())));
        out
    }

    #[test]
    fn lines_across_chunks() {
        let got = split(&[b"hel", b"lo\nwor", b"ld\n\nlast"]);
        assert_eq!(
            got,
            vec![
                (Tag::Full, b"hello".to_vec()),
                (Tag::Full, b"world".to_vec()),
                (Tag::Full, b"".to_vec()),
                (Tag::Partial, b"last".to_vec()),
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_in_16k_pieces() {
        let line = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = line.clone();
        input.push(b'\n');
        // Feed in awkward chunk sizes.
        let chunks: Vec<&[u8]> = input.chunks(7000).collect();
        let got = split(&chunks);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (Tag::Partial, vec![b'x'; MAX_LINE]));
        assert_eq!(got[1], (Tag::Partial, vec![b'x'; MAX_LINE]));
        assert_eq!(got[2], (Tag::Full, vec![b'x'; 10]));
    }

    #[test]
    fn a_line_of_exactly_16k_is_one_full_record() {
        let mut input = vec![b'y'; MAX_LINE];
        input.push(b'\n');
        assert_eq!(
            split(&[&input[..100], &input[100..]]),
            vec![(Tag::Full, vec![b'y'; MAX_LINE])]
        );
    }

    #[test]
    fn encode_and_parse_round_trip() {
        let t = jiff::Timestamp::new(1_700_000_000, 120_000_000).unwrap();
        let mut buf = Vec::new();
        encode(&mut buf, t, Stream::Stderr, Tag::Full, b"oops: a b");
        assert_eq!(buf, b"2023-11-14T22:13:20.12Z stderr F oops: a b\n");
        let rec = parse(&buf[..buf.len() - 1]).unwrap();
        assert_eq!(
            rec,
            Record {
                time: t,
                stream: Stream::Stderr,
                tag: Tag::Full,
                content: b"oops: a b".to_vec()
            }
        );
        assert!(parse(b"not a log line").is_none());
        // An empty line is a valid record with empty content.
        assert_eq!(parse(b"2023-11-14T22:13:20Z stdout F ").unwrap().content, b"");
    }

    #[test]
    fn paths_follow_the_kubelet() {
        let d = pod_log_dir(Path::new("/var/log/pods"), "default", "web", "abc");
        assert_eq!(d, Path::new("/var/log/pods/default_web_abc"));
        assert_eq!(
            container_log_path(&d, "nginx", 2),
            Path::new("/var/log/pods/default_web_abc/nginx/2.log")
        );
    }
}
