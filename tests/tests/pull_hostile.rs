//! Pulls from a hostile or slow registry: a small registry v2 server written here, on a
//! loopback port, serves one image per repository and misbehaves on purpose (a layer declared
//! larger than the disk, a stream longer than declared, content that does not match its digest,
//! a trickle of one byte at a time). What is checked is the host's view: files left in the
//! store's tmp directory, bytes the server managed to send, connections the agent dropped, and
//! how long a stalled pull took to fail.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minilet_e2e::*;
use sha2::{Digest, Sha256};

/// How a repository's layer (or manifest) is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// The manifest declares a 10 GiB layer; the blob is endless garbage.
    Huge,
    /// The manifest declares 1 MiB; the blob is endless garbage without a length.
    Overrun,
    /// The blob has the declared length but not the declared digest.
    Corrupt,
    /// The blob (1 MiB declared and announced) comes one byte every `TRICKLE`.
    Trickle,
    /// The manifest itself comes one byte every `TRICKLE`.
    TrickleManifest,
    /// The manifest is endless, without a length.
    BigManifest,
    /// The manifest declares a 10 GiB config.
    HugeConfig,
}

const TRICKLE: Duration = Duration::from_millis(500);
const HUGE: u64 = 10 << 30;
const DECLARED: u64 = 1 << 20;

/// What the server saw.
#[derive(Default)]
struct Seen {
    layer_gets: AtomicUsize,
    config_gets: AtomicUsize,
    /// Bytes of manifest bodies written, and manifest responses cut short by the agent.
    manifest_bytes: AtomicU64,
    manifest_dropped: AtomicUsize,
    /// Bytes of layer bodies written to the socket (accepted by the kernel).
    layer_bytes: AtomicU64,
    /// Layer responses cut short because the agent closed the connection.
    layer_dropped: AtomicUsize,
    /// When the first layer GET arrived.
    first_layer_get: Mutex<Option<Instant>>,
}

struct Server {
    port: u16,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_hex: String,
    layer_hex: String,
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn image(behaviour: Behaviour) -> Image {
    let layer = vec![b'l'; 256 << 10];
    let layer_hex = sha(&layer);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_hex}"]}}}}"#
    )
    .into_bytes();
    let config_hex = sha(&config);
    let size = match behaviour {
        Behaviour::Huge => HUGE,
        Behaviour::Corrupt => layer.len() as u64,
        _ => DECLARED,
    };
    let config_size = match behaviour {
        Behaviour::HugeConfig => HUGE,
        _ => config.len() as u64,
    };
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_hex}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_hex}","size":{size}}}]}}"#
    )
    .into_bytes();
    Image {
        manifest,
        config,
        config_hex,
        layer_hex,
    }
}

impl Server {
    fn start(behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let image = Arc::new(image(behaviour));
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (seen, stop, image) = (seen.clone(), stop.clone(), image.clone());
                    std::thread::spawn(move || serve(conn, behaviour, &image, &seen, &stop));
                }
            });
        }
        Server { port, seen, stop }
    }

    fn reference(&self, repo: &str) -> String {
        format!("127.0.0.1:{}/{repo}:1", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
    }
}

/// Answer requests on one connection (keep-alive) until it closes or misbehaviour ends it.
fn serve(conn: TcpStream, behaviour: Behaviour, image: &Image, seen: &Seen, stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let head = method == "HEAD";
        let respond = |out: &mut TcpStream, ctype: &str, digest: Option<&str>, body: &[u8]| {
            let digest = digest.map_or(String::new(), |d| format!("Docker-Content-Digest: sha256:{d}\r\n"));
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n{digest}Content-Length: {}\r\n\r\n",
                body.len()
            );
            if !head {
                let _ = out.write_all(body);
            }
        };
        if path == "/v2/" {
            respond(&mut out, "application/json", None, b"{}");
        } else if path.contains("/manifests/") {
            let manifest_hex = sha(&image.manifest);
            if behaviour == Behaviour::BigManifest && !head {
                let _ = out.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n",
                );
                let chunk = vec![b' '; 64 << 10];
                let mut sent = 0u64;
                while sent < 1 << 30 && !stop.load(Ordering::SeqCst) {
                    if out.write_all(&chunk).is_err() {
                        seen.manifest_dropped.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    sent += chunk.len() as u64;
                    seen.manifest_bytes.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                return;
            }
            if behaviour == Behaviour::TrickleManifest && !head {
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: sha256:{manifest_hex}\r\nContent-Length: {}\r\n\r\n",
                    image.manifest.len()
                );
                for b in &image.manifest {
                    if stop.load(Ordering::SeqCst) || out.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(TRICKLE);
                }
                continue;
            }
            respond(
                &mut out,
                "application/vnd.oci.image.manifest.v1+json",
                Some(&manifest_hex),
                &image.manifest,
            );
        } else if path.ends_with(&format!("/blobs/sha256:{}", image.config_hex)) {
            seen.config_gets.fetch_add(1, Ordering::SeqCst);
            respond(
                &mut out,
                "application/octet-stream",
                Some(&image.config_hex),
                &image.config,
            );
        } else if path.ends_with(&format!("/blobs/sha256:{}", image.layer_hex)) {
            seen.layer_gets.fetch_add(1, Ordering::SeqCst);
            seen.first_layer_get
                .lock()
                .expect("lock")
                .get_or_insert_with(Instant::now);
            serve_layer(&mut out, behaviour, seen, stop);
            if behaviour != Behaviour::Corrupt {
                return;
            }
        } else {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    }
}

