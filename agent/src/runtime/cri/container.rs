//! CreateContainer, StartContainer, StopContainer, RemoveContainer, UpdateContainerResources
//! and the container's status, for containers of CRI sandboxes.

use std::sync::Arc;

use minilet_proto::runtime::v1 as cri;

use super::translate;
use super::{CONTAINER_CONFIG, Container, CriPods, write_pb};
use crate::runtime::spec::now_nanos;
use crate::runtime::state::ContainerFiles;
use crate::runtime::{RuntimeError, blocking};

impl CriPods {
    /// CreateContainer: the container's directory, cgroup and spec; nothing runs yet.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let sb = self.find_sandbox(sandbox_id)?;
        let mut sb = sb.lock().await;
        let Some(state) = sb.state.filter(|_| sb.ready()) else {
            return Err(RuntimeError::FailedPrecondition(format!(
                "sandbox {} is not ready: its pause is not running",
                sb.record.id
            )));
        };
        let meta = config.metadata.clone().unwrap_or_default();
        // containerd reserves a name per sandbox and attempt: a client retrying a creation
        // must not get two containers for one.
        if let Some(other) = sb.containers.values().find(|c| {
            c.config
                .metadata
                .as_ref()
                .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
        }) {
            return Err(RuntimeError::AlreadyExists(format!(
                "container name {:?} (attempt {}) is reserved for {} in sandbox {}",
                meta.name,
                meta.attempt,
                other.id(),
                sb.record.id
            )));
        }
        let image_ref = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        if image_ref.is_empty() {
            return Err(RuntimeError::InvalidArgument("image.image is required".into()));
        }
        let image = {
            let rt = self.rt.clone();
            let r = image_ref.clone();
            blocking("look up the image", move || Ok(rt.images.get(&r)?)).await?
        }
        .ok_or_else(|| RuntimeError::not_found("image", &image_ref))?;
        let log_path = translate::log_path(&sb, &config)?;
        let cfg = translate::container(&translate::ContainerInputs {
            config: &config,
            sandbox: &sb,
            image: &image,
            log_path,
            node: &self.node,
        })?;
        let files = self.rt.create_container(&cfg, state.pause).await?;
        // The client's config goes last: without it a restarted agent treats the directory
        // as an interrupted creation.
        let path = files.dir.join(CONTAINER_CONFIG);
        let written = {
            let config = config.clone();
            blocking("record the container's config", move || {
                write_pb(&path, &config).map_err(|e| RuntimeError::io(format!("write {}", path.display()), e))
            })
            .await
        };
        if let Err(e) = written {
            let _ = self.rt.remove_container(&files).await;
            return Err(e);
        }
        let id = files.record.id.clone();
        sb.containers.insert(
            id.clone(),
            Box::new(Container {
                config: super::kept(config),
                files,
            }),
        );
        self.event(&sb, &id, cri::ContainerEventType::ContainerCreatedEvent);
        Ok(id)
    }

    /// StartContainer: only a created container starts; one that could not start is left
    /// EXITED with its reason (StartError), and the call fails with it.
    pub async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let (handle, cid) = self.find_container(id).await?;
        let mut sb = handle.lock().await;
        let c = sb
            .containers
            .get(&cid)
            .cloned()
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        if c.cri_state() != cri::ContainerState::ContainerCreated {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {cid} is in state {} and cannot be started",
                c.cri_state().as_str_name()
            )));
        }
        if !sb.ready() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "sandbox {} of container {cid} is not ready",
                sb.record.id
            )));
        }
        let files = match self.rt.start_created(&c.files).await {
            Ok(files) => files,
            Err(e) => {
                // The runtime discarded the attempt: nothing of it is left to list.
                sb.containers.remove(&cid);
                self.event_gone(&sb, &c);
                return Err(e);
            }
        };
        let started = Box::new(Container {
            config: c.config,
            files,
        });
        let running = started.cri_state() == cri::ContainerState::ContainerRunning;
        let watched = running.then(|| started.files.clone());
        let start_error = started
            .files
            .exit
            .as_ref()
            .filter(|e| e.reason == crate::runtime::spec::ExitReason::StartError)
            .map(|e| e.message.clone());
        sb.containers.insert(cid.clone(), started);
        if let Some(message) = start_error {
            self.event(&sb, &cid, cri::ContainerEventType::ContainerStoppedEvent);
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {cid} could not start: {message}"
            )));
        }
        self.event(&sb, &cid, cri::ContainerEventType::ContainerStartedEvent);
        match watched {
            Some(files) => self.watch(&handle, files),
            None => self.event(&sb, &cid, cri::ContainerEventType::ContainerStoppedEvent),
        }
        Ok(())
    }

    /// StopContainer: the image's stop signal, SIGKILL after `timeout` seconds (at once for
    /// 0). Stopping a container that is not running, or is unknown, succeeds. It returns
    /// once the store's watcher has recorded the exit and sent CONTAINER_STOPPED, so that
    /// event always comes before a removal's CONTAINER_DELETED.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), RuntimeError> {
        let (sb, cid) = match self.find_container(id).await {
            Ok(v) => v,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let running = {
            let sb = sb.lock().await;
            sb.containers
                .get(&cid)
                .filter(|c| c.cri_state() == cri::ContainerState::ContainerRunning)
                .map(|c| c.files.clone())
        };
        // Not under the sandbox's lock: a grace period may be long, and the watcher takes it.
        if let Some(files) = running {
            self.rt.stop_container_within(&files, timeout).await;
        }
        // Once the watcher has recorded the exit and sent its event.
        self.exits.recorded(&cid).await;
        Ok(())
    }

    /// RemoveContainer: a running container is killed first. Removing an unknown container
    /// succeeds.
    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let (sb, cid) = match self.find_container(id).await {
            Ok(v) => v,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_container(&cid, 0).await?;
        let mut sb = sb.lock().await;
        let Some(c) = sb.containers.get(&cid).cloned() else {
            return Ok(());
        };
        self.rt.remove_container(&c.files).await?;
        sb.containers.remove(&cid);
        self.event_gone(&sb, &c);
        Ok(())
    }

    /// ListContainers over the CRI sandboxes: (sandbox ID, container).
    pub async fn list_containers(&self) -> Vec<cri::Container> {
        self.list(|sb| {
            sb.containers
                .values()
                .map(|c| summary(&sb.record.id, c))
                .collect::<Vec<_>>()
        })
        .await
    }

    /// UpdateContainerResources: the new limits go to the container's cgroup now and are
    /// what ContainerStatus reports from then on.
    pub async fn update_container_resources(
        &self,
        id: &str,
        linux: Option<cri::LinuxContainerResources>,
    ) -> Result<(), RuntimeError> {
        let Some(linux) = linux else {
            return Ok(());
        };
        let (sb, cid) = self.find_container(id).await?;
        let mut sb = sb.lock().await;
        let c = sb
            .containers
            .get_mut(&cid)
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        if c.cri_state() == cri::ContainerState::ContainerExited {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {cid} has exited; its resources cannot be updated"
            )));
        }
        let (res, oom) = translate::resources(&linux, "linux")?;
        if oom.is_some() {
            return Err(RuntimeError::Unimplemented(
                "changing oom_score_adj of a created container is not supported by minilet".into(),
            ));
        }
        self.rt.apply_resources(&c.files.record.cgroup, res).await?;
        // The whole config is on disk; the store keeps only what it reads (`kept`).
        let path = c.files.dir.join(CONTAINER_CONFIG);
        let resources = linux.clone();
        blocking("record the container's config", move || {
            let mut config = super::read_pb::<cri::ContainerConfig>(&path)
                .map_err(|e| RuntimeError::io(format!("read {}", path.display()), e))?
                .unwrap_or_default();
            config.linux.get_or_insert_with(Default::default).resources = Some(resources);
            write_pb(&path, &config).map_err(|e| RuntimeError::io(format!("write {}", path.display()), e))
        })
        .await?;
        c.config.linux.get_or_insert_with(Default::default).resources = Some(linux);
        Ok(())
    }

    /// Watch the running container of sandbox `sb` whose attempt is `files` until it exits.
    /// What is left in its cgroup (its children, in a shared PID namespace) dies with it and
    /// the cgroup goes, as runc's delete does once containerd sees a task exit. Then the exit
    /// is recorded in the store, then a CONTAINER_STOPPED event goes out and waiters are
    /// told: whoever hears of it finds the store saying so already.
    pub(super) fn watch(&self, sb: &Arc<tokio::sync::Mutex<super::Sandbox>>, files: ContainerFiles) {
        let (rt, sb) = (self.rt.clone(), sb.clone());
        let (events, exits) = (self.events.clone(), self.exits.clone());
        let id = files.record.id.clone();
        exits.watched(&id);
        tokio::spawn(async move {
            let exit = rt.wait_container(&files).await;
            if let Err(e) = rt.remove_cgroup(&files.record.cgroup).await {
                tracing::warn!(container = %id, error = %e, "remove the cgroup of an exited container");
            }
            let stopped = {
                let mut sb = sb.lock().await;
                let sandbox_id = sb.record.id.clone();
                sb.containers.get_mut(&id).map(|c| {
                    c.files.exit = Some(exit.clone());
                    tracing::debug!(sandbox = %sandbox_id, container = %id, "CRI container exited");
                    status(c)
                })
            };
            // Removed meanwhile (only a removal that did not stop it first, as StopContainer
            // waits for this): its CONTAINER_DELETED event has gone out already.
            if let Some(status) = stopped {
                events.send(cri::ContainerEventResponse {
                    container_id: id.clone(),
                    container_event_type: cri::ContainerEventType::ContainerStoppedEvent as i32,
                    created_at: now_nanos(),
                    pod_sandbox_status: None,
                    containers_statuses: vec![status],
                });
            }
            exits.report(&id);
        });
    }

    fn event(&self, sb: &super::Sandbox, cid: &str, kind: cri::ContainerEventType) {
        self.events.send(sandbox_event(sb, cid, kind));
    }

    fn event_gone(&self, sb: &super::Sandbox, c: &Container) {
        self.event(sb, c.id(), cri::ContainerEventType::ContainerDeletedEvent);
    }
}

