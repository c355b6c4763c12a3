//! Living beside systemd: on a host whose PID 1 is systemd, systemd owns the cgroup tree and
//! may move, reshape or remove what others create in it, unless a unit's subtree is
//! delegated (`Delegate=yes`). The agent does not manage units itself (no systemd cgroup
//! driver); it checks at start that its cgroup parent lies in a delegated subtree and warns
//! when it does not (the README shows the unit and the `systemd-run` line that fix it).
//!
//! systemd marks a delegated unit's cgroup with the `trusted.delegate` extended attribute
//! (v246), and `user.delegate` too (v250, for unprivileged managers), on cgroup v2; v1
//! hierarchies carry no such mark, so there the agent can only say it cannot tell.

use std::path::{Path, PathBuf};

use super::CgroupVersion;

/// Exists when systemd runs as PID 1 (what sd_booted(3) checks).
pub const SYSTEMD_RUNNING: &str = "/run/systemd/system";

/// The extended attributes systemd sets on a delegated unit's cgroup.
const DELEGATE_XATTRS: [&str; 2] = ["trusted.delegate", "user.delegate"];

/// What the agent found about its place in systemd's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delegation {
    /// PID 1 is not systemd: nobody else manages the cgroups.
    NoSystemd,
    /// This cgroup (the parent or an ancestor of it) is a delegated unit's.
    Delegated(PathBuf),
    /// Under systemd, and neither the parent nor an ancestor below the root is delegated.
    NotDelegated(PathBuf),
    /// Under systemd on cgroup v1, which carries no delegation mark.
    Unknown,
}

/// Where the agent stands: `systemd_marker` is [`SYSTEMD_RUNNING`] outside tests, `parent`
/// the agent's cgroup parent directory, `mount` the cgroup2 mount point (its root cgroup is
/// never a unit's), and `xattr` reads one extended attribute of a directory.
pub fn check(
    systemd_marker: &Path,
    version: CgroupVersion,
    parent: &Path,
    mount: &Path,
    xattr: impl Fn(&Path, &str) -> Option<Vec<u8>>,
) -> Delegation {
    if !systemd_marker.is_dir() {
        return Delegation::NoSystemd;
    }
    if version == CgroupVersion::V1 {
        return Delegation::Unknown;
    }
    let delegated = parent
        .ancestors()
        .take_while(|d| *d != mount && d.starts_with(mount))
        .find(|d| {
            DELEGATE_XATTRS
                .iter()
                .any(|name| xattr(d, name).is_some_and(|v| v.trim_ascii() == b"1"))
        });
    match delegated {
        Some(d) => Delegation::Delegated(d.to_path_buf()),
        None => Delegation::NotDelegated(parent.to_path_buf()),
    }
}

