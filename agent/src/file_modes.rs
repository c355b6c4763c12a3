//! The permissions of everything the agent creates under `--root` and `--log-dir`, decided
//! here once instead of at every `mkdir`.
//!
//! The state directory holds image layers and container writable layers with their setuid
//! binaries and device nodes intact (containers need them), and state files with the pods'
//! environment values. Like containerd's and Docker's roots it is reachable by root only
//! (0700): no other user can walk to a setuid binary in a layer, open a device node from an
//! image, or read a secret. Nothing unprivileged needs to walk it: the overlay and bind
//! mounts are made by root, and a container's processes reach their files through those
//! mounts, never through the host path.
//!
//! Logs follow the kubelet and containerd: directories 0755 (`/var/log/pods/<pod>/<container>`),
//! files 0640 root-owned, so other users see which pods exist but not what they print.
//!
//! Modes are exact: each file and directory is chmodded after creation, so neither a wide
//! umask (000) nor a narrow one (077, which would hide `/etc/hosts` from a non-root
//! container) changes them. [`tighten`] brings a state directory made by an older agent to
//! these modes at start-up.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// `--root` and every directory of the agent's below it.
pub const STATE_DIR: u32 = 0o700;
/// State files (`pod.json`, `spec.json` hold env values, i.e. secrets) and diagnostics.
pub const STATE_FILE: u32 = 0o600;
/// Files a container reads through a bind mount (`/etc/hosts`, `/etc/hostname`,
/// `/etc/resolv.conf`): readable by a container running as any user, as the kubelet makes them.
pub const SHARED_FILE: u32 = 0o644;
/// The root of a container's writable layer: it becomes the container's `/`, which every
/// user in the container must be able to walk.
pub const ROOTFS_DIR: u32 = 0o755;
/// emptyDir volumes: world-writable, as the kubelet makes them (a container of any user
/// writes there; the pod directory above keeps other host users out).
pub const EMPTY_DIR: u32 = 0o777;
/// Pod and container log directories (the kubelet's).
pub const LOG_DIR: u32 = 0o755;
/// Container log files (containerd's).
pub const LOG_FILE: u32 = 0o640;

/// `mkdir -p path` where every directory created gets `mode`, and `path` itself ends up with
/// exactly `mode` even if it existed.
pub fn create_dir_all(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(path)?;
    set_mode(path, mode)
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode))
}

/// Create (exclusively) a file with exactly `mode`.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    open_exact(fs::OpenOptions::new().write(true).create_new(true), path, mode)
}

/// Open a container log file for appending, creating it with [`LOG_FILE`].
pub fn open_log(path: &Path) -> io::Result<File> {
    open_exact(fs::OpenOptions::new().create(true).append(true), path, LOG_FILE)
}

/// Open with `opts`; the file ends up with exactly `mode` (fchmod: the umask narrowed it,
/// or it existed with another mode).
fn open_exact(opts: &mut fs::OpenOptions, path: &Path, mode: u32) -> io::Result<File> {
    let file = opts.mode(mode).open(path)?;
    file.set_permissions(Permissions::from_mode(mode))?;
    Ok(file)
}

/// Bring what an older agent left in the state and log directories to these modes: the
/// root, `pods/` and `images/` and the `images/` directories, every pod and container
/// directory and the files in them, every log directory and file. Errors are returned for
/// the root only (without it the agent must not run); the rest is best effort, each failure
/// logged. Bounded by the number of pods and containers, not by image content.
pub fn tighten(root: &Path, log_dir: &Path) -> io::Result<()> {
    set_mode(root, STATE_DIR)?;
    let try_mode = |p: &Path, mode: u32| {
        if let Err(e) = set_mode(p, mode)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot tighten the mode");
        }
    };
    for d in ["pods", "images", "images/blobs", "images/layers", "images/tmp"] {
        try_mode(&root.join(d), STATE_DIR);
    }
    for pod in entries(&root.join("pods")) {
        if !pod.is_dir() {
            continue;
        }
        try_mode(&pod, STATE_DIR);
        for f in entries(&pod)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            try_mode(&f, STATE_FILE);
        }
        let containers = pod.join("containers");
        try_mode(&containers, STATE_DIR);
        for c in entries(&containers) {
            try_mode(&c, STATE_DIR);
            for f in entries(&c).into_iter().filter(|p| p.is_file()) {
                try_mode(&f, STATE_FILE);
            }
        }
    }
    for pod in entries(log_dir).into_iter().filter(|p| p.is_dir()) {
        for container in entries(&pod).into_iter().filter(|p| p.is_dir()) {
            for log in entries(&container).into_iter().filter(|p| p.is_file()) {
                try_mode(&log, LOG_FILE);
            }
        }
    }
    Ok(())
}

