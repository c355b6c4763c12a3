//! CPU, memory, process and writable-layer statistics from the cgroups and the container
//! directories, in CRI's shapes.
//!
//! CPU *rates* (`usage_nano_cores`, what `top` shows) need two samples. A short window makes
//! a noisy figure (CFS quota is enforced per 100 ms period, so a 100 ms window can see a
//! whole period's burst or none), so a rate is always taken over at least [`MIN_WINDOW`], as
//! metrics-server's is over its scrape interval. Each cgroup keeps the newest sample that is
//! at least that old plus the ones since; a request that has no such sample for some cgroups
//! (seen for the first time, or not for a while) waits once, for all of them together, until
//! the window is full, so one request costs at most one wait whatever the number of pods.
//! Cgroups not sampled for [`FORGET_AFTER`] are dropped, so the cache follows the live pods.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minilet_proto::runtime::v1 as cri;

use crate::cgroups::{CgroupStats, Cgroups};
use crate::runtime::spec::now_nanos;

/// The shortest window a CPU rate is computed over.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// A sample older than this is too old to give a current rate.
const MAX_WINDOW_NANOS: i64 = 60_000_000_000;
/// Cgroups not sampled for this long are forgotten.
const FORGET_AFTER_NANOS: i64 = 2 * MAX_WINDOW_NANOS;
const MIN_WINDOW_NANOS: i64 = MIN_WINDOW.as_nanos() as i64;

/// Samples of one cgroup: `(timestamp, cumulative CPU nanoseconds)`, oldest first; the front
/// is the newest one at least [`MIN_WINDOW`] older than the back.
type History = VecDeque<(i64, u64)>;

#[derive(Debug, Default)]
pub struct StatsCache {
    history: Mutex<HashMap<String, History>>,
}

/// One cgroup's figures at a point in time, with its CPU rate.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub timestamp: i64,
    pub stats: CgroupStats,
    pub nano_cores: Option<u64>,
}

/// Read the stats of `paths` now, off the async worker threads (they are file reads).
async fn read_all(cgroups: &Arc<dyn Cgroups>, paths: Vec<String>) -> Vec<(String, i64, CgroupStats)> {
    let cgroups = Arc::clone(cgroups);
    tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .filter_map(|p| {
                let stats = cgroups.stats(&p).ok()?;
                Some((p, now_nanos(), stats))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

impl StatsCache {
    /// Sample every cgroup in `paths` (relative to the cgroup parent).
    pub async fn sample(&self, cgroups: &Arc<dyn Cgroups>, paths: &[String]) -> HashMap<String, Sample> {
        let mut out = HashMap::new();
        let mut wait_until = None::<i64>;
        let mut again = Vec::new();
        for (p, now, stats) in read_all(cgroups, paths.to_vec()).await {
            let (rate, oldest) = self.record(&p, now, stats.cpu_usage_nanos);
            if rate.is_none() {
                let ready = oldest + MIN_WINDOW_NANOS;
                wait_until = Some(wait_until.map_or(ready, |w| w.max(ready)));
                again.push(p.clone());
            }
            out.insert(
                p,
                Sample {
                    timestamp: now,
                    stats,
                    nano_cores: rate,
                },
            );
        }
        if let Some(until) = wait_until {
            let wait = u64::try_from(until - now_nanos()).unwrap_or(0);
            tokio::time::sleep(Duration::from_nanos(wait)).await;
            for (p, now, stats) in read_all(cgroups, again).await {
                let (rate, _) = self.record(&p, now, stats.cpu_usage_nanos);
                out.insert(
                    p,
                    Sample {
                        timestamp: now,
                        stats,
                        nano_cores: rate,
                    },
                );
            }
        }
        self.forget_before(now_nanos() - FORGET_AFTER_NANOS);
        out
    }

    /// Record a sample of `path`; returns the CPU rate over the newest window of at least
    /// [`MIN_WINDOW`] (None when there is none yet) and the time of the oldest sample kept.
    fn record(&self, path: &str, now: i64, usage: u64) -> (Option<u64>, i64) {
        let mut all = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let h = all.entry(path.to_string()).or_default();
        // A counter that went back (a recreated cgroup) or a stale history starts again.
        if h.back()
            .is_some_and(|&(t, u)| u > usage || t > now || now - t > MAX_WINDOW_NANOS)
        {
            h.clear();
        }
        h.push_back((now, usage));
        while h.get(1).is_some_and(|&(t, _)| now - t >= MIN_WINDOW_NANOS) {
            h.pop_front();
        }
        let &(then, before) = h.front().unwrap_or(&(now, usage));
        let dt = now - then;
        let rate = (dt >= MIN_WINDOW_NANOS).then(|| ((usage - before) as u128 * 1_000_000_000 / dt as u128) as u64);
        (rate, then)
    }

    /// Forget cgroups whose newest sample is older than `cutoff`.
    fn forget_before(&self, cutoff: i64) {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, h| h.back().is_some_and(|&(t, _)| t >= cutoff));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.history.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn value(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

pub fn cpu(s: &Sample) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp: s.timestamp,
        usage_core_nano_seconds: value(s.stats.cpu_usage_nanos),
        usage_nano_cores: s.nano_cores.and_then(value),
    }
}

pub fn memory(s: &Sample) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp: s.timestamp,
        working_set_bytes: value(s.stats.memory_working_set_bytes),
        usage_bytes: value(s.stats.memory_usage_bytes),
        rss_bytes: value(s.stats.memory_rss_bytes),
        ..Default::default()
    }
}

/// Bytes and inodes used under `dir` (a container's writable layer), without following
/// symlinks or leaving the filesystem.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = root.dev();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            bytes += md.blocks() * 512;
            inodes += 1;
            if md.is_dir() && md.dev() == dev {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

pub fn writable_layer(upper: &Path) -> cri::FilesystemUsage {
    let (bytes, inodes) = disk_usage(upper);
    cri::FilesystemUsage {
        timestamp: now_nanos(),
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: upper.display().to_string(),
        }),
        used_bytes: value(bytes),
        inodes_used: value(inodes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_span_at_least_the_minimum_window() {
        const S: i64 = 1_000_000_000;
        let c = StatsCache::default();
        assert_eq!(c.record("a", S, 0), (None, S));
        // 100 ms later: too short a window for a rate.
        assert_eq!(c.record("a", S + S / 10, 50_000_000).0, None);
        // One second after the first: 0.5 CPU-seconds, half a core.
        assert_eq!(c.record("a", 2 * S, 500_000_000).0, Some(500_000_000));
        // 100 ms later still: the window reaches back to the newest sample at least a second
        // old (at 1.1 s), never just the last 100 ms.
        assert_eq!(c.record("a", 2 * S + S / 10, 600_000_000).0, Some(550_000_000));
        // A counter that went back (a recreated cgroup): no rate until a new window is full.
        assert_eq!(c.record("a", 3 * S, 10).0, None);
        // Too long since the last sample: no rate.
        assert_eq!(c.record("a", 200 * S, 20).0, None);
        c.forget_before(201 * S);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn disk_usage_counts_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), vec![1u8; 10_000]).unwrap();
        let (bytes, inodes) = disk_usage(d.path());
        assert_eq!(inodes, 2);
        assert!(bytes >= 10_000);
    }
}
