//! minilet as a [`Runtime`]: a manifest renamed into the agent's directory starts a pod;
//! removing it tears the pod down (done when the pause is reaped, the pod's state directory
//! and its cgroup are gone).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use minilet_e2e::bench::fifo_pod;
use minilet_e2e::{Env, static_pod_name};

use crate::procfs::{self, Mem};
use crate::series::{Runtime, poll_until};

pub const IMAGE: &str = "localhost/busybox:latest";

pub struct Minilet<'a> {
    pub env: &'a Env,
    /// Name prefix, so that series in one agent do not reuse names.
    pub prefix: &'static str,
}

pub struct Pod {
    file: PathBuf,
    name: String,
    view: Option<minilet_e2e::PodView>,
}

impl Minilet<'_> {
    fn name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }
    fn staged(&self, i: usize) -> PathBuf {
        self.env.dir.join(format!("{}.yaml", self.name(i)))
    }
}

impl Runtime for Minilet<'_> {
    type Pod = Pod;

    fn prepare(&mut self, i: usize, fifo: &Path) -> Result<()> {
        let yaml = fifo_pod(&self.name(i), IMAGE, "IfNotPresent", fifo);
        std::fs::write(self.staged(i), yaml).context("write the manifest")
    }

    fn start(&mut self, i: usize) -> Result<Pod> {
        // An atomic rename, as an editor or `cp` + `mv` would land it.
        let file = self.env.manifests.join(format!("{}.yaml", self.name(i)));
        std::fs::rename(self.staged(i), &file).context("rename the manifest in")?;
        Ok(Pod {
            file,
            name: self.name(i),
            view: None,
        })
    }

    fn settle(&mut self, pod: &mut Pod) -> Result<()> {
        // The state files are written around the container's start; wait until they name
        // the pause and the monitor, so the teardown knows what to wait for.
        let env = self.env;
        let name = static_pod_name(&pod.name);
        let mut view = None;
        poll_until("pod state recorded", Duration::from_secs(30), || {
            view = env
                .pod(&name)
                .filter(|p| p.pause_pid.is_some() && p.containers.values().all(|c| c.monitor_pid.is_some()));
            view.is_some()
        })?;
        pod.view = view;
        Ok(())
    }

    fn memory(&mut self, pod: &Pod) -> Vec<(&'static str, Mem)> {
        let Some(view) = &pod.view else { return Vec::new() };
        let mut out = Vec::new();
        out.extend(view.pause_pid.and_then(procfs::mem).map(|m| ("minilet pause", m)));
        for c in view.containers.values() {
            out.extend(c.monitor_pid.and_then(procfs::mem).map(|m| ("minilet monitor", m)));
        }
        out
    }

    fn teardown(&mut self, pod: Pod) -> Result<()> {
        std::fs::remove_file(&pod.file).context("remove the manifest")?;
        let view = pod.view.context("pod state unknown")?;
        let cgroups = self.env.cgroup_dirs(&view.cgroup);
        let pause = view.pause_pid;
        poll_until("pod gone", Duration::from_secs(60), || {
            !view.dir.exists() && pause.is_none_or(|p| !procfs::alive(p)) && cgroups.iter().all(|d| !d.exists())
        })
    }
}
