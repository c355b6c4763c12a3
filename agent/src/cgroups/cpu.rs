//! CPU: shares/weight, CFS quota and period, and usage, for both versions.

use std::path::Path;

use super::{CgroupError, Resources, keyed_value, read_optional, write_file};

const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;

fn clamp_shares(shares: u64) -> u64 {
    shares.clamp(MIN_SHARES, MAX_SHARES)
}

/// v1 `cpu.shares` to v2 `cpu.weight` as runc/crun/the kubelet convert it:
/// `1 + ((shares - 2) * 9999) / 262142`, with shares clamped to [2, 262144] (so weight is in
/// [1, 10000]).
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + ((clamp_shares(shares) - MIN_SHARES) * 9999) / (MAX_SHARES - MIN_SHARES)
}

/// A negative quota means "unlimited" just like `None`.
fn limited_quota(res: &Resources) -> Option<i64> {
    res.cpu_quota.filter(|q| *q >= 0)
}

/// Whether the unlimited quota is already what `file` says (or the file is absent), judged by
/// `unlimited` on its content. Writing the quota, even the same value, makes the kernel check
/// the bandwidth of every cgroup on the node (`__cfs_schedulable` walks the whole tree), so
/// an unlimited quota is only written where it changes something: with hundreds of pods,
/// that write was a large part of creating a pod's cgroups.
fn already_unlimited(dir: &Path, file: &str, unlimited: impl Fn(&str) -> bool) -> Result<bool, CgroupError> {
    Ok(read_optional(dir, file)?.is_none_or(|content| unlimited(content.trim())))
}

