//! Image store tests. Layouts are built by hand (tar + flate2 + JSON) so each test says exactly
//! what it imports. Most need root (chown, mknod, trusted xattrs, overlay) and skip without it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            crate::test_skip::skip("needs root (chown, mknod, trusted xattrs, overlay)");
            return;
        }
    };
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn host_arch() -> String {
    oci_spec::image::Arch::default().to_string()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A layer tar, entry by entry.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h
    }

    fn dir(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, 0o755);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn file(mut self, path: &str, content: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644);
        h.set_size(content.len() as u64);
        self.0.append_data(&mut h, path, content).unwrap();
        self
    }

    fn entry(mut self, mut h: tar::Header, path: &str, content: &[u8]) -> Self {
        h.set_size(content.len() as u64);
        self.0.append_data(&mut h, path, content).unwrap();
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        self.0.append_pax_extensions(records.iter().copied()).unwrap();
        self
    }

    /// An entry whose name the tar crate's safe setters would refuse (e.g. `../x`).
    fn raw_file(mut self, name: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

struct Layer {
    tar: Vec<u8>,
    gzip: bool,
}

fn layer(tar: Tar) -> Layer {
    Layer {
        tar: tar.finish(),
        gzip: true,
    }
}

struct Built {
    manifest: String,
    config: String,
    layer_blobs: Vec<String>,
    diff_ids: Vec<String>,
}

/// An OCI image layout under construction.
struct LayoutBuilder {
    dir: PathBuf,
    index: Vec<Value>,
}

impl LayoutBuilder {
    fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let b = LayoutBuilder {
            dir: dir.to_path_buf(),
            index: Vec::new(),
        };
        b.write_index();
        b
    }

    fn blob(&self, bytes: &[u8]) -> (String, u64) {
        let digest = sha256(bytes);
        fs::write(self.blob_path(&digest), bytes).unwrap();
        (digest, bytes.len() as u64)
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// Add an image; `edit` may change the config JSON before it is written.
    fn image(&mut self, layers: &[Layer], ref_name: Option<&str>, edit: impl FnOnce(&mut Value)) -> Built {
        let (manifest, built) = self.manifest(layers, edit, "application/vnd.oci.image.layer.v1.tar+gzip");
        self.add_to_index(&manifest, ref_name, None);
        built
    }

    fn manifest(&self, layers: &[Layer], edit: impl FnOnce(&mut Value), gzip_type: &str) -> (Value, Built) {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(&l.tar)).collect();
        let mut descriptors = Vec::new();
        let mut layer_blobs = Vec::new();
        for l in layers {
            let (bytes, media_type) = if l.gzip && gzip_type.ends_with("zstd") {
                (
                    ruzstd::encoding::compress_to_vec(&l.tar[..], ruzstd::encoding::CompressionLevel::Fastest),
                    gzip_type,
                )
            } else if l.gzip {
                (gzip(&l.tar), gzip_type)
            } else {
                (l.tar.clone(), "application/vnd.oci.image.layer.v1.tar")
            };
            let (digest, size) = self.blob(&bytes);
            descriptors.push(json!({"mediaType": media_type, "digest": digest, "size": size}));
            layer_blobs.push(digest);
        }
        let mut config = config_json(&diff_ids);
        edit(&mut config);
        let (config_digest, config_size) = self.blob(&serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": descriptors,
        });
        let (digest, size) = self.blob(&serde_json::to_vec(&manifest).unwrap());
        let desc = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size});
        (
            desc,
            Built {
                manifest: digest,
                config: config_digest,
                layer_blobs,
                diff_ids,
            },
        )
    }

    fn add_to_index(&mut self, desc: &Value, ref_name: Option<&str>, platform: Option<Value>) {
        let mut desc = desc.clone();
        if let Some(name) = ref_name {
            desc["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        }
        if let Some(platform) = platform {
            desc["platform"] = platform;
        }
        self.index.push(desc);
        self.write_index();
    }
}

fn config_json(diff_ids: &[String]) -> Value {
    json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": host_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin", "A=b"],
            "Entrypoint": ["/bin/ep"],
            "Cmd": ["sh"],
            "WorkingDir": "/work",
            "User": "65534",
            "StopSignal": "SIGQUIT",
            "Labels": {"org.example": "yes"},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
}