fn serve_layer(out: &mut TcpStream, behaviour: Behaviour, seen: &Seen, stop: &AtomicBool) {
    // Write `chunk` as long as the agent reads, up to `limit` bytes; note a dropped connection.
    let pour = |out: &mut TcpStream, chunk: &[u8], pause: Duration, limit: u64| {
        let mut sent = 0u64;
        while sent < limit && !stop.load(Ordering::SeqCst) {
            if out.write_all(chunk).is_err() {
                seen.layer_dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            sent += chunk.len() as u64;
            seen.layer_bytes.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            std::thread::sleep(pause);
        }
    };
    let garbage = vec![b'g'; 64 << 10];
    match behaviour {
        Behaviour::Huge => {
            let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {HUGE}\r\n\r\n");
            pour(out, &garbage, Duration::ZERO, 1 << 30);
        }
        Behaviour::Overrun => {
            // No length: the body ends when the connection does.
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            pour(out, &garbage, Duration::ZERO, 1 << 30);
        }
        Behaviour::Corrupt => {
            let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 256 << 10);
            pour(out, &vec![b'x'; 256 << 10], Duration::ZERO, 256 << 10);
        }
        Behaviour::Trickle | Behaviour::TrickleManifest | Behaviour::BigManifest | Behaviour::HugeConfig => {
            let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {DECLARED}\r\n\r\n");
            pour(out, b"t", TRICKLE, DECLARED);
        }
    }
}

fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, 'sleep 3600']\n"
    )
}

/// Wait for the pod's `Failed to pull image` event; returns its text.
fn pull_failure(env: &Env, image: &str, timeout: Duration) -> String {
    let needle = format!("Failed to pull image \"{image}\": ");
    wait_for(&format!("a failed pull of {image}"), timeout, || {
        let events = ok(env, &["get", "events"]);
        events.lines().find(|l| l.contains(&needle)).map(str::to_owned)
    })
}

/// Files in the store's tmp directory.
fn tmp_files(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("images/tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes used under `dir`, as the filesystem counts them.
fn disk_usage(dir: &Path) -> u64 {
    let out = std::process::Command::new("du")
        .args(["-s", "-B1"])
        .arg(dir)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// The state root on a small tmpfs of its own, unmounted when dropped.
struct SmallRoot<'a>(&'a Path);

impl<'a> SmallRoot<'a> {
    fn mount(root: &'a Path, size: &str) -> SmallRoot<'a> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(root)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs on {}", root.display());
        SmallRoot(root)
    }
}

impl Drop for SmallRoot<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0).status();
    }
}

#[test]
fn a_layer_larger_than_the_disk_is_refused_before_a_byte_of_it_is_fetched() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let env = Env::new("pull-huge");
    let _small = SmallRoot::mount(&env.root, "64m");
    let server = Server::start(Behaviour::Huge);
    let image = server.reference("hostile/huge");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("huge.yaml", &pod("huge", &image));

    let failure = pull_failure(&env, &image, Duration::from_secs(60));
    let layer = self::image(Behaviour::Huge).layer_hex;
    assert!(failure.contains("No space left on device"), "{failure}");
    assert!(failure.contains(&format!("blob sha256:{layer}")), "{failure}");
    assert!(failure.contains(&format!("needs {HUGE} bytes")), "{failure}");
    assert_eq!(
        server.seen.layer_gets.load(Ordering::SeqCst),
        0,
        "the layer was requested although it cannot fit"
    );
    assert!(tmp_files(&env.root).is_empty(), "{:?}", tmp_files(&env.root));
    let reason = status_reason(&env, &static_pod_name("huge"));
    assert!(
        matches!(reason.as_deref(), Some("ErrImagePull" | "ImagePullBackOff")),
        "{reason:?}"
    );
}

