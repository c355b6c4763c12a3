//! Unpacking one layer tar into its own directory, in the form overlayfs wants as a lowerdir.
//!
//! The tar crate parses; the filesystem work is done here rather than by `tar::Entry::unpack`,
//! because a layer needs what that does not do: OCI whiteouts turned into overlay whiteouts
//! (`.wh.<name>` → character device 0:0, `.wh..wh..opq` → `trusted.overlay.opaque=y`), device
//! nodes created as devices, directory mtimes and xattrs kept, overlay's own xattrs refused
//! from the image, and a hard error (not a silent skip) for a path that would leave the layer.
//!
//! Safety against escaping the layer directory: `..` components are refused; every parent
//! directory is either one this unpack created or checked to be a real directory, and a parent
//! that is a symlink created by this layer is refused, so no write ever follows a symlink.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use super::ImageError;

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OVERLAY_OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// Unpack the tar stream `reader` into the (empty) directory `root`. `layer` names the layer
/// in errors. The stream is read only up to the end-of-archive marker.
pub(super) fn unpack(reader: impl Read, root: &Path, layer: &str) -> Result<(), ImageError> {
    let mut archive = tar::Archive::new(reader);
    let mut unpacker = Unpacker {
        root,
        known_dirs: HashSet::from([PathBuf::new()]),
        symlinks: HashSet::new(),
        deferred_dirs: Vec::new(),
    };
    let error = |entry: &str, reason: String| ImageError::Unpack {
        layer: layer.to_owned(),
        entry: entry.to_owned(),
        reason,
    };
    let entries = archive.entries().map_err(|e| error("(start)", e.to_string()))?;
    let mut last = String::from("(start)");
    for entry in entries {
        let mut entry = entry.map_err(|e| error(&format!("after {last}"), e.to_string()))?;
        last = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        unpacker.entry(&mut entry).map_err(|reason| error(&last, reason))?;
    }
    unpacker
        .finish()
        .map_err(|reason| error("(directory metadata)", reason))
}

