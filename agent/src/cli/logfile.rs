//! Reading a CRI log file the way the kubelet serves it to `kubectl logs`: records parsed,
//! `P` pieces joined with the record that completes them (per stream) into one line, content
//! only (or the timestamp first with `--timestamps`), `--tail` and `--since`, and `--follow`
//! until the container has exited and the file is drained.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use jiff::Timestamp;

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

fn read_available(file: &mut File, decoder: &mut Decoder, lines: &mut Vec<Line>) -> Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = file.read(&mut buf).context("reading the log file")?;
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

/// Print the whole file (what `kubectl logs` without `-f` shows).
pub fn read(path: &Path, opts: &LogOptions, out: &mut impl Write) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("opening log file {}", path.display()))?;
    let mut decoder = Decoder::default();
    let mut lines = Vec::new();
    read_available(&mut file, &mut decoder, &mut lines)?;
    decoder.finish(&mut lines);
    write_lines(out, &apply_tail(lines, opts.tail), opts)
}

/// Print the file, then keep printing what is appended until `exited()` says the container
/// has stopped and everything it wrote has been read.
pub async fn follow(
    path: &Path,
    opts: &LogOptions,
    out: &mut impl Write,
    mut exited: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("opening log file {}", path.display()))?;
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
    // inotify when available; without it the poll interval alone paces the loop.
    let _watcher = watch(path, tx);

    let mut decoder = Decoder::default();
    let mut lines = Vec::new();
    read_available(&mut file, &mut decoder, &mut lines)?;
    write_lines(out, &apply_tail(std::mem::take(&mut lines), opts.tail), opts)?;

    let mut draining = false;
    loop {
        if read_available(&mut file, &mut decoder, &mut lines)? > 0 {
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
        let len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let pos = file.stream_position().unwrap_or(0);
        if len < pos {
            file.seek(SeekFrom::Start(0)).context("rewinding the log file")?;
            decoder = Decoder::default();
        }
    }
    decoder.finish(&mut lines);
    write_lines(out, &lines, opts)
}

fn watch(path: &Path, tx: tokio::sync::mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.send(());
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
