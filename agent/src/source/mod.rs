//! The manifest source: a directory of Pod manifests → the pods that should run.
//!
//! Like the kubelet's file source: one Pod per file, static-pod UIDs from content and path.
//! Unlike it: event-driven (inotify), editor leftovers ignored, and a file that stops parsing
//! keeps the pod of its last good content (a half-written save must never kill a pod).
//!
//! Timing: a close-after-write or a rename into the directory is acted on at once (that is
//! how `cp`, `kubectl`-style writers and editors finish a file); a bare create or modify waits
//! for a short quiet period first, so a file still being written is normally not read. A
//! periodic re-list compares (inode, size, mtime) and only re-reads what changed: a safety
//! net for lost events, not the mechanism.

pub mod filter;
mod limits;
mod parse;
mod static_name;
mod strict;
mod uid;
pub mod validate;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use filter::is_manifest_name;
use k8s_openapi::api::core::v1::Pod;
use notify::Watcher;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
pub use parse::default_pull_policy;
pub use static_name::static_pod_name;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Quiet period after a create/modify without a close-after-write.
const SETTLE: Duration = Duration::from_millis(200);

/// A pod desired by a manifest file.
#[derive(Debug, Clone)]
pub struct ManifestPod {
    pub path: PathBuf,
    pub uid: String,
    /// Parsed and defaulted, with its UID, node name and config annotations set, and named
    /// `<metadata.name>-<node name>` as the kubelet names static pods.
    pub pod: Arc<Pod>,
    /// What the API server and the kubelet would warn about, each one line: unknown fields
    /// (strict decoding), fields minilet does not implement. The pod runs regardless.
    pub warnings: Vec<String>,
}

impl ManifestPod {
    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }
}

/// A manifest file that does not describe a valid pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidManifest {
    pub path: PathBuf,
    /// One line: `<file>: <field path>: <problem>; ...`.
    pub message: String,
}

#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// A new pod, or a file's content changed into another pod.
    Upsert(Arc<ManifestPod>),
    /// The file is gone (or now ignored): its pod should go.
    Removed { path: PathBuf },
    /// The file is invalid. Its previous pod, if any, stays desired.
    Invalid(InvalidManifest),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("create manifests directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("watch manifests directory {path}: {source}")]
    Watch { path: PathBuf, source: notify::Error },
}

/// Read a single manifest file: parse, default, validate, compute the static UID.
///
/// Blocking (file I/O, parsing): call it off the async workers.
pub fn load_file(path: &Path, node_name: &str) -> Result<ManifestPod, InvalidManifest> {
    let invalid = |msg: String| InvalidManifest {
        path: path.to_path_buf(),
        message: limits::bound_message(format!("{}: {msg}", path.display())),
    };
    let text = read_bounded(path).map_err(invalid)?;
    let (mut pod, mut warnings) = parse::parse(path, &text).map_err(invalid)?;
    drop(text);
    warnings.extend(strict::not_implemented(&pod));
    parse::apply_defaults(&mut pod, node_name);
    let mut errors = validate::validate(&pod);
    let manifest_name = pod.metadata.name.clone().unwrap_or_default();
    if errors.is_empty()
        && let Some(e) = static_name::check(&manifest_name, node_name)
    {
        errors.push(e);
    }
    let size = json_size(&pod);
    if size > limits::MAX_POD_JSON_BYTES {
        errors.push(format!(
            "Too long: the pod is {size} bytes as JSON, must have at most {} bytes (etcd's 1.5 MiB request limit: a pod that large cannot exist in a cluster)",
            limits::MAX_POD_JSON_BYTES
        ));
    }
    if !errors.is_empty() {
        return Err(invalid(errors.join("; ")));
    }
    // Hashed before the rename, as the kubelet does: the UID of an unchanged manifest is the
    // one agents before the rename gave it.
    let uid = match pod.metadata.uid.clone().filter(|u| !u.is_empty()) {
        Some(uid) => uid,
        None => uid::static_uid(&pod, node_name, path),
    };
    pod.metadata.uid = Some(uid.clone());
    pod.metadata.name = Some(static_pod_name(&manifest_name, node_name));
    let annotations = pod.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert("kubernetes.io/config.source".into(), "file".into());
    annotations.insert("kubernetes.io/config.hash".into(), uid.clone());
    annotations.insert("kubernetes.io/config.seen".into(), jiff::Timestamp::now().to_string());
    Ok(ManifestPod {
        path: path.to_path_buf(),
        uid,
        pod: Arc::new(pod),
        warnings,
    })
}

