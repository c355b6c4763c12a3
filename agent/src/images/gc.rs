//! Image garbage collection by disk usage, with the kubelet's policy: when the filesystem
//! holding the image store is more than `high` percent full (kubelet
//! `imageGCHighThresholdPercent`, 85), remove unused images, least recently used first,
//! until usage is back under `low` percent (`imageGCLowThresholdPercent`, 80). Images used by
//! any container the node has (running or not) are never removed, nor images used or first
//! seen less than `min_age` ago (`--minimum-image-ttl-duration`, 2m), which also covers an
//! image pulled for a container that is about to be created.
//!
//! Nothing is pinned: the kubelet pins the sandbox ("pause") image, but minilet's pause is a
//! static binary next to `minilet`, not an image.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ImageError, ImageStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    pub high_percent: u8,
    pub low_percent: u8,
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub capacity: u64,
    pub available: u64,
}

impl DiskUsage {
    pub fn of(path: &Path) -> Result<Self, ImageError> {
        let st = nix::sys::statvfs::statvfs(path).map_err(|e| ImageError::io(path, e.into()))?;
        let frsize = st.fragment_size();
        Ok(DiskUsage {
            capacity: st.blocks() * frsize,
            available: st.blocks_available() * frsize,
        })
    }

    /// Percent used, as the kubelet computes it (100 - available/capacity).
    pub fn percent(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        100 - self.available * 100 / self.capacity
    }

    /// Bytes to free to get from here down to `low` percent used.
    pub fn to_free(&self, low: u8) -> u64 {
        let used = self.capacity - self.available;
        used.saturating_sub(self.capacity * low as u64 / 100)
    }
}

/// What one collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub usage_percent: u64,
    pub removed: Vec<String>,
    pub freed: u64,
}

/// The collector: the policy, and when each image was last used (in memory, as the kubelet
/// keeps it; an agent restart counts as a use of everything, which errs on keeping).
pub struct ImageGc {
    store: ImageStore,
    policy: GcPolicy,
    last_used: Mutex<HashMap<String, Instant>>,
    sweep_turn: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl ImageGc {
    pub fn new(store: ImageStore, policy: GcPolicy) -> Self {
        ImageGc {
            store,
            policy,
            last_used: Mutex::new(HashMap::new()),
            sweep_turn: Default::default(),
        }
    }

    /// Wait, without holding a thread, for the agent's turn to sweep the store; the turn lasts
    /// while the guard lives, to be moved into the blocking work (a cancelled caller must not
    /// end it early). A sweep waits on a blocking thread for the store's lock, which a pull
    /// holds (shared) until it has its layers, and that pull needs blocking threads to finish:
    /// one sweep waiting at a time leaves the rest of the (bounded) pool to the pulls.
    pub async fn sweep_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.sweep_turn.clone().lock_owned().await
    }

    /// A container is being created from image `id`.
    pub fn mark_used(&self, id: &str) {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Instant::now());
    }

    /// Collect once if usage is over the high threshold. `in_use` says which image ids
    /// containers use (id → a container); it is asked only when there is work to do.
    pub fn run_once(&self, in_use: impl FnOnce() -> HashMap<String, String>) -> Result<GcReport, ImageError> {
        let usage = DiskUsage::of(self.store.layers_dir().as_path())?;
        let mut report = GcReport {
            usage_percent: usage.percent(),
            ..Default::default()
        };
        // Images not seen before count as used now.
        let images = self.store.list()?;
        let now = Instant::now();
        let last_used: HashMap<String, Instant> = {
            let mut map = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
            for i in &images {
                map.entry(i.id.clone()).or_insert(now);
            }
            map.clone()
        };
        if usage.percent() < self.policy.high_percent as u64 {
            return Ok(report);
        }
        let to_free = usage.to_free(self.policy.low_percent);
        tracing::info!(
            usage_percent = usage.percent(),
            high = self.policy.high_percent,
            low = self.policy.low_percent,
            to_free,
            "image filesystem over the high threshold: removing unused images"
        );
        let in_use = in_use();
        let keep: HashSet<String> = in_use.keys().cloned().collect();
        for id in candidates(&images, &last_used, &keep, self.policy.min_age, now) {
            for name in self.store.remove(&id, &in_use)? {
                report.removed.push(name);
            }
            report.freed += self.store.sweep(&keep)?.bytes;
            if report.freed >= to_free {
                break;
            }
        }
        if report.freed < to_free {
            tracing::warn!(
                freed = report.freed,
                wanted = to_free,
                "image garbage collection could not free enough space: the rest is in use"
            );
        }
        Ok(report)
    }
}

/// Image ids that may go, least recently used first.
fn candidates(
    images: &[super::ImageSummary],
    last_used: &HashMap<String, Instant>,
    keep: &HashSet<String>,
    min_age: Duration,
    now: Instant,
) -> Vec<String> {
    let mut ids: Vec<(Instant, String)> = images
        .iter()
        .filter(|i| !keep.contains(&i.id))
        .map(|i| (last_used.get(&i.id).copied().unwrap_or(now), i.id.clone()))
        .filter(|(used, _)| now.duration_since(*used) >= min_age)
        .collect();
    ids.sort();
    ids.dedup_by(|a, b| a.1 == b.1);
    ids.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_as_the_kubelet_computes_them() {
        let u = DiskUsage {
            capacity: 1000,
            available: 100,
        };
        assert_eq!(u.percent(), 90);
        assert_eq!(u.to_free(80), 100);
        let u = DiskUsage {
            capacity: 1000,
            available: 900,
        };
        assert_eq!(u.percent(), 10);
        assert_eq!(u.to_free(80), 0);
    }

    #[test]
    fn least_recently_used_first_never_in_use_or_young() {
        // In the future, so that "an hour ago" exists on a machine booted a minute ago.
        let now = Instant::now() + Duration::from_secs(4000);
        let img = |id: &str| super::super::ImageSummary {
            name: format!("localhost/{id}:1"),
            id: id.into(),
            manifest_digest: String::new(),
            size: 1,
            created: None,
        };
        let images = vec![img("a"), img("b"), img("c"), img("d")];
        let ago = |s| now - Duration::from_secs(s);
        let last: HashMap<String, Instant> = [("a", ago(600)), ("b", ago(1200)), ("c", ago(3000)), ("d", ago(10))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let keep: HashSet<String> = ["c".to_owned()].into();
        assert_eq!(
            candidates(&images, &last, &keep, Duration::from_secs(120), now),
            vec!["b".to_owned(), "a".to_owned()]
        );
    }
}
