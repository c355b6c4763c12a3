//! Reading a CRI log file the way the kubelet serves it to `kubectl logs`: records parsed,
//! `P` pieces joined with the record that completes them (per stream) into one line, content
//! only (or the timestamp first with `--timestamps`), `--tail` and `--since`, and `--follow`
//! until the container has exited and the file is drained.
//!
//! A log is its rotated files (oldest first, plain or gzip) and then the current file (see
//! [`crate::runtime::log_rotation`]); all are read as one stream, and `--follow` moves on
//! to the new file when the one it reads is rotated away.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use jiff::Timestamp;

use crate::runtime::log_rotation::{self, Rotated};
use crate::runtime::logs::{Record, Stream, Tag, parse};

#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Only the last N lines (None: all).
    pub tail: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<Timestamp>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// How long to wait for more output before asking whether the container has exited
    /// (file change notifications cut the wait short).
    pub poll: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            tail: None,
            since: None,
            timestamps: false,
            poll: Duration::from_millis(500),
        }
    }
}

/// One output line: the time of its first piece, and its bytes (with the newline, unless the
/// line was never completed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    time: Timestamp,
    bytes: Vec<u8>,
}

/// Turns file bytes into lines: splits records, parses them (skipping malformed ones, as the
/// kubelet does), and joins partial records.
#[derive(Debug, Default)]
struct Decoder {
    /// Bytes after the last newline: a record still being written.
    raw: Vec<u8>,
    /// Per stream, the pieces of a line not yet completed.
    partial: [Option<Line>; 2],
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Decoder {
    fn feed(&mut self, data: &[u8], out: &mut Vec<Line>) {
        self.raw.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = self.raw[start..].iter().position(|&b| b == b'\n') {
            if let Some(rec) = parse(&self.raw[start..start + nl]) {
                self.record(rec, out);
            }
            start += nl + 1;
        }
        self.raw.drain(..start);
    }

    fn record(&mut self, rec: Record, out: &mut Vec<Line>) {
        let pending = &mut self.partial[slot(rec.stream)];
        let mut line = pending.take().unwrap_or(Line {
            time: rec.time,
            bytes: Vec::new(),
        });
        line.bytes.extend_from_slice(&rec.content);
        match rec.tag {
            Tag::Partial => *pending = Some(line),
            Tag::Full => {
                line.bytes.push(b'\n');
                out.push(line);
            }
        }
    }

    /// The end: lines that never got their final piece are output as they are.
    fn finish(&mut self, out: &mut Vec<Line>) {
        let mut rest: Vec<Line> = self.partial.iter_mut().filter_map(Option::take).collect();
        rest.sort_by_key(|l| l.time);
        out.extend(rest);
    }
}

fn write_line(out: &mut impl Write, line: &Line, opts: &LogOptions) -> std::io::Result<()> {
    if opts.since.is_some_and(|s| line.time < s) {
        return Ok(());
    }
    if opts.timestamps {
        // jiff prints RFC 3339 in UTC with the shortest exact fraction, as Go's RFC3339Nano.
        write!(out, "{} ", line.time)?;
    }
    out.write_all(&line.bytes)
}

fn write_lines(out: &mut impl Write, lines: &[Line], opts: &LogOptions) -> Result<()> {
    for l in lines {
        write_line(out, l, opts).context("writing logs")?;
    }
    out.flush().context("writing logs")
}

fn read_available(file: &mut impl Read, decoder: &mut Decoder, lines: &mut Vec<Line>) -> Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match file.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other.context("reading the log file")?,
        };
        if n == 0 {
            return Ok(total);
        }
        total += n;
        decoder.feed(&buf[..n], lines);
    }
}

/// Only the last `tail` lines (the kubelet applies `--tail` before `--since`).
fn apply_tail(lines: Vec<Line>, tail: Option<usize>) -> Vec<Line> {
    match tail {
        Some(n) if lines.len() > n => {
            let mut d: VecDeque<Line> = lines.into();
            d.drain(..d.len() - n);
            d.into()
        }
        _ => lines,
    }
}

/// Which file a descriptor or path is (a rename keeps it).
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

fn is_file(r: &Rotated, id: (u64, u64)) -> bool {
    !r.compressed && std::fs::metadata(&r.path).is_ok_and(|m| identity(&m) == id)
}