/// The file's text, refusing more than [`limits::MAX_FILE_BYTES`] before reading it (and
/// reading no more than that should it grow meanwhile).
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let too_large = |n: u64| {
        format!(
            "Too long: the file is {n} bytes, must have at most {} bytes (10 MiB, the kubelet's limit for a static pod file)",
            limits::MAX_FILE_BYTES
        )
    };
    let file = std::fs::File::open(path).map_err(|e| format!("read: {e}"))?;
    let len = file.metadata().map_err(|e| format!("read: {e}"))?.len();
    if len > limits::MAX_FILE_BYTES {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limits::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read: {e}"))?;
    if bytes.len() as u64 > limits::MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| format!("read: stream did not contain valid UTF-8: {}", e.utf8_error()))
}

/// Length of the pod's compact JSON, without building it.
fn json_size(pod: &Pod) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Serializing a Pod cannot fail (string keys only); a failure would count what was written.
    let _ = serde_json::to_writer(&mut n, pod);
    n.0
}

/// Watches the directory; dropping it stops the watch.
pub struct ManifestSource {
    task: tokio::task::AbortHandle,
}

impl Drop for ManifestSource {
    fn drop(&mut self) {
        // The watcher lives in the task: aborting it drops the watch.
        self.task.abort();
    }
}

