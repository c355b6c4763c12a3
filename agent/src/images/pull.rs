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
//! Concurrent pulls of the same reference in one process are coalesced: the first does the
//! work, the others wait for its result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_stream::StreamExt;

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
/// A manifest or config larger than this is not an image.
const MAX_JSON_BLOB: usize = 16 << 20;

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

type Shared = watch::Receiver<Option<Result<ImageSummary, (String, String)>>>;

/// Pulls into one store. One per agent (or per CLI command); cheap to share behind an `Arc`.
pub struct Puller {
    store: ImageStore,
    options: RegistryOptions,
    /// Normalized reference → the pull in flight.
    inflight: Mutex<HashMap<String, Shared>>,
    /// Blob hex → lock, so two pulls sharing a layer fetch it once.
    blob_locks: BlobLocks,
    /// One HTTP client per endpoint and credentials: building one loads the system's TLS roots
    /// (tens of milliseconds), and a client keeps its connections and registry tokens.
    clients: Mutex<HashMap<ClientKey, Client>>,
}

type ClientKey = (String, bool, Option<Credentials>);

type BlobLocks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

impl Puller {
    pub fn new(store: ImageStore, options: RegistryOptions) -> Self {
        Puller {
            store,
            options,
            inflight: Mutex::new(HashMap::new()),
            blob_locks: BlobLocks::default(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Pull `reference` (any spelling: `nginx`, `host:5000/a/b:tag`, `repo@sha256:...`) and
    /// name it in the store. `credentials` (e.g. from a CRI `AuthConfig`) take precedence over
    /// the auth file's.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<Credentials>,
        progress: Option<ProgressFn>,
    ) -> Result<ImageSummary, ImageError> {
        let parsed = super::parse_reference(reference)?;
        let name = parsed.whole();

        // Join a pull of the same reference in flight, or become the one that does it.
        let (tx, joined) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(&name) {
                Some(rx) => (None, Some(rx.clone())),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(name.clone(), rx);
                    (Some(tx), None)
                }
            }
        };
        if let Some(mut rx) = joined {
            tracing::debug!(image = %name, "joining a pull in progress");
            let outcome = rx
                .wait_for(Option::is_some)
                .await
                .map(|v| v.clone())
                .ok()
                .flatten()
                .unwrap_or_else(|| Err((name.clone(), "the pull it joined was abandoned".into())));
            return outcome.map_err(|(reference, reason)| ImageError::Pull { reference, reason });
        }

        // If this future is dropped (a CRI client went away), the entry must go with it, or
        // later pulls would join a pull that no longer runs.
        struct Leave<'a>(&'a Mutex<HashMap<String, Shared>>, &'a str);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(self.1);
            }
        }
        let leave = Leave(&self.inflight, &name);
        let started = std::time::Instant::now();
        let result = self.pull_endpoints(&parsed, &name, credentials, progress).await;
        match &result {
            Ok(s) => tracing::info!(image = %name, id = %s.id, elapsed = ?started.elapsed(), "image pulled"),
            Err(e) => tracing::info!(image = %name, error = %e, "image pull failed"),
        }
        let shared = match &result {
            Ok(s) => Ok(s.clone()),
            Err(ImageError::Pull { reference, reason }) => Err((reference.clone(), reason.clone())),
            Err(e) => Err((name.clone(), e.to_string())),
        };
        drop(leave);
        if let Some(tx) = tx {
            let _ = tx.send(Some(shared));
        }
        result
    }

    /// Mirrors in order, then the registry itself; the registry's error is the one reported
    /// (a mirror's is logged), as containerd does.
    async fn pull_endpoints(
        &self,
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
        &self,
        ep: &Endpoint,
        reference: &Reference,
        name: &str,
        credentials: Option<Credentials>,
        progress: Option<ProgressFn>,
    ) -> Result<ImageSummary, PullFailure> {
        // Blobs arrive before the index names them: no sweep in between.
        let store = self.store.clone();
        let _lock = tokio::task::spawn_blocking(move || {
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
                    connect_timeout: Some(Duration::from_secs(10)),
                    read_timeout: Some(Duration::from_secs(60)),
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
        let (bytes, _) = client
            .pull_manifest_raw(&image, &auth, ACCEPT)
            .await
            .map_err(|e| PullFailure::Registry(registry_error(&e)))?;
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
            let (bytes, _) = client
                .pull_manifest_raw(&image.clone_with_digest(child.digest().to_string()), &auth, ACCEPT)
                .await
                .map_err(|e| PullFailure::Registry(registry_error(&e)))?;
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
        self.shared()
            .fetch_blob(&client, &image, manifest.config(), name, None)
            .await?;
        let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LAYERS));
        let mut tasks = tokio::task::JoinSet::new();
        for layer in manifest.layers().clone() {
            let semaphore = semaphore.clone();
            let client = client.clone();
            let image = image.clone();
            let name = name.to_owned();
            let progress = progress.clone();
            let this = self.shared();
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
        tokio::task::spawn_blocking(move || super::import::register(&store, name, manifest_desc))
            .await
            .map_err(|e| PullFailure::Registry(format!("unpack task: {e}")))?
            .map_err(PullFailure::Store)
    }

    /// What a spawned layer task needs of the puller.
    fn shared(&self) -> BlobFetcher {
        BlobFetcher {
            store: self.store.clone(),
            locks: self.blob_locks.clone(),
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
        if bytes.len() > MAX_JSON_BLOB {
            return Err(PullFailure::Registry(format!(
                "manifest of {name}: {} bytes is too large",
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

/// Fetches blobs into the store: one per digest at a time in this process (an in-memory
/// lock), one per digest across processes (flock on the partial file).
struct BlobFetcher {
    store: ImageStore,
    locks: BlobLocks,
}

impl BlobFetcher {
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
            .locks
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
            match download(client, image, desc, &partial, &what, &report).await {
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
                    // Keep what arrived for a resume, unless the disk is full.
                    if matches!(&e, PullFailure::Store(ImageError::Io { error, .. }) if error.raw_os_error() == Some(libc::ENOSPC))
                    {
                        let _ = tokio::fs::remove_file(&partial).await;
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| PullFailure::Registry(format!("{what}: download failed"))))
    }
}

/// Fetch `desc` into `partial`, resuming after what is already there.
async fn download(
    client: &Client,
    image: &Reference,
    desc: &Descriptor,
    partial: &Path,
    what: &str,
    report: &impl Fn(Progress),
) -> Result<(), PullFailure> {
    let digest = desc.digest().to_string();
    let total = desc.size();
    let mut have = tokio::fs::metadata(partial).await.map(|m| m.len()).unwrap_or(0);
    if have >= total {
        // Complete (verify decides) or longer than it should be (start over).
        if have == total {
            return Ok(());
        }
        have = 0;
    }
    let response = client
        .pull_blob_stream_partial(image, digest.as_str(), have, None)
        .await
        .map_err(|e| PullFailure::Registry(format!("{what}: {}", registry_error(&e))))?;
    let (mut stream, resumed) = match response {
        BlobResponse::Partial(s) => (s, have > 0),
        BlobResponse::Full(s) => (s, false),
    };
    if resumed {
        tracing::info!(blob = %digest, offset = have, "resuming an interrupted download");
    } else {
        have = 0;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(partial)
        .await
        .map_err(|e| ImageError::io(partial, e))?;
    let mut last_report = have;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| PullFailure::Registry(format!("{what}: {}", error_chain(&e))))?;
        file.write_all(&chunk).await.map_err(|e| ImageError::io(partial, e))?;
        have += chunk.len() as u64;
        if have > total {
            break; // more than announced: verify rejects it
        }
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
