//! `crun run -d` of a bundle equivalent to minilet's pod: busybox's layers unpacked as the
//! rootfs, the same namespaces, a 16 MiB memory limit, the FIFO bind-mounted at /ready, the
//! cgroup under the benchmark's own parent. Teardown: `crun delete -f` (SIGKILL, reap,
//! cgroup removal).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::series::Runtime;

pub struct Crun {
    pub root: PathBuf,
    pub bundle: PathBuf,
    /// Relative: crun (cgroupfs) places it under each hierarchy's root.
    pub cgroup_parent: String,
    base: Value,
}

pub struct Pod {
    id: String,
}

impl Crun {
    /// Make the bundle in `dir` from the image layout `image` (an OCI layout directory).
    pub fn new(dir: &Path, image: &Path, cgroup_parent: &str) -> Result<Crun> {
        let bundle = dir.join("crun-bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        for layer in layers(image)? {
            let st = Command::new("tar")
                .arg("-xf")
                .arg(&layer)
                .arg("-C")
                .arg(&rootfs)
                .status()
                .context("run tar")?;
            if !st.success() {
                bail!("unpacking {} failed", layer.display());
            }
        }
        let st = Command::new("crun")
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .status()
            .context("run crun spec")?;
        if !st.success() {
            bail!("crun spec failed");
        }
        let base: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
        Ok(Crun {
            root: dir.join("crun-root"),
            bundle,
            cgroup_parent: cgroup_parent.to_string(),
            base,
        })
    }

    fn crun(&self) -> Command {
        let mut c = Command::new("crun");
        c.arg("--root").arg(&self.root);
        c.stdin(Stdio::null());
        c
    }

    /// Delete every container left under this root (after a failure).
    pub fn delete_all(&self) {
        delete_all(&self.root);
    }
}

/// Delete every container under crun root `root` (also for the clean-up after a failed run).
pub fn delete_all(root: &Path) {
    if !root.is_dir() {
        return;
    }
    let crun = || {
        let mut c = Command::new("crun");
        c.arg("--root").arg(root).stdin(Stdio::null());
        c
    };
    let Ok(out) = crun().args(["list", "-q"]).output() else {
        return;
    };
    for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = crun().args(["delete", "-f", id]).status();
    }
}

/// The layer blobs of the first manifest of an OCI layout directory, bottom first.
fn layers(image: &Path) -> Result<Vec<PathBuf>> {
    let blob = |digest: &str| image.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let index: Value = serde_json::from_slice(&std::fs::read(image.join("index.json"))?)?;
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json: no manifest")?;
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob(manifest))?)?;
    manifest["layers"]
        .as_array()
        .context("manifest: no layers")?
        .iter()
        .map(|l| l["digest"].as_str().map(blob).context("layer without digest"))
        .collect()
}

impl Runtime for Crun {
    type Pod = Pod;

    fn prepare(&mut self, i: usize, fifo: &Path) -> Result<()> {
        let mut c = self.base.clone();
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(["sh", "-c", "echo up > /ready; exec sleep 3600"]);
        c["linux"]["cgroupsPath"] = json!(format!("{}/crun-{i}", self.cgroup_parent));
        c["linux"]["resources"]["memory"] = json!({"limit": 16 * 1024 * 1024});
        if let Some(m) = c["mounts"].as_array_mut() {
            m.push(json!({"destination": "/ready", "type": "bind", "source": fifo, "options": ["rbind"]}));
        }
        std::fs::write(self.bundle.join("config.json"), serde_json::to_vec(&c)?)?;
        Ok(())
    }

    fn start(&mut self, i: usize) -> Result<Pod> {
        let id = format!("crun-{i}");
        // -d: crun returns once the container is started; the FIFO says when it runs.
        let st = self
            .crun()
            .arg("run")
            .arg("-d")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(&id)
            .status()
            .context("run crun")?;
        if !st.success() {
            bail!("crun run {id} failed ({st})");
        }
        Ok(Pod { id })
    }

    fn teardown(&mut self, pod: Pod) -> Result<()> {
        let st = self.crun().args(["delete", "-f", &pod.id]).status()?;
        if !st.success() {
            bail!("crun delete -f {} failed ({st})", pod.id);
        }
        Ok(())
    }
}
