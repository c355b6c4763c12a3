//! Containers: one directory, cgroup and monitor per attempt.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::process::{self, ProcessId};
use super::spec::{
    BindMount, CgroupEntry, CgroupHierarchies, CgroupView, ContainerExit, ContainerSpec, ProcessSpec, RootfsSpec,
    V1Hierarchy, now_nanos,
};
use super::state::{ContainerFiles, ContainerRecord, new_id};
use super::{IoContext, Result, Runtime, RuntimeError, blocking, helper};
use crate::atomic_file;
use crate::cgroups::{CgroupVersion, DevicePolicy, Resources};
use crate::file_modes;
use crate::images::Image;

/// Everything the runtime needs to start one container attempt.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    pub pod_uid: String,
    /// The state directory of the pod (see [`super::sandbox::SandboxConfig::dir`]).
    pub pod_dir: PathBuf,
    pub name: String,
    pub attempt: u32,
    /// The image as the pod spec names it.
    pub image_ref: String,
    pub image: Image,
    /// The pod's cgroup; the container's is a child named after its ID.
    pub pod_cgroup: String,
    pub resources: Resources,
    /// Which devices it may open: the default allow-list, or all of them (privileged).
    pub devices: DevicePolicy,
    pub oom_score_adj: i32,
    pub share_pid: bool,
    pub process: ProcessSpec,
    pub mounts: Vec<BindMount>,
    pub readonly_rootfs: bool,
    /// `None`: the runtime's defaults (see [`super::spec::KernelPaths`]).
    pub kernel_paths: Option<super::spec::KernelPaths>,
    pub log_path: PathBuf,
    /// The seccomp profile asked for; resolved and checked when the container is created.
    pub seccomp: super::seccomp::Request,
}

impl Runtime {
    /// Prepare one container attempt (CRI CreateContainer): its directory, record, cgroup and
    /// the monitor's spec, with the seccomp filter compiled. Nothing runs yet. `Err` means
    /// nothing was left behind.
    pub async fn create_container(
        self: &Arc<Self>,
        cfg: &ContainerConfig,
        sandbox: ProcessId,
    ) -> Result<ContainerFiles> {
        let id = new_id();
        let dir = super::state::container_dir_in(&cfg.pod_dir, &id);
        let cgroup = format!("{}/{id}", cfg.pod_cgroup);
        // A profile that cannot be read or compiled fails the creation (CreateContainerError,
        // as containerd's does): the container never runs unconfined instead.
        let (request, caps) = (cfg.seccomp.clone(), cfg.process.capabilities.clone());
        let seccomp = blocking("resolve the seccomp profile", move || {
            Ok(super::seccomp::for_container(&request, caps.as_deref())?)
        })
        .await?;
        let (rt, cfg) = (self.clone(), cfg.clone());
        blocking("create a container", move || {
            let created = rt
                .prepare_container(&cfg, seccomp, &id, &dir, &cgroup, sandbox)
                .and_then(|_| match ContainerFiles::load(&dir) {
                    Ok(Some(files)) => Ok(files),
                    Ok(None) => Err(RuntimeError::Helper(format!(
                        "container record vanished from {}",
                        dir.display()
                    ))),
                    Err(e) => Err(RuntimeError::io(format!("read {}", dir.display()), e)),
                });
            if created.is_err() {
                rt.discard(&dir, &cgroup);
            }
            created
        })
        .await
    }

    /// Start a created attempt (CRI StartContainer): the monitor starts the process and
    /// records it, or records why it could not start. `Err` means the attempt was discarded.
    pub async fn start_created(self: &Arc<Self>, created: &ContainerFiles) -> Result<ContainerFiles> {
        let (dir, cgroup) = (created.dir.clone(), created.record.cgroup.clone());
        let spec_path = ContainerFiles::spec_path(&dir);
        let ran = self
            .run_helper::<super::spec::ContainerState>(helper::MONITOR, &spec_path)
            .await;
        let (rt, name) = (self.clone(), created.record.name.clone());
        blocking("read the container's state", move || {
            if let Err(e) = ran
                && !matches!(e, RuntimeError::Helper(_))
            {
                rt.discard(&dir, &cgroup);
                return Err(e);
            }
            // The monitor has recorded either the running process or why it could not start.
            let files = ContainerFiles::load(&dir).context(|| format!("read {}", dir.display()))?;
            match files {
                Some(f) if f.state.is_some() || f.exit.is_some() => {
                    if let Some(state) = &f.state {
                        rt.note_cgroup_entry(state.cgroup_entry);
                    }
                    Ok(f)
                }
                _ => {
                    let msg = format!("container monitor for {name} left no state in {}", dir.display());
                    rt.discard(&dir, &cgroup);
                    Err(RuntimeError::Helper(msg))
                }
            }
        })
        .await
    }

