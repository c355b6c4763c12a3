//! The pod manager: desired pods (from the manifest source) against the pods that exist
//! (workers, and the state directory at start-up). It starts, replaces and removes workers;
//! it never touches a pod's processes itself.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use minilet_proto::runtime::v1 as cri;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::Context;
use super::config::PodPlan;
use super::states::State;
use super::worker::{Command, Worker};
use crate::events::ObjectRef;
use crate::runtime::spec::{SandboxState, now_nanos};
use crate::runtime::state::{self, PodRecord, new_id};
use crate::source::{InvalidManifest, ManifestPod, SourceEvent};

struct Handle {
    manifest: PathBuf,
    obj: ObjectRef,
    commands: mpsc::UnboundedSender<Command>,
    /// Becomes true (or is dropped) when the worker has finished.
    done: watch::Receiver<bool>,
}

pub struct Manager {
    ctx: Arc<Context>,
    /// Which pod (UID) each manifest file currently stands for.
    by_file: HashMap<PathBuf, String>,
    workers: HashMap<String, Handle>,
    tasks: JoinSet<String>,
    /// Pods to start once the worker of the same UID has removed its pod (a pod an older
    /// agent ran under its manifest's bare name).
    renamed: HashMap<String, Arc<ManifestPod>>,
}

impl Manager {
    /// Reconcile the state directory with the manifests present at start-up: pods that are
    /// still wanted are re-adopted (nothing restarts), pods whose manifest is gone are
    /// removed, new manifests get new pods. A manifest that no longer parses keeps the pod
    /// of its last good content.
    pub async fn start(ctx: Arc<Context>, desired: Vec<Arc<ManifestPod>>, invalid: Vec<InvalidManifest>) -> Self {
        // Before any worker reads the runtime's containers: no exit falls between the two.
        ctx.pleg.start(ctx.cri.clone()).await;
        let mut m = Manager {
            ctx,
            by_file: HashMap::new(),
            workers: HashMap::new(),
            tasks: JoinSet::new(),
            renamed: HashMap::new(),
        };
        let wanted: HashMap<String, Arc<ManifestPod>> = desired.iter().map(|p| (p.uid.clone(), p.clone())).collect();
        let broken: HashSet<PathBuf> = invalid.iter().map(|i| i.path.clone()).collect();
        let wanted_files: HashSet<PathBuf> = desired.iter().map(|p| p.path.clone()).collect();

        let mut known = HashSet::new();
        let mut referenced = HashSet::new();
        for found in state::load_pods(&m.ctx.runtime.layout) {
            let (record, sandbox) = match found {
                Ok(v) => v,
                Err((path, why)) => {
                    tracing::warn!(path = %path.display(), "discarding unreadable pod state: {why}");
                    let _ = std::fs::remove_dir_all(if path.is_dir() {
                        path.clone()
                    } else {
                        path.parent().map(PathBuf::from).unwrap_or(path.clone())
                    });
                    continue;
                }
            };
            known.insert(record.uid.clone());
            referenced.insert(record.sandbox_id.clone());
            referenced.extend(record.old_sandboxes.iter().cloned());
            // Agents before static pods were named <name>-<node> ran them under the bare
            // name, with the same UID: their hostname, environment and log directory carry
            // the old name, so the pod is replaced rather than re-adopted under a new one.
            let renamed = wanted.get(&record.uid).filter(|p| p.name() != record.name);
            let keep = renamed.is_none()
                && (wanted.contains_key(&record.uid)
                    || (broken.contains(&record.manifest) && !wanted_files.contains(&record.manifest)));
            if let Some(pod) = renamed {
                tracing::info!(old = %record.name, new = %pod.name(), uid = %record.uid, "pod named by an older agent: replacing it under its static pod name");
                m.renamed.insert(record.uid.clone(), pod.clone());
            }
            let (uid, manifest) = (record.uid.clone(), record.manifest.clone());
            m.adopt(record, sandbox, !keep).await;
            if keep {
                m.by_file.insert(manifest, uid);
            }
        }

        // Sandboxes made for static pods that no pod records (the agent stopped between
        // RunPodSandbox and saving the pod's record, or the pod's state was lost).
        let sandboxes = m.runtime_sandboxes().await;
        let (statics, clients): (Vec<_>, Vec<_>) = sandboxes
            .into_iter()
            .partition(|s| s.annotations.contains_key(crate::runtime::cri::MANIFEST));
        for id in statics.into_iter().map(|s| s.id) {
            if referenced.contains(&id) {
                continue;
            }
            tracing::warn!(sandbox = %id, "removing a static pod's sandbox no pod records");
            let req = cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            };
            if let Err(e) = m.ctx.runtime_service().remove_pod_sandbox(req).await {
                tracing::warn!(sandbox = %id, error = %e, "remove an unrecorded sandbox");
            }
        }