/// An event about `id` (a container of `sb`, or the sandbox itself) carrying the sandbox's
/// status and its containers' statuses as they are now.
pub(super) fn sandbox_event(
    sb: &super::Sandbox,
    id: &str,
    kind: cri::ContainerEventType,
) -> cri::ContainerEventResponse {
    cri::ContainerEventResponse {
        container_id: id.to_string(),
        container_event_type: kind as i32,
        created_at: now_nanos(),
        pod_sandbox_status: Some(super::sandbox::status(sb)),
        containers_statuses: sb.containers.values().map(|c| status(c)).collect(),
    }
}

fn image_spec(c: &Container) -> cri::ImageSpec {
    c.config.image.clone().unwrap_or_default()
}

pub(super) fn summary(sandbox_id: &str, c: &Container) -> cri::Container {
    cri::Container {
        id: c.id().to_string(),
        pod_sandbox_id: sandbox_id.to_string(),
        metadata: c.config.metadata.clone(),
        image: Some(image_spec(c)),
        image_ref: c.files.record.image_id.clone(),
        state: c.cri_state() as i32,
        created_at: c.files.record.created_at,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        image_id: c.files.record.image_id.clone(),
    }
}

pub fn status(c: &Container) -> cri::ContainerStatus {
    let exit = c.files.exit.as_ref();
    cri::ContainerStatus {
        id: c.id().to_string(),
        metadata: c.config.metadata.clone(),
        state: c.cri_state() as i32,
        created_at: c.files.record.created_at,
        started_at: c.files.state.map_or(0, |s| s.started_at),
        finished_at: exit.map_or(0, |e| e.finished_at),
        exit_code: exit.map_or(0, |e| e.exit_code),
        image: Some(image_spec(c)),
        image_ref: c.files.record.image_id.clone(),
        reason: exit.map(|e| e.reason.as_str().to_string()).unwrap_or_default(),
        message: exit.map(|e| e.message.clone()).unwrap_or_default(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c.files.record.log_path.display().to_string(),
        resources: c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|linux| cri::ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
        image_id: c.files.record.image_id.clone(),
        user: None,
    }
}
