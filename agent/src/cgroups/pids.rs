//! PIDs: `pids.max` and `pids.current`, the same files in both versions.

use std::path::Path;

use super::{CgroupError, Resources, read_u64_optional, write_file, write_if_exists};

/// `pids.max` (`max` = unlimited; a negative limit counts as unlimited too).
pub(crate) fn apply(dir: &Path, res: &Resources) -> Result<(), CgroupError> {
    match res.pids_limit.filter(|l| *l >= 0) {
        Some(l) => write_file(dir, "pids.max", &l.to_string()),
        None => write_if_exists(dir, "pids.max", "max"),
    }
}

/// `pids.current`; absent => 0.
pub(crate) fn current(dir: &Path) -> Result<u64, CgroupError> {
    read_u64_optional(dir, "pids.current")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn limit_unlimited_current() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        apply(p, &Resources::default()).unwrap(); // no pids.max: unlimited is a no-op
        assert!(
            apply(
                p,
                &Resources {
                    pids_limit: Some(3),
                    ..Default::default()
                }
            )
            .is_err()
        );
        fs::write(p.join("pids.max"), "max").unwrap();
        apply(
            p,
            &Resources {
                pids_limit: Some(100),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(fs::read_to_string(p.join("pids.max")).unwrap(), "100");
        apply(
            p,
            &Resources {
                pids_limit: Some(-1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(fs::read_to_string(p.join("pids.max")).unwrap(), "max");
        assert_eq!(current(p).unwrap(), 0);
        fs::write(p.join("pids.current"), "7\n").unwrap();
        assert_eq!(current(p).unwrap(), 7);
    }
}