/// The paths in a directory; none if it cannot be read.
fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn modes_are_exact_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes this process's file creation mask; tests in this binary
        // that create files set their modes explicitly or do not depend on it.
        let old = unsafe { libc::umask(0) };
        let wide = d.path().join("wide/a/b");
        create_dir_all(&wide, STATE_DIR).unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(0o077) };
        let narrow = d.path().join("narrow");
        create_dir_all(&narrow, LOG_DIR).unwrap();
        let log = open_log(&narrow.join("0.log")).unwrap();
        let shared = create_new(&d.path().join("hosts"), SHARED_FILE).unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        drop((log, shared));
        assert_eq!(mode(&wide), 0o700);
        assert_eq!(mode(&d.path().join("wide/a")), 0o700, "parents made on the way too");
        assert_eq!(mode(&narrow), 0o755);
        assert_eq!(mode(&narrow.join("0.log")), 0o640);
        assert_eq!(mode(&d.path().join("hosts")), 0o644);
        // An existing directory is brought to the mode.
        set_mode(&narrow, 0o777).unwrap();
        create_dir_all(&narrow, LOG_DIR).unwrap();
        assert_eq!(mode(&narrow), 0o755);
        assert!(create_new(&d.path().join("hosts"), SHARED_FILE).is_err(), "exclusive");
    }

    #[test]
    fn tighten_fixes_what_an_older_agent_left() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let logs = d.path().join("logs");
        let c = root.join("pods/uid1/containers/c1");
        fs::create_dir_all(c.join("upper/tmp")).unwrap();
        fs::create_dir_all(root.join("images/layers/l1/bin")).unwrap();
        fs::write(root.join("pods/uid1/pod.json"), "{}").unwrap();
        fs::write(c.join("spec.json"), "{}").unwrap();
        fs::write(root.join("images/layers/l1/bin/tool"), "").unwrap();
        fs::create_dir_all(logs.join("default_p_uid1/c")).unwrap();
        fs::write(logs.join("default_p_uid1/c/0.log"), "x").unwrap();
        for p in [&root, &root.join("pods"), &c, &c.join("upper")] {
            set_mode(p, 0o755).unwrap();
        }
        for p in [
            root.join("pods/uid1/pod.json"),
            c.join("spec.json"),
            logs.join("default_p_uid1/c/0.log"),
        ] {
            set_mode(&p, 0o644).unwrap();
        }
        set_mode(&root.join("images/layers/l1/bin/tool"), 0o4755).unwrap();

        tighten(&root, &logs).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("pods")), 0o700);
        assert_eq!(mode(&root.join("pods/uid1")), 0o700);
        assert_eq!(mode(&root.join("images/layers")), 0o700);
        assert_eq!(mode(&c), 0o700);
        assert_eq!(mode(&root.join("pods/uid1/pod.json")), 0o600);
        assert_eq!(mode(&c.join("spec.json")), 0o600);
        assert_eq!(mode(&logs.join("default_p_uid1/c/0.log")), 0o640);
        // Image and container content keeps its modes: containers rely on them.
        assert_eq!(mode(&c.join("upper")), 0o755);
        assert_eq!(mode(&root.join("images/layers/l1/bin/tool")), 0o4755);
        assert!(tighten(&d.path().join("absent"), &logs).is_err());
    }
}
