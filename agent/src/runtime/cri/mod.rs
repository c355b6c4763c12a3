//! Pods a CRI client owns: the sandboxes and containers made through `RunPodSandbox` and
//! `CreateContainer` by crictl, critest or a kubelet.
//!
//! They are CRI objects with CRI states (SANDBOX_READY/NOTREADY, CONTAINER_CREATED/RUNNING/
//! EXITED), kept in `<root>/sandboxes/<sandbox id>/` next to what the runtime made of them,
//! so a restarted agent re-adopts them as it does static pods. The pod workers never touch
//! them; their client decides when they stop and go.
//!
//! ```text
//! <root>/sandboxes/<id>/cri-sandbox.json      SandboxRecord
//! <root>/sandboxes/<id>/cri-sandbox.pb        the client's PodSandboxConfig (protobuf)
//! <root>/sandboxes/<id>/sandbox.json, etc/, shm/, containers/<cid>/...   as a static pod's
//! <root>/sandboxes/<id>/containers/<cid>/cri-container.pb   the client's ContainerConfig
//! ```

mod container;
mod events;
mod sandbox;
pub mod translate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minilet_proto::runtime::v1 as cri;
use prost::Message;
use serde::{Deserialize, Serialize};

pub use container::status;
pub use events::{ContainerEvents, Exits};

use super::spec::{SandboxNamespaces, SandboxState};
use super::state::ContainerFiles;
use super::{Runtime, RuntimeError};
use crate::atomic_file;

/// The annotation that makes a sandbox a static pod's: the manifest file it comes from. Only
/// the agent's own pod side sets it (the gRPC adapter refuses it from clients); such a
/// sandbox is its pod worker's (CRI clients may stop it, not change it: `cri::ownership`).
pub const MANIFEST: &str = "minilet.dev/manifest";

const SANDBOX_RECORD: &str = "cri-sandbox.json";
const SANDBOX_CONFIG: &str = "cri-sandbox.pb";
const CONTAINER_CONFIG: &str = "cri-container.pb";

/// What the runtime decided for a CRI sandbox, beside the client's own configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The pod's cgroup (from `cgroup_parent`), relative to the agent's cgroup parent.
    pub cgroup: String,
    pub namespaces: SandboxNamespaces,
    /// Containers share the pause's PID namespace (pid mode POD or NODE).
    pub share_pid: bool,
    pub runtime_handler: String,
    /// Mount points of the sandbox's memory-backed volumes (`translate::MEMORY_VOLUMES`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_volumes: Vec<PathBuf>,
}

/// One CRI sandbox and its containers.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub dir: PathBuf,
    pub record: SandboxRecord,
    pub config: cri::PodSandboxConfig,
    /// The pause, once started.
    pub state: Option<SandboxState>,
    /// The pod network's addresses (from the cached CNI result after a restart).
    pub ips: Vec<std::net::IpAddr>,
    /// Boxed: a B-tree node has room for 11 entries inline, and a container (its config
    /// mostly) is 1.5 KB, so one container inline cost a pod 17 KB.
    pub containers: BTreeMap<String, Box<Container>>,
    /// Why its network failed the check when an agent re-adopted it (PodSandboxStatus's
    /// verbose `networkError`), if it did.
    pub network_error: Option<String>,
}

impl Sandbox {
    pub fn id(&self) -> &str {
        &self.record.id
    }

    pub fn ready(&self) -> bool {
        self.state.is_some_and(|s| s.pause.is_alive())
    }

    /// The manifest of a static pod's sandbox ([`MANIFEST`]).
    pub fn manifest(&self) -> Option<&str> {
        self.config.annotations.get(MANIFEST).map(String::as_str)
    }

    pub fn cri_state(&self) -> cri::PodSandboxState {
        if self.ready() {
            cri::PodSandboxState::SandboxReady
        } else {
            cri::PodSandboxState::SandboxNotready
        }
    }
}

/// One CRI container: what the store keeps of its configuration ([`kept`]) and the attempt's
/// files.
#[derive(Debug, Clone)]
pub struct Container {
    pub config: cri::ContainerConfig,
    pub files: ContainerFiles,
}

impl Container {
    pub fn id(&self) -> &str {
        &self.files.record.id
    }

    /// CREATED until the monitor recorded a process; RUNNING until it recorded an exit.
    pub fn cri_state(&self) -> cri::ContainerState {
        match (&self.files.state, &self.files.exit) {
            (_, Some(_)) => cri::ContainerState::ContainerExited,
            (Some(_), None) => cri::ContainerState::ContainerRunning,
            (None, None) => cri::ContainerState::ContainerCreated,
        }
    }
}

