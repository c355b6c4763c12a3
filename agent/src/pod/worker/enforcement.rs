//! What the kubelet enforces on a pod as a whole while it runs: `activeDeadlineSeconds`
//! (the active deadline handler: `DeadlineExceeded`) and the `sizeLimit` of disk-backed
//! emptyDirs (the eviction manager: `Evicted`). Either makes the pod Failed for good, with
//! the kubelet's reason and message, recorded so an agent restart keeps it failed.
//! Memory-backed emptyDirs need no check: their tmpfs is sized to the limit.

use std::path::PathBuf;
use std::time::Duration;

use super::Worker;
use crate::pod::volumes::disk::{self as volumes, EMPTY_DIR_PLUGIN};
use crate::runtime::spec::now_nanos;
use crate::runtime::state::PodFailure;

const DEADLINE_REASON: &str = "DeadlineExceeded";
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";
const EVICTED_REASON: &str = "Evicted";

impl Worker {
    /// When the active deadline passes (Unix nanoseconds), if the pod has one.
    fn active_deadline(&self) -> Option<i64> {
        let secs = self.pod_spec().active_deadline_seconds?;
        Some(
            self.record
                .created_at
                .saturating_add(secs.saturating_mul(1_000_000_000)),
        )
    }

    /// Disk-backed emptyDirs with a size limit: (name, directory, limit in bytes).
    fn limited_empty_dirs(&self) -> Vec<(String, PathBuf, u64, String)> {
        let pod_dir = self.ctx.runtime.layout.pod_dir(&self.uid);
        crate::pod::volumes::empty_dirs(self.pod_spec())
            .into_iter()
            .filter(|e| !e.memory)
            .filter_map(|e| {
                let limit = e.size_limit?;
                let shown = self
                    .pod_spec()
                    .volumes
                    .iter()
                    .flatten()
                    .find(|v| v.name == e.name)
                    .and_then(|v| v.empty_dir.as_ref()?.size_limit.as_ref().map(|q| q.0.clone()))
                    .unwrap_or_default();
                Some((
                    e.name.clone(),
                    volumes::volume_dir(&pod_dir, EMPTY_DIR_PLUGIN, &e.name),
                    limit,
                    shown,
                ))
            })
            .collect()
    }

    /// The next moment a pod-level limit needs a look, if any.
    pub(in crate::pod) fn next_limit_check(&self) -> Option<tokio::time::Instant> {
        if self.record.failure.is_some() {
            return None;
        }
        let now = now_nanos();
        let deadline = self
            .active_deadline()
            .map(|t| tokio::time::Instant::now() + Duration::from_nanos((t - now).max(0) as u64));
        let housekeeping = (!self.limited_empty_dirs().is_empty()).then(|| self.next_usage_check());
        deadline.into_iter().chain(housekeeping).min()
    }

    /// When emptyDir usage is next due: right away the first time, then once per interval.
    fn next_usage_check(&self) -> tokio::time::Instant {
        self.usage_checked_at
            .map_or_else(tokio::time::Instant::now, |t| t + self.ctx.housekeeping_interval)
    }

    /// Check the pod-level limits; true if the pod has just failed one (it is then Failed
    /// with the reason, its containers are being stopped, and nothing will start again).
    pub(in crate::pod) async fn enforce_pod_limits(&mut self) -> bool {
        if self.record.failure.is_some() {
            return false;
        }
        if self.active_deadline().is_some_and(|t| now_nanos() >= t) {
            self.fail_pod(DEADLINE_REASON, DEADLINE_MESSAGE.to_string());
            return true;
        }
        let dirs = self.limited_empty_dirs();
        let now = tokio::time::Instant::now();
        if dirs.is_empty() || self.usage_checked_at.is_some_and(|_| now < self.next_usage_check()) {
            return false;
        }
        self.usage_checked_at = Some(now);
        let over = crate::runtime::blocking("measure emptyDir usage", move || {
            Ok(dirs
                .into_iter()
                .find_map(|(name, dir, limit, shown)| (disk_usage(&dir) > limit).then_some((name, shown))))
        })
        .await
        .ok()
        .flatten();
        let Some((name, limit)) = over else { return false };
        // The eviction manager's words.
        self.fail_pod(
            EVICTED_REASON,
            format!("Usage of EmptyDir volume {name:?} exceeds the limit {limit:?}. "),
        );
        // Evictions do not wait out the grace period.
        self.stop_all(Duration::ZERO, false).await;
        true
    }

    fn fail_pod(&mut self, reason: &str, message: String) {
        tracing::warn!(pod = %self.obj.name, reason, "{message}");
        self.ctx.events.warning(&self.obj, reason, message.clone());
        self.record.failure = Some(PodFailure {
            reason: reason.to_string(),
            message,
        });
        self.save_record();
    }
}

/// Bytes a directory tree holds on disk (allocated blocks, as `du` counts them), without
/// following symbolic links; what cannot be read counts as nothing.
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = md.blocks() * 512;
    if md.is_dir()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for entry in entries.flatten() {
            total += disk_usage(&entry.path());
        }
    }
    total
}