impl ManifestSource {
    /// List the directory once (synchronously, sorted by file name) and start watching it.
    /// Returns the initial desired pods and invalid files, so the agent can reconcile its
    /// state directory before acting on changes, and the receiver of later changes.
    /// Must be called inside a tokio runtime.
    #[allow(clippy::type_complexity)]
    pub fn start(
        dir: &Path,
        node_name: &str,
        relist: Duration,
    ) -> Result<
        (
            Self,
            Vec<Arc<ManifestPod>>,
            Vec<InvalidManifest>,
            mpsc::UnboundedReceiver<SourceEvent>,
        ),
        SourceError,
    > {
        if !dir.is_dir() {
            tracing::info!(dir = %dir.display(), "creating the manifests directory");
            std::fs::create_dir_all(dir).map_err(|source| SourceError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // Watch before listing: a change made in between is seen twice at worst.
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res| {
            let _ = raw_tx.send(res);
        })
        .map_err(|source| SourceError::Watch {
            path: dir.to_path_buf(),
            source,
        })?;
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map_err(|source| SourceError::Watch {
                path: dir.to_path_buf(),
                source,
            })?;

        let mut state = Files::new(dir, node_name);
        state.relist();
        let (mut desired, mut invalid) = (Vec::new(), Vec::new());
        for ev in state.out.drain(..) {
            match ev {
                SourceEvent::Upsert(p) => desired.push(p),
                SourceEvent::Invalid(i) => invalid.push(i),
                SourceEvent::Removed { .. } => {}
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let watch = DirWatch {
            watcher,
            dir: dir.to_path_buf(),
            parent: std::path::absolute(dir)
                .ok()
                .and_then(|d| d.parent().map(Path::to_path_buf)),
            missing: false,
        };
        let task = tokio::spawn(run(state, watch, raw_rx, tx, relist)).abort_handle();
        Ok((ManifestSource { task }, desired, invalid, rx))
    }
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

#[derive(Debug, Default)]
struct Tracked {
    stamp: Option<Stamp>,
    /// The pod this file currently stands for (its last valid content).
    pod: Option<Arc<ManifestPod>>,
    /// The last error reported for it (reported once, not on every re-read).
    error: Option<String>,
    /// Its pod's name is taken by another file.
    conflict: bool,
}

/// One path looked at off the async workers: gone (or no manifest any more), or read and parsed.
enum Read {
    Gone,
    Loaded(Option<Stamp>, Result<ManifestPod, InvalidManifest>),
}

/// The manifest candidates of a directory with their stamps, sorted by path.
type Listing = Vec<(PathBuf, Option<Stamp>)>;

/// List `dir` and stat its candidates: blocking, so the run loop does it on a blocking thread.
fn list(dir: &Path) -> Listing {
    let mut present: Listing = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| is_manifest_name(&e.file_name()))
            .map(|e| {
                let path = e.path();
                let st = stamp(&path);
                (path, st)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    present.sort_by(|a, b| a.0.cmp(&b.0));
    present
}

struct Files {
    dir: PathBuf,
    node: String,
    files: BTreeMap<PathBuf, Tracked>,
    /// `namespace/name` → the file whose pod has it.
    owners: HashMap<String, PathBuf>,
    out: Vec<SourceEvent>,
    /// Files to read again because a name they wanted was released.
    retry: Vec<PathBuf>,
}

impl Files {
    fn new(dir: &Path, node: &str) -> Self {
        Files {
            dir: dir.to_path_buf(),
            node: node.to_string(),
            files: BTreeMap::new(),
            owners: HashMap::new(),
            out: Vec::new(),
            retry: Vec::new(),
        }
    }

    /// Candidates of `listing` whose stamp changed, and tracked files that vanished, sorted.
    fn changed(&self, listing: &Listing) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = listing
            .iter()
            .filter(|(p, st)| self.files.get(p).is_none_or(|t| t.stamp != *st))
            .map(|(p, _)| p.clone())
            .collect();
        out.extend(
            self.files
                .keys()
                .filter(|p| listing.binary_search_by(|(q, _)| q.cmp(p)).is_err())
                .cloned(),
        );
        out
    }

    /// Re-read, here and now, every candidate whose stamp changed; notice files that vanished.
    fn relist(&mut self) {
        for path in self.changed(&list(&self.dir)) {
            self.refresh(&path);
        }
    }

    /// Bring one path up to date, here and now, and queue the events that follow.
    fn refresh(&mut self, path: &Path) {
        let mut queue = vec![path.to_path_buf()];
        while let Some(p) = queue.pop() {
            if is_candidate(&p) {
                let st = stamp(&p);
                let loaded = load_file(&p, &self.node);
                self.apply(&p, st, loaded);
            } else {
                self.forget(&p);
            }
            queue.append(&mut self.retry);
        }
    }

    /// The path is gone or no longer a manifest: its pod goes.
    fn forget(&mut self, path: &Path) {
        if let Some(t) = self.files.remove(path)
            && let Some(pod) = t.pod
        {
            self.release(&pod.full_name(), path);
            self.out.push(SourceEvent::Removed {
                path: path.to_path_buf(),
            });
        }
    }

    /// Take in what reading the file gave.
    fn apply(&mut self, path: &Path, st: Option<Stamp>, loaded: Result<ManifestPod, InvalidManifest>) {
        match loaded {
            Ok(pod) => {
                let full = pod.full_name();
                let owner = self.owners.get(&full).filter(|o| o.as_path() != path).cloned();
                let t = self.files.entry(path.to_path_buf()).or_default();
                t.stamp = st;
                if let Some(owner) = owner {
                    let msg = format!(
                        "{}: metadata.name: Duplicate value: {:?}: pod {full} is already defined by {}",
                        path.display(),
                        pod.name(),
                        owner.display()
                    );
                    t.conflict = true;
                    if t.error.as_deref() != Some(msg.as_str()) {
                        t.error = Some(msg.clone());
                        tracing::warn!("{msg}");
                        self.out.push(SourceEvent::Invalid(InvalidManifest {
                            path: path.to_path_buf(),
                            message: msg,
                        }));
                    }
                    return;
                }
                t.conflict = false;
                t.error = None;
                if t.pod.as_ref().is_some_and(|old| old.uid == pod.uid) {
                    return; // unchanged (a touch, a reformat)
                }
                let previous = t.pod.replace(Arc::new(pod));
                let pod = t.pod.clone();
                if let Some(prev) = previous
                    && prev.full_name() != full
                {
                    self.release(&prev.full_name(), path);
                }
                self.owners.insert(full, path.to_path_buf());
                if let Some(pod) = pod {
                    self.out.push(SourceEvent::Upsert(pod));
                }
            }
            Err(invalid) => {
                let t = self.files.entry(path.to_path_buf()).or_default();
                t.stamp = st;
                if t.error.as_deref() != Some(invalid.message.as_str()) {
                    t.error = Some(invalid.message.clone());
                    tracing::warn!("{}", invalid.message);
                    self.out.push(SourceEvent::Invalid(invalid));
                }
            }
        }
    }

    /// `path` no longer holds `full`: give the name to a file that wanted it, if any.
    fn release(&mut self, full: &str, path: &Path) {
        if self.owners.get(full).is_some_and(|o| o == path) {
            self.owners.remove(full);
            for (p, t) in self.files.iter_mut().filter(|(_, t)| t.conflict) {
                t.error = None;
                self.retry.push(p.clone());
            }
        }
    }
}

fn is_candidate(path: &Path) -> bool {
    path.file_name().is_some_and(is_manifest_name) && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp::of(&m))
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// Files read and parsed at once, each on a blocking thread: a slow or huge file holds one
/// of these, never the others. Few, because each may hold a 10 MiB text and its parse.
const PARALLEL_LOADS: usize = 2;

/// Reads files off the async workers, at most one load per path at a time.
struct Loader {
    node: String,
    /// Paths being read → whether another change came meanwhile (read again when done).
    inflight: HashMap<PathBuf, bool>,
    permits: Arc<tokio::sync::Semaphore>,
    done: mpsc::UnboundedSender<(PathBuf, Read)>,
}

impl Loader {
    /// Read `path` again soon (or forget it if it is no manifest any more).
    fn schedule(&mut self, files: &mut Files, path: PathBuf) {
        if let Some(again) = self.inflight.get_mut(&path) {
            *again = true;
            return;
        }
        // The name alone (no file system access) rules out temporaries, backups and swaps.
        if !path.file_name().is_some_and(is_manifest_name) {
            files.forget(&path);
            return;
        }
        self.inflight.insert(path.clone(), false);
        tracing::debug!(manifest = %path.display(), "reading manifest");
        let (node, permits, done) = (self.node.clone(), self.permits.clone(), self.done.clone());
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let p = path.clone();
            // The name was checked when scheduled; one stat tells a file (and its stamp) from
            // a directory or nothing.
            let read = tokio::task::spawn_blocking(move || match std::fs::metadata(&p) {
                Ok(m) if m.is_file() => Read::Loaded(Some(Stamp::of(&m)), load_file(&p, &node)),
                _ => Read::Gone,
            })
            .await
            .unwrap_or_else(|e| {
                let message = format!("{}: read: {e}", path.display());
                Read::Loaded(
                    None,
                    Err(InvalidManifest {
                        path: path.clone(),
                        message,
                    }),
                )
            });
            let _ = done.send((path, read));
        });
    }

    /// A read finished: apply it, unless the file changed meanwhile (then read it again).
    fn finished(&mut self, files: &mut Files, (path, read): (PathBuf, Read)) {
        if self.inflight.remove(&path).unwrap_or(false) {
            self.schedule(files, path);
            return;
        }
        match read {
            Read::Gone => files.forget(&path),
            Read::Loaded(st, loaded) => files.apply(&path, st, loaded),
        }
    }

    /// Re-list: everything whose stamp changed in `listing`, except what is being read already.
    fn relist(&mut self, files: &mut Files, listing: &Listing) {
        for path in files.changed(listing) {
            if !self.inflight.contains_key(&path) {
                self.schedule(files, path);
            }
        }
    }

    fn retry(&mut self, files: &mut Files) {
        for path in std::mem::take(&mut files.retry) {
            self.schedule(files, path);
        }
    }
}

/// The inotify watch on the directory, and on its parent while the directory is gone (so
/// that its re-creation is seen at once).
struct DirWatch {
    watcher: notify::RecommendedWatcher,
    dir: PathBuf,
    parent: Option<PathBuf>,
    missing: bool,
}

impl DirWatch {
    /// Whether `path` is the directory itself.
    fn is_dir_path(&self, path: &Path) -> bool {
        path == self.dir
            || (self.parent.as_deref().is_some_and(|p| path.parent() == Some(p))
                && path.file_name() == self.dir.file_name())
    }

    /// The directory was removed or moved away: watch its parent for its return.
    fn lost(&mut self) {
        if !self.missing {
            tracing::warn!(
                dir = %self.dir.display(),
                "the manifests directory is gone: its pods are removed; watching for it to come back"
            );
            self.missing = true;
            let _ = self.watcher.unwatch(&self.dir);
        }
        if let Some(parent) = &self.parent
            && let Err(e) = self.watcher.watch(parent, notify::RecursiveMode::NonRecursive)
        {
            tracing::debug!(error = %e, parent = %parent.display(), "cannot watch the manifests directory's parent; re-listing will notice it");
        }
    }

    /// Watch the directory again if it is back. True when it was re-established.
    fn restore(&mut self) -> bool {
        if !self.missing || !self.dir.is_dir() {
            return false;
        }
        if let Err(e) = self.watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "cannot watch the manifests directory again");
            return false;
        }
        if let Some(parent) = &self.parent {
            let _ = self.watcher.unwatch(parent);
        }
        self.missing = false;
        tracing::info!(dir = %self.dir.display(), "the manifests directory is back: watching it again");
        true
    }
}