/// A fresh store root and a layout dir in one tempdir.
fn setup() -> (tempfile::TempDir, ImageStore, LayoutBuilder) {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("root")).unwrap();
    let layout = LayoutBuilder::new(&tmp.path().join("layout"));
    (tmp, store, layout)
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings that outlive the call; `buf` is writable for its length.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

#[test]
fn references_normalize_like_docker() {
    let cases = [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
        ("foo/bar", "docker.io/foo/bar:latest"),
        ("localhost/busybox", "localhost/busybox:latest"),
        ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
        ("quay.io/x/y:z", "quay.io/x/y:z"),
    ];
    for (input, want) in cases {
        assert_eq!(normalize_reference(input).unwrap(), want, "{input}");
    }
    let digest = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        normalize_reference(&format!("busybox@{digest}")).unwrap(),
        format!("docker.io/library/busybox@{digest}")
    );
    assert_eq!(
        normalize_reference(&format!("localhost/x:1@{digest}")).unwrap(),
        format!("localhost/x:1@{digest}")
    );
    for bad in [
        "",
        "Busybox",
        "localhost/Busybox",
        "foo/Bar",
        "quay.io/x/Y:z",
        "busybox:",
        " busybox",
        "a b",
        "busybox@sha256:abc",
    ] {
        let err = normalize_reference(bad).unwrap_err();
        assert!(matches!(err, ImageError::InvalidReference { .. }), "{bad:?}: {err}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_work_in_an_overlay_mount() {
    require_root!();
    let (tmp, store, mut layout) = setup();
    let lower = Tar::new()
        .dir("a")
        .file("a/keep", b"keep")
        .file("a/gone", b"gone")
        .dir("o")
        .file("o/lower-only", b"lower")
        .file("x", b"x");
    let upper = Tar::new()
        .dir("a")
        .file("a/.wh.gone", b"")
        .dir("o")
        .file("o/.wh..wh..opq", b"")
        .file("o/upper-only", b"upper")
        .file(".wh.x", b"");
    layout.image(&[layer(lower), layer(upper)], Some("localhost/wh:1"), |_| ());
    let imported = store.import(&layout.dir, None).unwrap();
    assert_eq!(imported.len(), 1);

    let image = store.get("localhost/wh:1").unwrap().unwrap();
    assert_eq!(image.layers.len(), 2);
    let lower_dir = store.layers_dir().join(&image.layers[0]);
    let upper_dir = store.layers_dir().join(&image.layers[1]);
    for whiteout in [upper_dir.join("a/gone"), upper_dir.join("x")] {
        let meta = fs::symlink_metadata(&whiteout).unwrap();
        assert!(meta.file_type().is_char_device(), "{}", whiteout.display());
        assert_eq!(meta.rdev(), 0);
    }
    assert!(!upper_dir.join("a/.wh.gone").exists());
    assert!(!upper_dir.join("o/.wh..wh..opq").exists());
    assert_eq!(
        lgetxattr(&upper_dir.join("o"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(lgetxattr(&upper_dir.join("a"), "trusted.overlay.opaque"), None);

    // Stack them as the agent will, in a private mount namespace of a thread of our own, so
    // nothing can leak into the host's mount table even if an assertion fails.
    let mountpoint = tmp.path().join("merged");
    fs::create_dir(&mountpoint).unwrap();
    let seen = std::thread::spawn(move || -> Result<BTreeMap<&'static str, bool>, String> {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("make / private: {e}"))?;
        let options = format!("lowerdir={}:{}", upper_dir.display(), lower_dir.display());
        mount(
            Some("overlay"),
            &mountpoint,
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(options.as_str()),
        )
        .map_err(|e| format!("mount overlay: {e}"))?;
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = umount2(self.0, MntFlags::MNT_DETACH);
            }
        }
        let _guard = Unmount(&mountpoint);
        let mut seen = BTreeMap::new();
        for path in ["a/keep", "a/gone", "o/lower-only", "o/upper-only", "x"] {
            seen.insert(path, fs::symlink_metadata(mountpoint.join(path)).is_ok());
        }
        Ok(seen)
    })
    .join()
    .unwrap()
    .unwrap();
    let want = BTreeMap::from([
        ("a/keep", true),
        ("a/gone", false),
        ("o/lower-only", false),
        ("o/upper-only", true),
        ("x", false),
    ]);
    assert_eq!(seen, want);
}

#[test]
fn metadata_links_and_special_files_are_preserved() {
    require_root!();
    let (_tmp, store, mut layout) = setup();
    let mut suid = Tar::header(tar::EntryType::Regular, 0o4755);
    suid.set_uid(1234);
    suid.set_gid(5678);
    suid.set_mtime(1_000_000_000);
    let mut sticky = Tar::header(tar::EntryType::Directory, 0o1777);
    sticky.set_mtime(1_100_000_000);
    let fifo = Tar::header(tar::EntryType::Fifo, 0o600);
    let tar = Tar::new()
        .entry(sticky, "tmp", b"")
        .file("tmp/inside", b"x") // would bump tmp's mtime if it were set early
        .pax(&[
            ("SCHILY.xattr.user.test", b"hello"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ])
        .entry(suid, "bin/tool", b"#!/bin/sh\n")
        .hardlink("bin/tool2", "bin/tool")
        .symlink("bin/sh", "/bin/tool")
        .entry(fifo, "run/fifo", b"")
        .pax(&[("uid", b"3000000"), ("mtime", b"1200000000.5")])
        .file("big-uid", b"");
    layout.image(&[layer(tar)], Some("localhost/meta:1"), |_| ());
    store.import(&layout.dir, None).unwrap();
    let image = store.get("localhost/meta:1").unwrap().unwrap();
    let root = store.layers_dir().join(&image.layers[0]);

    let tool = fs::symlink_metadata(root.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755);
    assert_eq!((tool.uid(), tool.gid()), (1234, 5678));
    assert_eq!(tool.mtime(), 1_000_000_000);
    assert_eq!(tool.nlink(), 2);
    assert_eq!(fs::symlink_metadata(root.join("bin/tool2")).unwrap().ino(), tool.ino());
    assert_eq!(
        lgetxattr(&root.join("bin/tool"), "user.test").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(lgetxattr(&root.join("bin/tool"), "trusted.overlay.redirect"), None);
    assert_eq!(fs::read_link(root.join("bin/sh")).unwrap(), Path::new("/bin/tool"));
    assert_eq!(
        fs::symlink_metadata(root.join("bin/sh")).unwrap().mtime(),
        1_600_000_000
    );
    let tmp_meta = fs::metadata(root.join("tmp")).unwrap();
    assert_eq!(tmp_meta.permissions().mode() & 0o7777, 0o1777);
    assert_eq!(tmp_meta.mtime(), 1_100_000_000);
    assert!(
        fs::symlink_metadata(root.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // The implicit parent "run" was created root-owned 0755.
    assert_eq!(fs::metadata(root.join("run")).unwrap().mode() & 0o7777, 0o755);
    let big = fs::symlink_metadata(root.join("big-uid")).unwrap();
    assert_eq!(big.uid(), 3_000_000);
    assert_eq!((big.mtime(), big.mtime_nsec()), (1_200_000_000, 500_000_000));
}

#[test]
fn layer_blob_digest_mismatch_is_rejected_and_leaves_nothing() {
    require_root!();
    let (_tmp, store, mut layout) = setup();
    let built = layout.image(
        &[layer(Tar::new().file("f", b"content"))],
        Some("localhost/bad:1"),
        |_| (),
    );
    // Same size, different content.
    let path = layout.blob_path(&built.layer_blobs[0]);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).unwrap();

    let err = store.import(&layout.dir, None).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&built.layer_blobs[0]) && message.contains(&sha256(&bytes)),
        "{message}"
    );
    let blobs = store.dir.join("blobs/sha256");
    assert!(!blobs.join(built.layer_blobs[0].trim_start_matches("sha256:")).exists());
    assert_eq!(dir_names(&store.layers_dir()), Vec::<String>::new());
    assert_eq!(dir_names(&store.tmp_dir()), Vec::<String>::new());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn diff_id_mismatch_is_rejected_and_leaves_no_layer() {
    require_root!();
    let (_tmp, store, mut layout) = setup();
    let wrong = sha256(b"something else");
    let edit = |config: &mut Value| config["rootfs"]["diff_ids"] = json!([wrong]);
    layout.image(
        &[layer(Tar::new().file("f", b"content"))],
        Some("localhost/bad:1"),
        edit,
    );
    let err = store.import(&layout.dir, None).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&wrong), "{err}");
    assert_eq!(dir_names(&store.layers_dir()), Vec::<String>::new());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn paths_leaving_the_layer_are_refused() {
    require_root!();
    let layers = [
        Tar::new().raw_file(b"../escaped"),
        Tar::new().symlink("link", "/tmp").file("link/escaped", b"x"),
        Tar::new().raw_file(b"a/../../escaped"),
        Tar::new().file("f", b"x").hardlink("h", "../../etc/passwd"),
        Tar::new().file(".wh..", b""),
    ];
    for (i, tar) in layers.into_iter().enumerate() {
        let (tmp, store, mut layout) = setup();
        layout.image(&[layer(tar)], Some("localhost/evil:1"), |_| ());
        let err = store.import(&layout.dir, None).unwrap_err();
        assert!(matches!(err, ImageError::Unpack { .. }), "case {i}: {err}");
        assert_eq!(dir_names(&store.layers_dir()), Vec::<String>::new(), "case {i}");
        assert!(
            !tmp.path().join("escaped").exists() && !Path::new("/tmp/escaped").exists(),
            "case {i}"
        );
    }
}

#[test]
fn zstd_layers_are_unpacked() {
    let (_tmp, store, mut layout) = setup();
    let (desc, built) = layout.manifest(
        &[layer(Tar::new().file("etc/zstd", b"compressed with zstd"))],
        |_| (),
        "application/vnd.oci.image.layer.v1.tar+zstd",
    );
    layout.add_to_index(&desc, Some("localhost/z:1"), None);
    store.import(&layout.dir, None).unwrap();
    let hex = built.diff_ids[0].trim_start_matches("sha256:");
    assert_eq!(
        fs::read(store.layers_dir().join(hex).join("etc/zstd")).unwrap(),
        b"compressed with zstd"
    );
}

#[test]
fn a_layer_that_is_not_what_its_media_type_says_is_rejected() {
    let (_tmp, store, mut layout) = setup();
    // gzip bytes under a zstd media type.
    let (desc, _) = layout.manifest(
        &[layer(Tar::new().file("f", b"x"))],
        |_| (),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let manifest_hex = desc["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let manifest_path = layout.dir.join("blobs/sha256").join(&manifest_hex);
    let text = fs::read_to_string(&manifest_path)
        .unwrap()
        .replace("tar+gzip", "tar+zstd");
    let (digest, size) = layout.blob(text.as_bytes());
    let desc =
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size});
    layout.add_to_index(&desc, Some("localhost/z:1"), None);
    let err = store.import(&layout.dir, None).unwrap_err();
    assert!(matches!(err, ImageError::Unpack { .. }), "{err}");
    assert!(err.to_string().contains("zstd"), "{err}");
    assert_eq!(dir_names(&store.layers_dir()), Vec::<String>::new());
}

#[test]
fn a_shared_layer_is_unpacked_once() {
    require_root!();
    let (_tmp, store, mut layout) = setup();
    let base = || layer(Tar::new().file("base", b"shared"));
    let a = layout.image(
        &[base(), layer(Tar::new().file("a", b"a"))],
        Some("localhost/a:1"),
        |_| (),
    );
    store.import(&layout.dir, None).unwrap();
    let shared = store.layers_dir().join(a.diff_ids[0].trim_start_matches("sha256:"));
    fs::write(shared.join("marker"), b"unpacked before").unwrap();

    // The same layer stored uncompressed this time: same diff id, different blob.
    let mut plain = base();
    plain.gzip = false;
    let b = layout.image(
        &[plain, layer(Tar::new().file("b", b"b"))],
        Some("localhost/b:1"),
        |_| (),
    );
    assert_ne!(a.layer_blobs[0], b.layer_blobs[0]);
    let imported = store.import(&layout.dir, None).unwrap();
    assert_eq!(imported.len(), 2);
    assert!(shared.join("marker").exists(), "the shared layer was unpacked again");
    assert_eq!(dir_names(&store.layers_dir()).len(), 3);
    let (ia, ib) = (
        store.get("localhost/a:1").unwrap().unwrap(),
        store.get("localhost/b:1").unwrap().unwrap(),
    );
    assert_eq!(ia.layers[0], ib.layers[0]);
    assert_ne!(ia.layers[1], ib.layers[1]);
}

#[test]
fn images_are_found_by_name_id_and_id_prefix() {
    require_root!();
    let (_tmp, store, mut layout) = setup();
    let built = layout.image(
        &[layer(Tar::new().file("f", b"x")), layer(Tar::new().file("g", b"y"))],
        Some("latest"),
        |_| (),
    );
    let imported = store.import(&layout.dir, Some("busybox")).unwrap();
    assert_eq!(imported[0].name, "docker.io/library/busybox:latest");
    assert_eq!(imported[0].id, built.config);
    assert_eq!(imported[0].manifest_digest, built.manifest);
    assert_eq!(imported[0].created.as_deref(), Some("2024-01-02T03:04:05Z"));
    let blob_sizes: u64 = [&built.config, &built.layer_blobs[0], &built.layer_blobs[1]]
        .iter()
        .map(|d| fs::metadata(layout.blob_path(d)).unwrap().len())
        .sum();
    assert_eq!(imported[0].size, blob_sizes);

    let hex = built.config.trim_start_matches("sha256:");
    let digest_ref = format!("busybox@{}", built.manifest);
    for reference in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox",
        "docker.io/library/busybox:latest",
        built.config.as_str(),
        hex,
        &hex[..3],
        &format!("sha256:{}", &hex[..5]),
        &digest_ref,
    ] {
        let image = store
            .get(reference)
            .unwrap()
            .unwrap_or_else(|| panic!("{reference} not found"));
        assert_eq!(image.summary, imported[0], "{reference}");
    }
    let image = store.get("busybox").unwrap().unwrap();
    assert_eq!(
        image.layers,
        built
            .diff_ids
            .iter()
            .map(|d| d.trim_start_matches("sha256:").to_owned())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        image.config,
        RuntimeConfig {
            entrypoint: vec!["/bin/ep".into()],
            cmd: vec!["sh".into()],
            env: vec!["PATH=/bin".into(), "A=b".into()],
            working_dir: "/work".into(),
            user: "65534".into(),
            stop_signal: Some("SIGQUIT".into()),
            labels: BTreeMap::from([("org.example".into(), "yes".into())]),
        }
    );
    for absent in ["busybox:other", "localhost/busybox", "sha256:000000", "fff"] {
        // ("fff" may be a prefix of the id by chance; only assert when it is not.)
        if absent == "fff" && hex.starts_with("fff") {
            continue;
        }
        assert!(store.get(absent).unwrap().is_none(), "{absent}");
    }
    assert!(matches!(
        store.get("sha256:ab"),
        Err(ImageError::InvalidReference { .. })
    ));
    assert!(matches!(
        store.get("Not A Reference"),
        Err(ImageError::InvalidReference { .. })
    ));
}

#[test]
fn an_ambiguous_id_prefix_is_an_error() {
    require_root!();
    let (_tmp, store, mut layout) = setup();
    let tar = || layer(Tar::new().file("f", b"x"));
    let diff_ids = vec![sha256(&tar().tar)];
    // Find two configs whose digests share their first 3 hex digits (birthday: ~80 tries).
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let (first, second, prefix) = (0..10_000)
        .find_map(|i| {
            let mut config = config_json(&diff_ids);
            config["config"]["Labels"]["n"] = json!(i.to_string());
            let hex = sha256(&serde_json::to_vec(&config).unwrap())[7..10].to_owned();
            seen.insert(hex.clone(), i).map(|earlier| (earlier, i, hex))
        })
        .unwrap();
    for (i, name) in [(first, "localhost/one:1"), (second, "localhost/two:1")] {
        layout.image(&[tar()], Some(name), |c| {
            c["config"]["Labels"]["n"] = json!(i.to_string())
        });
    }
    let imported = store.import(&layout.dir, None).unwrap();
    assert_eq!(imported.len(), 2);
    assert!(imported.iter().all(|i| i.id.starts_with(&format!("sha256:{prefix}"))));
    let err = store.get(&prefix).unwrap_err();
    assert!(matches!(err, ImageError::AmbiguousReference { .. }), "{err}");
    assert!(
        err.to_string().contains(&imported[0].id) && err.to_string().contains(&imported[1].id),
        "{err}"
    );
    // Longer prefixes still find each one.
    for image in &imported {
        assert_eq!(store.get(&image.id[7..20]).unwrap().unwrap().summary.id, image.id);
    }
}

#[test]
fn ref_names_decide_image_names_unless_given() {
    require_root!();
    // A full reference (as skopeo writes it) is normalized and used.
    let (_tmp, store, mut layout) = setup();
    layout.image(&[layer(Tar::new().file("f", b"1"))], Some("localhost/full:1"), |_| ());
    let imported = store.import(&layout.dir, None).unwrap();
    assert_eq!(imported[0].name, "localhost/full:1");

    // Only a tag (as umoci writes it): a clear error asking for --name; with --name, fine.
    let (_tmp, store, mut layout) = setup();
    layout.image(&[layer(Tar::new().file("f", b"2"))], Some("latest"), |_| ());
    let err = store.import(&layout.dir, None).unwrap_err();
    assert!(matches!(err, ImageError::NameRequired { .. }), "{err}");
    assert!(
        err.to_string().contains("--name") && err.to_string().contains("\"latest\""),
        "{err}"
    );
    let imported = store.import(&layout.dir, Some("localhost/named")).unwrap();
    assert_eq!(imported[0].name, "localhost/named:latest");

    // Several images: without --name, those with full names; with --name, an error.
    let (_tmp, store, mut layout) = setup();
    layout.image(&[layer(Tar::new().file("f", b"3"))], Some("localhost/x:1"), |_| ());
    layout.image(&[layer(Tar::new().file("f", b"4"))], Some("v2"), |_| ());
    layout.image(&[layer(Tar::new().file("f", b"5"))], None, |_| ());
    layout.image(&[layer(Tar::new().file("f", b"6"))], Some("example.com/y"), |_| ());
    let names: Vec<String> = store
        .import(&layout.dir, None)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["localhost/x:1", "example.com/y:latest"]);
    assert!(matches!(
        store.import(&layout.dir, Some("z")),
        Err(ImageError::InvalidLayout { .. })
    ));
    assert_eq!(store.list().unwrap().len(), 2);

    // No usable name at all.
    let (_tmp, store, mut layout) = setup();
    layout.image(&[layer(Tar::new().file("f", b"7"))], None, |_| ());
    assert!(matches!(
        store.import(&layout.dir, None),
        Err(ImageError::NameRequired { .. })
    ));
    assert!(matches!(
        store.import(&layout.dir, Some("Bad Name")),
        Err(ImageError::InvalidReference { .. })
    ));
}