/// [`check`] on this host, logged: a warning when systemd may interfere.
pub fn log_delegation(version: CgroupVersion, parent: &Path) {
    let read = |dir: &Path, name: &str| xattr::get(dir, name).ok().flatten();
    match check(
        Path::new(SYSTEMD_RUNNING),
        version,
        parent,
        Path::new(super::CGROUP_ROOT),
        read,
    ) {
        Delegation::NoSystemd => {}
        Delegation::Delegated(at) => {
            tracing::info!(unit_cgroup = %at.display(), "running under systemd in a delegated cgroup")
        }
        Delegation::NotDelegated(parent) => tracing::warn!(
            parent = %parent.display(),
            "running under systemd in a cgroup it has not delegated: systemd may move or remove the \
             pods' cgroups. Run the agent in a unit with Delegate=yes (see the README)"
        ),
        Delegation::Unknown => tracing::info!(
            "running under systemd on cgroup v1, where delegation cannot be checked: run the agent \
             in a unit with Delegate=yes (see the README)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A systemd host (the marker directory), a cgroup mount at `/sys/fs/cgroup`, and
    /// xattrs from a table.
    fn under_systemd(xattrs: &[(&str, &str, &str)], parent: &str) -> Delegation {
        let marker = tempfile::tempdir().unwrap();
        let table: HashMap<(PathBuf, String), Vec<u8>> = xattrs
            .iter()
            .map(|(d, n, v)| ((PathBuf::from(d), n.to_string()), v.as_bytes().to_vec()))
            .collect();
        check(
            marker.path(),
            CgroupVersion::V2,
            Path::new(parent),
            Path::new("/sys/fs/cgroup"),
            |d, n| table.get(&(d.to_path_buf(), n.to_string())).cloned(),
        )
    }

    const UNIT: &str = "/sys/fs/cgroup/system.slice/minilet.service";
    const PARENT: &str = "/sys/fs/cgroup/system.slice/minilet.service/kubepods";

    #[test]
    fn no_systemd_no_question() {
        let missing = tempfile::tempdir().unwrap().path().join("system");
        let d = check(
            &missing,
            CgroupVersion::V2,
            Path::new(PARENT),
            Path::new("/sys/fs/cgroup"),
            |_, _| panic!("no xattr is read without systemd"),
        );
        assert_eq!(d, Delegation::NoSystemd);
    }

    #[test]
    fn a_delegated_unit_above_the_parent_is_found() {
        for name in DELEGATE_XATTRS {
            assert_eq!(
                under_systemd(&[(UNIT, name, "1")], PARENT),
                Delegation::Delegated(UNIT.into()),
                "{name}"
            );
        }
        // The parent itself may be the unit's cgroup.
        assert_eq!(
            under_systemd(&[(UNIT, "trusted.delegate", "1")], UNIT),
            Delegation::Delegated(UNIT.into())
        );
    }

    #[test]
    fn no_mark_or_a_mark_outside_the_mount_is_not_delegation() {
        assert_eq!(under_systemd(&[], PARENT), Delegation::NotDelegated(PARENT.into()));
        assert_eq!(
            under_systemd(&[(UNIT, "trusted.delegate", "0")], PARENT),
            Delegation::NotDelegated(PARENT.into())
        );
        // The root cgroup is never a unit's, whatever it carries.
        assert_eq!(
            under_systemd(&[("/sys/fs/cgroup", "trusted.delegate", "1")], PARENT),
            Delegation::NotDelegated(PARENT.into())
        );
        assert_eq!(
            under_systemd(&[("/sys/fs", "trusted.delegate", "1")], PARENT),
            Delegation::NotDelegated(PARENT.into())
        );
    }

    #[test]
    fn v1_cannot_tell() {
        let marker = tempfile::tempdir().unwrap();
        let d = check(
            marker.path(),
            CgroupVersion::V1,
            Path::new(PARENT),
            Path::new("/sys/fs/cgroup"),
            |_, _| None,
        );
        assert_eq!(d, Delegation::Unknown);
    }

    #[test]
    fn real_xattrs_on_a_directory_are_read() {
        // What systemd does on its cgroup, done on a temp dir: trusted.* needs CAP_SYS_ADMIN
        // and a filesystem that stores it.
        let root = tempfile::tempdir().unwrap();
        let unit = root.path().join("minilet.service");
        let parent = unit.join("kubepods");
        std::fs::create_dir_all(&parent).unwrap();
        if let Err(e) = xattr::set(&unit, "trusted.delegate", b"1") {
            crate::test_skip::skip(&format!("cannot set trusted.delegate on {}: {e}", unit.display()));
            return;
        }
        let marker = root.path().join("run-systemd-system");
        std::fs::create_dir(&marker).unwrap();
        let read = |dir: &Path, name: &str| xattr::get(dir, name).ok().flatten();
        assert_eq!(
            check(&marker, CgroupVersion::V2, &parent, root.path(), read),
            Delegation::Delegated(unit.clone())
        );
        xattr::remove(&unit, "trusted.delegate").unwrap();
        assert_eq!(
            check(&marker, CgroupVersion::V2, &parent, root.path(), read),
            Delegation::NotDelegated(parent)
        );
    }
}
