//! What the kernel says about one process: memory from `smaps_rollup`, CPU time from `stat`.

use std::time::Duration;

/// Memory of one process, in kB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Mem {
    /// Pages only this process maps (Private_Clean + Private_Dirty).
    pub private_kb: u64,
    /// Proportional set size: shared pages divided among their users.
    pub pss_kb: u64,
    pub rss_kb: u64,
}

/// `None` when the process is gone (or not readable).
pub fn mem(pid: i32) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(0)
    };
    Some(Mem {
        private_kb: field("Private_Clean:") + field("Private_Dirty:"),
        pss_kb: field("Pss:"),
        rss_kb: field("Rss:"),
    })
}

/// User + system CPU time the process has used so far.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_micros((utime + stime) * 1_000_000 / hz))
}

/// Whether `pid` still exists as a live process (a zombie does not count).
pub fn alive(pid: i32) -> bool {
    minilet_e2e::alive(pid)
}

/// The children of `pid` (its main thread's), as the kernel lists them.
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Median of a list of kB figures (0 when empty).
pub fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The machine's busy and total CPU ticks so far (`/proc/stat`'s `cpu` line; idle and
/// iowait are not busy).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}