        // Cgroups of pods nobody knows about any more: kill what is in them, remove them.
        // CRI-owned pods live under the same QoS groups when their client asks so.
        let cri_cgroups = m.sandbox_cgroups(clients).await;
        for cgroup in m.ctx.runtime.orphan_pod_cgroups(&known) {
            if cri_cgroups
                .iter()
                .any(|c| c == &cgroup || c.starts_with(&format!("{cgroup}/")))
            {
                continue;
            }
            tracing::warn!(%cgroup, "removing orphaned pod cgroup");
            if let Err(e) = m.ctx.runtime.remove_cgroup(&cgroup).await {
                tracing::warn!(%cgroup, error = %e, "remove orphaned pod cgroup");
            }
        }

        for pod in desired {
            if !m.workers.contains_key(&pod.uid) && !m.renamed.contains_key(&pod.uid) {
                m.upsert(pod);
            }
        }
        for i in invalid {
            m.invalid(&i);
        }
        m
    }

    /// Every sandbox the runtime has (ListPodSandbox), as the start-up sweep sees them.
    async fn runtime_sandboxes(&self) -> Vec<cri::PodSandbox> {
        match self.ctx.runtime_service().list_pod_sandbox(Default::default()).await {
            Ok(r) => r.items,
            Err(e) => {
                tracing::warn!(error = %e, "ListPodSandbox at start-up");
                Vec::new()
            }
        }
    }

    /// The pod cgroups of `sandboxes` (PodSandboxStatus's verbose info), which the orphan
    /// sweep leaves alone.
    async fn sandbox_cgroups(&self, sandboxes: Vec<cri::PodSandbox>) -> Vec<String> {
        let mut out = Vec::new();
        for sb in sandboxes {
            let req = cri::PodSandboxStatusRequest {
                pod_sandbox_id: sb.id,
                verbose: true,
            };
            let Ok(resp) = self.ctx.runtime_service().pod_sandbox_status(req).await else {
                continue;
            };
            let cgroup = crate::cri::service::verbose_info(&resp.info)
                .and_then(|info| info["cgroup"].as_str().map(str::to_string));
            out.extend(cgroup);
        }
        out
    }

    async fn adopt(&mut self, record: PodRecord, sandbox: Option<SandboxState>, terminate: bool) {
        let (tx, rx) = mpsc::unbounded_channel();
        let obj = ObjectRef::pod(&record.namespace, &record.name, &record.uid);
        let manifest = record.manifest.clone();
        let uid = record.uid.clone();
        if terminate {
            // Sent before the worker takes over, so that it goes straight to removal: a pod
            // whose manifest is gone never gets a new sandbox or container.
            if !self.renamed.contains_key(&uid) {
                tracing::info!(pod = %obj.name, uid = %uid, "manifest gone while the agent was down: removing the pod");
            }
            let _ = tx.send(Command::Terminate);
        }
        let (worker, initial) = Worker::adopt(self.ctx.clone(), record, sandbox, rx).await;
        self.spawn(uid, manifest, obj, tx, worker, initial);
    }

    fn spawn(
        &mut self,
        uid: String,
        manifest: PathBuf,
        obj: ObjectRef,
        commands: mpsc::UnboundedSender<Command>,
        worker: Worker,
        initial: State,
    ) {
        // A re-adopted pod already holds its share of the node: recorded before any new
        // pod's worker exists, so none can be admitted into its place.
        if !matches!(initial, State::CreatingSandbox) {
            self.ctx.admission.record(&uid, &worker.pod);
        }
        let (done_tx, done) = watch::channel(false);
        let id = uid.clone();
        self.tasks.spawn(async move {
            worker.run(initial).await;
            let _ = done_tx.send(true);
            id
        });
        self.workers.insert(
            uid,
            Handle {
                manifest,
                obj,
                commands,
                done,
            },
        );
    }

    /// A manifest now describes `pod`: start it, replacing the file's previous pod.
    fn upsert(&mut self, pod: Arc<ManifestPod>) {
        // The file now stands for this pod, not for one waiting for its old self to go.
        self.renamed.retain(|_, p| p.path != pod.path);
        let after = match self.by_file.insert(pod.path.clone(), pod.uid.clone()) {
            Some(old) if old == pod.uid => return,
            Some(old) => self.terminate(&old),
            None => None,
        };
        if self.workers.contains_key(&pod.uid) {
            return;
        }
        let plan = PodPlan::new(&pod.pod, &pod.uid);
        let record = PodRecord {
            uid: pod.uid.clone(),
            name: pod.name().to_string(),
            namespace: pod.namespace().to_string(),
            manifest: pod.path.clone(),
            pod: pod.pod.clone(),
            cgroup: plan.cgroup,
            sandbox_id: new_id(),
            sandbox_attempt: 0,
            old_sandboxes: Vec::new(),
            created_at: now_nanos(),
            failure: None,
        };
        tracing::info!(pod = %pod.full_name(), uid = %pod.uid, manifest = %pod.path.display(), "starting pod");
        let (tx, rx) = mpsc::unbounded_channel();
        let obj = ObjectRef::pod(&record.namespace, &record.name, &record.uid);
        // The API server's strict-decoding warnings, on the file and on the pod it became.
        for w in &pod.warnings {
            for o in [ObjectRef::file(&pod.path), obj.clone()] {
                self.ctx.events.warning(&o, "FieldIgnored", w.clone());
            }
        }
        let worker = Worker::new(self.ctx.clone(), record, rx, after);
        self.spawn(
            pod.uid.clone(),
            pod.path.clone(),
            obj,
            tx,
            worker,
            State::CreatingSandbox,
        );
    }

    /// Tell a worker to remove its pod; returns a receiver that says when it is gone.
    fn terminate(&mut self, uid: &str) -> Option<watch::Receiver<bool>> {
        let h = self.workers.get(uid)?;
        let _ = h.commands.send(Command::Terminate);
        Some(h.done.clone())
    }

    fn invalid(&mut self, i: &InvalidManifest) {
        let obj = self
            .by_file
            .get(&i.path)
            .and_then(|uid| self.workers.get(uid))
            .map(|h| h.obj.clone());
        let obj = obj.unwrap_or_else(|| ObjectRef::file(&i.path));
        self.ctx.events.warning(&obj, "InvalidManifest", i.message.clone());
    }

    /// Apply one change from the manifest source.
    pub fn apply(&mut self, ev: SourceEvent) {
        match ev {
            SourceEvent::Upsert(pod) => self.upsert(pod),
            SourceEvent::Removed { path } => {
                self.renamed.retain(|_, p| p.path != path);
                if let Some(uid) = self.by_file.remove(&path) {
                    tracing::info!(manifest = %path.display(), uid = %uid, "manifest removed: removing its pod");
                    self.terminate(&uid);
                }
            }
            SourceEvent::Invalid(i) => self.invalid(&i),
        }
    }

    /// Forget workers that have finished; start the renamed pod that waited for one.
    fn reap(&mut self, uid: &str) {
        if let Some(h) = self.workers.remove(uid)
            && self.by_file.get(&h.manifest).is_some_and(|u| u == uid)
        {
            self.by_file.remove(&h.manifest);
        }
        if let Some(pod) = self.renamed.remove(uid) {
            self.upsert(pod);
        }
    }

    /// Run until `shutdown` resolves, applying manifest changes as they come.
    pub async fn run(
        &mut self,
        mut source: mpsc::UnboundedReceiver<SourceEvent>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                ev = source.recv() => match ev {
                    Some(ev) => self.apply(ev),
                    None => {
                        tracing::error!("manifest source stopped; pods keep running, changes are no longer seen");
                        shutdown.as_mut().await;
                        return;
                    }
                },
                Some(Ok(uid)) = self.tasks.join_next(), if !self.tasks.is_empty() => self.reap(&uid),
                _ = &mut shutdown => return,
            }
        }
    }

    /// Remove every pod and wait until they are gone (`--cleanup-on-exit`, `minilet reset`).
    pub async fn remove_all(&mut self) {
        self.renamed.clear();
        let uids: Vec<String> = self.workers.keys().cloned().collect();
        for uid in &uids {
            self.terminate(uid);
        }
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(uid) = done {
                self.reap(&uid);
            }
        }
        self.by_file.clear();
    }

    /// Stop the workers without touching their pods (the kubelet's behaviour on exit).
    pub fn detach(&mut self) {
        self.tasks.abort_all();
    }
}