#[test]
fn an_oci_archive_imports_like_its_directory() {
    require_root!();
    let (tmp, store, mut layout) = setup();
    layout.image(
        &[
            layer(Tar::new().dir("d").file("d/f", b"1")),
            layer(Tar::new().file("d/.wh.f", b"")),
        ],
        Some("localhost/arch:1"),
        |_| (),
    );
    let archive = tmp.path().join("image.tar");
    let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
    builder.append_dir_all(".", &layout.dir).unwrap();
    builder.into_inner().unwrap();

    let from_dir = store.import(&layout.dir, None).unwrap();
    let other = ImageStore::open(&tmp.path().join("other")).unwrap();
    let from_archive = other.import(&archive, None).unwrap();
    assert_eq!(from_dir, from_archive);
    let (a, b) = (
        store.get("localhost/arch:1").unwrap().unwrap(),
        other.get("localhost/arch:1").unwrap().unwrap(),
    );
    assert_eq!((a.layers, a.config), (b.layers, b.config));
    assert_eq!(
        dir_names(&store.dir.join("blobs/sha256")),
        dir_names(&other.dir.join("blobs/sha256"))
    );
    // The archive's extracted copy is gone.
    assert_eq!(dir_names(&other.tmp_dir()), Vec::<String>::new());
    // A file that is not an archive is a clear error.
    let junk = tmp.path().join("junk");
    fs::write(&junk, b"not a tar").unwrap();
    let err = other.import(&junk, None).unwrap_err();
    assert!(matches!(err, ImageError::InvalidLayout { .. }), "{err}");
}