/// [`list`] on a blocking thread: the run loop's workers only wait for it.
async fn listed(dir: &Path) -> Listing {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || list(&dir))
        .await
        .unwrap_or_default()
}

async fn run(
    mut files: Files,
    mut watch: DirWatch,
    mut raw: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    tx: mpsc::UnboundedSender<SourceEvent>,
    relist: Duration,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut loader = Loader {
        node: files.node.clone(),
        inflight: HashMap::new(),
        permits: Arc::new(tokio::sync::Semaphore::new(PARALLEL_LOADS)),
        done: done_tx,
    };
    let mut settling: HashMap<PathBuf, Instant> = HashMap::new();
    let mut relist_timer = tokio::time::interval_at(Instant::now() + relist, relist.max(Duration::from_millis(100)));
    relist_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = settling.values().min().copied();
        tokio::select! {
            ev = raw.recv() => {
                let Some(first) = ev else { return }; // the watcher was dropped
                // Everything already queued, as one batch: a path named by several events
                // (a rename reports From, To and Both) is read once.
                let mut batch = vec![first];
                while let Ok(more) = raw.try_recv() {
                    batch.push(more);
                }
                let mut now: Vec<PathBuf> = Vec::new();
                let mut relist_now = false;
                for ev in batch {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            tracing::warn!(error = %e, "manifest watch error; re-listing");
                            relist_now = true;
                            continue;
                        }
                    };
                    if ev.need_rescan() {
                        relist_now = true;
                    }
                    if matches!(ev.kind, EventKind::Modify(ModifyKind::Name(RenameMode::Both))) {
                        continue; // its paths come in their own From and To events
                    }
                    if ev.paths.iter().any(|p| watch.is_dir_path(p)) {
                        match ev.kind {
                            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                                watch.lost();
                                relist_now = true;
                            }
                            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_)) => {
                                relist_now |= watch.restore();
                            }
                            _ => {}
                        }
                        continue;
                    }
                    let now_kind = matches!(
                        ev.kind,
                        EventKind::Access(AccessKind::Close(AccessMode::Write)) | EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_)
                    );
                    let settle_kind = matches!(ev.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any | EventKind::Other);
                    for path in ev.paths.into_iter().filter(|p| p.parent() == Some(files.dir.as_path())) {
                        if now_kind {
                            settling.remove(&path);
                            if !now.contains(&path) {
                                now.push(path);
                            }
                        } else if settle_kind {
                            settling.insert(path, Instant::now() + SETTLE);
                        }
                    }
                }
                for path in now {
                    loader.schedule(&mut files, path);
                }
                if relist_now {
                    let listing = listed(&files.dir).await;
                    loader.relist(&mut files, &listing);
                }
            }
            Some(loaded) = done_rx.recv() => loader.finished(&mut files, loaded),
            _ = async { match next { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                let now = Instant::now();
                let due: Vec<PathBuf> = settling.iter().filter(|(_, t)| **t <= now).map(|(p, _)| p.clone()).collect();
                for p in due {
                    settling.remove(&p);
                    loader.schedule(&mut files, p);
                }
            }
            _ = relist_timer.tick() => {
                if watch.missing && !watch.restore() {
                    watch.lost(); // the parent may be back where the directory is not
                }
                let listing = listed(&files.dir).await;
                loader.relist(&mut files, &listing);
            }
            _ = tx.closed() => return,
        }
        loader.retry(&mut files);
        for ev in files.out.drain(..) {
            if tx.send(ev).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n  - name: app\n    image: localhost/busybox:latest\n    command: [sleep, 'SECS']\n";

    fn pod(name: &str, secs: u32) -> String {
        POD.replace("NAME", name).replace("SECS", &secs.to_string())
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<SourceEvent>) -> SourceEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5s")
            .expect("source alive")
    }

    async fn quiet(rx: &mut mpsc::UnboundedReceiver<SourceEvent>, for_: Duration) {
        if let Ok(Some(ev)) = tokio::time::timeout(for_, rx.recv()).await {
            panic!("unexpected event {ev:?}");
        }
    }

    #[test]
    fn load_file_defaults_and_annotates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.yaml");
        std::fs::write(&p, pod("w", 1)).unwrap();
        let m = load_file(&p, "node1").unwrap();
        assert_eq!(m.full_name(), "default/w-node1");
        assert_eq!(m.pod.metadata.uid.as_deref(), Some(m.uid.as_str()));
        let ann = m.pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann["kubernetes.io/config.source"], "file");
        assert_eq!(ann["kubernetes.io/config.hash"], m.uid);
        assert_eq!(m.pod.spec.as_ref().unwrap().node_name.as_deref(), Some("node1"));
        // Reading again: same UID, though config.seen changed.
        assert_eq!(load_file(&p, "node1").unwrap().uid, m.uid);
        // The UID is the hash of the pod as the manifest names it (the kubelet's order): the
        // one agents before the rename gave the same file.
        let mut unrenamed = (*m.pod).clone();
        unrenamed.metadata.name = Some("w".into());
        unrenamed.metadata.uid = None;
        unrenamed.metadata.annotations = None;
        assert_eq!(uid::static_uid(&unrenamed, "node1", &p), m.uid);
        // Another node: another name and UID.
        let other = load_file(&p, "node2").unwrap();
        assert_eq!((other.name(), other.uid == m.uid), ("w-node2", false));
        // Name + node too long for a pod name: refused, naming the file and the field.
        let long = ["a".repeat(62), "b".repeat(62), "c".repeat(62), "d".repeat(60)].join(".");
        std::fs::write(&p, pod(&long, 1)).unwrap();
        let err = load_file(&p, "node1234").unwrap_err();
        assert!(
            err.message.starts_with(&format!(
                "{}: metadata.name: Invalid value: static pod name",
                p.display()
            )) && err.message.contains("must have at most 253"),
            "{}",
            err.message
        );
        assert!(load_file(&p, "n").is_ok(), "249 + 1 + 1 characters fit");
        std::fs::write(
            &p,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: W}\nspec: {containers: []}\n",
        )
        .unwrap();
        let err = load_file(&p, "node1").unwrap_err();
        assert!(
            err.message
                .starts_with(&format!("{}: metadata.name: Invalid value", p.display())),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("; spec.containers: Required value"),
            "{}",
            err.message
        );
    }

    #[test]
    fn load_file_defaults_empty_strings_and_refuses_bad_host_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.yaml");
        let manifest = |aliases: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: w}}\nspec:\n  restartPolicy: ''\n  schedulerName: ''\n  hostAliases: [{aliases}]\n  containers: [{{name: a, image: i, imagePullPolicy: '', ports: [{{containerPort: 80, protocol: ''}}]}}]\n"
            )
        };
        std::fs::write(&p, manifest("{ip: 10.1.1.1, hostnames: [db.example]}")).unwrap();
        let m = load_file(&p, "node1").unwrap();
        let spec = m.pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Always"));
        std::fs::write(&p, manifest("{ip: 10.1.1.300, hostnames: [ok, Not_A_Name]}")).unwrap();
        let err = load_file(&p, "node1").unwrap_err();
        assert!(
            err.message.starts_with(&format!(
                "{}: spec.hostAliases[0].ip: Invalid value: \"10.1.1.300\"",
                p.display()
            )) && err
                .message
                .contains("; spec.hostAliases[0].hostnames[1]: Invalid value: \"Not_A_Name\""),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn watch_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.yaml"), pod("a", 1)).unwrap();
        std::fs::write(d.join("bad.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: bad\n").unwrap();
        let (_src, desired, invalid, mut rx) = ManifestSource::start(d, "n", Duration::from_secs(60)).unwrap();
        assert_eq!(desired.len(), 1);
        assert_eq!(invalid.len(), 1);
        let a_uid = desired[0].uid.clone();

        // Create → Upsert.
        std::fs::write(d.join("b.yaml"), pod("b", 1)).unwrap();
        let SourceEvent::Upsert(b) = next(&mut rx).await else {
            panic!("upsert")
        };
        assert_eq!(b.name(), "b-n");

        // Touch and editor leftovers → nothing.
        let f = std::fs::File::options().write(true).open(d.join("a.yaml")).unwrap();
        f.set_modified(std::time::SystemTime::now()).unwrap();
        drop(f);
        std::fs::write(d.join("a.yaml.bak"), pod("a", 1)).unwrap();
        std::fs::write(d.join(".a.yaml.swp"), pod("a", 1)).unwrap();
        std::fs::write(d.join("a.yaml~"), pod("a", 1)).unwrap();
        quiet(&mut rx, Duration::from_millis(800)).await;

        // Edit → Upsert with a new UID.
        std::fs::write(d.join("a.yaml"), pod("a", 2)).unwrap();
        let SourceEvent::Upsert(a2) = next(&mut rx).await else {
            panic!("upsert")
        };
        assert_ne!(a2.uid, a_uid);

        // Write through a temp file + rename → exactly one Upsert.
        std::fs::write(d.join(".c.yaml.tmp"), pod("c", 1)).unwrap();
        std::fs::rename(d.join(".c.yaml.tmp"), d.join("c.yaml")).unwrap();
        let SourceEvent::Upsert(c) = next(&mut rx).await else {
            panic!("upsert")
        };
        assert_eq!(c.name(), "c-n");
        quiet(&mut rx, Duration::from_millis(500)).await;

        // A broken edit of a valid file → Invalid, never Removed; fixing it → Upsert.
        std::fs::write(d.join("b.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: b\n").unwrap();
        let SourceEvent::Invalid(i) = next(&mut rx).await else {
            panic!("invalid")
        };
        assert!(
            i.message.contains("b.yaml") && i.message.contains("line"),
            "{}",
            i.message
        );
        quiet(&mut rx, Duration::from_millis(500)).await;
        std::fs::write(d.join("b.yaml"), pod("b", 3)).unwrap();
        assert!(matches!(next(&mut rx).await, SourceEvent::Upsert(_)));

        // A second file with the same pod name → Invalid naming the first; it takes over
        // once the first is removed.
        std::fs::write(d.join("z.yaml"), pod("a", 9)).unwrap();
        let SourceEvent::Invalid(i) = next(&mut rx).await else {
            panic!("invalid")
        };
        assert!(
            i.message.contains("already defined by") && i.message.contains("a.yaml"),
            "{}",
            i.message
        );
        std::fs::remove_file(d.join("a.yaml")).unwrap();
        let mut got = [next(&mut rx).await, next(&mut rx).await];
        got.sort_by_key(|e| matches!(e, SourceEvent::Upsert(_)));
        assert!(matches!(&got[0], SourceEvent::Removed { path } if path.ends_with("a.yaml")));
        assert!(matches!(&got[1], SourceEvent::Upsert(p) if p.path.ends_with("z.yaml")));

        // Delete → Removed.
        std::fs::remove_file(d.join("c.yaml")).unwrap();
        assert!(matches!(next(&mut rx).await, SourceEvent::Removed { path } if path.ends_with("c.yaml")));
    }

    #[tokio::test]
    async fn a_slow_write_gives_one_upsert_of_the_whole_file() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let (_src, _, _, mut rx) = ManifestSource::start(dir.path(), "n", Duration::from_secs(60)).unwrap();
        let text = pod("slow", 1);
        let (first, second) = text.split_at(text.len() / 2);
        let mut f = std::fs::File::create(dir.path().join("slow.yaml")).unwrap();
        f.write_all(first.as_bytes()).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        f.write_all(second.as_bytes()).unwrap();
        drop(f);
        let SourceEvent::Upsert(p) = next(&mut rx).await else {
            panic!("a single upsert, no invalid")
        };
        assert_eq!(p.pod.spec.as_ref().unwrap().containers.len(), 1);
        quiet(&mut rx, Duration::from_millis(600)).await;
    }

    #[test]
    fn relist_rereads_only_what_changed_and_notices_removals() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut files = Files::new(d, "n");
        files.relist();
        assert!(files.out.is_empty());
        std::fs::write(d.join("a.yaml"), pod("a", 1)).unwrap();
        files.relist();
        assert!(matches!(
            files.out.drain(..).collect::<Vec<_>>().as_slice(),
            [SourceEvent::Upsert(_)]
        ));
        files.relist();
        assert!(files.out.is_empty(), "unchanged stamp: not even re-read");
        std::fs::remove_file(d.join("a.yaml")).unwrap();
        files.relist();
        assert!(matches!(
            files.out.drain(..).collect::<Vec<_>>().as_slice(),
            [SourceEvent::Removed { .. }]
        ));
    }

    #[test]
    fn size_limits_name_the_file_the_field_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(limits::MAX_FILE_BYTES + 1).unwrap();
        let e = load_file(&big, "n").unwrap_err();
        assert!(
            e.message.starts_with(&format!(
                "{}: Too long: the file is 10485761 bytes, must have at most 10485760 bytes",
                big.display()
            )),
            "{}",
            e.message
        );

        // Within the file limit, but no cluster could hold the pod.
        let p = dir.path().join("wide.yaml");
        let env: String = (0..20_000)
            .map(|i| format!("    - {{name: V{i}, value: '{}'}}\n", "x".repeat(80)))
            .collect();
        std::fs::write(&p, format!("{}    env:\n{env}", pod("wide", 1))).unwrap();
        let e = load_file(&p, "n").unwrap_err();
        assert!(
            e.message.contains("Too long: the pod is") && e.message.contains("must have at most 1572864 bytes"),
            "{}",
            &e.message[..200.min(e.message.len())]
        );

        // A huge value in a wrong place: the error quotes a bounded part of it.
        let p = dir.path().join("huge.yaml");
        std::fs::write(
            &p,
            pod("huge", 1).replace("'1'", &format!("'1'\n    workingDir: [{}]", "x,".repeat(500_000))),
        )
        .unwrap();
        let e = load_file(&p, "n").unwrap_err();
        assert!(e.message.len() <= limits::MAX_MESSAGE_BYTES, "{}", e.message.len());

        // A UID that would be a path.
        let p = dir.path().join("uid.yaml");
        std::fs::write(&p, pod("uid", 1).replace("  name: uid\n", "  name: uid\n  uid: ../x\n")).unwrap();
        let e = load_file(&p, "n").unwrap_err();
        assert!(
            e.message.contains("metadata.uid: Invalid value: \"../x\""),
            "{}",
            e.message
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_file_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (_src, _, _, mut rx) = ManifestSource::start(dir.path(), "n", Duration::from_secs(600)).unwrap();
        // Nearly 10 MiB of small values: slow to read, then refused as too large a pod.
        let list: String = "    - abcdefghij\n".repeat(500_000);
        std::fs::write(
            dir.path().join("slow.yaml"),
            format!("{}    args:\n{list}", pod("slow", 1)),
        )
        .unwrap();
        std::fs::write(dir.path().join("quick.yaml"), pod("quick", 1)).unwrap();
        let first = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(&first, SourceEvent::Upsert(p) if p.name() == "quick-n"),
            "{first:?}"
        );
        let second = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(&second, SourceEvent::Invalid(i) if i.path.ends_with("slow.yaml")),
            "{second:?}"
        );
    }

    #[tokio::test]
    async fn the_watch_comes_back_with_the_directory() {
        let top = tempfile::tempdir().unwrap();
        let d = top.path().join("manifests");
        let (_src, _, _, mut rx) = ManifestSource::start(&d, "n", Duration::from_secs(600)).unwrap();
        std::fs::write(d.join("a.yaml"), pod("a", 1)).unwrap();
        assert!(matches!(next(&mut rx).await, SourceEvent::Upsert(_)));
        std::fs::remove_dir_all(&d).unwrap();
        assert!(matches!(next(&mut rx).await, SourceEvent::Removed { .. }));
        std::fs::create_dir(&d).unwrap();
        // The re-list is 10 minutes away: the restored watch (or the re-list it triggers
        // when the directory reappears) must see this.
        std::fs::write(d.join("b.yaml"), pod("b", 1)).unwrap();
        let SourceEvent::Upsert(b) = next(&mut rx).await else {
            panic!("upsert")
        };
        assert_eq!(b.name(), "b-n");
    }

    #[tokio::test]
    async fn start_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("manifests");
        let (_src, desired, invalid, _rx) = ManifestSource::start(&d, "n", Duration::from_secs(20)).unwrap();
        assert!(d.is_dir() && desired.is_empty() && invalid.is_empty());
    }
}
