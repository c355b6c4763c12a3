//! Pulling images from registries into the store, with the `oci-client` crate.
//!
//! A pull resolves the reference (mirrors first, see [`super::registry`]), fetches the
//! manifest (an image index is resolved to linux/host-arch), then the config and the layers,
//! several at once. Every blob is verified against its digest before it takes its final name
//! in `blobs/`; blobs already there are not fetched again, whichever image brought them. A
//! blob being downloaded lives in `tmp/pull-<hex>.partial` (locked with flock while in use),
//! so a pull interrupted by a crash resumes where it stopped; a blob whose content does not
//! match its digest is discarded and fetched once more before the pull fails. Unpacking and
//! naming the image is the same code an import runs ([`super::import::register`]).
//!
//! Concurrent pulls of the same reference in one process are coalesced: one task does the
//! work, every caller waits for its result; when the last of them goes away (a pod removed, a
//! CRI client that hung up) the task is cancelled and its downloads stop.
//!
//! A hostile or broken registry is bounded: a manifest is read no further than
//! [`MAX_MANIFEST`], a config declared over [`MAX_CONFIG`] is refused, a blob must fit in the free space of the store's filesystem
//! before a byte of it is requested, a stream longer than its descriptor says is cut off and
//! discarded at the first excess byte, and a transfer that makes no progress (less than
//! [`MIN_PROGRESS`] bytes) for [`RegistryOptions::progress_deadline`] fails the pull.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::gc::DiskUsage;
use super::import::{host_arch, is_index, is_manifest, linux_manifest};
use super::registry::{Credentials, Endpoint, RegistryOptions};
use super::{ImageError, ImageStore, ImageSummary};