#[test]
fn a_multi_platform_index_resolves_to_the_host_platform() {
    require_root!();
    let (_tmp, store, mut layout) = setup();
    let (host, built) = layout.manifest(
        &[layer(Tar::new().file("f", b"host"))],
        |_| (),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    // The other platform's manifest points at blobs that do not exist: choosing it would fail.
    let foreign_arch = if host_arch() == "arm64" { "amd64" } else { "arm64" };
    let missing = sha256(b"missing");
    let foreign = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": missing, "size": 7,
        "platform": {"os": "linux", "architecture": foreign_arch}});
    let mut host_desc = host.clone();
    host_desc["platform"] = json!({"os": "linux", "architecture": host_arch()});
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [foreign, host_desc]});
    let (digest, size) = layout.blob(&serde_json::to_vec(&index).unwrap());
    let desc = json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size});
    layout.add_to_index(&desc, Some("localhost/multi:1"), None);
    let imported = store.import(&layout.dir, None).unwrap();
    assert_eq!(imported[0].manifest_digest, built.manifest);

    // A layout offering only another architecture says so.
    let (_tmp, store, mut layout) = setup();
    let (desc, _) = layout.manifest(
        &[layer(Tar::new().file("f", b"x"))],
        |c| c["architecture"] = json!(foreign_arch),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    layout.add_to_index(
        &desc,
        Some("localhost/foreign:1"),
        Some(json!({"os": "linux", "architecture": foreign_arch})),
    );
    let err = store.import(&layout.dir, None).unwrap_err();
    assert!(err.to_string().contains(foreign_arch), "{err}");
}

