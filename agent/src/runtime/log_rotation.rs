//! Container log rotation, as the kubelet's container log manager does it: once the current
//! file `<n>.log` grows past `--container-log-max-size` it is renamed to `<n>.log.<stamp>`
//! and a new `<n>.log` is opened; the newest rotated file stays plain, older ones are
//! gzip-compressed to `<stamp>.gz`, and the oldest are deleted so that at most
//! `--container-log-max-files` files (the current one included) remain.
//!
//! Where it runs: in the container's monitor, right after a write, not in the agent on a
//! period as the kubelet does. The monitor is the file's only writer, so renaming between two
//! writes can neither split a record nor lose or repeat one (no reopen handshake), and a
//! container keeps being rotated while the agent is stopped or restarting: its log cannot
//! grow without bound because nobody polls it.
//!
//! Stamps are UTC `YYYYMMDD-HHMMSS.nnnnnnnnn` (the kubelet's `20060102-150405`, plus
//! nanoseconds, since a fast writer can fill a small file several times a second): fixed
//! width, so name order is time order.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::file_modes;

/// The kubelet's defaults.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_FILES: u32 = 5;
/// Smallest `--container-log-max-size`: one record can hold a 16 KiB piece of a line, and a
/// file smaller than that would be rotated after every write.
pub const MIN_MAX_SIZE: u64 = 16 * 1024;

/// `--container-log-max-size`, `--container-log-max-files`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LogRotationArgs {
    /// Size (a quantity: 10Mi, 64Ki) past which a container's log file is rotated (kubelet: 10Mi; at least 16Ki).
    #[arg(long, default_value = "10Mi", value_parser = parse_max_size)]
    pub container_log_max_size: u64,

    /// Most log files kept per container, the current one included (kubelet: 5; at least 2).
    #[arg(long, default_value_t = DEFAULT_MAX_FILES, value_parser = parse_max_files)]
    pub container_log_max_files: u32,
}

impl LogRotationArgs {
    pub fn policy(&self) -> Rotation {
        Rotation {
            max_size: self.container_log_max_size,
            max_files: self.container_log_max_files,
        }
    }
}

/// Flag parser for `--container-log-max-size`.
pub fn parse_max_size(s: &str) -> Result<u64, String> {
    let q = crate::quantity::Quantity::parse(s).map_err(|e| e.to_string())?;
    let bytes = q.value();
    match u64::try_from(bytes) {
        Ok(b) if b >= MIN_MAX_SIZE => Ok(b),
        _ => Err(format!(
            "must be at least 16Ki ({MIN_MAX_SIZE} bytes, the longest log record), got {s} ({bytes} bytes)"
        )),
    }
}

/// Flag parser for `--container-log-max-files`.
pub fn parse_max_files(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 2 => Ok(n),
        Ok(n) => Err(format!(
            "must be at least 2 (the current file and one rotated file), got {n}"
        )),
        Err(e) => Err(format!("not a whole number: {s:?} ({e})")),
    }
}

/// What a monitor rotates by (part of its spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

// ---- names --------------------------------------------------------------------------------

const GZ: &str = ".gz";
/// A compression in progress (never read; removed if it is abandoned).
const TMP: &str = ".tmp";

/// `YYYYMMDD-HHMMSS.nnnnnnnnn` in UTC.
pub fn stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%d-%H%M%S.%9f").to_string()
}

fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 25
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 => c == b'-',
            15 => c == b'.',
            _ => c.is_ascii_digit(),
        })
}

/// One rotated file of a log: `<log>.<stamp>` or `<log>.<stamp>.gz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub stamp: String,
    pub path: PathBuf,
    pub compressed: bool,
}

impl Rotated {
    /// The plain file of this rotation (whether or not it still exists).
    pub fn plain(&self) -> PathBuf {
        match self.compressed {
            false => self.path.clone(),
            true => strip_suffix(&self.path, GZ),
        }
    }