#[test]
fn oversized_manifests_and_configs_are_refused_without_reading_them() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let env = Env::new("pull-oversized");
    let big = Server::start(Behaviour::BigManifest);
    let huge_config = Server::start(Behaviour::HugeConfig);
    let _agent = Agent::start(&env, &[]);

    let image = big.reference("hostile/big-manifest");
    env.write_manifest("big.yaml", &pod("big", &image));
    let failure = pull_failure(&env, &image, Duration::from_secs(60));
    assert!(
        failure.contains("more than 4194304 bytes is too large for a manifest"),
        "{failure}"
    );
    assert_eq!(big.seen.config_gets.load(Ordering::SeqCst), 0);
    // Read no further than the limit: the agent hung up, the server could not pour on.
    wait_for("the agent to drop the connection", Duration::from_secs(20), || {
        (big.seen.manifest_dropped.load(Ordering::SeqCst) >= 1).then_some(())
    });
    let sent = big.seen.manifest_bytes.load(Ordering::SeqCst);
    assert!(sent < 64 << 20, "the server sent {sent} bytes of manifest");

    let image = huge_config.reference("hostile/huge-config");
    env.write_manifest("huge-config.yaml", &pod("huge-config", &image));
    let failure = pull_failure(&env, &image, Duration::from_secs(60));
    assert!(
        failure.contains(&format!(
            "declares {HUGE} bytes, more than the 16777216 a config may have"
        )),
        "{failure}"
    );
    assert_eq!(huge_config.seen.config_gets.load(Ordering::SeqCst), 0, "config fetched");
    assert!(tmp_files(&env.root).is_empty(), "{:?}", tmp_files(&env.root));
}

#[test]
fn a_stream_longer_than_declared_is_cut_off_and_discarded() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let env = Env::new("pull-overrun");
    let server = Server::start(Behaviour::Overrun);
    let image = server.reference("hostile/overrun");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("overrun.yaml", &pod("overrun", &image));

    let failure = pull_failure(&env, &image, Duration::from_secs(60));
    assert!(
        failure.contains(&format!("where the manifest declares {DECLARED}; download discarded")),
        "{failure}"
    );
    // The agent hung up at the first excess chunk: the server could not pour on.
    wait_for("the agent to drop the connection", Duration::from_secs(20), || {
        (server.seen.layer_dropped.load(Ordering::SeqCst) >= 1).then_some(())
    });
    let sent = server.seen.layer_bytes.load(Ordering::SeqCst);
    assert!(sent < 64 << 20, "the server sent {sent} bytes");
    assert!(tmp_files(&env.root).is_empty(), "{:?}", tmp_files(&env.root));
    let used = disk_usage(&env.root.join("images"));
    assert!(used < 8 << 20, "the store uses {used} bytes");
}

#[test]
fn content_that_fails_its_digest_leaves_no_partial_file() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let env = Env::new("pull-corrupt");
    let server = Server::start(Behaviour::Corrupt);
    let image = server.reference("hostile/corrupt");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("corrupt.yaml", &pod("corrupt", &image));

    let failure = pull_failure(&env, &image, Duration::from_secs(60));
    assert!(failure.contains("digest mismatch"), "{failure}");
    // Fetched once more before giving up, as a corrupt transfer deserves.
    assert_eq!(server.seen.layer_gets.load(Ordering::SeqCst), 2);
    assert!(tmp_files(&env.root).is_empty(), "{:?}", tmp_files(&env.root));
    let layer = self::image(Behaviour::Corrupt).layer_hex;
    assert!(!env.root.join(format!("images/blobs/sha256/{layer}")).exists());
}