    fn prepare_container(
        &self,
        cfg: &ContainerConfig,
        seccomp: Option<super::seccomp::BpfFilter>,
        id: &str,
        dir: &std::path::Path,
        cgroup: &str,
        sandbox: ProcessId,
    ) -> Result<PathBuf> {
        // upper becomes the container's `/`: every user in it walks it. work and the mount
        // point are the kernel's and root's only.
        for (sub, mode) in [
            ("", file_modes::STATE_DIR),
            ("upper", file_modes::ROOTFS_DIR),
            ("work", file_modes::STATE_DIR),
            ("rootfs", file_modes::STATE_DIR),
        ] {
            let d = dir.join(sub);
            file_modes::create_dir_all(&d, mode).context(|| format!("create {}", d.display()))?;
        }
        let record = ContainerRecord {
            id: id.to_string(),
            name: cfg.name.clone(),
            attempt: cfg.attempt,
            image: cfg.image_ref.clone(),
            image_id: cfg.image.summary.id.clone(),
            log_path: cfg.log_path.clone(),
            cgroup: cgroup.to_string(),
            created_at: now_nanos(),
        };
        let record_path = ContainerFiles::record_path(dir);
        atomic_file::write_json(&record_path, &record).context(|| format!("write {}", record_path.display()))?;

        self.cgroups.create(cgroup)?;
        self.cgroups.apply(cgroup, &cfg.resources)?;
        // v2: an OOM kill takes the whole container, not one of its processes (the kubelet's
        // default); never set on the pod cgroup, where it would take the pause too.
        self.cgroups.set_oom_group(cgroup)?;
        // Before the process joins: it must never hold a device the policy denies.
        self.cgroups.set_devices(cgroup, cfg.devices)?;

        let spec = ContainerSpec {
            id: id.to_string(),
            pod_uid: cfg.pod_uid.clone(),
            name: cfg.name.clone(),
            dir: dir.to_path_buf(),
            sandbox,
            share_pid: cfg.share_pid,
            cgroup_dirs: self.cgroups.dirs(cgroup),
            oom_score_adj: Some(self.oom_score_adj(cfg.oom_score_adj)),
            rootfs: RootfsSpec {
                layers_dir: self.images.layers_dir(),
                layers: cfg.image.layers.clone(),
                upper: dir.join("upper"),
                work: dir.join("work"),
                target: dir.join("rootfs"),
                readonly: cfg.readonly_rootfs,
            },
            mounts: cfg.mounts.clone(),
            cgroup_view: Some(self.cgroup_view(cgroup, cfg.process.capabilities.is_some())),
            process: ProcessSpec {
                seccomp: seccomp.map(super::seccomp::Seccomp::Filter),
                ..cfg.process.clone()
            },
            log_path: cfg.log_path.clone(),
            kernel_paths: cfg.kernel_paths.clone(),
            log_rotation: self.config.log_rotation,
        };
        let spec_path = ContainerFiles::spec_path(dir);
        atomic_file::write_json(&spec_path, &spec).context(|| format!("write {}", spec_path.display()))?;
        Ok(spec_path)
    }

    /// On v2 a container is born in its cgroup; a kernel that refuses CLONE_INTO_CGROUP (before
    /// 5.7) makes the monitor attach it after fork instead. Said once per agent.
    fn note_cgroup_entry(&self, entry: CgroupEntry) {
        static SAID: std::sync::Once = std::sync::Once::new();
        if entry == CgroupEntry::Attached && self.cgroups.version() == CgroupVersion::V2 {
            SAID.call_once(|| {
                tracing::warn!(
                    "this kernel refused clone3(CLONE_INTO_CGROUP): containers start outside their cgroup \
                     and are moved in after fork (see monitor.log of a container)"
                )
            });
        }
    }

    /// The container's own cgroup as it sees it at /sys/fs/cgroup; `readonly` for all but
    /// privileged containers, as runc mounts it.
    fn cgroup_view(&self, cgroup: &str, readonly: bool) -> CgroupView {
        let hierarchies = match self.cgroups.version() {
            CgroupVersion::V2 => CgroupHierarchies::Unified,
            CgroupVersion::V1 => CgroupHierarchies::V1(
                self.cgroups
                    .hierarchy_names()
                    .into_iter()
                    .zip(self.cgroups.dirs(cgroup))
                    .map(|(name, dir)| V1Hierarchy { name, dir })
                    .collect(),
            ),
        };
        CgroupView { readonly, hierarchies }
    }

    /// Wait until the container attempt has exited and return how it ended.
    ///
    /// The monitor writes `exit.json` and then exits, so its pidfd is the signal. If the
    /// monitor died without a verdict (killed by hand, say), the container is killed too:
    /// an unmonitored container would have nobody reading its output.
    pub async fn wait_container(&self, files: &ContainerFiles) -> ContainerExit {
        if let Some(state) = files.state
            && let Ok(Some(monitor)) = state.monitor.open()
        {
            let _ = monitor.exited().await;
        }
        match atomic_file::read_json::<ContainerExit>(&ContainerFiles::exit_path(&files.dir)) {
            Ok(Some(exit)) => exit,
            other => {
                if let Err(e) = &other {
                    tracing::warn!(container = %files.record.name, error = %e, "unreadable exit.json");
                }
                if let Some(state) = files.state {
                    let _ = process::stop(state.process, Signal::SIGKILL, Duration::ZERO).await;
                }
                let mut exit = ContainerExit::from_status(137, Some(9), false, now_nanos());
                exit.message = "the container's monitor exited without recording an exit status".into();
                let _ = atomic_file::write_json(&ContainerFiles::exit_path(&files.dir), &exit);
                exit
            }
        }
    }