/// v1: `cpu.shares`, `cpu.cfs_period_us`, `cpu.cfs_quota_us` (-1 = unlimited).
pub(crate) fn apply_v1(dir: &Path, res: &Resources) -> Result<(), CgroupError> {
    if let Some(shares) = res.cpu_shares {
        write_file(dir, "cpu.shares", &clamp_shares(shares).to_string())?;
    }
    let quota = limited_quota(res);
    let write_quota = || match quota {
        Some(q) => write_file(dir, "cpu.cfs_quota_us", &q.to_string()),
        None if already_unlimited(dir, "cpu.cfs_quota_us", |c| c == "-1")? => Ok(()),
        None => write_file(dir, "cpu.cfs_quota_us", "-1"),
    };
    let Some(period) = res.cpu_period else {
        return write_quota();
    };
    let period = period.to_string();
    // Period first (as runc does): the kernel checks quota/period against the parent's limit,
    // so a shorter period with the old quota can be refused (EINVAL); then set the quota first
    // and retry the period.
    match write_file(dir, "cpu.cfs_period_us", &period) {
        Ok(()) => write_quota(),
        Err(CgroupError::Write { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            write_quota()?;
            write_file(dir, "cpu.cfs_period_us", &period)
        }
        Err(e) => Err(e),
    }
}

/// v2: `cpu.weight` and `cpu.max` ("quota period", "max period", or without the period to
/// keep the current one).
pub(crate) fn apply_v2(dir: &Path, res: &Resources) -> Result<(), CgroupError> {
    if let Some(shares) = res.cpu_shares {
        write_file(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
    }
    let quota = limited_quota(res);
    let mut value = match quota {
        Some(q) => q.to_string(),
        None => "max".to_string(),
    };
    if let Some(period) = res.cpu_period {
        value.push(' ');
        value.push_str(&period.to_string());
    }
    let unlimited = |content: &str| {
        let mut fields = content.split_whitespace();
        fields.next() == Some("max") && res.cpu_period.is_none_or(|p| fields.next() == Some(&p.to_string()))
    };
    match quota {
        Some(_) => write_file(dir, "cpu.max", &value),
        None if already_unlimited(dir, "cpu.max", unlimited)? => Ok(()),
        None => write_file(dir, "cpu.max", &value),
    }
}

/// v1 `cpuacct.usage` (ns); absent => 0.
pub(crate) fn usage_v1(dir: &Path) -> Result<u64, CgroupError> {
    super::read_u64_optional(dir, "cpuacct.usage")
}

/// v2 `cpu.stat` `usage_usec` in ns; absent => 0.
pub(crate) fn usage_v2(dir: &Path) -> Result<u64, CgroupError> {
    Ok(read_optional(dir, "cpu.stat")?
        .and_then(|s| keyed_value(&s, "usage_usec"))
        .unwrap_or(0)
        .saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fixture(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            fs::write(dir.path().join(f), "initial-garbage-longer-than-values").unwrap();
        }
        dir
    }

    fn read(dir: &Path, f: &str) -> String {
        fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn weight_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1, "clamped up to 2");
        assert_eq!(shares_to_weight(u64::MAX), 10_000, "clamped down to 262144");
        assert_eq!(shares_to_weight(102), 4);
    }

    #[test]
    fn v1_limits() {
        let d = fixture(&["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us"]);
        let res = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            ..Default::default()
        };
        apply_v1(d.path(), &res).unwrap();
        assert_eq!(read(d.path(), "cpu.shares"), "512");
        assert_eq!(read(d.path(), "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(d.path(), "cpu.cfs_period_us"), "100000");
    }

    #[test]
    fn v1_unlimited_and_clamp() {
        let d = fixture(&["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us"]);
        let res = Resources {
            cpu_shares: Some(1),
            ..Default::default()
        };
        apply_v1(d.path(), &res).unwrap();
        assert_eq!(read(d.path(), "cpu.shares"), "2");
        assert_eq!(read(d.path(), "cpu.cfs_quota_us"), "-1");
        // None period: left alone.
        assert_eq!(
            read(d.path(), "cpu.cfs_period_us"),
            "initial-garbage-longer-than-values"
        );
        apply_v1(
            d.path(),
            &Resources {
                cpu_quota: Some(-5),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(d.path(), "cpu.cfs_quota_us"), "-1");
    }

    #[test]
    fn an_unlimited_quota_already_there_is_not_written_again() {
        // The kernel's files end in a newline; a write here would leave the value without it.
        let d = fixture(&["cpu.shares"]);
        fs::write(d.path().join("cpu.cfs_quota_us"), "-1\n").unwrap();
        apply_v1(d.path(), &Resources::default()).unwrap();
        assert_eq!(read(d.path(), "cpu.cfs_quota_us"), "-1\n");
        fs::write(d.path().join("cpu.cfs_quota_us"), "20000\n").unwrap();
        apply_v1(d.path(), &Resources::default()).unwrap();
        assert_eq!(read(d.path(), "cpu.cfs_quota_us"), "-1", "a limit is lifted");

        let d = fixture(&["cpu.weight"]);
        fs::write(d.path().join("cpu.max"), "max 100000\n").unwrap();
        apply_v2(d.path(), &Resources::default()).unwrap();
        assert_eq!(read(d.path(), "cpu.max"), "max 100000\n");
        let period = Resources {
            cpu_period: Some(50_000),
            ..Default::default()
        };
        apply_v2(d.path(), &period).unwrap();
        assert_eq!(read(d.path(), "cpu.max"), "max 50000", "a new period is written");
        fs::write(d.path().join("cpu.max"), "20000 100000\n").unwrap();
        apply_v2(d.path(), &Resources::default()).unwrap();
        assert_eq!(read(d.path(), "cpu.max"), "max", "a limit is lifted");
    }

    #[test]
    fn v1_unlimited_without_bandwidth_files_is_noop_but_limit_fails() {
        let d = fixture(&["cpu.shares"]);
        apply_v1(d.path(), &Resources::default()).unwrap();
        let err = apply_v1(
            d.path(),
            &Resources {
                cpu_quota: Some(1000),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, CgroupError::Write { ref value, .. } if value == "1000"),
            "{err}"
        );
    }

    #[test]
    fn v2_limits() {
        let d = fixture(&["cpu.weight", "cpu.max"]);
        let res = Resources {
            cpu_shares: Some(1024),
            cpu_quota: Some(25_000),
            cpu_period: Some(100_000),
            ..Default::default()
        };
        apply_v2(d.path(), &res).unwrap();
        assert_eq!(read(d.path(), "cpu.weight"), "39");
        assert_eq!(read(d.path(), "cpu.max"), "25000 100000");

        apply_v2(
            d.path(),
            &Resources {
                cpu_period: Some(100_000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(d.path(), "cpu.max"), "max 100000");
        apply_v2(d.path(), &Resources::default()).unwrap();
        assert_eq!(read(d.path(), "cpu.max"), "max 100000", "already unlimited: left alone");
        assert_eq!(read(d.path(), "cpu.weight"), "39", "None shares: left alone");
    }

    #[test]
    fn usage() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(usage_v1(d.path()).unwrap(), 0);
        assert_eq!(usage_v2(d.path()).unwrap(), 0);
        fs::write(d.path().join("cpuacct.usage"), "123456789\n").unwrap();
        fs::write(
            d.path().join("cpu.stat"),
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
        )
        .unwrap();
        assert_eq!(usage_v1(d.path()).unwrap(), 123_456_789);
        assert_eq!(usage_v2(d.path()).unwrap(), 2_500_000);
        fs::write(d.path().join("cpuacct.usage"), "nonsense").unwrap();
        assert!(usage_v1(d.path()).is_err());
    }
}
