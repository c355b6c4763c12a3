//! CPU, memory, process and writable-layer statistics from the cgroups and the container
//! directories, in CRI's shapes.
//!
//! CPU *rates* (`usage_nano_cores`, what `top` shows) need two samples. The last sample of
//! every cgroup is kept; a request computes the rate since it. Cgroups seen for the first time
//! (or not for a minute) are sampled again after a short pause, all together, so one request
//! costs at most one 100ms wait whatever the number of pods.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use minilet_proto::runtime::v1 as cri;

use crate::cgroups::{CgroupStats, Cgroups};
use crate::runtime::spec::now_nanos;

const RESAMPLE_AFTER: i64 = 60_000_000_000;
const SHORT_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct StatsCache {
    last: Mutex<HashMap<String, (i64, u64)>>,
}

/// One cgroup's figures at a point in time, with its CPU rate.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub timestamp: i64,
    pub stats: CgroupStats,
    pub nano_cores: Option<u64>,
}

impl StatsCache {
    /// Sample every cgroup in `paths` (relative to the cgroup parent).
    pub async fn sample(&self, cgroups: &dyn Cgroups, paths: &[String]) -> HashMap<String, Sample> {
        let mut out = HashMap::new();
        let mut again = Vec::new();
        for p in paths {
            let Ok(stats) = cgroups.stats(p) else { continue };
            let now = now_nanos();
            let rate = self.rate(p, now, stats.cpu_usage_nanos);
            if rate.is_none() {
                again.push(p.clone());
            }
            out.insert(
                p.clone(),
                Sample {
                    timestamp: now,
                    stats,
                    nano_cores: rate,
                },
            );
        }
        if !again.is_empty() {
            tokio::time::sleep(SHORT_INTERVAL).await;
            for p in again {
                let Ok(stats) = cgroups.stats(&p) else { continue };
                let now = now_nanos();
                let rate = self.rate(&p, now, stats.cpu_usage_nanos);
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
        out
    }

    /// The CPU rate since the previous sample of `path`, recording this one.
    fn rate(&self, path: &str, now: i64, usage: u64) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let prev = last.insert(path.to_string(), (now, usage));
        let (then, before) = prev?;
        let dt = now - then;
        if dt <= 0 || dt > RESAMPLE_AFTER || usage < before {
            return None;
        }
        Some(((usage - before) as u128 * 1_000_000_000 / dt as u128) as u64)
    }

    /// Forget cgroups that no longer exist (called with the live ones).
    pub fn retain(&self, live: &[String]) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live.contains(k));
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
    fn rates_need_two_close_samples() {
        let c = StatsCache::default();
        assert_eq!(c.rate("a", 1_000_000_000, 0), None);
        // 0.5 CPU-seconds over one second: half a core.
        assert_eq!(c.rate("a", 2_000_000_000, 500_000_000), Some(500_000_000));
        // Too long since the last sample: no rate.
        assert_eq!(c.rate("a", 200_000_000_000, 600_000_000), None);
        c.retain(&[]);
        assert_eq!(c.rate("a", 201_000_000_000, 700_000_000), None);
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