#[test]
fn a_trickling_registry_fails_the_pull_within_the_progress_deadline() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let env = Env::new("pull-trickle");
    let deadline = Duration::from_secs(2);
    let blob_server = Server::start(Behaviour::Trickle);
    let manifest_server = Server::start(Behaviour::TrickleManifest);
    let _agent = Agent::start(&env, &["--image-pull-progress-deadline", "2s"]);
    // Generous: the deadline, plus the agent's own scheduling on a busy machine.
    let bound = deadline + Duration::from_secs(10);

    // A layer at one byte every 500 ms.
    let image = blob_server.reference("hostile/trickle");
    env.write_manifest("trickle.yaml", &pod("trickle", &image));
    let failure = pull_failure(&env, &image, Duration::from_secs(60));
    let failed_at = Instant::now();
    let started = blob_server
        .seen
        .first_layer_get
        .lock()
        .expect("lock")
        .expect("layer requested");
    assert!(failure.contains("the download stalled"), "{failure}");
    assert!(failure.contains("--image-pull-progress-deadline"), "{failure}");
    assert!(
        failed_at - started < bound,
        "failed {:?} after the layer was requested",
        failed_at - started
    );
    wait_for("the agent to drop the connection", Duration::from_secs(20), || {
        (blob_server.seen.layer_dropped.load(Ordering::SeqCst) >= 1).then_some(())
    });

    // A manifest at one byte every 500 ms.
    let image = manifest_server.reference("hostile/slow-manifest");
    let asked = Instant::now();
    env.write_manifest("slow-manifest.yaml", &pod("slow-manifest", &image));
    let failure = pull_failure(&env, &image, Duration::from_secs(60));
    assert!(failure.contains("no answer from the registry within 2s"), "{failure}");
    assert!(
        asked.elapsed() < bound + Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn a_pull_stops_when_its_last_waiter_is_gone() {
    if !is_root() {
        skip("needs root");
        return;
    }
    use minilet_proto::runtime::v1 as cri;
    let env = Env::new("pull-cancel");
    let server = Server::start(Behaviour::Trickle);
    let image = server.reference("hostile/slow");
    // The progress deadline is far away: only the waiters leaving can stop this pull.
    let agent = Agent::start(&env, &["--image-pull-progress-deadline", "5m"]);
    env.write_manifest("slow.yaml", &pod("slow", &image));
    wait_for("the layer download to be under way", Duration::from_secs(60), || {
        (server.seen.layer_bytes.load(Ordering::SeqCst) >= 2).then_some(())
    });

    // A CRI PullImage of the same image joins the pull, and waits until told to hang up.
    let (hang_up, hung_up) = tokio::sync::oneshot::channel::<()>();
    let cri_pull = {
        let (socket, image) = (env.socket.clone(), image.clone());
        std::thread::spawn(move || {
            minilet_e2e::grpc::rt().block_on(async move {
                let mut c = minilet_e2e::grpc::connect(&socket).await;
                let request = cri::PullImageRequest {
                    image: Some(cri::ImageSpec {
                        image,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                tokio::select! {
                    r = c.image.pull_image(request) => Some(r.map(|r| r.into_inner().image_ref)),
                    _ = hung_up => None,
                }
            })
        })
    };
    wait_for("the CRI pull to join the pod's", Duration::from_secs(30), || {
        agent.log_text().contains("joining a pull in progress").then_some(())
    });

    // The pod goes; the CRI caller still waits, so the download goes on.
    env.remove_manifest("slow.yaml");
    wait_for("the pod to be removed", Duration::from_secs(30), || {
        env.pod(&static_pod_name("slow")).is_none().then_some(())
    });
    let sent = server.seen.layer_bytes.load(Ordering::SeqCst);
    wait_for("more bytes of the layer", Duration::from_secs(30), || {
        (server.seen.layer_bytes.load(Ordering::SeqCst) >= sent + 3).then_some(())
    });
    assert_eq!(
        server.seen.layer_dropped.load(Ordering::SeqCst),
        0,
        "the pull stopped while a CRI client still waited for it"
    );

    // The CRI client hangs up: nothing waits any more, and the download stops.
    let _ = hang_up.send(());
    let outcome = cri_pull.join().expect("CRI thread");
    assert!(outcome.is_none(), "the pull finished: {outcome:?}");
    let left = Instant::now();
    wait_for("the agent to drop the connection", Duration::from_secs(30), || {
        (server.seen.layer_dropped.load(Ordering::SeqCst) >= 1).then_some(())
    });
    eprintln!("connection dropped {:?} after the last waiter left", left.elapsed());
    assert!(
        agent
            .log_text()
            .contains("image pull cancelled: nothing waits for it any more"),
        "{}",
        agent.log_text()
    );
    assert_eq!(server.seen.layer_gets.load(Ordering::SeqCst), 1, "no new request");
}

/// The pod's first container's waiting reason.
fn status_reason(env: &Env, name: &str) -> Option<String> {
    let o = cli(env, &["get", "pod", name, "-o", "json"]);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_slice(&o.stdout).ok()?;
    pod.status?
        .container_statuses?
        .into_iter()
        .next()?
        .state?
        .waiting?
        .reason
}