    /// Stop a running attempt: `signal`, then SIGKILL after `grace`; then make sure nothing
    /// else lingers in its cgroup. Returns once the monitor has recorded the exit.
    pub async fn stop_container(&self, files: &ContainerFiles, signal: Signal, grace: Duration) -> ContainerExit {
        if let Some(state) = files.state
            && files.exit.is_none()
            && let Err(e) = process::stop(state.process, signal, grace).await
        {
            tracing::warn!(container = %files.record.name, error = %e, "stop container");
        }
        if let Err(e) = self.kill_cgroup(&files.record.cgroup).await {
            tracing::warn!(container = %files.record.name, error = %e, "kill what is left in the container cgroup");
        }
        self.wait_container(files).await
    }

    /// CRI StopContainer's rule: the stop signal, then SIGKILL after `timeout` seconds; at
    /// once for 0 (or less).
    pub async fn stop_container_within(&self, files: &ContainerFiles, timeout: i64) -> ContainerExit {
        let (signal, grace) = if timeout > 0 {
            (self.stop_signal(files).await, Duration::from_secs(timeout as u64))
        } else {
            (Signal::SIGKILL, Duration::ZERO)
        };
        self.stop_container(files, signal, grace).await
    }

    /// The signal that asks the attempt's process to stop: its image's STOPSIGNAL, or SIGTERM.
    pub async fn stop_signal(&self, files: &ContainerFiles) -> Signal {
        let (rt_images, image) = (self.images.clone(), files.record.image_id.clone());
        let named = blocking("look up the image's stop signal", move || Ok(rt_images.get(&image)?))
            .await
            .ok()
            .flatten()
            .and_then(|img| img.config.stop_signal);
        named.and_then(|n| process::parse_signal(&n)).unwrap_or(Signal::SIGTERM)
    }

    /// Make the monitor of a running attempt reopen its log file (CRI ReopenContainerLog,
    /// used after the file was renamed away for rotation). Returns once the file exists again.
    pub async fn reopen_log(&self, files: &ContainerFiles) -> Result<()> {
        let not_running =
            || RuntimeError::FailedPrecondition(format!("container {} is not running", files.record.name));
        let state = files.state.filter(|_| files.exit.is_none()).ok_or_else(not_running)?;
        let monitor = state
            .monitor
            .open()
            .context(|| format!("open pidfd of monitor {}", state.monitor))?
            .ok_or_else(not_running)?;
        monitor
            .signal(Signal::SIGUSR1)
            .context(|| format!("signal monitor {}", state.monitor))?;
        let path = &files.record.log_path;
        for _ in 0..500 {
            if path.exists() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(RuntimeError::DeadlineExceeded(format!(
            "the monitor did not reopen {} within 5s",
            path.display()
        )))
    }

    /// Remove an exited (or never started) attempt: its cgroup, with anything left in it (a
    /// start interrupted by an agent's death may have left a process), and its directory (the
    /// writable layer with it). Its log file stays: `logs --previous` reads it; it goes with
    /// the pod.
    pub async fn remove_container(&self, files: &ContainerFiles) -> Result<()> {
        let (cgroups, cgroup, dir) = (self.cgroups.clone(), files.record.cgroup.clone(), files.dir.clone());
        blocking("remove a container", move || {
            let _ = cgroups.kill(&cgroup);
            cgroups.remove(&cgroup)?;
            remove_dir_all(&dir)
        })
        .await
    }

    /// Remove the directory of an attempt an agent from before step C2a kept in a pod's own
    /// directory (its cgroup went when the worker took it over).
    pub async fn remove_legacy_attempt(&self, dir: &Path) -> Result<()> {
        let dir = dir.to_path_buf();
        blocking("remove an older agent's container", move || remove_dir_all(&dir)).await
    }

    /// Remove an attempt's log file and its rotated files.
    pub async fn remove_container_log(&self, log: &Path) {
        let log = log.to_path_buf();
        let _ = blocking("remove a container's log", move || {
            super::log_rotation::remove_all(&log);
            Ok(())
        })
        .await;
    }

    /// Undo a creation that failed part way (blocking: callers are on the blocking pool).
    fn discard(&self, dir: &std::path::Path, cgroup: &str) {
        let _ = self.cgroups.kill(cgroup);
        if let Err(e) = self.cgroups.remove(cgroup) {
            tracing::warn!(%cgroup, error = %e, "remove cgroup of a container that did not start");
        }
        let _ = remove_dir_all(dir);
    }
}

/// `rm -rf`, where absent is success.
pub(crate) fn remove_dir_all(dir: &std::path::Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::Io {
            context: format!("remove {}", dir.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}