/// Manifest media types we ask registries for, most specific first.
const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Layers fetched at once per pull (containerd's default is 3).
const CONCURRENT_LAYERS: usize = 3;
/// A manifest or index larger than this is refused: containerd's limit on manifest reads
/// (real ones are a few KiB; an index of hundreds of platforms stays well under it).
const MAX_MANIFEST: usize = 4 << 20;
/// A config larger than this is refused before it is fetched: it is parsed in memory, and real
/// ones (even with long histories) are well under 1 MiB.
const MAX_CONFIG: u64 = 16 << 20;
/// The low-speed limit: within every progress deadline a download must receive at least this
/// much (or the rest of the blob). 64 KiB a minute is far below any usable link, and far above
/// a registry that trickles a byte now and then to hold a pull open (curl's
/// --speed-limit/--speed-time; containerd and the kubelet count any byte as progress).
const MIN_PROGRESS: u64 = 64 << 10;
/// Connecting never waits longer than this, nor than the progress deadline.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a pull reports while it works (for a progress display).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The manifest is known: these blobs (digest, compressed size) make the image.
    Resolved { layers: Vec<(String, u64)> },
    /// Bytes of one layer so far.
    Bytes { digest: String, done: u64, total: u64 },
    /// A layer is complete (fetched now, or already in the store).
    Done { digest: String, cached: bool },
    /// All blobs are here; unpacking and naming the image.
    Unpacking,
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A finished pull as its waiters see it: the image, or (reference, reason).
type Outcome = Result<ImageSummary, (String, String)>;

/// Pulls into one store. One per agent (or per CLI command); cheap to share behind an `Arc`.
pub struct Puller {
    inner: Arc<Inner>,
    /// Normalized reference → the pull in flight.
    inflight: Arc<Mutex<HashMap<String, Inflight>>>,
}

/// One pull task and how many callers wait for it.
struct Inflight {
    id: u64,
    result: watch::Receiver<Option<Outcome>>,
    waiters: usize,
    task: tokio::task::AbortHandle,
}

/// What pull tasks share.
struct Inner {
    store: ImageStore,
    options: RegistryOptions,
    /// Blob hex → lock, so two pulls sharing a layer fetch it once.
    blob_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One HTTP client per endpoint and credentials: building one loads the system's TLS roots
    /// (tens of milliseconds), and a client keeps its connections and registry tokens.
    clients: Mutex<HashMap<ClientKey, Client>>,
    /// Manifests are fetched with this client, not oci-client's (see [`Inner::get_manifest`]).
    http: std::sync::OnceLock<reqwest::Client>,
    /// Bytes still to come of the downloads in progress: free space they will take.
    reserved: Arc<Mutex<u64>>,
}

type ClientKey = (String, bool, Option<Credentials>);

impl Puller {
    pub fn new(store: ImageStore, options: RegistryOptions) -> Self {
        Puller {
            inner: Arc::new(Inner {
                store,
                options,
                blob_locks: Mutex::new(HashMap::new()),
                clients: Mutex::new(HashMap::new()),
                http: std::sync::OnceLock::new(),
                reserved: Arc::new(Mutex::new(0)),
            }),
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn store(&self) -> &ImageStore {
        &self.inner.store
    }

    /// Pull `reference` (any spelling: `nginx`, `host:5000/a/b:tag`, `repo@sha256:...`) and
    /// name it in the store. `credentials` (e.g. from a CRI `AuthConfig`) take precedence over
    /// the auth file's. Dropping the returned future stops waiting, and cancels the pull if
    /// nobody else waits for it.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<Credentials>,
        progress: Option<ProgressFn>,
    ) -> Result<ImageSummary, ImageError> {
        let parsed = super::parse_reference(reference)?;
        let name = parsed.whole();
        let (mut result, id) = self.join_or_start(parsed, &name, credentials, progress);
        let _waiter = Waiter {
            inflight: &self.inflight,
            name: &name,
            id,
        };
        let outcome = result
            .wait_for(Option::is_some)
            .await
            .map(|v| v.clone())
            .ok()
            .flatten()
            .unwrap_or_else(|| Err((name.clone(), "the pull was abandoned".into())));
        outcome.map_err(|(reference, reason)| ImageError::Pull { reference, reason })
    }

    /// Wait for the pull of `name` in flight, or start it in a task of its own.
    fn join_or_start(
        &self,
        reference: Reference,
        name: &str,
        credentials: Option<Credentials>,
        progress: Option<ProgressFn>,
    ) -> (watch::Receiver<Option<Outcome>>, u64) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pull) = inflight.get_mut(name) {
            tracing::debug!(image = %name, "joining a pull in progress");
            pull.waiters += 1;
            return (pull.result.clone(), pull.id);
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let inner = self.inner.clone();
        let map = self.inflight.clone();
        let name = name.to_owned();
        let task = tokio::spawn({
            let name = name.clone();
            async move {
                let started = Instant::now();
                let outcome = match inner.pull_endpoints(&reference, &name, credentials, progress).await {
                    Ok(s) => {
                        tracing::info!(image = %name, id = %s.id, elapsed = ?started.elapsed(), "image pulled");
                        Ok(s)
                    }
                    Err(e) => {
                        tracing::info!(image = %name, error = %e, "image pull failed");
                        match e {
                            ImageError::Pull { reference, reason } => Err((reference, reason)),
                            e => Err((name.clone(), e.to_string())),
                        }
                    }
                };
                // Gone from the map before the result is out: a pull asked for after this
                // one failed starts afresh instead of joining a finished one.
                let mut inflight = map.lock().unwrap_or_else(|p| p.into_inner());
                if inflight.get(&name).is_some_and(|p| p.id == id) {
                    inflight.remove(&name);
                }
                drop(inflight);
                let _ = tx.send(Some(outcome));
            }
        });
        inflight.insert(
            name,
            Inflight {
                id,
                result: rx.clone(),
                waiters: 1,
                task: task.abort_handle(),
            },
        );
        (rx, id)
    }
}

/// One caller waiting for a pull; the last one to leave cancels it.
struct Waiter<'a> {
    inflight: &'a Mutex<HashMap<String, Inflight>>,
    name: &'a str,
    id: u64,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pull) = inflight.get_mut(self.name).filter(|p| p.id == self.id) else {
            return; // finished
        };
        pull.waiters -= 1;
        if pull.waiters == 0 {
            tracing::info!(image = %self.name, "image pull cancelled: nothing waits for it any more");
            pull.task.abort();
            inflight.remove(self.name);
        }
    }
}