/// The current file of the log at `path`, and the rotations before it, oldest first. The
/// file is opened before the rotations are listed, so a rotation in between shows the
/// opened file among them (by identity): only those older than it count.
fn open_log(path: &Path) -> Result<(File, Vec<Rotated>)> {
    let file = File::open(path).with_context(|| format!("opening log file {}", path.display()))?;
    let id = identity(&file.metadata().context("reading the log file")?);
    let mut rotated =
        log_rotation::list(path).with_context(|| format!("listing the rotations of {}", path.display()))?;
    if let Some(i) = rotated.iter().position(|r| is_file(r, id)) {
        rotated.truncate(i);
    }
    Ok((file, rotated))
}

/// Feed one whole rotated file to the decoder (a rotation deleted meanwhile is skipped).
fn read_rotated(r: &Rotated, decoder: &mut Decoder, lines: &mut Vec<Line>) -> Result<()> {
    match log_rotation::open(r).with_context(|| format!("opening log file {}", r.path.display()))? {
        Some(mut f) => read_available(&mut f, decoder, lines).map(drop),
        None => Ok(()),
    }
}

/// Print the whole log, rotations first (what `kubectl logs` without `-f` shows).
pub fn read(path: &Path, opts: &LogOptions, out: &mut impl Write) -> Result<()> {
    let (mut file, rotated) = open_log(path)?;
    let mut decoder = Decoder::default();
    let mut lines = Vec::new();
    for r in &rotated {
        read_rotated(r, &mut decoder, &mut lines)?;
    }
    read_available(&mut file, &mut decoder, &mut lines)?;
    decoder.finish(&mut lines);
    write_lines(out, &apply_tail(lines, opts.tail), opts)
}

/// The file being followed, and the newest rotation known to be older than it.
struct Following {
    file: File,
    id: (u64, u64),
    before: Option<String>,
}

impl Following {
    fn open(path: &Path, decoder: &mut Decoder, lines: &mut Vec<Line>) -> Result<Self> {
        let (file, rotated) = open_log(path)?;
        for r in &rotated {
            read_rotated(r, decoder, lines)?;
        }
        Ok(Following {
            id: identity(&file.metadata().context("reading the log file")?),
            file,
            before: rotated.last().map(|r| r.stamp.clone()),
        })
    }

    /// If the file was rotated away: read the rest of it, then every rotation made after it
    /// (several, if the log was rotated more than once since the last look), and go on with
    /// the new current file. Returns whether it moved on.
    fn next_file(&mut self, path: &Path, decoder: &mut Decoder, lines: &mut Vec<Line>) -> Result<bool> {
        // Missing: renamed, and the writer is about to create the new one.
        match std::fs::metadata(path) {
            Ok(m) if identity(&m) != self.id => {}
            _ => return Ok(false),
        }
        // The writer renames only after its last write to this file: what is there is all.
        read_available(&mut self.file, decoder, lines)?;
        let (file, rotated) = open_log(path)?;
        let before = self.before.clone();
        let mut newer = rotated
            .into_iter()
            .filter(|r| before.as_ref().is_none_or(|b| r.stamp > *b))
            .peekable();
        // The first rotation after the one before ours is ours (unless it was deleted
        // already, then it is a stranger: plain with another identity).
        if let Some(ours) = newer.next_if(|r| r.compressed || is_file(r, self.id)) {
            self.before = Some(ours.stamp);
        }
        for r in newer {
            read_rotated(&r, decoder, lines)?;
            self.before = Some(r.stamp);
        }
        self.id = identity(&file.metadata().context("reading the log file")?);
        self.file = file;
        Ok(true)
    }
}

