//! Container logs in the CRI format, as the kubelet and `kubectl logs` expect them.
//!
//! Each record is one line: `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>`.
//! `F` closes a line; `P` is a piece of a line that was split because it exceeded 16 KiB, or
//! trailing output that never got its newline (containerd does the same). Files live at
//! `<log-dir>/<namespace>_<name>_<uid>/<container>/<restartCount>.log`.
//!
//! [`RecordWriter`] writes whole records only: after a failed or short write (a full disk)
//! the file is cut back to its last complete record, so a reader never meets a torn one.
//! What the writer goes through is told to the agent as [`Notice`]s over a FIFO in the
//! container's state directory, and becomes events on the pod.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::events::{EventType, Events, ObjectRef};

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
    log_dir.join(&*super::state::path_component(&format!("{namespace}_{name}_{uid}")))
}

/// `<pod log dir>/<container>/<restartCount>.log`.
pub fn container_log_path(pod_log_dir: &Path, container: &str, restart_count: u32) -> PathBuf {
    pod_log_dir
        .join(&*super::state::path_component(container))
        .join(format!("{restart_count}.log"))
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

// ---- writing records ----------------------------------------------------------------------

/// Where records go: the log file (opened for appending), or a test double.
pub trait Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Cut the last `n` bytes off the end of the file.
    fn cut_tail(&mut self, n: u64) -> io::Result<()>;
}

impl Sink for std::fs::File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(self, buf)
    }

    fn cut_tail(&mut self, n: u64) -> io::Result<()> {
        // The monitor is the file's only writer, so its end is where our last write ended.
        let len = self.metadata()?.len();
        self.set_len(len.saturating_sub(n))
    }
}

/// Writes that keep failing, from the first failure on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// Unix nanoseconds of the first failed write.
    pub since: i64,
    /// The latest error.
    pub error: String,
    /// Failed write attempts so far.
    pub attempts: u64,
}

/// Output given up: how much, and from when to when (the records' own timestamps, Unix
/// nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    /// Records (lines, or 16 KiB pieces of longer ones).
    pub lines: u64,
    /// Bytes of output, as the container wrote them.
    pub bytes: u64,
    pub from: i64,
    pub to: i64,
}

impl Loss {
    fn add(&mut self, lines: u64, bytes: u64, from: i64, to: i64) {
        if self.lines == 0 {
            (self.from, self.to) = (from, to);
        } else {
            self.from = self.from.min(from);
            self.to = self.to.max(to);
        }
        self.lines += lines;
        self.bytes += bytes;
    }
}

/// What a [`RecordWriter::flush`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued is in the file.
    Done,
    /// Everything queued is in the file again, after writes had failed since `Stall`.
    Resumed(Stall),
    /// A write failed: what was not written stays queued (the file ends on a whole record).
    /// `first` when this failure starts a stall.
    Failed { first: bool },
}

/// Queues records and writes them whole: after a failed or short write, the torn record is
/// cut off the file again and stays queued for the next attempt, so the file always ends on a
/// record boundary (if even cutting fails, the next attempt completes the record instead).
#[derive(Debug, Default)]
pub struct RecordWriter {
    /// Whole records not yet (fully) in the file.
    queued: Vec<u8>,
    /// How much of `queued` is already in the file: the head of a record that could be
    /// neither completed nor cut off.
    torn: usize,
    stall: Option<Stall>,
    /// Given up (the container is gone and the file stays unwritable): records are counted,
    /// not queued, and a marker record is all that is still written.
    dropping: bool,
    /// Lost output the file does not yet announce.
    lost: Loss,
}

impl RecordWriter {
    /// Queue whole records (encoded by [`encode`]); after [`give_up`](Self::give_up), count them as lost.
    pub fn queue(&mut self, records: &[u8]) {
        if self.dropping {
            self.count_lost(records);
        } else {
            self.queued.extend_from_slice(records);
        }
    }

    /// Writes are failing (and records wait in the queue).
    pub fn stall(&self) -> Option<&Stall> {
        self.stall.as_ref()
    }

    /// Output given up so far and not announced in the file.
    pub fn lost(&self) -> Loss {
        self.lost
    }