#[test]
fn stale_temporaries_of_dead_processes_are_removed() {
    let (_tmp, store, layout) = setup();
    // pid 0x7fffffff cannot exist (above pid_max); our own pid is alive.
    let dead = store.layers_dir().join(".tmp-2147483647-00");
    let alive = store.tmp_dir().join(format!("blob-{}-00", std::process::id()));
    fs::create_dir(&dead).unwrap();
    fs::write(&alive, b"").unwrap();
    let _ = store.import(&layout.dir, None); // an empty layout: fails, but cleans first
    assert!(!dead.exists());
    assert!(alive.exists());
}

#[test]
fn the_store_index_is_shared_between_store_handles() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    assert!(store.index_path().is_file());
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.layers_dir(), tmp.path().join("images/layers"));
    assert!(store.get("busybox").unwrap().is_none());
}

/// The real image `hack/build-images` makes, in both forms.
#[test]
fn the_busybox_image_from_hack_build_images_imports() {
    require_root!();
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/.images");
    let (dir, archive) = (images.join("busybox"), images.join("busybox.tar"));
    if !dir.join("index.json").exists() || !archive.exists() {
        crate::test_skip::skip(&format!("run hack/build-images first to build {}", images.display()));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let from_archive = store.import(&archive, None).unwrap();
    assert_eq!(from_archive.len(), 1);
    assert_eq!(from_archive[0].name, "localhost/busybox:latest");
    let from_dir = store.import(&dir, Some("localhost/busybox-dir")).unwrap();
    assert_eq!(from_dir[0].id, from_archive[0].id);

    let image = store.get("localhost/busybox").unwrap().unwrap();
    assert_eq!(image.config.cmd, ["sh"]);
    assert!(
        image
            .config
            .env
            .iter()
            .any(|e| e == "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    );
    let root = store.layers_dir().join(&image.layers[0]);
    assert!(fs::metadata(root.join("bin/busybox")).unwrap().permissions().mode() & 0o111 != 0);
    assert_eq!(fs::read_link(root.join("bin/sh")).unwrap(), Path::new("/bin/busybox"));
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.starts_with("root:x:0:0:") && passwd.contains("nobody:x:65534:65534:"),
        "{passwd}"
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    assert!(root.join("root").is_dir() && root.join("home").is_dir());
}

#[test]
fn sweeps_keep_what_images_need_and_drop_the_rest() {
    let (_tmp, store, mut layout) = setup();
    layout.image(
        &[layer(Tar::new().file("a", b"shared"))],
        Some("localhost/one:1"),
        |_| (),
    );
    store.import(&layout.dir, None).unwrap();
    let (_tmp2, _, mut other) = setup();
    other.image(
        &[
            layer(Tar::new().file("a", b"shared")),
            layer(Tar::new().file("b", b"own")),
        ],
        Some("localhost/two:1"),
        |_| (),
    );
    store.import(&other.dir, None).unwrap();
    assert_eq!(dir_names(&store.layers_dir()).len(), 2);

    // Removing "two" leaves the layer "one" shares; its own layer goes.
    let names = store.remove("localhost/two:1", &HashMap::new()).unwrap();
    assert_eq!(names, vec!["localhost/two:1".to_owned()]);
    let swept = store.sweep(&HashSet::new()).unwrap();
    assert_eq!(swept.layers, 1);
    assert!(store.get("localhost/one:1").unwrap().is_some(), "one still runs");
    assert_eq!(dir_names(&store.layers_dir()).len(), 1);

    // In use (by id): refused while it is the image's last name.
    let id = store.get("localhost/one:1").unwrap().unwrap().summary.id;
    let in_use: HashMap<String, String> = [(id.clone(), "c/1 (pod default/p)".to_owned())].into();
    let err = store.remove("localhost/one:1", &in_use).unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err}");

    // Abandoned downloads: a day-old one goes, a fresh one stays for a resume.
    let tmp_dir = store.tmp_dir();
    let old = tmp_dir.join(format!("pull-{}.partial", "a".repeat(64)));
    let fresh = tmp_dir.join(format!("pull-{}.partial", "b".repeat(64)));
    fs::write(&old, b"half").unwrap();
    fs::write(&fresh, b"half").unwrap();
    let two_days = nix::sys::time::TimeVal::new(
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 2 * 86400) as i64,
        0,
    );
    nix::sys::stat::utimes(&old, &two_days, &two_days).unwrap();
    store.sweep(&HashSet::new()).unwrap();
    assert!(!old.exists());
    assert!(fresh.exists());
}
