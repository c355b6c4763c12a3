//! A pod's own volumes, as the kubelet's volume plugins lay them out under the pod directory
//! (`volumes/<plugin>/<name>`): emptyDirs, and volumes whose files the node writes
//! (downwardAPI, projected), plus the pod's `fsGroup` applied to both.
//!
//! Written files follow the kubelet's atomic writer: the files live in a timestamped
//! directory `..<time>`, `..data` links to it, and each top-level entry is a link through
//! `..data`. A rewrite builds a new directory and swaps `..data` with one rename, so a
//! container reading the volume sees the old set or the new one, never a mixture.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::file_modes;

/// The kubelet's plugin directory names (`volumes/<plugin>/<name>`).
pub const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";
pub const DOWNWARD_API_PLUGIN: &str = "kubernetes.io~downward-api";
pub const PROJECTED_PLUGIN: &str = "kubernetes.io~projected";

const DATA_LINK: &str = "..data";

/// An emptyDir volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyDir {
    pub name: String,
    /// `medium: Memory`: a tmpfs in the pod's mount namespace.
    pub memory: bool,
    /// `sizeLimit` in bytes: the tmpfs size for memory-backed ones.
    pub size_limit: Option<u64>,
}

/// A volume whose content the node writes (downwardAPI, projected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVolume {
    /// [`DOWNWARD_API_PLUGIN`] or [`PROJECTED_PLUGIN`].
    pub plugin: &'static str,
    pub name: String,
    pub files: Vec<VolumeFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Relative, without `..` (checked by validation and again by [`write_files`]).
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// `fsGroupChangePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FsGroupChangePolicy {
    /// Change ownership and permissions of everything in the volume each time it is set up.
    #[default]
    Always,
    /// Only when the volume's root does not already have the group and permissions.
    OnRootMismatch,
}

/// The pod's `securityContext.fsGroup`, as applied to its volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsGroup {
    pub gid: u32,
    #[serde(default)]
    pub policy: FsGroupChangePolicy,
}

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// Give a volume to the pod's fsGroup as the kubelet's `SetVolumeOwnership` does: every file
/// and directory gets the group, group read (and write unless `read_only`), directories also
/// group search and setgid, so what a container creates there stays in the group. Symbolic
/// links are neither followed nor changed.
pub fn set_ownership(root: &Path, group: FsGroup, read_only: bool) -> io::Result<()> {
    if group.policy == FsGroupChangePolicy::OnRootMismatch && root_matches(root, group.gid, read_only)? {
        return Ok(());
    }
    walk(root, &mut |path, md| change(path, md, group.gid, read_only))
}

fn root_matches(root: &Path, gid: u32, read_only: bool) -> io::Result<bool> {
    let md = fs::symlink_metadata(root)?;
    let mask = if read_only { RO_MASK } else { RW_MASK } | SETGID | EXEC_MASK;
    Ok(md.gid() == gid && md.mode() & mask == mask)
}

fn change(path: &Path, md: &fs::Metadata, gid: u32, read_only: bool) -> io::Result<()> {
    if md.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, None, Some(gid))?;
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if md.is_dir() {
        mask |= SETGID | EXEC_MASK;
    }
    // chown cleared setuid/setgid on files; keep the other bits and add the mask.
    let mode = md.mode() & 0o7777;
    fs::set_permissions(path, fs::Permissions::from_mode(mode | mask))
}

/// Depth-first over `root` and below, without following symbolic links.
fn walk(root: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<()>) -> io::Result<()> {
    let md = fs::symlink_metadata(root)?;
    f(root, &md)?;
    if md.is_dir() {
        for entry in fs::read_dir(root)? {
            walk(&entry?.path(), f)?;
        }
    }
    Ok(())
}

/// Where a volume of `plugin` lives in a pod directory.
pub fn volume_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(plugin).join(name)
}

