//! A container's root filesystem, built inside its own mount namespace.
//!
//! Everything here runs in the container's (single-threaded) setup process after it has
//! unshared its mount namespace, so none of these mounts is ever visible on the host and
//! all of them disappear with the container: there is nothing to unmount on removal.
//!
//! The sequence: overlayfs of the image layers with the container's writable layer on top;
//! a fresh /proc for its PID namespace; a minimal /dev; /sys read-only; the container's own
//! cgroup at /sys/fs/cgroup ([`CgroupView`], read-only unless privileged); bind mounts (the
//! generated /etc files, volumes, the pod's /dev/shm); the kernel paths masked or made
//! read-only as container runtimes do by default; then `pivot_root`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::SFlag;

use super::spec::{BindMount, CgroupHierarchies, CgroupView, KernelPaths, Propagation, RootfsSpec};
use super::syscalls::{SysError, SysResult, Syscall};

/// Device nodes every container gets: (name, major, minor).
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];

/// Hidden from containers (the container runtimes' defaults for a non-privileged container).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Build the root filesystem at `rootfs.target`. The caller is in a fresh mount namespace.
/// `cwd` (the working directory) is created when the image lacks it, as runc does, before
/// a read-only root is sealed.
pub fn setup(
    sys: &dyn Syscall,
    rootfs: &RootfsSpec,
    mounts: &[BindMount],
    cgroup: Option<&CgroupView>,
    kernel_paths: &KernelPaths,
    host_trees: &[Option<OwnedFd>],
    cwd: &str,
) -> SysResult {
    let target = rootfs.target.as_path();

    // Nothing we mount may propagate back to the namespace we copied (the pod's, and through
    // it the host's): make the whole tree private first.
    sys.mount(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;

    mount_overlay(sys, rootfs)?;

    let proc_dir = target.join("proc");
    sys.mkdir_all(&proc_dir)?;
    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    sys.mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        nosuid_noexec_nodev,
        None,
    )?;

    setup_dev(sys, target)?;

    let sys_dir = target.join("sys");
    sys.mkdir_all(&sys_dir)?;
    sys.mount(
        Some(Path::new("sysfs")),
        &sys_dir,
        Some("sysfs"),
        nosuid_noexec_nodev | MsFlags::MS_RDONLY,
        None,
    )?;
    if let Some(view) = cgroup {
        mount_cgroup(sys, &sys_dir.join("fs/cgroup"), view)?;
    }

    for (n, m) in mounts.iter().enumerate() {
        let tree = host_trees.get(n).and_then(Option::as_ref).map(AsFd::as_fd);
        bind(sys, target, m, tree)?;
    }

    mask_kernel_paths(sys, target, kernel_paths)?;

    sys.mkdir_all(&secure_join(target, cwd))?;

    if rootfs.readonly {
        sys.mount(
            None,
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

/// The container's cgroup at `dest`, read-only unless privileged. v2: a cgroup2 mount made in
/// the container's cgroup namespace, whose root is the container's cgroup. v1, as runc does:
/// a tmpfs holding a bind mount of the container's directory per hierarchy (co-mounted
/// controllers reached through symlinks: `cpu -> cpu,cpuacct`).
fn mount_cgroup(sys: &dyn Syscall, dest: &Path, view: &CgroupView) -> SysResult {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let ro = if view.readonly {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    sys.mkdir_all(dest)?;
    let hierarchies = match &view.hierarchies {
        CgroupHierarchies::Unified => {
            return sys.mount(Some(Path::new("cgroup2")), dest, Some("cgroup2"), flags | ro, None);
        }
        CgroupHierarchies::V1(h) => h,
    };
    sys.mount(
        Some(Path::new("tmpfs")),
        dest,
        Some("tmpfs"),
        flags,
        Some("mode=755,size=64k"),
    )?;
    for h in hierarchies {
        let at = dest.join(&h.name);
        sys.mkdir_all(&at)?;
        sys.mount(Some(&h.dir), &at, None, MsFlags::MS_BIND, None)?;
        if view.readonly {
            sys.mount(
                None,
                &at,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | ro,
                None,
            )?;
        }
        if h.name.contains(',') {
            for controller in h.name.split(',') {
                sys.symlink(Path::new(&h.name), &dest.join(controller))?;
            }
        }
    }
    if view.readonly {
        sys.mount(
            None,
            dest,
            None,
            MsFlags::MS_REMOUNT | flags | ro,
            Some("mode=755,size=64k"),
        )?;
    }
    Ok(())
}

/// Overlay: lowerdirs are given relative to the layers directory (after a chdir there), top
/// layer first, because the whole option string must fit in one page.
fn mount_overlay(sys: &dyn Syscall, rootfs: &RootfsSpec) -> SysResult {
    let lower = if rootfs.layers.is_empty() {
        // overlayfs needs at least one lower layer; an image without layers gets an empty one.
        let empty = rootfs.upper.with_file_name("empty");
        sys.mkdir_all(&empty)?;
        empty.display().to_string()
    } else {
        rootfs
            .layers
            .iter()
            .rev()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(":")
    };
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        rootfs.upper.display(),
        rootfs.work.display()
    );
    if options.len() >= 4096 {
        return Err(SysError::new(
            "mount",
            &rootfs.target,
            format!(
                " (overlay options are {} bytes; {} layers)",
                options.len(),
                rootfs.layers.len()
            ),
            std::io::Error::from_raw_os_error(libc::E2BIG),
        ));
    }
    sys.mkdir_all(&rootfs.target)?;
    sys.chdir(&rootfs.layers_dir)?;
    sys.mount(
        Some(Path::new("overlay")),
        &rootfs.target,
        Some("overlay"),
        MsFlags::empty(),
        Some(&options),
    )?;
    sys.chdir(Path::new("/"))
}

/// A minimal /dev on a small tmpfs: the usual character devices, a private devpts, mqueue,
/// and the standard links. /dev/shm is a bind mount of the pod's (see the container spec).
fn setup_dev(sys: &dyn Syscall, target: &Path) -> SysResult {
    let dev = target.join("dev");
    sys.mkdir_all(&dev)?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in DEVICES {
        sys.mknod(&dev.join(name), SFlag::S_IFCHR, 0o666, *major, *minor)?;
    }
    let pts = dev.join("pts");
    sys.mkdir_all(&pts)?;
    sys.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let mqueue = dev.join("mqueue");
    sys.mkdir_all(&mqueue)?;
    sys.mount(
        Some(Path::new("mqueue")),
        &mqueue,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        None,
    )?;
    sys.mkdir_all(&dev.join("shm"))?;
    for (name, to) in DEV_LINKS {
        sys.symlink(Path::new(to), &dev.join(name))?;
    }
    Ok(())
}

/// Detached copies (with their submounts) of the sources of `mounts` that come from the
/// host ([`BindMount::from_host`]), in the same order, `None` for the others. Called in the
/// host's mount namespace, before the container process joins the pod's: a copy of a shared
/// mount joins its peer group, which is what lets propagation reach across.
pub fn open_host_trees(mounts: &[BindMount]) -> Result<Vec<Option<OwnedFd>>, String> {
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let Some(how) = m.from_host else {
            out.push(None);
            continue;
        };
        let path = std::ffi::CString::new(m.source.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("host path {} contains a NUL byte", m.source.display()))?;
        let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint;
        // SAFETY: open_tree(2) with a NUL-terminated path; it returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        if fd < 0 {
            return Err(format!(
                "open_tree {}: {}",
                m.source.display(),
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: the fd was just returned by the kernel and is owned by nobody else.
        let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        if how.recursive_readonly {
            set_tree_readonly(&tree).map_err(|e| format!("make {} recursively read-only: {e}", m.source.display()))?;
        }
        out.push(Some(tree));
    }
    Ok(out)
}

/// mount_setattr(2): every mount of a detached tree read-only.
fn set_tree_readonly(tree: &OwnedFd) -> std::io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) with a valid fd, an empty C string, and a mount_attr of the
    // size passed; it only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn bind(sys: &dyn Syscall, target: &Path, m: &BindMount, tree: Option<BorrowedFd<'_>>) -> SysResult {
    let dest = secure_join(target, &m.destination);
    if m.file {
        sys.create_file(&dest)?;
    } else {
        sys.mkdir_all(&dest)?;
    }
    match (tree, m.from_host) {
        (Some(tree), Some(how)) => {
            sys.move_mount(tree, &dest)?;
            let kind = match how.propagation {
                Propagation::Private => MsFlags::MS_PRIVATE,
                Propagation::HostToContainer => MsFlags::MS_SLAVE,
                Propagation::Bidirectional => MsFlags::MS_SHARED,
            };
            sys.mount(None, &dest, None, MsFlags::MS_REC | kind, None)?;
        }
        _ => sys.mount(Some(&m.source), &dest, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?,
    }
    if m.readonly {
        // A bind mount takes its flags from the source until remounted.
        sys.mount(
            None,
            &dest,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

fn mask_kernel_paths(sys: &dyn Syscall, target: &Path, paths: &KernelPaths) -> SysResult {
    let dev_null = target.join("dev/null");
    // One empty read-only tmpfs masks every directory: a bind of it is as empty and as
    // read-only (the superblock is), and each new superblock costs more the more pods the
    // node runs (the kernel sizes every memory cgroup's shrinker maps by their number).
    let mut empty: Option<std::path::PathBuf> = None;
    for path in &paths.masked {
        let p = secure_join(target, path);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => match &empty {
                Some(first) => sys.mount(Some(first), &p, None, MsFlags::MS_BIND, None)?,
                None => {
                    sys.mount(
                        Some(Path::new("tmpfs")),
                        &p,
                        Some("tmpfs"),
                        MsFlags::MS_RDONLY,
                        Some("size=0"),
                    )?;
                    empty = Some(p);
                }
            },
            Ok(_) => sys.mount(Some(&dev_null), &p, None, MsFlags::MS_BIND, None)?,
            Err(_) => {}
        }
    }
    for path in &paths.readonly {
        let p = secure_join(target, path);
        if std::fs::symlink_metadata(&p).is_ok() {
            sys.mount(Some(&p), &p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
            sys.mount(
                None,
                &p,
                None,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None,
            )?;
        }
    }
    Ok(())
}

/// Make `target` the root of this mount namespace.
///
/// `pivot_root(".", ".")` stacks the old root on top of the new one at the same place; the
/// lazy unmount then drops it, so no path to the host filesystem is left (runc's sequence).
/// This needs no temporary directory inside the image and works on read-only roots.
pub fn pivot(sys: &dyn Syscall, target: &Path) -> SysResult {
    sys.chdir(target)?;
    sys.pivot_root(Path::new("."), Path::new("."))?;
    sys.umount(Path::new("."), MntFlags::MNT_DETACH)?;
    sys.chdir(Path::new("/"))
}

/// Join `unsafe_path` to `root` the way the container would see it: symlinks inside the
/// root filesystem are followed relative to `root`, and neither `..` nor a symlink can lead
/// outside of it (filepath-securejoin's rule). Missing components are taken literally.
pub fn secure_join(root: &Path, unsafe_path: &str) -> PathBuf {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<String> = components(unsafe_path);
    pending.reverse(); // a stack: next component at the end
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&comp);
        let full = root.join(&candidate);
        match std::fs::read_link(&full) {
            Ok(link) if links < 255 => {
                links += 1;
                let link = link.to_string_lossy().into_owned();
                if link.starts_with('/') {
                    resolved = PathBuf::new();
                }
                let mut more = components(&link);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved = candidate,
        }
    }
    root.join(resolved)
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::syscalls::Recorder;

    fn spec(target: &Path) -> RootfsSpec {
        RootfsSpec {
            layers_dir: PathBuf::from("/var/lib/minilet/images/layers"),
            layers: vec!["aaa".into(), "bbb".into()],
            upper: PathBuf::from("/c/upper"),
            work: PathBuf::from("/c/work"),
            target: target.to_path_buf(),
            readonly: false,
        }
    }

    #[test]
    fn secure_join_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/etc")).unwrap();
        std::os::unix::fs::symlink("/real/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(secure_join(root, "/etc/hosts"), root.join("real/etc/hosts"));
        assert_eq!(secure_join(root, "/../../etc"), root.join("real/etc"));
        assert_eq!(secure_join(root, "/escape/tmp"), root.join("tmp"));
        assert_eq!(secure_join(root, "new/dir"), root.join("new/dir"));
        // A symlink loop ends instead of spinning.
        let _ = secure_join(root, "/loop/x");
    }

    #[test]
    fn mount_sequence_is_ordered_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("rootfs");
        let rec = Recorder::default();
        let mounts = vec![
            BindMount {
                source: "/pod/etc/hosts".into(),
                destination: "/etc/hosts".into(),
                readonly: false,
                file: true,
                from_host: None,
            },
            BindMount {
                source: "/pod/vol".into(),
                destination: "/data".into(),
                readonly: true,
                file: false,
                from_host: None,
            },
        ];
        setup(
            &rec,
            &spec(&target),
            &mounts,
            None,
            &KernelPaths::defaults(),
            &[],
            "/work",
        )
        .unwrap();
        pivot(&rec, &target).unwrap();
        let calls = rec.calls();
        let t = target.display().to_string();
        let pos = |needle: &str| {
            calls
                .iter()
                .position(|c| c.contains(needle))
                .unwrap_or_else(|| panic!("{needle} not in {calls:#?}"))
        };

        assert!(
            calls[0].starts_with("mount - / -") && calls[0].contains("MS_REC | MS_PRIVATE"),
            "{}",
            calls[0]
        );
        // Top layer first, relative names, after a chdir into the layers directory.
        let overlay = pos("overlay");
        assert!(calls[overlay].contains("lowerdir=bbb:aaa,upperdir=/c/upper,workdir=/c/work"));
        assert_eq!(calls[overlay - 1], "chdir /var/lib/minilet/images/layers");
        assert!(pos(&format!("{t}/proc proc")) > overlay);
        assert!(pos(&format!("mknod {t}/dev/null 666 1:3")) > pos(&format!("{t}/dev tmpfs")));
        assert!(pos("devpts") > pos(&format!("{t}/dev tmpfs")));
        assert!(calls.contains(&format!("symlink {t}/dev/ptmx -> pts/ptmx")));
        assert!(pos("sysfs").gt(&overlay) && calls[pos("sysfs")].contains("MS_RDONLY"));
        assert!(calls.contains(&format!("touch {t}/etc/hosts")));
        assert!(calls.contains(&format!("mkdir {t}/data")));
        assert!(calls.contains(&format!("mkdir {t}/work")), "the working directory");
        let ro = calls
            .iter()
            .rposition(|c| c.contains(&format!("{t}/data")) && c.contains("MS_REMOUNT"))
            .unwrap();
        assert!(calls[ro].contains("MS_RDONLY"));
        // pivot_root comes last, then the old root is detached.
        let n = calls.len();
        assert_eq!(
            &calls[n - 4..],
            &[
                format!("chdir {t}"),
                "pivot_root . .".into(),
                "umount .".into(),
                "chdir /".into()
            ]
        );
    }

    fn cgroup_calls(view: &CgroupView) -> (String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("rootfs");
        let rec = Recorder::default();
        setup(
            &rec,
            &spec(&target),
            &[],
            Some(view),
            &KernelPaths::defaults(),
            &[],
            "/",
        )
        .unwrap();
        let calls = rec.calls();
        let t = target.display().to_string();
        // Right after /sys: nothing of the image can be mounted over /sys/fs/cgroup first.
        let sysfs = calls.iter().position(|c| c.contains("sysfs")).unwrap();
        let first = calls.iter().position(|c| c.contains("/sys/fs/cgroup")).unwrap();
        assert_eq!(first, sysfs + 1, "{calls:#?}");
        let cg: Vec<String> = calls
            .into_iter()
            .filter(|c| c.contains("/sys/fs/cgroup"))
            .map(|c| c.replace(&t, ""))
            .collect();
        (t, cg)
    }

    #[test]
    fn v2_cgroup_is_a_read_only_cgroup2_mount_unless_privileged() {
        let (_, calls) = cgroup_calls(&CgroupView {
            readonly: true,
            hierarchies: CgroupHierarchies::Unified,
        });
        assert_eq!(
            calls,
            [
                "mkdir /sys/fs/cgroup",
                "mount cgroup2 /sys/fs/cgroup cgroup2 MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC) -",
            ]
        );
        let (_, calls) = cgroup_calls(&CgroupView {
            readonly: false,
            hierarchies: CgroupHierarchies::Unified,
        });
        assert_eq!(
            calls[1],
            "mount cgroup2 /sys/fs/cgroup cgroup2 MsFlags(MS_NOSUID | MS_NODEV | MS_NOEXEC) -"
        );
    }

    #[test]
    fn v1_cgroups_are_read_only_binds_of_the_containers_directories() {
        let view = CgroupView {
            readonly: true,
            hierarchies: CgroupHierarchies::V1(vec![
                crate::runtime::spec::V1Hierarchy {
                    name: "cpu,cpuacct".into(),
                    dir: "/sys/fs/cgroup/cpu,cpuacct/k/pod/c1".into(),
                },
                crate::runtime::spec::V1Hierarchy {
                    name: "memory".into(),
                    dir: "/sys/fs/cgroup/memory/k/pod/c1".into(),
                },
            ]),
        };
        let (_, calls) = cgroup_calls(&view);
        let ro_bind = "MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_REMOUNT | MS_BIND)";
        assert_eq!(
            calls,
            [
                "mkdir /sys/fs/cgroup".to_string(),
                "mount tmpfs /sys/fs/cgroup tmpfs MsFlags(MS_NOSUID | MS_NODEV | MS_NOEXEC) mode=755,size=64k".into(),
                "mkdir /sys/fs/cgroup/cpu,cpuacct".into(),
                "mount /sys/fs/cgroup/cpu,cpuacct/k/pod/c1 /sys/fs/cgroup/cpu,cpuacct - MsFlags(MS_BIND) -".into(),
                format!("mount - /sys/fs/cgroup/cpu,cpuacct - {ro_bind} -"),
                "symlink /sys/fs/cgroup/cpu -> cpu,cpuacct".into(),
                "symlink /sys/fs/cgroup/cpuacct -> cpu,cpuacct".into(),
                "mkdir /sys/fs/cgroup/memory".into(),
                "mount /sys/fs/cgroup/memory/k/pod/c1 /sys/fs/cgroup/memory - MsFlags(MS_BIND) -".into(),
                format!("mount - /sys/fs/cgroup/memory - {ro_bind} -"),
                "mount - /sys/fs/cgroup - MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_REMOUNT) mode=755,size=64k"
                    .into(),
            ]
        );
    }

    #[test]
    fn overlay_options_must_fit_a_page() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(&dir.path().join("r"));
        s.layers = (0..100).map(|i| format!("{i:064x}")).collect();
        let err = setup(&Recorder::default(), &s, &[], None, &KernelPaths::default(), &[], "/").unwrap_err();
        assert!(err.to_string().contains("100 layers"), "{err}");
    }
}