    /// Write what is queued (after giving up: the marker announcing the loss).
    pub fn flush(&mut self, sink: &mut impl Sink, now: i64) -> Flush {
        if self.dropping && self.lost.lines > 0 && self.queued.is_empty() {
            let mut marker = Vec::new();
            if self.torn > 0 {
                // A record head that could not be cut off: end its line at least.
                marker.push(b'\n');
                self.torn = 0;
            }
            encode(
                &mut marker,
                timestamp(now),
                Stream::Stderr,
                Tag::Full,
                self.marker_text().as_bytes(),
            );
            self.queued = marker;
        }
        if self.queued.is_empty() {
            return Flush::Done;
        }
        match self.write_out(sink) {
            Ok(()) => {
                if self.dropping {
                    self.lost = Loss::default();
                }
                match self.stall.take() {
                    Some(stall) => Flush::Resumed(stall),
                    None => Flush::Done,
                }
            }
            Err(e) => {
                let first = self.stall.is_none();
                let stall = self.stall.get_or_insert(Stall {
                    since: now,
                    error: String::new(),
                    attempts: 0,
                });
                stall.error = e.to_string();
                stall.attempts += 1;
                Flush::Failed { first }
            }
        }
    }

    /// Stop waiting for the file: what is queued counts as lost, and so does whatever is
    /// queued from now on; the next [`flush`](Self::flush) tries to write one marker record
    /// saying how much was lost, over what time and why.
    pub fn give_up(&mut self, sink: &mut impl Sink) {
        if self.torn > 0 && sink.cut_tail(self.torn as u64).is_ok() {
            self.torn = 0;
        }
        let queued = std::mem::take(&mut self.queued);
        self.count_lost(&queued);
        self.dropping = true;
    }

    /// The marker's text: a reader of the log sees that, and where, output is missing.
    fn marker_text(&self) -> String {
        let l = &self.lost;
        let why = self.stall.as_ref().map_or(String::new(), |s| format!(": {}", s.error));
        format!(
            "[minilet] {} lines ({} bytes) of output from {} to {} were lost: the log could not be written{why}",
            l.lines,
            l.bytes,
            timestamp(l.from),
            timestamp(l.to),
        )
    }

    fn count_lost(&mut self, records: &[u8]) {
        if records.is_empty() {
            return;
        }
        let body = records.strip_suffix(b"\n").unwrap_or(records);
        for line in body.split(|&b| b == b'\n') {
            let (bytes, time) = match parse(line) {
                Some(r) => (
                    r.content.len() as u64 + u64::from(r.tag == Tag::Full),
                    r.time.as_nanosecond() as i64,
                ),
                None => (line.len() as u64, crate::runtime::spec::now_nanos()),
            };
            self.lost.add(1, bytes, time, time);
        }
    }