    /// The compressed file of this rotation (whether or not it exists yet).
    pub fn gz(&self) -> PathBuf {
        match self.compressed {
            true => self.path.clone(),
            false => with_suffix(&self.path, GZ),
        }
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn strip_suffix(p: &Path, suffix: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let s = p.as_os_str().as_bytes();
    let cut = s.strip_suffix(suffix.as_bytes()).unwrap_or(s);
    PathBuf::from(std::ffi::OsStr::from_bytes(cut))
}

/// What a name in the log's directory is to the log at `log`, if it is one of its rotations.
fn classify(log_name: &str, name: &str) -> Option<(String, bool)> {
    let rest = name.strip_prefix(log_name)?.strip_prefix('.')?;
    let (stamp, compressed) = match rest.strip_suffix(GZ) {
        Some(s) => (s, true),
        None => (rest, false),
    };
    is_stamp(stamp).then(|| (stamp.to_string(), compressed))
}

/// The rotated files of the log at `log`, oldest first. A rotation being compressed exists
/// briefly both plain and compressed: it is listed once, plain (complete until it is gone).
pub fn list(log: &Path) -> io::Result<Vec<Rotated>> {
    let (Some(dir), Some(log_name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found: Vec<Rotated> = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some((stamp, compressed)) = name.to_str().and_then(|n| classify(log_name, n)) else {
            continue;
        };
        found.push(Rotated {
            stamp,
            path: entry.path(),
            compressed,
        });
    }
    // Plain before compressed within a stamp, then keep the first of each stamp.
    found.sort_by(|a, b| (&a.stamp, a.compressed).cmp(&(&b.stamp, b.compressed)));
    found.dedup_by(|later, first| later.stamp == first.stamp);
    Ok(found)
}

/// Open a rotated file for reading, decompressing `.gz`; the plain file may have been
/// compressed meanwhile, so the other form is tried too. `None`: the rotation is gone
/// (deleted as the oldest beyond max-files).
pub fn open(r: &Rotated) -> io::Result<Option<Box<dyn io::Read + Send>>> {
    for (path, gz) in [(r.plain(), false), (r.gz(), true)] {
        match File::open(&path) {
            Ok(f) if gz => return Ok(Some(Box::new(flate2::read::GzDecoder::new(io::BufReader::new(f))))),
            Ok(f) => return Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Remove a log file and all its rotations (a retired container attempt). Best effort.
pub fn remove_all(log: &Path) {
    let _ = std::fs::remove_file(log);
    if let Ok(rotated) = list(log) {
        for r in rotated {
            let _ = std::fs::remove_file(r.plain());
            let _ = std::fs::remove_file(r.gz());
        }
    }
}

// ---- rotating -----------------------------------------------------------------------------

/// How to report a problem (the monitor's capped diagnostics).
pub type Report = fn(std::fmt::Arguments);

/// After a failed rotation, the next attempt waits this long (not one per write).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Rotates one log file; owned by the monitor that writes it.
pub struct Rotator {
    path: PathBuf,
    policy: Rotation,
    report: Report,
    not_before: Option<Instant>,
}

impl Rotator {
    pub fn new(path: PathBuf, policy: Rotation, report: Report) -> Self {
        Rotator {
            path,
            policy,
            report,
            not_before: None,
        }
    }

    /// Called after records were written whole to `file` (the log, on a record boundary):
    /// rotate if it is past the limit. On success `file` is the new, empty log.
    pub fn after_write(&mut self, file: &mut File) {
        if self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match file.metadata() {
            Ok(m) if m.len() > self.policy.max_size => {}
            _ => return,
        }
        match self.rotate(jiff::Timestamp::now()) {
            Ok(new) => {
                *file = new;
                self.not_before = None;
            }
            Err(e) => {
                (self.report)(format_args!("rotate {}: {e}; trying again later", self.path.display()));
                self.not_before = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }

    /// Delete beyond max-files, rename the log away, open a new one, and compress what is
    /// no longer the newest rotation.
    fn rotate(&mut self, now: jiff::Timestamp) -> io::Result<File> {
        let mut rotated = list(&self.path)?;
        // After the rename there are the rotated ones, the new one, and the new log.
        let keep = self.policy.max_files.saturating_sub(2) as usize;
        let excess = rotated.len().saturating_sub(keep);
        for r in rotated.drain(..excess) {
            remove_if_present(&r.plain())?;
            remove_if_present(&r.gz())?;
        }
        let mut target = with_suffix(&self.path, &format!(".{}", stamp(now)));
        let mut t = now;
        // Two rotations within one nanosecond's resolution of the clock: the next free stamp.
        while target.exists() || with_suffix(&target, GZ).exists() {
            t = t
                .checked_add(jiff::SignedDuration::from_nanos(1))
                .map_err(io::Error::other)?;
            target = with_suffix(&self.path, &format!(".{}", stamp(t)));
        }
        std::fs::rename(&self.path, &target)?;
        let new = match file_modes::open_log(&self.path) {
            Ok(f) => f,
            Err(e) => {
                // No new file (a full disk may refuse even the inode): keep the old one where
                // it was, written through the descriptor still open.
                let _ = std::fs::rename(&target, &self.path);
                return Err(e);
            }
        };
        // Compressed here, between two writes: the monitor cannot start threads (it is in
        // another PID namespace than its children's, where the kernel refuses CLONE_THREAD),
        // and a helper process would be one more thing to outlive the agent. The container's
        // output waits in the pipe meanwhile; nothing is lost.
        for r in rotated.iter().filter(|r| !r.compressed) {
            if let Err(e) = compress(&r.plain()) {
                (self.report)(format_args!(
                    "compress {}: {e}; it stays uncompressed",
                    r.path.display()
                ));
            }
        }
        Ok(new)
    }
}

fn remove_if_present(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `<plain>` → `<plain>.gz`, through `<plain>.gz.tmp` so that a reader never meets a
/// partial `.gz`. Without room for it (a full disk), the plain file stays.
pub fn compress(plain: &Path) -> io::Result<()> {
    let gz = with_suffix(plain, GZ);
    let tmp = with_suffix(&gz, TMP);
    let mut src = match File::open(plain) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // deleted meanwhile
        Err(e) => return Err(e),
    };
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let out = file_modes::create_new(&tmp, file_modes::LOG_FILE)?;
        let mut enc = flate2::write::GzEncoder::new(io::BufWriter::new(out), flate2::Compression::default());
        io::copy(&mut src, &mut enc)?;
        let out = enc.finish()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &gz)?;
    std::fs::remove_file(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn report(_: std::fmt::Arguments) {}

    #[test]
    fn stamps_sort_as_time_and_parse_back() {
        let a: jiff::Timestamp = "2026-11-30T01:02:03.000000005Z".parse().unwrap();
        let b: jiff::Timestamp = "2026-11-30T01:02:03.1Z".parse().unwrap();
        let c: jiff::Timestamp = "2026-11-30T10:00:00Z".parse().unwrap();
        assert_eq!(stamp(a), "20261130-010203.000000005");
        assert_eq!(stamp(c), "20261130-100000.000000000");
        assert!(stamp(a) < stamp(b) && stamp(b) < stamp(c));
        assert_eq!(
            classify("0.log", "0.log.20261130-010203.000000005"),
            Some((stamp(a), false))
        );
        assert_eq!(
            classify("0.log", "0.log.20261130-010203.000000005.gz"),
            Some((stamp(a), true))
        );
        for other in [
            "0.log",
            "10.log.20261130-010203.000000005",
            "0.log.20261130-010203.000000005.gz.tmp",
            "0.log.20261130-010203",
            "0.log.2026113x-010203.000000005",
        ] {
            assert_eq!(classify("0.log", other), None, "{other}");
        }
    }

    #[test]
    fn list_orders_and_counts_a_compression_in_progress_once() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("0.log");
        for name in [
            "0.log",
            "0.log.20261130-010203.000000002",
            "0.log.20261130-010203.000000001.gz",
            "0.log.20261130-010203.000000003",
            "0.log.20261130-010203.000000003.gz",
            "0.log.20261130-010203.000000003.gz.tmp",
            "1.log.20261130-010203.000000000",
        ] {
            std::fs::write(d.path().join(name), b"").unwrap();
        }
        let l = list(&log).unwrap();
        let names: Vec<_> = l
            .iter()
            .map(|r| r.path.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "0.log.20261130-010203.000000001.gz",
                "0.log.20261130-010203.000000002",
                "0.log.20261130-010203.000000003",
            ]
        );
        remove_all(&log);
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}"); // the tmp file and the other attempt's rotation
    }

    #[test]
    fn rotation_keeps_every_byte_compresses_older_files_and_bounds_the_count() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("0.log");
        let mut file = file_modes::open_log(&log).unwrap();
        let policy = Rotation {
            max_size: 100,
            max_files: 3,
        };
        let mut r = Rotator::new(log.clone(), policy, report);
        let mut written = Vec::new();
        for i in 0..20 {
            let line = format!("2026-11-30T00:00:00Z stdout F line {i:03} .............................\n");
            file.write_all(line.as_bytes()).unwrap();
            written.push(line);
            r.after_write(&mut file);
            let files = list(&log).unwrap().len() + 1;
            assert!(files <= 3, "{files} files after write {i}");
        }
        let rotated = list(&log).unwrap();
        assert_eq!(rotated.len(), 2);
        assert!(rotated[0].compressed, "older rotations are compressed");
        assert!(!rotated[1].compressed, "the newest rotation stays plain");
        let mut all = String::new();
        for rot in &rotated {
            open(rot).unwrap().unwrap().read_to_string(&mut all).unwrap();
        }
        all.push_str(&std::fs::read_to_string(&log).unwrap());
        // The surviving text is exactly the tail of what was written, whole lines only.
        let tail = written.concat();
        assert!(tail.ends_with(&all), "{all}");
        assert!(all.starts_with("2026-11-30"));
        // Nothing left over from compression.
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(TMP)), "{names:?}");
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn compression_replaces_the_plain_file_and_skips_a_deleted_one() {
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("0.log.20261130-010203.000000001");
        std::fs::write(&plain, b"x\n").unwrap();
        compress(&plain).unwrap();
        assert!(!plain.exists());
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(with_suffix(&plain, GZ)).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "x\n");
        // A plain file that is gone before compression starts leaves nothing behind.
        let gone = d.path().join("0.log.20261130-010203.000000002");
        compress(&gone).unwrap();
        assert!(!with_suffix(&gone, GZ).exists());
    }

    #[test]
    fn flags_are_validated() {
        assert_eq!(parse_max_size("64Ki"), Ok(64 * 1024));
        assert_eq!(parse_max_size("10Mi"), Ok(DEFAULT_MAX_SIZE));
        let e = parse_max_size("1Ki").unwrap_err();
        assert!(e.contains("at least 16Ki") && e.contains("1Ki"), "{e}");
        assert!(parse_max_size("-5Mi").is_err());
        assert!(parse_max_size("ten").unwrap_err().contains("quantities must match"));
        assert_eq!(parse_max_files("2"), Ok(2));
        assert!(parse_max_files("1").unwrap_err().contains("at least 2"));
        assert!(parse_max_files("x").unwrap_err().contains("whole number"));
    }
}