impl Inner {
    /// Mirrors in order, then the registry itself; the registry's error is the one reported
    /// (a mirror's is logged), as containerd does.
    async fn pull_endpoints(
        self: &Arc<Self>,
        reference: &Reference,
        name: &str,
        credentials: Option<Credentials>,
        progress: Option<ProgressFn>,
    ) -> Result<ImageSummary, ImageError> {
        let fail = |reason: String| ImageError::Pull {
            reference: name.to_owned(),
            reason,
        };
        let mut mirror_errors = Vec::new();
        for ep in self.options.endpoints(reference) {
            let creds = match &credentials {
                Some(c) => Some(c.clone()),
                None => self.options.credentials(&ep.host)?,
            };
            match self.pull_from(&ep, reference, name, creds, progress.clone()).await {
                Ok(s) => return Ok(s),
                Err(e) if ep.mirror => {
                    tracing::info!(image = %name, mirror = %ep.host, error = %e, "mirror failed; trying the next endpoint");
                    mirror_errors.push(format!("mirror {}: {e}", ep.host));
                }
                Err(PullFailure::Store(e)) => return Err(e),
                Err(PullFailure::Registry(reason)) => return Err(fail(reason)),
            }
        }
        Err(fail(mirror_errors.join("; ")))
    }

    async fn pull_from(
        self: &Arc<Self>,
        ep: &Endpoint,
        reference: &Reference,
        name: &str,
        credentials: Option<Credentials>,
        progress: Option<ProgressFn>,
    ) -> Result<ImageSummary, PullFailure> {
        // Blobs arrive before the index names them: no sweep in between.
        let store = self.store.clone();
        let lock = tokio::task::spawn_blocking(move || {
            let lock = store.lock(false);
            store.clean_stale_temporaries();
            lock
        })
        .await
        .map_err(|e| PullFailure::Registry(format!("store lock task: {e}")))??;
        let mut image = reference.clone();
        if ep.mirror {
            image.set_mirror_registry(ep.host.clone());
        }
        let deadline = self.options.progress_deadline;
        let client = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((ep.host.clone(), ep.http, credentials.clone()))
            .or_insert_with(|| {
                Client::new(ClientConfig {
                    protocol: if ep.http {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    connect_timeout: Some(deadline.min(MAX_CONNECT_TIMEOUT)),
                    // Between two reads; the low-speed limit below is the stricter bound.
                    read_timeout: Some(deadline),
                    ..Default::default()
                })
            })
            .clone();
        let auth = match credentials {
            None => RegistryAuth::Anonymous,
            Some(Credentials::Basic { username, password }) => RegistryAuth::Basic(username, password),
            Some(Credentials::Bearer(token)) => RegistryAuth::Bearer(token),
        };

        // The manifest, or an index to resolve to this platform's manifest.
        let bytes = self
            .answer(
                &format!("manifest of {name}"),
                false,
                self.get_manifest(&client, &image, &auth, ep.http),
            )
            .await?;
        let mut manifest_desc = self.store_json_blob(&bytes, reference.digest(), name).await?;
        if is_index(manifest_desc.media_type()) {
            let index: ImageIndex = parse_json(&bytes, &format!("image index of {name}"))?;
            let child = linux_manifest(&index).map_err(|available| {
                PullFailure::Registry(format!(
                    "no matching manifest for linux/{} in the manifest list entries of {name} (it has {})",
                    host_arch(),
                    available.join(", ")
                ))
            })?;
            let bytes = self
                .answer(
                    &format!("manifest of {name}"),
                    false,
                    self.get_manifest(
                        &client,
                        &image.clone_with_digest(child.digest().to_string()),
                        &auth,
                        ep.http,
                    ),
                )
                .await?;
            manifest_desc = self
                .store_json_blob(&bytes, Some(child.digest().as_ref()), name)
                .await?;
            if !is_manifest(manifest_desc.media_type()) {
                return Err(PullFailure::Registry(format!(
                    "the index entry for linux/{} is not an image manifest",
                    host_arch()
                )));
            }
        }
        let manifest_bytes = self.read_blob(manifest_desc.digest().as_ref()).await?;
        let manifest: ImageManifest = parse_json(&manifest_bytes, &format!("manifest of {name}"))?;
        check_config_size(manifest.config(), name)?;

        // Config, then the layers a few at a time; each blob verified on arrival.
        let report = |p: Progress| {
            if let Some(f) = &progress {
                f(p);
            }
        };
        report(Progress::Resolved {
            layers: manifest
                .layers()
                .iter()
                .map(|l| (l.digest().to_string(), l.size()))
                .collect(),
        });
        self.fetch_blob(&client, &image, manifest.config(), name, None).await?;
        let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LAYERS));
        // Dropped (the pull cancelled or failed), the set aborts the other downloads.
        let mut tasks = tokio::task::JoinSet::new();
        for layer in manifest.layers().clone() {
            let semaphore = semaphore.clone();
            let client = client.clone();
            let image = image.clone();
            let name = name.to_owned();
            let progress = progress.clone();
            let this = self.clone();
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                this.fetch_blob(&client, &image, &layer, &name, progress).await
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(PullFailure::Registry(format!("layer download task: {e}"))),
            }
        }

        report(Progress::Unpacking);
        let store = self.store.clone();
        let name = name.to_owned();
        // The lock goes with the unpack: a cancelled pull leaves it running, and no sweep may
        // remove what it is naming meanwhile.
        tokio::task::spawn_blocking(move || {
            let _lock = lock;
            super::import::register(&store, name, manifest_desc)
        })
        .await
        .map_err(|e| PullFailure::Registry(format!("unpack task: {e}")))?
        .map_err(PullFailure::Store)
    }

    /// GET a manifest, reading at most [`MAX_MANIFEST`] bytes of it: oci-client reads a
    /// manifest whole before anyone can look at its size, so a hostile registry could make
    /// the agent buffer gigabytes. Authentication is oci-client's (its token, or basic).
    async fn get_manifest(
        &self,
        client: &Client,
        image: &Reference,
        auth: &RegistryAuth,
        plain_http: bool,
    ) -> Result<Vec<u8>, oci_client::errors::OciDistributionError> {
        use oci_client::errors::OciDistributionError as E;
        let token = client.auth(image, auth, oci_client::RegistryOperation::Pull).await?;
        let http = match self.http.get() {
            Some(h) => h.clone(),
            None => {
                let deadline = self.options.progress_deadline;
                let built = reqwest::Client::builder()
                    .connect_timeout(deadline.min(MAX_CONNECT_TIMEOUT))
                    .read_timeout(deadline)
                    .build()?;
                self.http.get_or_init(|| built).clone()
            }
        };
        let url = format!(
            "{}://{}/v2/{}/manifests/{}{}",
            if plain_http { "http" } else { "https" },
            image.resolve_registry(),
            image.repository(),
            image.digest().or(image.tag()).unwrap_or("latest"),
            image.namespace().map(|ns| format!("?ns={ns}")).unwrap_or_default()
        );
        let mut request = http.get(&url).header(reqwest::header::ACCEPT, ACCEPT.join(", "));
        request = match (token, auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        };
        let mut response = request.send().await?;
        let status = response.status();
        let too_large = |size: String| {
            E::IoError(std::io::Error::other(format!(
                "GET {url}: {size} bytes is too large for a manifest (the limit is {MAX_MANIFEST})"
            )))
        };
        if status.is_success()
            && let Some(len) = response.content_length()
            && len > MAX_MANIFEST as u64
        {
            return Err(too_large(len.to_string()));
        }
        // An error's body is only there to be quoted: a little of it is enough.
        let limit = if status.is_success() { MAX_MANIFEST } else { 64 << 10 };
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > limit {
                if status.is_success() {
                    return Err(too_large(format!("more than {limit}")));
                }
                body.extend_from_slice(&chunk[..limit - body.len()]);
                break;
            }
            body.extend_from_slice(&chunk);
        }
        // As oci-client reads a registry's answer, so that registry_error() words it the same.
        match status {
            reqwest::StatusCode::OK => Ok(body),
            reqwest::StatusCode::UNAUTHORIZED => Err(E::UnauthorizedError { url }),
            s if s.is_client_error() => match serde_json::from_slice(&body) {
                Ok(envelope) => Err(E::RegistryError { envelope, url }),
                Err(_) => Err(E::ServerError {
                    code: s.as_u16(),
                    url,
                    message: String::from_utf8_lossy(&body).into_owned(),
                }),
            },
            s => Err(E::ServerError {
                code: s.as_u16(),
                url,
                message: String::from_utf8_lossy(&body).into_owned(),
            }),
        }
    }

    /// A registry request that must be answered within the progress deadline. Its errors
    /// name `what` if `name_it` (a registry's error about a manifest names its URL already).
    async fn answer<T>(
        &self,
        what: &str,
        name_it: bool,
        request: impl Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
    ) -> Result<T, PullFailure> {
        let deadline = self.options.progress_deadline;
        match tokio::time::timeout(deadline, request).await {
            Ok(Err(e)) if name_it => Err(PullFailure::Registry(format!("{what}: {}", registry_error(&e)))),
            Ok(answer) => answer.map_err(|e| PullFailure::Registry(registry_error(&e))),
            Err(_) => Err(PullFailure::Registry(format!(
                "{what}: no answer from the registry within {deadline:?} (--image-pull-progress-deadline)"
            ))),
        }
    }

    /// Store a manifest or index fetched as bytes under its digest; its media type comes
    /// from its `mediaType` field, or from its shape when that is absent (allowed by OCI).
    async fn store_json_blob(
        &self,
        bytes: &[u8],
        expected: Option<&str>,
        name: &str,
    ) -> Result<Descriptor, PullFailure> {
        if bytes.len() > MAX_MANIFEST {
            return Err(PullFailure::Registry(format!(
                "manifest of {name}: {} bytes is too large (the limit is {MAX_MANIFEST})",
                bytes.len()
            )));
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(PullFailure::Store(ImageError::DigestMismatch {
                what: format!("manifest of {name}"),
                expected: expected.to_owned(),
                actual: digest,
            }));
        }
        #[derive(serde::Deserialize)]
        struct Shape {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let shape: Shape = parse_json(bytes, &format!("manifest of {name}"))?;
        let media_type = match (shape.media_type, shape.manifests.is_some()) {
            (Some(m), _) => MediaType::from(m.as_str()),
            (None, true) => MediaType::ImageIndex,
            (None, false) => MediaType::ImageManifest,
        };
        let path = self.store.blob_path(&digest["sha256:".len()..]);
        if !path.is_file() {
            let tmp = self.store.tmp_dir().join(super::import::temp_name("blob"));
            let write = async {
                tokio::fs::write(&tmp, bytes).await?;
                tokio::fs::rename(&tmp, &path).await
            };
            if let Err(e) = write.await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(PullFailure::Store(ImageError::io(&path, e)));
            }
        }
        let digest = <oci_spec::image::Digest as std::str::FromStr>::from_str(&digest)
            .map_err(|e| PullFailure::Registry(format!("manifest digest {digest}: {e}")))?;
        Ok(Descriptor::new(media_type, bytes.len() as u64, digest))
    }

    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, PullFailure> {
        let path = self.store.blob_path(digest.strip_prefix("sha256:").unwrap_or(digest));
        tokio::fs::read(&path)
            .await
            .map_err(|e| PullFailure::Store(ImageError::io(&path, e)))
    }

    /// Fetch one blob into the store: one per digest at a time in this process (an in-memory
    /// lock), one per digest across processes (flock on the partial file).
    async fn fetch_blob(
        &self,
        client: &Client,
        image: &Reference,
        desc: &Descriptor,
        name: &str,
        progress: Option<ProgressFn>,
    ) -> Result<(), PullFailure> {
        let digest = desc.digest().to_string();
        let what = format!("blob {digest} of {name}");
        let hex = super::import::sha256_hex(desc.digest(), &what)?.to_owned();
        let report = |p: Progress| {
            if let Some(f) = &progress {
                f(p);
            }
        };
        let dst = self.store.blob_path(&hex);
        if dst.is_file() {
            report(Progress::Done { digest, cached: true });
            return Ok(());
        }
        let lock = self
            .blob_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hex.clone())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        let partial = self.store.tmp_dir().join(format!("pull-{hex}.partial"));
        let _flock = lock_file(&partial).await?;
        if dst.is_file() {
            report(Progress::Done { digest, cached: true });
            return Ok(());
        }
        // One retry from scratch: a corrupted or truncated transfer is discarded, not trusted.
        let mut last = None;
        for attempt in 0..2 {
            let downloaded = async {
                let have = tokio::fs::metadata(&partial).await.map(|m| m.len()).unwrap_or(0);
                let mut room = self.reserve(&what, desc.size().saturating_sub(have)).await?;
                self.download(client, image, desc, &partial, &what, &report, &mut room)
                    .await
            };
            match downloaded.await {
                Ok(()) => match verify(&partial, desc, &what).await {
                    Ok(()) => {
                        tokio::fs::rename(&partial, &dst)
                            .await
                            .map_err(|e| ImageError::io(&dst, e))?;
                        report(Progress::Done { digest, cached: false });
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::warn!(blob = %desc.digest(), attempt, error = %e, "downloaded blob rejected; fetching it again");
                        let _ = tokio::fs::remove_file(&partial).await;
                        last = Some(PullFailure::Store(e));
                    }
                },
                Err(e) => {
                    // Keep what arrived for a resume; nothing if nothing did, or the disk is full.
                    let empty = tokio::fs::metadata(&partial).await.is_ok_and(|m| m.len() == 0);
                    let full = matches!(&e, PullFailure::Store(ImageError::Io { error, .. }) if error.raw_os_error() == Some(libc::ENOSPC));
                    if empty || full {
                        let _ = tokio::fs::remove_file(&partial).await;
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| PullFailure::Registry(format!("{what}: download failed"))))
    }

    /// Hold `needed` bytes of the store's free space for a download, or refuse it now, before
    /// a byte is requested: a blob the filesystem cannot hold would fail anyway, after filling
    /// the disk for everyone else. The check is against what is free, not against the image
    /// GC thresholds: a node above its high threshold must still be able to pull.
    async fn reserve(&self, what: &str, needed: u64) -> Result<Reservation, PullFailure> {
        let tmp = self.store.tmp_dir();
        let disk = tokio::task::spawn_blocking(move || DiskUsage::of(&tmp).map(|d| (tmp, d)))
            .await
            .map_err(|e| PullFailure::Registry(format!("statvfs task: {e}")))?;
        let (tmp, disk) = disk?;
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        check_room(what, &tmp, needed, disk.available, *reserved)?;
        *reserved += needed;
        Ok(Reservation {
            total: self.reserved.clone(),
            left: needed,
        })
    }

    /// Fetch `desc` into `partial`, resuming after what is already there. Bytes beyond the
    /// descriptor's size discard the download at once; a transfer slower than the low-speed
    /// limit fails (what arrived is kept for a resume).
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        client: &Client,
        image: &Reference,
        desc: &Descriptor,
        partial: &Path,
        what: &str,
        report: &impl Fn(Progress),
        room: &mut Reservation,
    ) -> Result<(), PullFailure> {
        let digest = desc.digest().to_string();
        let total = desc.size();
        let deadline = self.options.progress_deadline;
        let mut have = tokio::fs::metadata(partial).await.map(|m| m.len()).unwrap_or(0);
        if have >= total {
            // Complete (verify decides) or longer than it should be (start over).
            if have == total {
                return Ok(());
            }
            have = 0;
        }
        let response = self
            .answer(
                what,
                true,
                client.pull_blob_stream_partial(image, digest.as_str(), have, None),
            )
            .await?;
        let (stream, resumed) = match response {
            BlobResponse::Partial(s) => (s, have > 0),
            BlobResponse::Full(s) => (s, false),
        };
        if resumed {
            tracing::info!(blob = %digest, offset = have, "resuming an interrupted download");
        } else {
            have = 0;
        }
        let overrun = |sent: String| {
            PullFailure::Registry(format!(
                "{what}: the registry sent {sent} bytes where the manifest declares {total}; download discarded"
            ))
        };
        if let Some(len) = stream.content_length
            && len > total - have
        {
            let _ = tokio::fs::remove_file(partial).await;
            return Err(overrun(format!("{}", have + len)));
        }
        let mut stream = stream.stream;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(partial)
            .await
            .map_err(|e| ImageError::io(partial, e))?;
        let mut last_report = have;
        let mut watchdog = LowSpeed::new(Instant::now(), total - have);
        loop {
            let next = tokio::time::timeout_at(watchdog.expires(deadline).into(), stream.next()).await;
            let chunk = match next {
                // oci-client checks the digest of a whole response at its end: verify() judges
                // the content again and says so in the store's words (and it is discarded).
                Ok(Some(Err(e)))
                    if e.get_ref()
                        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>()) =>
                {
                    break;
                }
                Ok(Some(chunk)) => chunk.map_err(|e| PullFailure::Registry(format!("{what}: {}", error_chain(&e))))?,
                Ok(None) => break,
                Err(_) => {
                    return Err(PullFailure::Registry(format!(
                        "{what}: the download stalled: less than {} KiB in {deadline:?} (--image-pull-progress-deadline), {have} of {total} bytes received",
                        MIN_PROGRESS >> 10
                    )));
                }
            };
            let len = chunk.len() as u64;
            if len > total - have {
                // Not one byte more than declared reaches the disk: a registry announcing a
                // small layer cannot fill the store.
                drop(file);
                let _ = tokio::fs::remove_file(partial).await;
                return Err(overrun(format!("more than {total}")));
            }
            file.write_all(&chunk).await.map_err(|e| ImageError::io(partial, e))?;
            have += len;
            room.consumed(len);
            watchdog.received(len, total - have, Instant::now());
            if have - last_report >= 256 << 10 || have == total {
                report(Progress::Bytes {
                    digest: digest.clone(),
                    done: have,
                    total,
                });
                last_report = have;
            }
        }
        // No fsync: after a crash the partial file is verified before it is trusted anyway.
        file.flush().await.map_err(|e| ImageError::io(partial, e))?;
        Ok(())
    }
}

