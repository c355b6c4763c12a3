//! Memory: limit, OOM group, usage/working set/RSS and OOM-kill counter, for both versions.

use std::path::Path;

use super::{
    CgroupError, CgroupStats, Resources, keyed_value, read_optional, read_u64_optional, write_file, write_if_exists,
};

fn limit(res: &Resources) -> Option<i64> {
    res.memory_limit.filter(|l| *l >= 0)
}

/// v1 `memory.limit_in_bytes` (-1 = unlimited; the kernel rounds down to the page size).
pub(crate) fn apply_v1(dir: &Path, res: &Resources) -> Result<(), CgroupError> {
    match limit(res) {
        Some(l) => write_file(dir, "memory.limit_in_bytes", &l.to_string()),
        None => write_if_exists(dir, "memory.limit_in_bytes", "-1"),
    }
}

/// v2 `memory.max` (`max` = unlimited), and `memory.swap.max` 0 where the kernel has swap
/// accounting: the kubelet's default swap behaviour (`NoSwap`) keeps workloads out of swap.
pub(crate) fn apply_v2(dir: &Path, res: &Resources) -> Result<(), CgroupError> {
    match limit(res) {
        Some(l) => write_file(dir, "memory.max", &l.to_string())?,
        None => write_if_exists(dir, "memory.max", "max")?,
    }
    write_if_exists(dir, "memory.swap.max", "0")
}

/// v2 `memory.oom.group` = 1 when the file exists: the OOM killer then takes the whole
/// cgroup, not one process of it (kubelet's default for containers).
pub(crate) fn set_oom_group_v2(dir: &Path) -> Result<(), CgroupError> {
    write_if_exists(dir, "memory.oom.group", "1")
}

/// Fill the memory fields of `stats` from v1 files; absent files leave zeros.
pub(crate) fn stats_v1(dir: &Path, stats: &mut CgroupStats) -> Result<(), CgroupError> {
    let usage = read_u64_optional(dir, "memory.usage_in_bytes")?;
    let stat = read_optional(dir, "memory.stat")?.unwrap_or_default();
    let inactive_file = keyed_value(&stat, "total_inactive_file").unwrap_or(0);
    stats.memory_usage_bytes = usage;
    stats.memory_working_set_bytes = usage.saturating_sub(inactive_file);
    stats.memory_rss_bytes = keyed_value(&stat, "total_rss").unwrap_or(0);
    stats.oom_kills = read_optional(dir, "memory.oom_control")?
        .and_then(|s| keyed_value(&s, "oom_kill"))
        .unwrap_or(0);
    Ok(())
}

/// Fill the memory fields of `stats` from v2 files; absent files leave zeros.
pub(crate) fn stats_v2(dir: &Path, stats: &mut CgroupStats) -> Result<(), CgroupError> {
    let usage = read_u64_optional(dir, "memory.current")?;
    let stat = read_optional(dir, "memory.stat")?.unwrap_or_default();
    let inactive_file = keyed_value(&stat, "inactive_file").unwrap_or(0);
    stats.memory_usage_bytes = usage;
    stats.memory_working_set_bytes = usage.saturating_sub(inactive_file);
    stats.memory_rss_bytes = keyed_value(&stat, "anon").unwrap_or(0);
    stats.oom_kills = read_optional(dir, "memory.events")?
        .and_then(|s| keyed_value(&s, "oom_kill"))
        .unwrap_or(0);
    Ok(())
}