/// The CRI-owned pods of this node. Each sandbox has its own lock, held for the short
/// bookkeeping around a runtime call but never across a wait for a process to stop.
pub struct CriPods {
    rt: Arc<Runtime>,
    /// The node's name and /etc files, for sandboxes that share the host's network or DNS.
    node: crate::pod::node::NodeInfo,
    sandboxes: std::sync::Mutex<HashMap<String, Entry>>,
    events: ContainerEvents,
    exits: Exits,
}

/// One sandbox of the store, and whether it is a static pod's ([`MANIFEST`]): known without
/// taking the sandbox's own lock.
struct Entry {
    manifest: bool,
    sandbox: Arc<tokio::sync::Mutex<Sandbox>>,
}

impl CriPods {
    /// Load what earlier agents left in the state directory: running containers keep
    /// running; a sandbox whose records cannot be read is reported and left alone.
    pub fn load(rt: Arc<Runtime>, node: crate::pod::node::NodeInfo) -> Self {
        let pods = CriPods {
            rt,
            node,
            sandboxes: Default::default(),
            events: ContainerEvents::default(),
            exits: Exits::default(),
        };
        let dir = pods.rt.layout.cri_sandboxes_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return pods;
        };
        for entry in entries.flatten() {
            match load_sandbox(&entry.path()) {
                Ok(Some(mut sb)) => {
                    tracing::info!(sandbox = %sb.record.id, name = ?sb.config.metadata.as_ref().map(|m| &m.name), containers = sb.containers.len(), "re-adopted CRI sandbox");
                    // Its network is checked, not remade. The CRI has no event for it: the log
                    // says it, and PodSandboxStatus's verbose info (a static pod's worker
                    // reports it as an event).
                    if sb.ready()
                        && let Some(Err(e)) = block_on(pods.rt.network.check(&sb.dir))
                    {
                        tracing::warn!(sandbox = %sb.record.id, error = %e, "pod network check failed");
                        sb.network_error = Some(e.to_string());
                    }
                    pods.reopen_host_ports(&sb);
                    let running: Vec<ContainerFiles> = sb
                        .containers
                        .values()
                        .filter(|c| c.cri_state() == cri::ContainerState::ContainerRunning)
                        .map(|c| c.files.clone())
                        .collect();
                    let pause = sb.state.filter(|_| sb.ready());
                    let handle = pods.insert(sb);
                    if let Some(state) = pause {
                        pods.watch_pause(&handle, state);
                    }
                    for files in running {
                        pods.watch(&handle, files);
                    }
                }
                // An interrupted RunPodSandbox: the record is written last, so nothing of it
                // was ever reported to a client; it is cleaned up.
                Ok(None) => pods.discard_incomplete(&entry.path()),
                Err(e) => tracing::warn!(dir = %entry.path().display(), error = %e, "unreadable CRI sandbox"),
            }
        }
        pods
    }

    /// Without a pod network, a ready sandbox's host ports are served by its forwarder, which
    /// normally outlives the agent; one lost meanwhile is started again (as for static pods).
    fn reopen_host_ports(&self, sb: &Sandbox) {
        let Some(state) = sb
            .state
            .filter(|_| sb.ready() && sb.record.namespaces.network && !self.rt.network.enabled())
        else {
            return;
        };
        let ports = match translate::host_ports(&sb.config.port_mappings) {
            Ok(p) if !p.is_empty() => p,
            _ => return,
        };
        if block_on(self.rt.host_ports_forwarder(&sb.dir)).flatten().is_some() {
            return;
        }
        let pod = sb
            .config
            .metadata
            .as_ref()
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .unwrap_or_default();
        if let Some(Err(e)) = block_on(self.rt.start_host_ports(&sb.dir, &pod, state.pause, &ports)) {
            tracing::warn!(sandbox = %sb.record.id, error = %e, "reopen the sandbox's host ports");
        }
    }

    pub fn events(&self) -> &ContainerEvents {
        &self.events
    }

    fn insert(&self, sb: Sandbox) -> Arc<tokio::sync::Mutex<Sandbox>> {
        let id = sb.record.id.clone();
        let manifest = sb.manifest().is_some();
        let sandbox = Arc::new(tokio::sync::Mutex::new(sb));
        let entry = Entry {
            manifest,
            sandbox: sandbox.clone(),
        };
        self.map().insert(id, entry);
        sandbox
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock leaves a map that is still consistent (inserts and
        // removals are single operations).
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all(&self) -> Vec<Arc<tokio::sync::Mutex<Sandbox>>> {
        self.map().values().map(|e| e.sandbox.clone()).collect()
    }

    /// What `view` makes of each sandbox, static pods' and CRI clients', flattened: the one
    /// walk behind the lists. Nothing is read from disk (the store's watcher records each
    /// exit before it is reported, so a list after a CONTAINER_STOPPED event shows it) and
    /// nothing is copied but what `view` takes: a list of 500 pods costs no file reads.
    pub async fn list<T, I: IntoIterator<Item = T>>(&self, mut view: impl FnMut(&Sandbox) -> I) -> Vec<T> {
        let mut out = Vec::new();
        for sb in self.all() {
            out.extend(view(&*sb.lock().await));
        }
        out
    }

    /// The sandbox whose ID is `id` or starts with it (crictl passes truncated IDs).
    pub fn find_sandbox(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<Sandbox>>, RuntimeError> {
        if id.is_empty() {
            return Err(RuntimeError::InvalidArgument("sandbox ID must not be empty".into()));
        }
        let map = self.map();
        if let Some(e) = map.get(id) {
            return Ok(e.sandbox.clone());
        }
        let found: Vec<_> = map
            .iter()
            .filter(|(k, _)| k.starts_with(id))
            .map(|(_, e)| e.sandbox.clone())
            .collect();
        unique(found, "sandbox", id)
    }

    /// Whether the sandbox whose ID is `id` (or starts with it) is a static pod's; `None` when
    /// the store has no such sandbox.
    pub fn sandbox_is_manifest(&self, id: &str) -> Option<bool> {
        if id.is_empty() {
            return None;
        }
        let map = self.map();
        if let Some(e) = map.get(id) {
            return Some(e.manifest);
        }
        let mut found = map.iter().filter(|(k, _)| k.starts_with(id)).map(|(_, e)| e.manifest);
        match (found.next(), found.next()) {
            (Some(manifest), None) => Some(manifest),
            _ => None,
        }
    }

    /// The sandbox holding the container whose ID is `id` or starts with it, and the
    /// container's full ID.
    pub async fn find_container(&self, id: &str) -> Result<(Arc<tokio::sync::Mutex<Sandbox>>, String), RuntimeError> {
        if id.is_empty() {
            return Err(RuntimeError::InvalidArgument("container ID must not be empty".into()));
        }
        let mut found = Vec::new();
        for sb in self.all() {
            let guard = sb.lock().await;
            for cid in guard.containers.keys() {
                if cid == id {
                    return Ok((sb.clone(), cid.clone()));
                }
                if cid.starts_with(id) {
                    found.push((sb.clone(), cid.clone()));
                }
            }
        }
        unique(found, "container", id)
    }

    /// Whether the container whose ID is `id` (or starts with it) is a static pod's; `None`
    /// when the store has no such container.
    pub async fn container_is_manifest(&self, id: &str) -> Option<bool> {
        let (sb, _) = self.find_container(id).await.ok()?;
        Some(sb.lock().await.manifest().is_some())
    }

    /// A copy of a container (of either kind of pod), with its sandbox's ID: the one lookup
    /// behind status, exec, logs and stats. The store is current without reading the
    /// container's files: StartContainer records the start, the watcher the exit.
    pub async fn container(&self, id: &str) -> Result<(String, Container), RuntimeError> {
        let (sb, cid) = self.find_container(id).await?;
        let sb = sb.lock().await;
        let c = sb
            .containers
            .get(&cid)
            .map(|c| Container::clone(c))
            .ok_or_else(|| RuntimeError::not_found("container", id))?;
        Ok((sb.record.id.clone(), c))
    }

    /// The files of a CRI container (for exec, logs, stats).
    pub async fn container_files(&self, id: &str) -> Result<ContainerFiles, RuntimeError> {
        Ok(self.container(id).await?.1.files)
    }

    /// A container as CRI stats name it, and its files.
    pub async fn container_attributes(
        &self,
        id: &str,
    ) -> Result<(cri::ContainerAttributes, ContainerFiles), RuntimeError> {
        let (_, c) = self.container(id).await?;
        Ok((attributes(&c), c.files))
    }

    /// Every running CRI container: (sandbox ID, attributes, files).
    pub async fn running_container_attributes(&self) -> Vec<(String, cri::ContainerAttributes, ContainerFiles)> {
        self.list(|sb| {
            sb.containers
                .values()
                .filter(|c| c.cri_state() == cri::ContainerState::ContainerRunning)
                .map(|c| (sb.record.id.clone(), attributes(c), c.files.clone()))
                .collect::<Vec<_>>()
        })
        .await
    }

    /// The full ID of a sandbox, its pause while it is ready, and whether it uses the host's
    /// network (for port-forward).
    pub async fn sandbox_network(
        &self,
        id: &str,
    ) -> Result<(String, Option<super::process::ProcessId>, bool), RuntimeError> {
        let sb = self.find_sandbox(id)?;
        let sb = sb.lock().await;
        let pause = sb.state.filter(|_| sb.ready()).map(|s| s.pause);
        Ok((sb.record.id.clone(), pause, !sb.record.namespaces.network))
    }

    /// The pod cgroups of the sandboxes (a pod cgroup goes when no sandbox uses it).
    pub(super) fn cgroups(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sb in self.all() {
            if let Ok(sb) = sb.try_lock() {
                out.push(sb.record.cgroup.clone());
            }
        }
        out
    }

    /// Remove every CRI client's pod (`--cleanup-on-exit`, `minilet reset`); the static
    /// pods' workers remove their own.
    pub async fn remove_all(&self) {
        let ids: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, e)| !e.manifest)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            if let Err(e) = self.remove_pod_sandbox(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "remove CRI sandbox");
            }
        }
    }

    fn discard_incomplete(&self, dir: &Path) {
        tracing::warn!(dir = %dir.display(), "removing an interrupted CRI sandbox");
        if let Ok(Some(state)) = atomic_file::read_json::<SandboxState>(&dir.join(super::sandbox::SANDBOX_STATE))
            && let Ok(Some(pidfd)) = state.pause.open()
        {
            let _ = pidfd.signal(nix::sys::signal::Signal::SIGKILL);
        }
        // Its CNI ADD may have begun: DEL first, or the address and the pinned namespace
        // would outlive the directory that says what to undo.
        match block_on(self.rt.network.remove(dir)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::warn!(dir = %dir.display(), error = %e, "DEL for an interrupted CRI sandbox");
                return;
            }
            None => tracing::warn!(dir = %dir.display(), "no runtime to run DEL for an interrupted CRI sandbox"),
        }
        let _ = super::container::remove_dir_all(dir);
    }
}