/// Why one endpoint failed: the registry (try the next endpoint) or the store (stop).
#[derive(Debug)]
enum PullFailure {
    Registry(String),
    Store(ImageError),
}

impl std::fmt::Display for PullFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullFailure::Registry(s) => f.write_str(s),
            PullFailure::Store(e) => write!(f, "{e}"),
        }
    }
}

impl From<ImageError> for PullFailure {
    fn from(e: ImageError) -> Self {
        PullFailure::Store(e)
    }
}

/// Free space held for one download; given back as bytes arrive, and in full when dropped.
struct Reservation {
    total: Arc<Mutex<u64>>,
    left: u64,
}

impl Reservation {
    fn consumed(&mut self, n: u64) {
        let n = n.min(self.left);
        self.left -= n;
        let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        *total = total.saturating_sub(n);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let left = self.left;
        self.consumed(left);
    }
}

/// Whether `needed` more bytes fit in `available`, of which `reserved` are promised to other
/// downloads.
fn check_room(what: &str, path: &Path, needed: u64, available: u64, reserved: u64) -> Result<(), ImageError> {
    if needed <= available.saturating_sub(reserved) {
        return Ok(());
    }
    Err(ImageError::NoSpace {
        what: what.to_owned(),
        path: path.to_path_buf(),
        needed,
        available,
        reserved,
    })
}