/// Write (or rewrite) a file volume at `dir` with the atomic writer's layout; old files that
/// are no longer part of the set disappear with the old timestamped directory.
pub fn write_files(dir: &Path, files: &[VolumeFile], group: Option<FsGroup>) -> io::Result<()> {
    for f in files {
        check_relative(&f.path)?;
    }
    file_modes::create_dir_all(dir, 0o755)?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let staged = dir.join(&stamp);
    file_modes::create_dir_all(&staged, 0o755)?;
    for f in files {
        let path = staged.join(&f.path);
        if let Some(parent) = path.parent() {
            file_modes::create_dir_all(parent, 0o755)?;
        }
        fs::write(&path, &f.content)?;
        file_modes::set_mode(&path, f.mode & 0o777)?;
    }
    if let Some(g) = group {
        // A fresh directory: nothing to compare the root against.
        set_ownership(
            &staged,
            FsGroup {
                policy: FsGroupChangePolicy::Always,
                ..g
            },
            true,
        )?;
    }
    let old = fs::read_link(dir.join(DATA_LINK)).ok();
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link)?;
    fs::rename(&tmp_link, dir.join(DATA_LINK))?;
    // Top-level entries: a link through ..data for each; stale ones removed.
    let mut tops: Vec<&str> = files.iter().filter_map(|f| f.path.split('/').next()).collect();
    tops.sort_unstable();
    tops.dedup();
    for top in &tops {
        let link = dir.join(top);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_LINK).join(top), &link)?;
        }
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("..") && !tops.contains(&name.as_ref()) {
            fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        // Only a directory of our own naming, inside `dir`.
        if old.components().count() == 1 && old.to_string_lossy().starts_with("..") {
            fs::remove_dir_all(dir.join(old))?;
        }
    }
    if let Some(g) = group {
        change(dir, &fs::symlink_metadata(dir)?, g.gid, true)?;
    }
    Ok(())
}

fn check_relative(path: &str) -> io::Result<()> {
    let p = Path::new(path);
    let bad = path.is_empty() || path.starts_with("..") || p.components().any(|c| !matches!(c, Component::Normal(_)));
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("volume file path {path:?} must be relative and may not contain '..'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str, mode: u32) -> VolumeFile {
        VolumeFile {
            path: path.into(),
            content: content.into(),
            mode,
        }
    }

    #[test]
    fn atomic_layout_and_rewrite() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        write_files(
            &dir,
            &[file("labels", "a=\"b\"", 0o644), file("sub/name", "p", 0o400)],
            None,
        )
        .unwrap();
        assert_eq!(fs::read_to_string(dir.join("labels")).unwrap(), "a=\"b\"");
        assert_eq!(fs::read_to_string(dir.join("sub/name")).unwrap(), "p");
        assert!(
            fs::symlink_metadata(dir.join("labels"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let target = fs::read_link(dir.join(DATA_LINK)).unwrap();
        let md = fs::metadata(dir.join(&target).join("sub/name")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o400);

        write_files(&dir, &[file("name", "q", 0o644)], None).unwrap();
        assert_eq!(fs::read_to_string(dir.join("name")).unwrap(), "q");
        assert!(fs::symlink_metadata(dir.join("labels")).is_err(), "stale link removed");
        assert!(!dir.join(&target).exists(), "old generation removed");
        let generations = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().starts_with("..") && n != DATA_LINK
            })
            .count();
        assert_eq!(generations, 1);
    }

    #[test]
    fn paths_outside_the_volume_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/x", "a/../../x", "..data", ""] {
            assert!(
                write_files(&d.path().join("v"), &[file(bad, "x", 0o644)], None).is_err(),
                "{bad}"
            );
        }
        assert!(!d.path().join("x").exists());
    }

    #[test]
    fn ownership_as_the_kubelet_sets_it() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("v");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/f"), "x").unwrap();
        file_modes::set_mode(&root.join("sub/f"), 0o600).unwrap();
        file_modes::set_mode(&root, 0o755).unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.join("link")).unwrap();
        let gid = nix::unistd::getgid().as_raw();
        let g = FsGroup {
            gid,
            policy: FsGroupChangePolicy::Always,
        };
        set_ownership(&root, g, false).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o7777, 0o2775);
        assert_eq!(fs::metadata(root.join("sub/f")).unwrap().mode() & 0o7777, 0o660);
        assert!(root_matches(&root, gid, false).unwrap());

        // OnRootMismatch leaves the contents alone when the root already matches.
        file_modes::set_mode(&root.join("sub/f"), 0o600).unwrap();
        let lazy = FsGroup {
            policy: FsGroupChangePolicy::OnRootMismatch,
            ..g
        };
        set_ownership(&root, lazy, false).unwrap();
        assert_eq!(fs::metadata(root.join("sub/f")).unwrap().mode() & 0o7777, 0o600);
        set_ownership(&root, g, false).unwrap();
        assert_eq!(fs::metadata(root.join("sub/f")).unwrap().mode() & 0o7777, 0o660);
    }
}
