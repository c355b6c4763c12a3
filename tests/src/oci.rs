//! Test images made by hand as OCI image layouts: new layers on top of an image that
//! hack/build-images built (busybox), and image indexes. Used where a test needs an image
//! with a property the demo images do not have (whiteouts, several platforms).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// An OCI image layout being written.
pub struct Layout {
    pub dir: PathBuf,
    manifests: Vec<Value>,
}

/// A layer tar, entry by entry.
pub struct LayerTar(tar::Builder<Vec<u8>>);

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> Self {
        LayerTar(tar::Builder::new(Vec::new()))
    }

    pub fn file(self, path: &str, content: &[u8]) -> Self {
        self.file_mode(path, content, 0o644)
    }

    /// A root-owned regular file with `mode` (setuid bits included).
    pub fn file_mode(mut self, path: &str, content: &[u8], mode: u32) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        self.0.append_data(&mut h, path, content).expect("tar entry");
        self
    }

    pub fn dir(mut self, path: &str) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Directory);
        self.0.append_data(&mut h, path, &[][..]).expect("tar entry");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.into_inner().expect("tar")
    }
}

/// The OCI name of this machine's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Layout {
    /// A copy of the layout at `base` (its blobs), to add images to; its index starts empty.
    pub fn from(base: &Path, dir: &Path) -> Layout {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(base)
            .arg(dir)
            .status()
            .expect("cp");
        assert!(status.success(), "copy {}", base.display());
        Layout {
            dir: dir.to_path_buf(),
            manifests: Vec::new(),
        }
    }

    pub fn blob(&self, bytes: &[u8]) -> (String, usize) {
        let digest = sha256(bytes);
        let path = self.dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
        std::fs::write(&path, bytes).expect("write blob");
        (digest, bytes.len())
    }

    fn read_blob(&self, digest: &str) -> Value {
        let path = self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(&path).expect("read blob")).expect("json blob")
    }

    /// The single image manifest of the base layout's index.json.
    pub fn base_manifest(&self) -> Value {
        let index: Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).expect("index.json")).expect("json");
        let desc = &index["manifests"][0];
        self.read_blob(desc["digest"].as_str().expect("digest"))
    }

    /// A new image: `base` (a manifest, or none) plus `layers` (gzip-compressed), for
    /// `arch`. Returns its manifest descriptor (with a platform, for indexes).
    pub fn image(&mut self, base: Option<&Value>, layers: Vec<Vec<u8>>, arch: &str) -> Value {
        self.image_with(base, layers, arch, true)
    }

    /// [`Layout::image`] with the new layers gzip-compressed or left as plain tar.
    pub fn image_with(&mut self, base: Option<&Value>, layers: Vec<Vec<u8>>, arch: &str, gzip: bool) -> Value {
        self.build(base, layers, arch, gzip, None)
    }

    /// A new image of `layers` alone whose config runs `entrypoint` (a pause image, say).
    pub fn image_running(&mut self, layers: Vec<Vec<u8>>, arch: &str, entrypoint: &[&str]) -> Value {
        self.build(None, layers, arch, true, Some(entrypoint))
    }

    /// A variant of `base` (a manifest) whose config's Cmd is `cmd`: same layers.
    pub fn image_with_cmd(&mut self, base: &Value, arch: &str, cmd: &[&str]) -> Value {
        self.build_config(Some(base), Vec::new(), arch, true, |config| {
            config["config"]["Cmd"] = json!(cmd)
        })
    }

    fn build(
        &mut self,
        base: Option<&Value>,
        layers: Vec<Vec<u8>>,
        arch: &str,
        gzip: bool,
        entrypoint: Option<&[&str]>,
    ) -> Value {
        self.build_config(base, layers, arch, gzip, |config| {
            if let Some(entrypoint) = entrypoint {
                config["config"]["Entrypoint"] = json!(entrypoint);
            }
        })
    }

    /// `base` plus `layers`, its config changed by `edit`.
    fn build_config(
        &mut self,
        base: Option<&Value>,
        layers: Vec<Vec<u8>>,
        arch: &str,
        gzip: bool,
        edit: impl FnOnce(&mut Value),
    ) -> Value {
        let (mut config, mut descs) = match base {
            Some(m) => (
                self.read_blob(m["config"]["digest"].as_str().expect("config digest")),
                m["layers"].as_array().cloned().unwrap_or_default(),
            ),
            None => (
                json!({"os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {}}),
                Vec::new(),
            ),
        };
        config["architecture"] = json!(arch);
        edit(&mut config);
        for tar in layers {
            config["rootfs"]["diff_ids"]
                .as_array_mut()
                .expect("diff_ids")
                .push(json!(sha256(&tar)));
            let (bytes, media_type) = if gzip {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar).expect("gzip");
                (
                    gz.finish().expect("gzip"),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            } else {
                (tar, "application/vnd.oci.image.layer.v1.tar")
            };
            let (digest, size) = self.blob(&bytes);
            descs.push(json!({"mediaType": media_type, "digest": digest, "size": size}));
        }
        let (config_digest, config_size) = self.blob(&serde_json::to_vec(&config).expect("json"));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": descs,
        });
        let (digest, size) = self.blob(&serde_json::to_vec(&manifest).expect("json"));
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "platform": {"os": "linux", "architecture": arch},
        })
    }

    /// Name `desc` (a manifest or index descriptor) in the layout's index.json as `tag`.
    pub fn tag(&mut self, desc: &Value, tag: &str) {
        let mut desc = desc.clone();
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.manifests.push(desc);
        let index = json!({"schemaVersion": 2, "manifests": self.manifests});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("index.json");
    }

    /// An image index over `manifests`; returns its descriptor.
    pub fn index(&mut self, manifests: &[Value]) -> Value {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let (digest, size) = self.blob(&serde_json::to_vec(&index).expect("json"));
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size})
    }
}