/// Print the file, then keep printing what is appended until `exited()` says the container
/// has stopped and everything it wrote has been read.
pub async fn follow(
    path: &Path,
    opts: &LogOptions,
    out: &mut impl Write,
    mut exited: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
    // inotify when available; without it the poll interval alone paces the loop. The
    // directory, not the file: after a rotation the file's own watch sees nothing new.
    let _watcher = watch(path.parent().unwrap_or(path), tx);

    let mut decoder = Decoder::default();
    let mut lines = Vec::new();
    let mut log = Following::open(path, &mut decoder, &mut lines)?;
    read_available(&mut log.file, &mut decoder, &mut lines)?;
    write_lines(out, &apply_tail(std::mem::take(&mut lines), opts.tail), opts)?;

    let mut draining = false;
    loop {
        if read_available(&mut log.file, &mut decoder, &mut lines)? > 0 {
            write_lines(out, &std::mem::take(&mut lines), opts)?;
            continue;
        }
        if log.next_file(path, &mut decoder, &mut lines)? {
            write_lines(out, &std::mem::take(&mut lines), opts)?;
            continue;
        }
        if draining {
            break;
        }
        match tokio::time::timeout(opts.poll, changed.recv()).await {
            Ok(Some(())) => while changed.try_recv().is_ok() {},
            // Quiet for a while (or no watcher): has the container stopped? If so, one more
            // read picks up whatever it wrote last, then we are done.
            Ok(None) | Err(_) => {
                if exited().await? {
                    draining = true;
                }
                // Without a watcher, recv() returns at once: pace the loop.
                if changed.is_closed() {
                    tokio::time::sleep(opts.poll).await;
                }
            }
        }
        // The file may have been truncated (copytruncate-style rotation): start over.
        let len = log.file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let pos = log.file.stream_position().unwrap_or(0);
        if len < pos {
            log.file.seek(SeekFrom::Start(0)).context("rewinding the log file")?;
            decoder = Decoder::default();
        }
    }
    decoder.finish(&mut lines);
    write_lines(out, &lines, opts)
}

fn watch(path: &Path, tx: tokio::sync::mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Only changes: reads and opens (ours, or anyone listing the directory) would keep
        // the wait from ever timing out, and with it the check whether the container exited.
        if res.is_ok_and(|e| e.kind.is_create() || e.kind.is_modify() || e.kind.is_remove()) {
            let _ = tx.send(());
        }
    })
    .ok()?;
    watcher.watch(path, notify::RecursiveMode::NonRecursive).ok()?;
    Some(watcher)
}