/// A config is read into memory: its declared size is checked before it is fetched.
fn check_config_size(config: &Descriptor, name: &str) -> Result<(), PullFailure> {
    if config.size() <= MAX_CONFIG {
        return Ok(());
    }
    Err(PullFailure::Registry(format!(
        "config {} of {name}: the manifest declares {} bytes, more than the {MAX_CONFIG} a config may have",
        config.digest(),
        config.size()
    )))
}

/// The low-speed limit of one download: each window of the progress deadline must bring
/// [`MIN_PROGRESS`] bytes, or the rest of the blob if that is less.
#[derive(Debug)]
struct LowSpeed {
    since: Instant,
    bytes: u64,
    needed: u64,
}

impl LowSpeed {
    fn new(now: Instant, remaining: u64) -> Self {
        LowSpeed {
            since: now,
            bytes: 0,
            needed: MIN_PROGRESS.min(remaining),
        }
    }

    /// When the download has stalled unless more arrives.
    fn expires(&self, deadline: Duration) -> Instant {
        self.since + deadline
    }

    fn received(&mut self, n: u64, remaining: u64, now: Instant) {
        self.bytes += n;
        if self.bytes >= self.needed {
            *self = LowSpeed::new(now, remaining);
        }
    }
}

/// Size and digest of a downloaded blob.
async fn verify(path: &Path, desc: &Descriptor, what: &str) -> Result<(), ImageError> {
    let path = path.to_path_buf();
    let expected = desc.digest().to_string();
    let size = desc.size();
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(|e| ImageError::io(&path, e))?;
        let actual_size = file.metadata().map_err(|e| ImageError::io(&path, e))?.len();
        if actual_size != size {
            return Err(ImageError::SizeMismatch {
                what,
                expected: size,
                actual: actual_size,
            });
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| ImageError::io(&path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual == expected {
            Ok(())
        } else {
            Err(ImageError::DigestMismatch { what, expected, actual })
        }
    })
    .await
    .map_err(|e| ImageError::Corrupt {
        path: PathBuf::new(),
        reason: format!("verify task: {e}"),
    })?
}

