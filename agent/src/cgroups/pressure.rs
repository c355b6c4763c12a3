//! Pressure stall information (PSI) of a cgroup v2: `cpu.pressure`, `memory.pressure`,
//! `io.pressure`, as the kernel reports how long tasks waited for each resource.
//!
//! v1 has no per-cgroup PSI; on v2 the files are absent on kernels built without PSI and
//! refuse reads (EOPNOTSUPP) when it is off (`psi=0`, `cgroup.pressure` 0): both read as none.

use std::fmt;
use std::io;
use std::path::Path;

use super::{CgroupError, invalid};

/// The resources the kernel keeps pressure figures for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsiResource {
    Cpu,
    Memory,
    Io,
}

impl PsiResource {
    pub const ALL: [PsiResource; 3] = [PsiResource::Cpu, PsiResource::Memory, PsiResource::Io];

    pub fn file(self) -> &'static str {
        match self {
            PsiResource::Cpu => "cpu.pressure",
            PsiResource::Memory => "memory.pressure",
            PsiResource::Io => "io.pressure",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PsiResource::Cpu => "cpu",
            PsiResource::Memory => "memory",
            PsiResource::Io => "io",
        }
    }
}

/// One line of a pressure file. The averages are percentages with two decimals, kept as
/// hundredths so the figures stay exact and comparable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PsiLine {
    pub avg10_hundredths: u32,
    pub avg60_hundredths: u32,
    pub avg300_hundredths: u32,
    /// Total stall time in microseconds.
    pub total_us: u64,
}

/// `some`: at least one task stalled; `full`: all non-idle tasks stalled at once (absent
/// for cpu on kernels before 5.13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

impl fmt::Display for PsiLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |h: u32| format!("{}.{:02}", h / 100, h % 100);
        write!(
            f,
            "avg10={} avg60={} avg300={} total={}",
            pct(self.avg10_hundredths),
            pct(self.avg60_hundredths),
            pct(self.avg300_hundredths),
            self.total_us
        )
    }
}

/// "12.34" → 1234; the kernel always prints two decimals.
fn hundredths(s: &str) -> Option<u32> {
    let (int, frac) = s.split_once('.')?;
    if frac.len() != 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    int.parse::<u32>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac.parse().ok()?)
}

fn parse_line(fields: &str) -> Option<PsiLine> {
    let mut line = PsiLine::default();
    let mut seen = 0;
    for kv in fields.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        match k {
            "avg10" => line.avg10_hundredths = hundredths(v)?,
            "avg60" => line.avg60_hundredths = hundredths(v)?,
            "avg300" => line.avg300_hundredths = hundredths(v)?,
            "total" => line.total_us = v.parse().ok()?,
            _ => continue,
        }
        seen += 1;
    }
    (seen == 4).then_some(line)
}

/// The content of a pressure file; `None` when it is not in the kernel's format.
pub fn parse(text: &str) -> Option<Pressure> {
    let (mut some, mut full) = (None, None);
    for l in text.lines() {
        match l.split_once(' ') {
            Some(("some", rest)) => some = Some(parse_line(rest)?),
            Some(("full", rest)) => full = Some(parse_line(rest)?),
            _ if l.trim().is_empty() => {}
            _ => return None,
        }
    }
    Some(Pressure { some: some?, full })
}

/// The pressure of `resource` in the cgroup `dir`; `None` where the kernel has none.
pub fn read(dir: &Path, resource: PsiResource) -> Result<Option<Pressure>, CgroupError> {
    let path = dir.join(resource.file());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(None),
        Err(source) => return Err(CgroupError::Read { path, source }),
    };
    parse(&text)
        .map(Some)
        .ok_or_else(|| invalid(dir, resource.file(), &text))
}

/// One line per resource and kind, as `describe` prints them: `cpu some avg10=0.00 ...`.
pub fn describe_lines(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let mut out = Vec::new();
    for r in PsiResource::ALL {
        if let Some(p) = read(dir, r)? {
            out.push(format!("{} some {}", r.name(), p.some));
            if let Some(full) = p.full {
                out.push(format!("{} full {full}", r.name()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY: &str = "some avg10=1.25 avg60=0.40 avg300=0.08 total=123456\n\
                          full avg10=0.00 avg60=0.00 avg300=0.00 total=789\n";

    #[test]
    fn parses_some_and_full() {
        let p = parse(MEMORY).unwrap();
        assert_eq!(
            p.some,
            PsiLine {
                avg10_hundredths: 125,
                avg60_hundredths: 40,
                avg300_hundredths: 8,
                total_us: 123_456
            }
        );
        assert_eq!(p.full.unwrap().total_us, 789);
        assert_eq!(p.some.to_string(), "avg10=1.25 avg60=0.40 avg300=0.08 total=123456");
        // cpu.pressure before 5.13: no full line.
        let cpu = parse("some avg10=100.00 avg60=0.00 avg300=0.00 total=1\n").unwrap();
        assert_eq!(cpu.some.avg10_hundredths, 10_000);
        assert_eq!(cpu.full, None);
    }

    #[test]
    fn refuses_other_formats() {
        for bad in [
            "",
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=0.0 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=0.00 avg60=0.00 total=0\n",
            "some avg10=x.00 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=-1\n",
            "other avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_fixture_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("memory.pressure"), MEMORY).unwrap();
        std::fs::write(
            d.path().join("cpu.pressure"),
            "some avg10=0.50 avg60=0.00 avg300=0.00 total=42\n",
        )
        .unwrap();
        // No io.pressure: a kernel without it.
        assert_eq!(read(d.path(), PsiResource::Io).unwrap(), None);
        assert_eq!(
            describe_lines(d.path()).unwrap(),
            [
                "cpu some avg10=0.50 avg60=0.00 avg300=0.00 total=42",
                "memory some avg10=1.25 avg60=0.40 avg300=0.08 total=123456",
                "memory full avg10=0.00 avg60=0.00 avg300=0.00 total=789",
            ]
        );
        std::fs::write(d.path().join("io.pressure"), "garbage\n").unwrap();
        let err = describe_lines(d.path()).unwrap_err();
        assert!(err.to_string().contains("io.pressure"), "{err}");
    }
}
