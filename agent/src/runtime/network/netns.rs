//! A pod's network namespace pinned by a bind mount under the state directory (as
//! containerd pins its own under /var/run/netns): plugins get a path they can open, and DEL
//! still finds the namespace after the pause is gone or the agent crashed.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use super::NetworkError;

/// Bind-mount the network namespace of process `pid` onto `target` (created empty).
pub fn pin(pid: i32, target: &Path) -> Result<(), NetworkError> {
    if let Some(dir) = target.parent() {
        crate::file_modes::create_dir_all(dir, crate::file_modes::STATE_DIR)
            .map_err(|e| NetworkError::io(format!("create {}", dir.display()), e))?;
    }
    // A mount left by an earlier attempt of the same sandbox would be stacked on: drop it.
    unpin(target)?;
    std::fs::File::create(target).map_err(|e| NetworkError::io(format!("create {}", target.display()), e))?;
    let source = format!("/proc/{pid}/ns/net");
    nix::mount::mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(target);
        NetworkError::io(
            format!("bind-mount {source} on {}", target.display()),
            std::io::Error::from(e),
        )
    })
}

/// Undo [`pin`]: unmount (if mounted) and remove the file. Idempotent.
pub fn unpin(target: &Path) -> Result<(), NetworkError> {
    loop {
        match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            // Not a mount point (any more), or no such file: nothing mounted here.
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => {
                return Err(NetworkError::io(
                    format!("unmount {}", target.display()),
                    std::io::Error::from(e),
                ));
            }
        }
    }
    match std::fs::remove_file(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io(format!("remove {}", target.display()), e)),
    }
}

/// Whether `target` is a pinned network namespace (still mounted).
pub fn is_pinned(target: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = target.display().to_string();
    text.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}