/// Ownership, permissions, times and xattrs of an entry, with PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Self, String> {
        let header = entry.header();
        let mode = header.mode().map_err(|e| format!("mode: {e}"))? & 0o7777;
        let mut uid = header.uid().map_err(|e| format!("uid: {e}"))?;
        let mut gid = header.gid().map_err(|e| format!("gid: {e}"))?;
        let mut mtime = TimeSpec::new(header.mtime().map_err(|e| format!("mtime: {e}"))? as i64, 0);
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(|e| format!("pax headers: {e}"))? {
            for ext in extensions {
                let ext = ext.map_err(|e| format!("pax header: {e}"))?;
                let value = ext.value_bytes();
                let number = || std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok());
                match ext.key_bytes() {
                    b"uid" => uid = number().ok_or("invalid pax uid")?,
                    b"gid" => gid = number().ok_or("invalid pax gid")?,
                    b"mtime" => mtime = parse_pax_time(value).ok_or("invalid pax mtime")?,
                    key => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            xattrs.push((name.to_vec(), value.to_vec()));
                        }
                    }
                }
            }
        }
        let id = |v: u64, what: &str| u32::try_from(v).map_err(|_| format!("{what} {v} out of range"));
        Ok(Meta {
            mode,
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            mtime,
            xattrs,
        })
    }
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.123456789`.
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse::<i64>().ok()?
    };
    // A negative time with a fraction means secs + fraction *towards* zero; keep it simple and
    // correct for the overwhelmingly common non-negative case.
    Some(TimeSpec::new(secs, if secs < 0 { 0 } else { nanos }))
}

struct Unpacker<'a> {
    root: &'a Path,
    /// Relative paths known to be real directories (the root is the empty path).
    known_dirs: HashSet<PathBuf>,
    /// Relative paths this layer made symlinks; never written through.
    symlinks: HashSet<PathBuf>,
    /// Directories whose mode and mtime are set last: creating entries inside a directory
    /// changes its mtime, and a read-only mode would get in the way.
    deferred_dirs: Vec<(PathBuf, u32, TimeSpec)>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), String> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            return Ok(());
        }
        let rel = sanitize(&entry.path().map_err(|e| format!("invalid path: {e}"))?)?;
        let meta = Meta::read(entry)?;

        let Some(file_name) = rel.file_name() else {
            // "./": the layer root itself.
            if !kind.is_dir() {
                return Err("a non-directory entry names the layer root".into());
            }
            return self.directory(&rel, meta);
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        if file_name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parent, file_name.as_bytes(), &meta);
        }
        self.ensure_dir(parent)?;
        match kind {
            EntryType::Directory => self.directory(&rel, meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => self.file(entry, &rel, &meta),
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or("symlink without a target")?.into_owned();
                self.symlink(&rel, &target, &meta)
            }
            EntryType::Link => {
                let target = entry.link_name().map_err(|e| format!("hard link target: {e}"))?;
                let target = sanitize(&target.ok_or("hard link without a target")?)?;
                self.hard_link(&rel, &target)
            }
            EntryType::Fifo => self.node(&rel, SFlag::S_IFIFO, 0, &meta),
            EntryType::Char | EntryType::Block => {
                let header = entry.header();
                let device = |v: io::Result<Option<u32>>| v.map(|n| u64::from(n.unwrap_or(0)));
                let major = device(header.device_major()).map_err(|e| format!("device major: {e}"))?;
                let minor = device(header.device_minor()).map_err(|e| format!("device minor: {e}"))?;
                let sflag = if kind == EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                self.node(&rel, sflag, makedev(major, minor), &meta)
            }
            other => {
                tracing::warn!(entry = %rel.display(), kind = ?other, "skipping layer entry of unsupported type");
                Ok(())
            }
        }
    }

    fn directory(&mut self, rel: &Path, meta: Meta) -> Result<(), String> {
        let path = self.root.join(rel);
        if !self.known_dirs.contains(rel) {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    self.remove(rel)?;
                    create_dir(&path)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(&path)?,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
            self.known_dirs.insert(rel.to_path_buf());
        }
        chown(&path, &meta)?;
        set_xattrs(&path, &meta)?;
        self.deferred_dirs.push((path, meta.mode, meta.mtime));
        Ok(())
    }

    fn file<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, rel: &Path, meta: &Meta) -> Result<(), String> {
        self.remove(rel)?;
        let path = self.root.join(rel);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        io::copy(entry, &mut file).map_err(|e| format!("write {}: {e}", path.display()))?;
        drop(file);
        finish_node(&path, meta)
    }

    fn symlink(&mut self, rel: &Path, target: &[u8], meta: &Meta) -> Result<(), String> {
        if target.is_empty() {
            return Err("symlink with an empty target".into());
        }
        self.remove(rel)?;
        let path = self.root.join(rel);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)
            .map_err(|e| format!("symlink {}: {e}", path.display()))?;
        self.symlinks.insert(rel.to_path_buf());
        chown(&path, meta)?;
        set_xattrs(&path, meta)?;
        set_mtime(&path, meta.mtime)
    }

    fn hard_link(&mut self, rel: &Path, target_rel: &Path) -> Result<(), String> {
        if let Some(parent) = target_rel.parent() {
            self.check_no_symlink_in(parent)?;
        }
        let target = self.root.join(target_rel);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {
                return Err(format!("hard link to directory {}", target_rel.display()));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "hard link target {} (must be earlier in the layer): {e}",
                    target_rel.display()
                ));
            }
        }
        self.remove(rel)?;
        let path = self.root.join(rel);
        // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        fs::hard_link(&target, &path).map_err(|e| format!("hard link {}: {e}", path.display()))?;
        if self.symlinks.contains(target_rel) {
            self.symlinks.insert(rel.to_path_buf());
        }
        Ok(())
    }

    fn node(&mut self, rel: &Path, kind: SFlag, dev: u64, meta: &Meta) -> Result<(), String> {
        self.remove(rel)?;
        let path = self.root.join(rel);
        mknod(&path, kind, Mode::from_bits_truncate(meta.mode), dev)
            .map_err(|e| format!("mknod {}: {e}", path.display()))?;
        finish_node(&path, meta)
    }

    /// `.wh..wh..opq` makes the containing directory opaque; `.wh.<name>` hides `<name>` of
    /// the layers below. Other `.wh..wh.` names are aufs bookkeeping and carry nothing.
    fn whiteout(&mut self, parent: &Path, name: &[u8], meta: &Meta) -> Result<(), String> {
        self.ensure_dir(parent)?;
        let dir = self.root.join(parent);
        if name == OPAQUE_MARKER {
            return lsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(|e| format!("mark {} opaque (needs root and trusted xattrs): {e}", dir.display()));
        }
        if name.starts_with(b".wh..wh.") {
            tracing::debug!(entry = %dir.join(OsStr::from_bytes(name)).display(), "ignoring aufs metadata");
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err("invalid whiteout name".into());
        }
        let rel = parent.join(OsStr::from_bytes(hidden));
        self.remove(&rel)?;
        let path = self.root.join(&rel);
        mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|e| {
            format!(
                "create whiteout {} (a 0:0 character device; needs root): {e}",
                path.display()
            )
        })?;
        chown(&path, meta)
    }

    /// Make sure `rel` is a real directory, creating missing components (root-owned, 0755, as
    /// other runtimes do for implicit parents), without ever going through a symlink.
    fn ensure_dir(&mut self, rel: &Path) -> Result<(), String> {
        if self.known_dirs.contains(rel) {
            return Ok(());
        }
        let mut current = PathBuf::new();
        for component in rel.components() {
            current.push(component);
            if self.known_dirs.contains(&current) {
                continue;
            }
            if self.symlinks.contains(&current) {
                return Err(format!(
                    "parent {} is a symlink of this layer; refusing to write through it",
                    current.display()
                ));
            }
            let path = self.root.join(&current);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(format!("parent {} is not a directory", current.display())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(&path)?,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
            self.known_dirs.insert(current.clone());
        }
        Ok(())
    }

    fn check_no_symlink_in(&self, rel: &Path) -> Result<(), String> {
        let mut current = PathBuf::new();
        for component in rel.components() {
            current.push(component);
            if self.symlinks.contains(&current) {
                return Err(format!("path goes through symlink {} of this layer", current.display()));
            }
        }
        Ok(())
    }

    /// Remove whatever an earlier entry of this layer put at `rel` (later entries win).
    fn remove(&mut self, rel: &Path) -> Result<(), String> {
        let path = self.root.join(rel);
        let result = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                self.known_dirs.retain(|d| !d.starts_with(rel));
                self.symlinks.retain(|d| !d.starts_with(rel));
                fs::remove_dir_all(&path)
            }
            Ok(_) => {
                self.symlinks.remove(rel);
                fs::remove_file(&path)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        result.map_err(|e| format!("replace {}: {e}", path.display()))
    }

    fn finish(self) -> Result<(), String> {
        for (path, mode, mtime) in &self.deferred_dirs {
            // A later entry of the layer may have replaced or whited out the directory.
            match fs::set_permissions(path, fs::Permissions::from_mode(*mode)) {
                Ok(()) => set_mtime(path, *mtime)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("chmod {}: {e}", path.display())),
            }
        }
        Ok(())
    }
}

/// The entry's path relative to the layer root. `/` and `.` components are dropped (layers
/// are rooted archives); `..` is refused outright rather than skipped: a layer that tries it
/// is broken or hostile.
fn sanitize(path: &Path) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => rel.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!(
                    "path {} leaves the layer directory; refusing it",
                    path.display()
                ));
            }
        }
    }
    Ok(rel)
}

fn create_dir(path: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(|e| format!("mkdir {}: {e}", path.display()))
}

/// Owner, mode, xattrs, mtime of a non-directory, non-symlink node, in the order that keeps
/// them all: chown clears setuid bits and file capabilities, so it goes first.
fn finish_node(path: &Path, meta: &Meta) -> Result<(), String> {
    chown(path, meta)?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    set_xattrs(path, meta)?;
    set_mtime(path, meta.mtime)
}

fn chown(path: &Path, meta: &Meta) -> Result<(), String> {
    std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
        .map_err(|e| format!("chown {}:{} {}: {e}", meta.uid, meta.gid, path.display()))
}

fn set_mtime(path: &Path, mtime: TimeSpec) -> Result<(), String> {
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &mtime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| format!("set times of {}: {e}", path.display()))
}

/// The image's xattrs, except overlayfs's own: those are the store's to set (opaque dirs), and
/// an image carrying e.g. `trusted.overlay.redirect` could make overlay misbehave.
fn set_xattrs(path: &Path, meta: &Meta) -> Result<(), String> {
    for (name, value) in &meta.xattrs {
        if name.starts_with(b"trusted.overlay.") {
            tracing::warn!(path = %path.display(), xattr = %String::from_utf8_lossy(name), "ignoring overlayfs xattr carried by the image");
            continue;
        }
        lsetxattr(path, name, value)
            .map_err(|e| format!("set xattr {} on {}: {e}", String::from_utf8_lossy(name), path.display()))?;
    }
    Ok(())
}

/// Set an extended attribute without following symlinks (nix has no xattr calls).
fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path or xattr name");
    let path = CString::new(path.as_os_str().as_bytes()).map_err(nul)?;
    let name = CString::new(name).map_err(nul)?;
    // SAFETY: `path` and `name` are NUL-terminated and outlive the call; `value` is a live
    // slice of `value.len()` bytes that the kernel only reads.
    let rc = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