    /// Write `queued[torn..]`; on failure keep the file ending on a record boundary.
    fn write_out(&mut self, sink: &mut impl Sink) -> io::Result<()> {
        if self.torn > 0 && sink.cut_tail(self.torn as u64).is_ok() {
            self.torn = 0;
        }
        let mut done = self.torn;
        let result = loop {
            if done == self.queued.len() {
                break Ok(());
            }
            match sink.write(&self.queued[done..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                self.queued.clear();
                self.torn = 0;
                Ok(())
            }
            Err(e) => {
                let whole = self.queued[..done]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                self.queued.drain(..whole);
                let partial = done - whole;
                self.torn = if partial > 0 && sink.cut_tail(partial as u64).is_err() {
                    partial
                } else {
                    0
                };
                Err(e)
            }
        }
    }
}

fn timestamp(nanos: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

// ---- telling the agent --------------------------------------------------------------------

/// The FIFO in a container's state directory over which its monitor sends [`Notice`]s.
/// A FIFO rather than a file: telling the agent about a full disk must not need disk space,
/// and it wakes the agent instead of being polled. The monitor holds it open read-write, so
/// notices wait in the kernel while no agent listens and the agent sees end-of-file only
/// when the monitor is gone.
pub fn notices_path(container_dir: &Path) -> PathBuf {
    container_dir.join("log-notices")
}

/// What a monitor tells the agent about writing its container's log. One JSON line each,
/// shorter than `PIPE_BUF`, so a write is atomic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// Writes started failing: the output is held back, so the container blocks writing it.
    Failing { error: String },
    /// A reminder that writes still fail (at most one a minute).
    StillFailing { error: String, since: i64, attempts: u64 },
    /// Writing works again; nothing was lost.
    Resumed { since: i64, until: i64 },
    /// The container ended while its log could not be written: its last output was given up.
    /// `marker`: a record in the log announces the gap.
    Lost { error: String, loss: Loss, marker: bool },
}

/// Longest error text in a notice (keeps a notice under `PIPE_BUF`).
const NOTICE_ERROR_MAX: usize = 512;

impl Notice {
    /// The line sent over the FIFO.
    pub fn encode(&self) -> Vec<u8> {
        let mut n = self.clone();
        if let Notice::Failing { error } | Notice::StillFailing { error, .. } | Notice::Lost { error, .. } = &mut n
            && error.len() > NOTICE_ERROR_MAX
        {
            let mut cut = NOTICE_ERROR_MAX;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        let mut line = serde_json::to_vec(&n).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// The pod event this notice becomes.
    pub fn event(&self, container: &str, log: &Path) -> (EventType, &'static str, String) {
        let log = log.display();
        match self {
            // The reminder has the same text, so the event's count grows instead.
            Notice::Failing { error } | Notice::StillFailing { error, .. } => (
                EventType::Warning,
                "LogWriteFailed",
                format!(
                    "Cannot write the log of container {container} to {log}: {error}; its output is held back \
                     (the container blocks writing it) until the log can be written again"
                ),
            ),
            Notice::Resumed { since, until } => (
                EventType::Normal,
                "LogWriteResumed",
                format!(
                    "Writing the log of container {container} resumed after {:.1}s; no output was lost",
                    (until - since) as f64 / 1e9
                ),
            ),
            Notice::Lost { error, loss, marker } => (
                EventType::Warning,
                "LogOutputLost",
                format!(
                    "{} lines ({} bytes) of output of container {container} from {} to {} were lost: it exited \
                     while its log {log} could not be written ({error}){}",
                    loss.lines,
                    loss.bytes,
                    timestamp(loss.from),
                    timestamp(loss.to),
                    if *marker {
                        "; a record in the log marks the gap"
                    } else {
                        ""
                    }
                ),
            ),
        }
    }
}

/// Read the notices of the monitor of the container in `container_dir` until it exits,
/// calling `on` for each. A monitor without a FIFO (from an older agent) has nothing to say.
pub async fn watch_notices(container_dir: &Path, mut on: impl FnMut(Notice)) -> io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(notices_path(container_dir))
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: the File owns its descriptor and keeps it open and unchanged for as long as
    // the AsyncFd owns the File.
    let afd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(file, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut pending = Vec::new();
    loop {
        let mut guard = afd.readable().await?;
        // Declared after the await: the buffer is not part of the future every container's
        // watcher keeps while it waits.
        let mut chunk = [0u8; 4096];
        match guard.try_io(|f| f.get_ref().read(&mut chunk)) {
            Ok(Ok(0)) => return Ok(()), // the monitor is gone
            Ok(Ok(n)) => {
                pending.extend_from_slice(&chunk[..n]);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    match serde_json::from_slice::<Notice>(&line) {
                        Ok(notice) => on(notice),
                        Err(e) => tracing::warn!(dir = %container_dir.display(), error = %e, "unreadable log notice"),
                    }
                }
                if pending.len() > 64 * 1024 {
                    pending.clear(); // not ours: nothing sends lines that long
                }
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
}

/// Turn the notices of one container attempt's monitor into events on its pod, until the
/// monitor exits.
pub async fn report_notices(
    container_dir: PathBuf,
    container: String,
    log: PathBuf,
    object: ObjectRef,
    events: Events,
) {
    let result = watch_notices(&container_dir, |notice| {
        let (kind, reason, message) = notice.event(&container, &log);
        events.record(&object, kind, reason, message);
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(dir = %container_dir.display(), error = %e, "read log notices");
    }
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

    /// A log file on a disk with `room` bytes left: writes are short, then fail with ENOSPC.
    #[derive(Default)]
    struct FullDisk {
        file: Vec<u8>,
        room: usize,
        cut_fails: bool,
    }

    impl Sink for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.file.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }

        fn cut_tail(&mut self, n: u64) -> io::Result<()> {
            if self.cut_fails {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let keep = self.file.len() - n as usize;
            self.room += n as usize;
            self.file.truncate(keep);
            Ok(())
        }
    }

    fn records(lines: &[&str]) -> Vec<u8> {
        let t = jiff::Timestamp::new(1_700_000_000, 0).unwrap();
        let mut out = Vec::new();
        for l in lines {
            encode(&mut out, t, Stream::Stdout, Tag::Full, l.as_bytes());
        }
        out
    }

    /// Every line of the file is a whole, valid record.
    fn assert_whole(file: &[u8]) {
        if file.is_empty() {
            return;
        }
        assert_eq!(
            file.last(),
            Some(&b'\n'),
            "file ends inside a record: {:?}",
            String::from_utf8_lossy(file)
        );
        for line in file[..file.len() - 1].split(|&b| b == b'\n') {
            assert!(parse(line).is_some(), "torn record {:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn enospc_mid_record_leaves_no_torn_record_and_resumes_in_order() {
        let all = records(&["one", "two", "three"]);
        let first_len = records(&["one"]).len();
        // Room for the first record and half of the second.
        let mut disk = FullDisk {
            room: first_len + 10,
            ..Default::default()
        };
        let mut w = RecordWriter::default();
        w.queue(&all);
        assert_eq!(w.flush(&mut disk, 5), Flush::Failed { first: true });
        assert_eq!(disk.file, records(&["one"]), "the torn second record is cut off again");
        assert_whole(&disk.file);
        let stall = w.stall().cloned().unwrap();
        assert_eq!((stall.since, stall.attempts), (5, 1));
        assert!(stall.error.contains("No space left on device"), "{}", stall.error);

        // Still full: no progress, no torn record, the stall goes on.
        assert_eq!(w.flush(&mut disk, 6), Flush::Failed { first: false });
        assert_eq!(disk.file, records(&["one"]));
        assert_eq!(w.stall().unwrap().attempts, 2);

        disk.room = 1 << 20;
        match w.flush(&mut disk, 7) {
            Flush::Resumed(s) => assert_eq!((s.since, s.attempts), (5, 2)),
            other => panic!("expected Resumed, got {other:?}"),
        }
        assert_eq!(disk.file, all, "every record exactly once, in order");
        assert!(w.stall().is_none());
        assert_eq!(w.lost(), Loss::default());
        assert_eq!(w.flush(&mut disk, 8), Flush::Done);
    }

    #[test]
    fn a_record_that_cannot_be_cut_off_is_completed_not_repeated() {
        let all = records(&["alpha", "beta"]);
        let mut disk = FullDisk {
            room: 12,
            cut_fails: true,
            ..Default::default()
        };
        let mut w = RecordWriter::default();
        w.queue(&all);
        assert_eq!(w.flush(&mut disk, 1), Flush::Failed { first: true });
        assert_eq!(disk.file.len(), 12);
        disk.room = 1 << 20;
        assert!(matches!(w.flush(&mut disk, 2), Flush::Resumed(_)));
        assert_eq!(disk.file, all);
    }

    #[test]
    fn given_up_output_is_counted_and_announced_by_one_marker() {
        let mut disk = FullDisk {
            room: records(&["kept"]).len() + 3,
            ..Default::default()
        };
        let mut w = RecordWriter::default();
        w.queue(&records(&["kept", "lost 1", "lost 2"]));
        assert_eq!(w.flush(&mut disk, 1), Flush::Failed { first: true });
        w.give_up(&mut disk);
        // Later output is counted, not queued: a line, and a piece of one.
        let mut more = records(&["lost 3"]);
        encode(
            &mut more,
            jiff::Timestamp::new(1_700_000_009, 0).unwrap(),
            Stream::Stderr,
            Tag::Partial,
            b"xyz",
        );
        w.queue(&more);
        let lost = w.lost();
        assert_eq!(lost.lines, 4);
        assert_eq!(lost.bytes, 7 + 7 + 7 + 3, "content plus the newline of full lines");
        assert_eq!(lost.from, 1_700_000_000_000_000_000);
        assert_eq!(lost.to, 1_700_000_009_000_000_000);

        // No room for the marker: the file still ends on a whole record.
        assert_eq!(w.flush(&mut disk, 2), Flush::Failed { first: false });
        assert_eq!(disk.file, records(&["kept"]));

        disk.room = 1 << 20;
        assert!(matches!(w.flush(&mut disk, 3), Flush::Resumed(_)));
        assert_whole(&disk.file);
        let text = String::from_utf8_lossy(&disk.file).into_owned();
        let last = text.lines().last().unwrap();
        let marker = parse(last.as_bytes()).unwrap();
        assert_eq!(marker.stream, Stream::Stderr);
        let content = String::from_utf8(marker.content).unwrap();
        assert!(
            content.starts_with(
                "[minilet] 4 lines (24 bytes) of output from 2023-11-14T22:13:20Z to 2023-11-14T22:13:29Z were lost"
            ),
            "{content}"
        );
        assert!(content.contains("No space left on device"), "{content}");
        assert_eq!(text.lines().count(), 2, "one marker, once");
        assert_eq!(w.lost(), Loss::default());
        assert_eq!(w.flush(&mut disk, 4), Flush::Done);
        assert_eq!(text, String::from_utf8_lossy(&disk.file));
    }

    #[test]
    fn notices_round_trip_and_read_as_events() {
        let lost = Notice::Lost {
            error: "x".repeat(5000),
            loss: Loss {
                lines: 3,
                bytes: 12,
                from: 1_700_000_000_000_000_000,
                to: 1_700_000_001_000_000_000,
            },
            marker: false,
        };
        let line = lost.encode();
        assert!(line.len() < 4096 && line.ends_with(b"\n"), "{} bytes", line.len());
        let back: Notice = serde_json::from_slice(&line).unwrap();
        assert!(
            matches!(&back, Notice::Lost { loss, error, .. } if loss.lines == 3 && error.len() == NOTICE_ERROR_MAX)
        );

        let log = Path::new("/var/log/pods/p/app/0.log");
        let (kind, reason, msg) = back.event("app", log);
        assert_eq!((kind, reason), (EventType::Warning, "LogOutputLost"));
        assert!(
            msg.starts_with("3 lines (12 bytes) of output of container app from 2023-11-14T22:13:20Z"),
            "{msg}"
        );

        let failing = Notice::Failing {
            error: "No space left on device (os error 28)".into(),
        };
        let reminder = Notice::StillFailing {
            error: "No space left on device (os error 28)".into(),
            since: 1,
            attempts: 60,
        };
        assert_eq!(
            failing.event("app", log),
            reminder.event("app", log),
            "a reminder counts up the same event"
        );
        assert_eq!(failing.event("app", log).1, "LogWriteFailed");
        let resumed = Notice::Resumed {
            since: 0,
            until: 2_500_000_000,
        };
        assert_eq!(
            resumed.event("app", log),
            (
                EventType::Normal,
                "LogWriteResumed",
                "Writing the log of container app resumed after 2.5s; no output was lost".to_string()
            )
        );
    }

    #[tokio::test]
    async fn notices_cross_the_fifo_until_the_monitor_is_gone() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        // No FIFO (a monitor from before notices existed): nothing to read, no error.
        watch_notices(dir.path(), |n| panic!("unexpected {n:?}")).await.unwrap();

        nix::unistd::mkfifo(
            &notices_path(dir.path()),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let mut monitor = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(notices_path(dir.path()))
            .unwrap();
        // Sent before anyone listens: it waits in the FIFO.
        let failing = Notice::Failing {
            error: "disk full".into(),
        };
        monitor.write_all(&failing.encode()).unwrap();
        let resumed = Notice::Resumed { since: 1, until: 2 };
        monitor.write_all(&resumed.encode()).unwrap();
        // What was sent waits as long as any end is open: this read end holds it until the
        // watcher has opened its own.
        let keep = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(notices_path(dir.path()))
                .unwrap()
        };
        drop(monitor); // the monitor exits: end of file after the notices
        let path = dir.path().to_path_buf();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            watch_notices(&path, |n| got.push(n)).await.map(|()| got)
        });
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the reader ends when the monitor is gone")
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![failing, resumed]);
        drop(keep);
    }
}