/// kubectl's `--since`: now minus the duration.
pub fn since_time(now: Timestamp, d: Duration) -> Result<Timestamp> {
    let d = jiff::SignedDuration::try_from(d).context("--since is too large")?;
    now.checked_sub(d).context("--since is too large")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const LOG: &str = "\
2024-05-01T11:00:00.1Z stdout F first
2024-05-01T11:00:01Z stderr P err-
2024-05-01T11:00:01.5Z stdout P long-
2024-05-01T11:00:02Z stdout P line-
not a record
2024-05-01T11:00:03Z stdout F end
2024-05-01T11:00:03.5Z stderr F tail
2024-05-01T11:00:04Z stdout F
2024-05-01T11:00:05Z stdout F last
";

    fn file(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    fn read_with(opts: LogOptions) -> String {
        let f = file(LOG);
        let mut out = Vec::new();
        read(f.path(), &opts, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn partial_records_join_per_stream() {
        assert_eq!(
            read_with(LogOptions::default()),
            "first\nlong-line-end\nerr-tail\n\nlast\n"
        );
    }

    #[test]
    fn timestamps_tail_and_since() {
        let opts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            read_with(opts),
            "2024-05-01T11:00:00.1Z first\n2024-05-01T11:00:01.5Z long-line-end\n2024-05-01T11:00:01Z err-tail\n\
             2024-05-01T11:00:04Z \n2024-05-01T11:00:05Z last\n"
        );
        let tail = LogOptions {
            tail: Some(2),
            ..Default::default()
        };
        assert_eq!(read_with(tail), "\nlast\n");
        let zero = LogOptions {
            tail: Some(0),
            ..Default::default()
        };
        assert_eq!(read_with(zero), "");
        let since = LogOptions {
            since: Some("2024-05-01T11:00:01.2Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(read_with(since), "long-line-end\n\nlast\n");
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
        assert_eq!(
            since_time(now, Duration::from_secs(90)).unwrap(),
            "2024-05-01T11:58:30Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn an_unfinished_last_line_has_no_newline() {
        let f = file("2024-05-01T11:00:00Z stdout F a\n2024-05-01T11:00:01Z stdout P no newline\n");
        let mut out = Vec::new();
        read(f.path(), &LogOptions::default(), &mut out).unwrap();
        assert_eq!(out, b"a\nno newline");
    }

    #[tokio::test]
    async fn follow_stops_once_exited_and_drained() {
        // A partial record, then a record still being written (no newline yet).
        let mut f = file(
            "2024-05-01T11:00:00Z stdout F one\n2024-05-01T11:00:01Z stdout P tw\n2024-05-01T11:00:01.5Z stdout F o",
        );
        let path = f.path().to_path_buf();
        let opts = LogOptions {
            tail: Some(1),
            poll: Duration::from_millis(20),
            ..Default::default()
        };
        let calls = Cell::new(0);
        let mut out = Vec::new();
        follow(&path, &opts, &mut out, async || {
            calls.set(calls.get() + 1);
            match calls.get() {
                // Still running: it finishes its line and writes one more.
                1 => {
                    f.write_all(b"\n2024-05-01T11:00:02Z stdout F three\n").unwrap();
                    Ok(false)
                }
                2 => Ok(false),
                // Exited, with a last line written just before: it must still be printed.
                _ => {
                    f.write_all(b"2024-05-01T11:00:03Z stderr F four\n").unwrap();
                    Ok(true)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\nthree\nfour\n");
        assert!(calls.get() >= 3);
    }

    fn gzip(path: &Path, text: &str) {
        let mut enc = flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
    }

    fn rec(n: u32) -> String {
        format!("2024-05-01T11:00:{:02}Z stdout F {n}\n", n % 60)
    }

    #[test]
    fn rotations_are_read_first_in_order_gzip_or_not() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("0.log");
        gzip(
            &d.path().join("0.log.20240501-110000.000000001.gz"),
            &(rec(1) + &rec(2)),
        );
        // A piece of a line at the end of one file, completed in the next.
        std::fs::write(
            d.path().join("0.log.20240501-110001.000000000"),
            rec(3) + "2024-05-01T11:00:04Z stdout P fou\n",
        )
        .unwrap();
        // Being compressed: the plain file is read, the .gz of the same stamp is not.
        std::fs::write(d.path().join("0.log.20240501-110001.000000000.gz"), b"garbage").unwrap();
        std::fs::write(d.path().join("0.log.20240501-110002.000000000.gz.tmp"), b"garbage").unwrap();
        std::fs::write(d.path().join("1.log.20240501-110000.000000000"), rec(99)).unwrap();
        std::fs::write(&log, "2024-05-01T11:00:04Z stdout F r\n".to_string() + &rec(5)).unwrap();
        let mut out = Vec::new();
        read(&log, &LogOptions::default(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "1\n2\n3\nfour\n5\n");
        let mut out = Vec::new();
        let tail = LogOptions {
            tail: Some(3),
            ..Default::default()
        };
        read(&log, &tail, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "3\nfour\n5\n");
        let mut out = Vec::new();
        let since = LogOptions {
            since: Some("2024-05-01T11:00:02Z".parse().unwrap()),
            ..Default::default()
        };
        read(&log, &since, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "2\n3\nfour\n5\n");
    }

    #[tokio::test]
    async fn follow_moves_on_across_rotations_even_several_at_once() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("0.log");
        std::fs::write(d.path().join("0.log.20240501-110000.000000000"), rec(1)).unwrap();
        std::fs::write(&log, rec(2)).unwrap();
        let rotate = |stamp: &str, next: &str| {
            std::fs::rename(&log, d.path().join(format!("0.log.{stamp}"))).unwrap();
            std::fs::write(&log, next).unwrap();
        };
        let opts = LogOptions {
            poll: Duration::from_millis(20),
            ..Default::default()
        };
        let calls = Cell::new(0);
        let mut out = Vec::new();
        follow(&log, &opts, &mut out, async || {
            calls.set(calls.get() + 1);
            match calls.get() {
                1 => {
                    append_to(&log, &rec(3));
                    rotate("20240501-110001.000000000", &rec(4));
                    Ok(false)
                }
                2 => {
                    // Two rotations between two looks; the older one compressed already.
                    rotate("20240501-110002.000000000", &rec(5));
                    rotate("20240501-110003.000000000", &rec(6));
                    let older = d.path().join("0.log.20240501-110002.000000000");
                    gzip(&d.path().join("0.log.20240501-110002.000000000.gz"), &rec(5));
                    std::fs::remove_file(older).unwrap();
                    Ok(false)
                }
                _ => {
                    append_to(&log, &rec(7));
                    Ok(true)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "1\n2\n3\n4\n5\n6\n7\n");
    }

    fn append_to(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn follow_of_an_exited_container_returns_at_once() {
        let f = file("2024-05-01T11:00:00Z stdout F done\n");
        let mut out = Vec::new();
        let opts = LogOptions {
            poll: Duration::from_millis(10),
            ..Default::default()
        };
        follow(f.path(), &opts, &mut out, async || Ok(true)).await.unwrap();
        assert_eq!(out, b"done\n");
    }
}