/// Run `work` to its end from the synchronous loading code, on the agent's (multi-threaded)
/// runtime; `None` without one.
fn block_on<F: std::future::Future>(work: F) -> Option<F::Output> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    (handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        .then(|| tokio::task::block_in_place(|| handle.block_on(work)))
}

/// What the store keeps in memory of a container's configuration: what statuses, lists,
/// stats and events report (metadata, image, labels, annotations, mounts, log path,
/// resources). The whole of it is on disk (`cri-container.pb`); the rest (command, env,
/// security context, masked paths: most of its size) was used once, to create the
/// container, and is not kept for every container the node runs.
fn kept(config: cri::ContainerConfig) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: config.metadata,
        image: config.image,
        labels: config.labels,
        annotations: config.annotations,
        mounts: config.mounts,
        log_path: config.log_path,
        linux: config.linux.map(|l| cri::LinuxContainerConfig {
            resources: l.resources,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A CRI container as CRI stats name it.
pub fn attributes(c: &Container) -> cri::ContainerAttributes {
    cri::ContainerAttributes {
        id: c.id().to_string(),
        metadata: c.config.metadata.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
    }
}

/// Exactly one match, or the error a CRI client expects.
fn unique<T>(mut found: Vec<T>, what: &'static str, id: &str) -> Result<T, RuntimeError> {
    match found.len() {
        0 => Err(RuntimeError::not_found(what, id)),
        1 => Ok(found.remove(0)),
        n => Err(RuntimeError::InvalidArgument(format!(
            "{what} ID prefix \"{id}\" is ambiguous ({n} matches)"
        ))),
    }
}

fn load_sandbox(dir: &Path) -> std::io::Result<Option<Sandbox>> {
    let Some(record) = atomic_file::read_json::<SandboxRecord>(&dir.join(SANDBOX_RECORD))? else {
        return Ok(None);
    };
    let config = read_pb::<cri::PodSandboxConfig>(&dir.join(SANDBOX_CONFIG))?.unwrap_or_default();
    let state = atomic_file::read_json::<SandboxState>(&dir.join(super::sandbox::SANDBOX_STATE))?;
    let mut containers = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir.join("containers")) {
        for entry in entries.flatten() {
            let cdir = entry.path();
            let Some(config) = read_pb::<cri::ContainerConfig>(&cdir.join(CONTAINER_CONFIG))? else {
                // Written last by CreateContainer: without it the creation was interrupted.
                tracing::warn!(dir = %cdir.display(), "removing an interrupted CRI container creation");
                let _ = super::container::remove_dir_all(&cdir);
                continue;
            };
            if let Some(files) = ContainerFiles::load(&cdir)? {
                containers.insert(
                    files.record.id.clone(),
                    Box::new(Container {
                        config: kept(config),
                        files,
                    }),
                );
            }
        }
    }
    Ok(Some(Sandbox {
        dir: dir.to_path_buf(),
        record,
        config,
        state,
        ips: crate::runtime::network::cached_ips(dir),
        containers,
        network_error: None,
    }))
}

fn read_pb<T: Message + Default>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => T::decode(&bytes[..])
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_pb<T: Message>(path: &Path, msg: &T) -> std::io::Result<()> {
    atomic_file::write_mode(path, &msg.encode_to_vec(), crate::file_modes::STATE_FILE)
}
