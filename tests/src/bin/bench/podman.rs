//! `podman kube play --network none` of the same pod YAML minilet gets, with podman's
//! storage, run root and configuration in the benchmark's temp dir and the busybox archive
//! loaded into that store. Teardown: `podman kube down` of the same file.
//!
//! `kube play` has no cgroup-parent option (podman 4.3): with the cgroupfs manager its pods
//! go under `/libpod_parent` in each hierarchy; `kube down` removes each pod's cgroup and the
//! benchmark removes `libpod_parent` afterwards when it was the one to make it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use minilet_e2e::bench::fifo_pod;

use crate::minilet::IMAGE;
use crate::procfs::{self, Mem};
use crate::series::Runtime;

pub struct Podman {
    dir: PathBuf,
}

pub struct Pod {
    yaml: PathBuf,
    name: String,
    play: Option<Child>,
}

impl Podman {
    /// Write podman's configuration under `dir` and load the busybox archive.
    pub fn new(dir: &Path, archive: &Path) -> Result<Podman> {
        let dir = dir.join("podman");
        for d in ["storage", "run", "tmp", "yaml"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        // As root without CAP_SYS_RESOURCE podman's default rlimits fail setrlimit; no
        // journald here, so events go to a file under the run root.
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
        )?;
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                dir.join("storage").display(),
                dir.join("run").display()
            ),
        )?;
        let p = Podman { dir };
        let out = p
            .cmd()
            .arg("load")
            .arg("-i")
            .arg(archive)
            .output()
            .context("run podman load")?;
        if !out.status.success() {
            bail!("podman load: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(p)
    }

    /// The store a run left in `dir` (for the clean-up after a failed run), if any.
    pub fn existing(dir: &Path) -> Option<Podman> {
        let dir = dir.join("podman");
        dir.join("containers.conf").is_file().then_some(Podman { dir })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("TMPDIR", self.dir.join("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    fn yaml(&self, i: usize) -> PathBuf {
        self.dir.join("yaml").join(format!("bench-{i}.yaml"))
    }

    /// Remove every pod and container of this store (after a failure, or at the end).
    pub fn remove_all(&self) {
        let _ = self
            .cmd()
            .args(["pod", "rm", "-a", "-f", "-t", "0"])
            .stderr(Stdio::null())
            .status();
        let _ = self
            .cmd()
            .args(["rm", "-a", "-f", "-t", "0"])
            .stderr(Stdio::null())
            .status();
    }

    fn inspect(&self, args: &[&str]) -> Option<String> {
        let out = self
            .cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Runtime for Podman {
    type Pod = Pod;

    fn prepare(&mut self, i: usize, fifo: &Path) -> Result<()> {
        let yaml = fifo_pod(&format!("bench-{i}"), IMAGE, "IfNotPresent", fifo);
        std::fs::write(self.yaml(i), yaml).context("write the pod YAML")
    }

    fn start(&mut self, i: usize) -> Result<Pod> {
        let yaml = self.yaml(i);
        let play = self
            .cmd()
            .args(["kube", "play", "--network", "none"])
            .arg(&yaml)
            .spawn()
            .context("spawn podman kube play")?;
        Ok(Pod {
            yaml,
            name: format!("bench-{i}"),
            play: Some(play),
        })
    }

    fn settle(&mut self, pod: &mut Pod) -> Result<()> {
        if let Some(mut play) = pod.play.take() {
            let st = play.wait()?;
            if !st.success() {
                bail!("podman kube play {} failed ({st})", pod.yaml.display());
            }
        }
        Ok(())
    }

    fn memory(&mut self, pod: &Pod) -> Vec<(&'static str, Mem)> {
        let mut out = Vec::new();
        let Some(infra) = self.inspect(&["pod", "inspect", &pod.name, "--format", "{{.InfraContainerID}}"]) else {
            return out;
        };
        let infra = infra.trim().to_string();
        let Some(ids) = self.inspect(&["ps", "-q", "--no-trunc", "--filter", &format!("pod={}", pod.name)]) else {
            return out;
        };
        for id in ids.split_whitespace() {
            let Some(pids) = self.inspect(&["inspect", id, "--format", "{{.State.Pid}} {{.State.ConmonPid}}"]) else {
                continue;
            };
            let pids: Vec<i32> = pids.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            if let [pid, conmon] = pids[..] {
                out.extend(procfs::mem(conmon).map(|m| ("podman conmon", m)));
                if id == infra {
                    out.extend(procfs::mem(pid).map(|m| ("podman infra (catatonit)", m)));
                }
            }
        }
        out
    }

    fn teardown(&mut self, pod: Pod) -> Result<()> {
        let st = self
            .cmd()
            .args(["kube", "down"])
            .arg(&pod.yaml)
            .status()
            .context("run podman kube down")?;
        if !st.success() {
            bail!("podman kube down {} failed ({st})", pod.yaml.display());
        }
        Ok(())
    }
}