/// An exclusive flock on `path` (created if absent), waited for without blocking the runtime:
/// another process (a CLI pull and the agent) may be fetching the same blob.
async fn lock_file(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, ImageError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io(&path, e))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| ImageError::io(&path, errno.into()))
    })
    .await
    .map_err(|e| ImageError::Corrupt {
        path: PathBuf::new(),
        reason: format!("lock task: {e}"),
    })?
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, PullFailure> {
    serde_json::from_slice(bytes).map_err(|e| {
        PullFailure::Store(ImageError::InvalidBlob {
            what: what.to_owned(),
            reason: e.to_string(),
        })
    })
}

/// A registry's answer in a user's words: what was asked, and what the registry said.
fn registry_error(e: &oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::RegistryError { envelope, url } => {
            let said: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| {
                    let code = format!("{:?}", e.code);
                    if e.message.is_empty() {
                        code
                    } else {
                        format!("{} ({code})", e.message)
                    }
                })
                .collect();
            let not_found = said.iter().any(|s| s.contains("Unknown"));
            format!(
                "GET {url}: {}{}",
                said.join("; "),
                if not_found { ": not found" } else { "" }
            )
        }
        E::UnauthorizedError { url } => format!("GET {url}: 401 Unauthorized (no or wrong credentials)"),
        E::ServerError { code, url, message } => format!("GET {url}: HTTP {code}: {}", message.trim()),
        other => error_chain(other),
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_must_fit_in_what_is_free_and_not_promised() {
        let p = Path::new("/store/tmp");
        assert!(check_room("blob a", p, 100, 100, 0).is_ok());
        assert!(check_room("blob a", p, 60, 100, 40).is_ok());
        let e = check_room("blob sha256:ab of x", p, 10 << 30, 1 << 30, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("blob sha256:ab of x: No space left on device"), "{e}");
        assert!(e.contains(&format!("needs {} bytes", 10u64 << 30)), "{e}");
        assert!(
            e.contains(&format!("/store/tmp has {} bytes available", 1u64 << 30)),
            "{e}"
        );
        let e = check_room("b", p, 61, 100, 40).unwrap_err().to_string();
        assert!(e.contains("40 of them held for downloads in progress"), "{e}");
        // More promised than free (other downloads already wrote part of theirs).
        assert!(check_room("b", p, 1, 10, 20).is_err());
    }

    #[test]
    fn reservations_shrink_as_bytes_arrive_and_vanish_when_dropped() {
        let total = Arc::new(Mutex::new(0u64));
        let take = |n: u64| {
            *total.lock().unwrap() += n;
            Reservation {
                total: total.clone(),
                left: n,
            }
        };
        let mut a = take(100);
        let b = take(50);
        a.consumed(30);
        assert_eq!(*total.lock().unwrap(), 120);
        a.consumed(500); // more than reserved: clamps
        assert_eq!(*total.lock().unwrap(), 50);
        drop(b);
        drop(a);
        assert_eq!(*total.lock().unwrap(), 0);
    }

    #[test]
    fn config_size_is_bounded() {
        let desc = |size| {
            Descriptor::new(
                MediaType::ImageConfig,
                size,
                <oci_spec::image::Digest as std::str::FromStr>::from_str(&format!("sha256:{}", "a".repeat(64)))
                    .unwrap(),
            )
        };
        assert!(check_config_size(&desc(1234), "x").is_ok());
        assert!(check_config_size(&desc(MAX_CONFIG), "x").is_ok());
        let e = check_config_size(&desc(10 << 30), "x").unwrap_err().to_string();
        assert!(e.contains("declares 10737418240 bytes"), "{e}");
    }

    #[test]
    fn low_speed_limit_needs_enough_bytes_per_window() {
        let t0 = Instant::now();
        let d = Duration::from_secs(30);
        let s = Duration::from_secs(1);
        let mut w = LowSpeed::new(t0, 10 << 20);
        assert_eq!(w.expires(d), t0 + d);
        // A byte every 5 s is not progress: the window never moves.
        for i in 1..6 {
            w.received(1, (10 << 20) - i, t0 + 5 * s * i as u32);
            assert_eq!(w.expires(d), t0 + d);
        }
        // Enough within the window moves it.
        w.received(MIN_PROGRESS, 1 << 20, t0 + 26 * s);
        assert_eq!(w.expires(d), t0 + 26 * s + d);
        // Near the end, the rest of the blob is enough.
        let mut w = LowSpeed::new(t0, 10);
        w.received(10, 0, t0 + s);
        assert_eq!(w.expires(d), t0 + s + d);
    }
}