/// The OOM-kill counter of whichever version's file `dir` holds (v2 `memory.events`, v1
/// `memory.oom_control`); `None` if neither exists (not a memory hierarchy, or gone).
pub(crate) fn oom_kills_any(dir: &Path) -> Result<Option<u64>, CgroupError> {
    for file in ["memory.events", "memory.oom_control"] {
        if let Some(text) = read_optional(dir, file)? {
            return Ok(Some(keyed_value(&text, "oom_kill").unwrap_or(0)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const V1_STAT: &str = "cache 1081344\nrss 135168\nrss_huge 0\nshmem 0\nmapped_file 675840\n\
        inactive_anon 0\nactive_anon 135168\ninactive_file 540672\nactive_file 540672\n\
        hierarchical_memory_limit 9223372036854771712\ntotal_cache 2162688\ntotal_rss 270336\n\
        total_inactive_anon 0\ntotal_active_anon 270336\ntotal_inactive_file 1081344\n\
        total_active_file 1081344\n";
    const V1_OOM: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    const V2_STAT: &str = "anon 4218880\nfile 10522624\nkernel 589824\nkernel_stack 49152\n\
        sock 0\nshmem 0\nfile_mapped 4866048\nactive_anon 4177920\ninactive_file 6533120\n\
        active_file 3989504\nunevictable 0\n";
    const V2_EVENTS: &str = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 1\n";

    #[test]
    fn apply_v1_v2() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for f in ["memory.limit_in_bytes", "memory.max"] {
            fs::write(p.join(f), "9223372036854771712").unwrap();
        }
        let res = Resources {
            memory_limit: Some(64 << 20),
            ..Default::default()
        };
        apply_v1(p, &res).unwrap();
        apply_v2(p, &res).unwrap();
        assert!(
            !p.join("memory.swap.max").exists(),
            "no swap accounting: nothing written"
        );
        fs::write(p.join("memory.swap.max"), "max").unwrap();
        apply_v2(p, &res).unwrap();
        assert_eq!(fs::read_to_string(p.join("memory.swap.max")).unwrap(), "0");
        assert_eq!(fs::read_to_string(p.join("memory.limit_in_bytes")).unwrap(), "67108864");
        assert_eq!(fs::read_to_string(p.join("memory.max")).unwrap(), "67108864");
        apply_v1(p, &Resources::default()).unwrap();
        apply_v2(p, &Resources::default()).unwrap();
        assert_eq!(fs::read_to_string(p.join("memory.limit_in_bytes")).unwrap(), "-1");
        assert_eq!(fs::read_to_string(p.join("memory.max")).unwrap(), "max");
    }

    #[test]
    fn oom_group() {
        let d = tempfile::tempdir().unwrap();
        set_oom_group_v2(d.path()).unwrap(); // absent: nothing to do
        assert!(!d.path().join("memory.oom.group").exists());
        fs::write(d.path().join("memory.oom.group"), "0\n").unwrap();
        set_oom_group_v2(d.path()).unwrap();
        assert_eq!(fs::read_to_string(d.path().join("memory.oom.group")).unwrap(), "1");
    }

    #[test]
    fn stats_v1_sample() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::write(p.join("memory.usage_in_bytes"), "5000000\n").unwrap();
        fs::write(p.join("memory.stat"), V1_STAT).unwrap();
        fs::write(p.join("memory.oom_control"), V1_OOM).unwrap();
        let mut s = CgroupStats::default();
        stats_v1(p, &mut s).unwrap();
        assert_eq!(s.memory_usage_bytes, 5_000_000);
        assert_eq!(s.memory_working_set_bytes, 5_000_000 - 1_081_344);
        assert_eq!(s.memory_rss_bytes, 270_336);
        assert_eq!(s.oom_kills, 3);
        // Inactive file larger than usage (racy reads): floored at 0.
        fs::write(p.join("memory.usage_in_bytes"), "1000\n").unwrap();
        stats_v1(p, &mut s).unwrap();
        assert_eq!(s.memory_working_set_bytes, 0);
        assert_eq!(oom_kills_any(p).unwrap(), Some(3));
    }

    #[test]
    fn stats_v2_sample() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::write(p.join("memory.current"), "16777216\n").unwrap();
        fs::write(p.join("memory.stat"), V2_STAT).unwrap();
        fs::write(p.join("memory.events"), V2_EVENTS).unwrap();
        let mut s = CgroupStats::default();
        stats_v2(p, &mut s).unwrap();
        assert_eq!(s.memory_usage_bytes, 16_777_216);
        assert_eq!(s.memory_working_set_bytes, 16_777_216 - 6_533_120);
        assert_eq!(s.memory_rss_bytes, 4_218_880);
        assert_eq!(s.oom_kills, 2);
        assert_eq!(oom_kills_any(p).unwrap(), Some(2));
    }

    #[test]
    fn stats_missing_files_are_zero() {
        let d = tempfile::tempdir().unwrap();
        let mut s = CgroupStats::default();
        stats_v1(d.path(), &mut s).unwrap();
        stats_v2(d.path(), &mut s).unwrap();
        assert_eq!(s, CgroupStats::default());
        assert_eq!(oom_kills_any(d.path()).unwrap(), None);
    }
}
