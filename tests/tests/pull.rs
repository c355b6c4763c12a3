//! Registry pulls against a real `docker-registry` on loopback: tags, digests, policies,
//! back-off, auth, mirrors, multi-arch indexes, whiteouts, zstd, coalescing, robustness and
//! garbage collection. What ran is checked in the containers (their output, their files) and
//! in the registry's own access log.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use minilet_e2e::oci::{LayerTar, Layout};
use minilet_e2e::registry::{Compression, Registry};
use minilet_e2e::*;

const FAST_BACKOFF: &[&str] = &["--backoff-initial", "300ms", "--backoff-max", "600ms"];

fn pod(name: &str, image: &str, policy: Option<&str>, script: &str) -> String {
    let policy = policy.map_or(String::new(), |p| format!("\n    imagePullPolicy: {p}"));
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}{policy}\n    command: [sh, -c, '{script}']\n"
    )
}

/// The pod's first container status, as `minilet get pod -o json` shows it.
fn status(env: &Env, name: &str) -> Option<ContainerStatus> {
    let o = cli(env, &["get", "pod", name, "-o", "json"]);
    let pod: Pod = serde_json::from_slice(&o.stdout).ok()?;
    pod.status?.container_statuses?.into_iter().next()
}

fn waiting_reason(env: &Env, name: &str) -> Option<String> {
    status(env, name)?.state?.waiting?.reason
}

fn running_image_id(env: &Env, name: &str) -> Option<String> {
    let s = status(env, name)?;
    s.state?.running?;
    Some(s.image_id)
}

fn events(env: &Env) -> String {
    ok(env, &["get", "events"])
}

fn log_of(env: &Env, name: &str) -> String {
    let p = env.pod(name).expect("pod in state");
    std::fs::read_to_string(&p.containers["c"].log_path).unwrap_or_default()
}

#[test]
fn tags_digests_policies_and_backoff() {
    if !is_root() {
        return;
    }
    let env = Env::new("pull-policy");
    let reg = Registry::start(&env.dir.join("registry"), None);
    let host = reg.host();
    let digest = reg.push_demo("busybox", "test/busybox:1.0", Compression::AsIs);
    reg.push_demo("busybox", "test/busybox:latest", Compression::AsIs);
    let _agent = Agent::start(&env, FAST_BACKOFF);

    // By tag (IfNotPresent by default), then by digest: the second needs no blob again.
    env.write_manifest(
        "tagged.yaml",
        &pod("tagged", &format!("{host}/test/busybox:1.0"), None, "sleep 3600"),
    );
    env.wait_running(&static_pod_name("tagged"), &["c"]);
    let e = events(&env);
    assert!(e.contains(&format!("Pulling image \"{host}/test/busybox:1.0\"")), "{e}");
    assert!(
        e.contains(&format!("Successfully pulled image \"{host}/test/busybox:1.0\" in ")),
        "{e}"
    );
    let blob_gets = reg.gets("/blobs/sha256:");
    assert!(blob_gets >= 2, "config and layer fetched:\n{}", reg.log());
    env.write_manifest(
        "pinned.yaml",
        &pod("pinned", &format!("{host}/test/busybox@{digest}"), None, "sleep 3600"),
    );
    env.wait_running(&static_pod_name("pinned"), &["c"]);
    assert_eq!(reg.gets("/blobs/sha256:"), blob_gets, "no blob fetched twice");
    assert_eq!(
        running_image_id(&env, &static_pod_name("pinned")),
        running_image_id(&env, &static_pod_name("tagged"))
    );

    // IfNotPresent: a restart does not ask the registry again.
    let manifest_gets = reg.gets("/manifests/1.0");
    let old = env.pod(&static_pod_name("tagged")).expect("tagged");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old.pid("c")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    wait_for("tagged restarted", Duration::from_secs(20), || {
        let p = env.pod(&static_pod_name("tagged"))?;
        let c = p.containers.get("c")?;
        (c.attempt >= 1 && c.exit.is_none() && alive(c.pid?)).then_some(())
    });
    assert_eq!(reg.gets("/manifests/1.0"), manifest_gets, "IfNotPresent pulled again");

    // Always (the :latest default): every start pulls, so a new :latest is picked up.
    env.write_manifest(
        "always.yaml",
        &pod("always", &format!("{host}/test/busybox:latest"), None, "sleep 3600"),
    );
    env.wait_running(&static_pod_name("always"), &["c"]);
    let first = wait_for("always running", Duration::from_secs(10), || {
        running_image_id(&env, &static_pod_name("always"))
    });
    reg.push_demo("nginx", "test/busybox:latest", Compression::AsIs);
    let p = env.pod(&static_pod_name("always")).expect("always");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.pid("c")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    wait_for("always restarted on the new image", Duration::from_secs(20), || {
        running_image_id(&env, &static_pod_name("always")).filter(|id| *id != first)
    });

    // Never: not present → ErrImageNeverPull, and the registry is not asked.
    env.write_manifest(
        "never.yaml",
        &pod("never", &format!("{host}/test/other:1"), Some("Never"), "true"),
    );
    wait_for("ErrImageNeverPull", Duration::from_secs(10), || {
        (waiting_reason(&env, &static_pod_name("never"))? == "ErrImageNeverPull").then_some(())
    });
    assert_eq!(reg.gets("/test/other/"), 0);

    // Missing: ErrImagePull, then ImagePullBackOff with the registry's words; pushing the
    // image lets the next attempt (after the back-off) start it.
    env.write_manifest(
        "missing.yaml",
        &pod("missing", &format!("{host}/test/missing:1"), None, "sleep 3600"),
    );
    wait_for("ImagePullBackOff", Duration::from_secs(20), || {
        (waiting_reason(&env, &static_pod_name("missing"))? == "ImagePullBackOff").then_some(())
    });
    let s = status(&env, &static_pod_name("missing")).expect("status");
    let msg = s
        .state
        .and_then(|st| st.waiting)
        .and_then(|w| w.message)
        .unwrap_or_default();
    assert!(msg.contains("not found"), "{msg}");
    let e = events(&env);
    assert!(
        e.contains(&format!("Failed to pull image \"{host}/test/missing:1\"")),
        "{e}"
    );
    assert!(e.contains("Error: ErrImagePull"), "{e}");
    assert!(
        e.contains(&format!("Back-off pulling image \"{host}/test/missing:1\"")),
        "{e}"
    );
    assert!(e.contains("Error: ImagePullBackOff"), "{e}");
    let d = ok(&env, &["describe", "pod", &static_pod_name("missing")]);
    assert!(
        d.contains("manifest unknown"),
        "describe shows the registry's error:\n{d}"
    );
    reg.push_demo("busybox", "test/missing:1", Compression::AsIs);
    env.wait_running(&static_pod_name("missing"), &["c"]);

    // Invalid names: InvalidImageName, not a crash.
    env.write_manifest("invalid.yaml", &pod("invalid", "Not/A:Valid:Name", None, "true"));
    wait_for("InvalidImageName", Duration::from_secs(10), || {
        (waiting_reason(&env, &static_pod_name("invalid"))? == "InvalidImageName").then_some(())
    });
}

/// An OCI layout with a whiteout image and a two-platform index, on top of hack's busybox.
fn special_images(dir: &Path) -> Layout {
    let mut layout = Layout::from(&workspace().join("hack/.images/busybox"), dir);
    let base = layout.base_manifest();
    let arch = oci_spec_arch();
    let lower = LayerTar::new()
        .dir("etc/")
        .file("etc/gone", b"deleted above")
        .dir("data/")
        .file("data/old1", b"1")
        .file("data/old2", b"2")
        .finish();
    let upper = LayerTar::new()
        .file("etc/.wh.gone", b"")
        .dir("data/")
        .file("data/.wh..wh..opq", b"")
        .file("data/new", b"new")
        .finish();
    let wh = layout.image(Some(&base), vec![lower, upper], &arch);
    layout.tag(&wh, "whiteout");
    let native = layout.image(
        Some(&base),
        vec![LayerTar::new().file("arch", arch.as_bytes()).finish()],
        &arch,
    );
    let other_arch = if arch == "arm64" { "amd64" } else { "arm64" };
    let foreign = layout.image(
        None,
        vec![LayerTar::new().file("arch", other_arch.as_bytes()).finish()],
        other_arch,
    );
    let index = layout.index(&[foreign, native]);
    layout.tag(&index, "multiarch");
    layout
}

/// This host's architecture in OCI's words.
fn oci_spec_arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
    .to_owned()
}

#[test]
fn multiarch_whiteouts_zstd_and_mirrors() {
    if !is_root() {
        return;
    }
    let env = Env::new("pull-kinds");
    let reg = Registry::start(&env.dir.join("registry"), None);
    let host = reg.host();
    // The unchanged upstream spelling ("zbox:1" = docker.io/library/zbox:1), served by the
    // mirror, with zstd layers. Pushed first: skopeo reuses a blob the registry already has in
    // another compression instead of recompressing it.
    reg.push_demo("busybox", "library/zbox:1", Compression::Zstd);
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{host}/library/zbox:1"))
        .output()
        .expect("skopeo inspect");
    let raw = String::from_utf8_lossy(&raw.stdout).into_owned();
    assert!(raw.contains("tar+zstd"), "the zbox layers must be zstd: {raw}");
    let layout = special_images(&env.dir.join("layout"));
    reg.push(
        &format!("oci:{}:whiteout", layout.dir.display()),
        "test/whiteout:1",
        Compression::AsIs,
        false,
    );
    reg.push(
        &format!("oci:{}:multiarch", layout.dir.display()),
        "test/multiarch:1",
        Compression::AsIs,
        true,
    );
    let mirror = format!("docker.io=http://{host}");
    let _agent = Agent::start(&env, &["--registry-mirror", &mirror]);

    env.write_manifest(
        "wh.yaml",
        &pod(
            "wh",
            &format!("{host}/test/whiteout:1"),
            None,
            "ls /etc/gone 2>&1; ls /data; echo listed; sleep 3600",
        ),
    );
    env.write_manifest(
        "multi.yaml",
        &pod(
            "multi",
            &format!("{host}/test/multiarch:1"),
            None,
            "cat /arch; echo; sleep 3600",
        ),
    );
    env.write_manifest("zbox.yaml", &pod("zbox", "zbox:1", None, "echo zstd ok; sleep 3600"));
    for name in ["wh", "multi", "zbox"] {
        env.wait_running(&static_pod_name(name), &["c"]);
    }
    let wh = wait_for("whiteout output", Duration::from_secs(10), || {
        let l = log_of(&env, &static_pod_name("wh"));
        l.contains("listed").then_some(l)
    });
    assert!(
        wh.contains("No such file or directory"),
        "/etc/gone must be whited out:\n{wh}"
    );
    assert!(
        wh.contains(" new\n") && !wh.contains("old1") && !wh.contains("old2"),
        "opaque /data:\n{wh}"
    );
    let multi = wait_for("multiarch output", Duration::from_secs(10), || {
        let l = log_of(&env, &static_pod_name("multi"));
        l.contains(" F ").then_some(l)
    });
    assert!(multi.contains(&format!(" F {}\n", oci_spec_arch())), "{multi}");
    let z = wait_for("zbox output", Duration::from_secs(10), || {
        let l = log_of(&env, &static_pod_name("zbox"));
        l.contains("zstd ok").then_some(l)
    });
    assert!(z.contains("zstd ok"));
    assert!(reg.gets("/v2/library/zbox/manifests/1") >= 1, "{}", reg.log());
    // The image is named as the pod spelled it, normalized.
    let images = ok(&env, &["image", "ls", "--root", env.root.to_str().expect("utf-8")]);
    assert!(images.contains("docker.io/library/zbox"), "{images}");
}

#[test]
fn auth_registry_with_and_without_credentials() {
    if !is_root() {
        return;
    }
    let env = Env::new("pull-auth");
    let reg = Registry::start(&env.dir.join("registry"), Some(("alice", "s3cret")));
    let host = reg.host();
    reg.push_demo("busybox", "private/busybox:1", Compression::AsIs);
    let config = env.dir.join("docker-config.json");
    let _agent = Agent::start(
        &env,
        &[
            "--registry-config",
            config.to_str().expect("utf-8"),
            "--backoff-initial",
            "300ms",
            "--backoff-max",
            "600ms",
        ],
    );
    let image = format!("{host}/private/busybox:1");

    // No credentials: 401, reported as such.
    env.write_manifest("p.yaml", &pod("p", &image, None, "sleep 3600"));
    wait_for("ImagePullBackOff without credentials", Duration::from_secs(20), || {
        (waiting_reason(&env, &static_pod_name("p"))? == "ImagePullBackOff").then_some(())
    });
    assert!(events(&env).contains("401 Unauthorized"), "{}", events(&env));

    // The CLI with wrong and right credentials.
    let root = env.dir.join("cli-root");
    let root_s = root.to_str().expect("utf-8");
    let o = cli(
        &env,
        &["image", "pull", &image, "--creds", "alice:wrong", "--root", root_s],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    let out = ok(
        &env,
        &["image", "pull", &image, "--creds", "alice:s3cret", "--root", root_s],
    );
    assert!(out.starts_with("Image is up to date for sha256:"), "{out}");

    // CRI PullImage without credentials: the registry's 401.
    use minilet_proto::runtime::v1 as cri;
    let req = |image: &str, auth: Option<cri::AuthConfig>| cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        auth,
        ..Default::default()
    };
    minilet_e2e::grpc::rt().block_on(async {
        let mut c = minilet_e2e::grpc::connect(&env.socket).await;
        let denied = c.image.pull_image(req(&image, None)).await.expect_err("no credentials");
        assert!(denied.message().contains("401"), "{denied:?}");
    });

    // Credentials in the docker config file: the next attempt pulls and the pod runs.
    let auth = base64_encode(b"alice:s3cret");
    std::fs::write(
        &config,
        format!("{{\"auths\": {{\"{host}\": {{\"auth\": \"{auth}\"}}}}}}"),
    )
    .expect("config");
    env.wait_running(&static_pod_name("p"), &["c"]);

    // CRI PullImage with an AuthConfig (base64 "user:password").
    std::fs::remove_file(&config).expect("remove config");
    reg.push_demo("busybox", "private/busybox:2", Compression::AsIs);
    minilet_e2e::grpc::rt().block_on(async {
        let mut c = minilet_e2e::grpc::connect(&env.socket).await;
        let with = cri::AuthConfig {
            auth: auth.clone(),
            ..Default::default()
        };
        let r = c
            .image
            .pull_image(req(&format!("{host}/private/busybox:2"), Some(with)))
            .await
            .expect("PullImage with credentials")
            .into_inner();
        assert!(r.image_ref.starts_with("sha256:"));
    });
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A registry named by host name, `localhost:PORT`: the agent resolves it through the C
/// library's resolver (`/etc/hosts`), which the statically linked `minilet` does without
/// loading any NSS module.
#[test]
fn a_registry_named_by_host_name_is_resolved() {
    if !is_root() {
        return;
    }
    let env = Env::new("pull-by-name");
    let reg = Registry::start(&env.dir.join("registry"), None);
    let host = reg.host().replacen("127.0.0.1", "localhost", 1);
    let resolves = std::net::ToSocketAddrs::to_socket_addrs(host.as_str())
        .is_ok_and(|mut addrs| addrs.any(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST));
    if !resolves {
        skip("this host does not resolve localhost to 127.0.0.1");
        return;
    }
    reg.push_demo("busybox", "test/busybox:1.0", Compression::AsIs);
    let _agent = Agent::start(&env, &[]);
    let image = format!("{host}/test/busybox:1.0");
    env.write_manifest(
        "named.yaml",
        &pod("named", &image, None, "echo pulled by name; sleep 3600"),
    );
    env.wait_running(&static_pod_name("named"), &["c"]);
    let e = events(&env);
    assert!(e.contains(&format!("Successfully pulled image \"{image}\" in ")), "{e}");
    assert!(reg.gets("/v2/test/busybox/manifests/1.0") >= 1, "{}", reg.log());
    wait_for("the container's output", Duration::from_secs(10), || {
        log_of(&env, &static_pod_name("named"))
            .contains("pulled by name")
            .then_some(())
    });
}

#[test]
fn concurrent_pods_pull_an_image_once() {
    if !is_root() {
        return;
    }
    let env = Env::new("pull-once");
    let reg = Registry::start(&env.dir.join("registry"), None);
    let host = reg.host();
    reg.push_demo("nginx", "test/nginx:1", Compression::AsIs);
    let _agent = Agent::start(&env, &[]);
    for i in 0..3 {
        env.write_manifest(
            &format!("p{i}.yaml"),
            &pod(&format!("p{i}"), &format!("{host}/test/nginx:1"), None, "sleep 3600"),
        );
    }
    for i in 0..3 {
        env.wait_running(&static_pod_name(&format!("p{i}")), &["c"]);
    }
    // Every blob (config and layers) was fetched exactly once.
    let log = reg.log();
    let mut blob_gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/test/nginx/blobs/sha256:"))
        .filter_map(|l| l.split("/blobs/").nth(1)?.split(' ').next())
        .collect();
    assert!(!blob_gets.is_empty(), "{log}");
    let total = blob_gets.len();
    blob_gets.sort();
    blob_gets.dedup();
    assert_eq!(total, blob_gets.len(), "a blob was fetched twice:\n{log}");
}

#[test]
fn corrupt_interrupted_and_disk_full_pulls() {
    if !is_root() {
        return;
    }
    let env = Env::new("pull-robust");
    let reg = Registry::start(&env.dir.join("registry"), None);
    let host = reg.host();
    reg.push_demo("busybox", "test/busybox:1", Compression::AsIs);
    let image = format!("{host}/test/busybox:1");
    let root = env.dir.join("root-cli");
    let root_s = root.to_str().expect("utf-8").to_owned();
    let pull = |args: &[&str]| {
        let mut all = vec!["image", "pull"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--root", &root_s]);
        let o = std::process::Command::new(minilet())
            .args(&all)
            .env("MINILET_LOG", "info")
            .output()
            .expect("minilet image pull");
        (o.status.success(), stderr(&o))
    };
    // Find the layer: the one blob bigger than a JSON document.
    let manifest: serde_json::Value = {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}")])
            .output()
            .expect("skopeo inspect");
        serde_json::from_slice(&out.stdout).expect("manifest")
    };
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest")
        .to_owned();
    let hex = layer.trim_start_matches("sha256:").to_owned();
    let real = std::fs::read(reg.blob_path(&layer)).expect("registry blob");
    let tmp = root.join("images/tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");

    // A leftover partial download with wrong bytes: rejected, fetched again, pull succeeds.
    std::fs::write(tmp.join(format!("pull-{hex}.partial")), vec![b'x'; real.len()]).expect("partial");
    // And a half-unpacked layer of a killed process: cleaned away.
    std::fs::create_dir_all(root.join("images/layers/.tmp-999999-0123456789abcdef/bin")).expect("stale");
    let (good, err) = pull(&[&image]);
    assert!(good, "{err}");
    assert!(err.contains("downloaded blob rejected; fetching it again"), "{err}");
    assert!(!root.join("images/layers/.tmp-999999-0123456789abcdef").exists());
    ok(&env, &["image", "rm", &image, "--root", &root_s]);

    // An interrupted download resumes where it stopped (a Range request).
    std::fs::write(tmp.join(format!("pull-{hex}.partial")), &real[..real.len() / 2]).expect("partial");
    let (good, err) = pull(&[&image]);
    assert!(good, "{err}");
    assert!(err.contains(&format!("offset={}", real.len() / 2)), "{err}");
    ok(&env, &["image", "rm", &image, "--root", &root_s]);
    assert_eq!(
        std::fs::read_dir(root.join("images/layers")).expect("layers").count(),
        0,
        "rm left layers behind"
    );

    // The registry serves corrupt content: the pull fails with a digest mismatch and leaves
    // neither a layer nor a partial file nor a name behind.
    let mut bad = real.clone();
    bad[real.len() / 2] ^= 0xff;
    std::fs::write(reg.blob_path(&layer), &bad).expect("corrupt the registry's copy");
    let (good, err) = pull(&[&image]);
    assert!(!good);
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!tmp.join(format!("pull-{hex}.partial")).exists());
    assert_eq!(
        std::fs::read_dir(root.join("images/layers")).expect("layers").count(),
        0
    );
    assert!(!ok(&env, &["image", "ls", "--root", &root_s]).contains("test/busybox"));
    std::fs::write(reg.blob_path(&layer), &real).expect("restore");

    // Disk full: a clear error, no partial left, and the store works afterwards.
    let small = env.dir.join("small");
    std::fs::create_dir_all(&small).expect("small");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=600k", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount");
    assert!(mounted.success());
    let small_s = small.to_str().expect("utf-8").to_owned();
    let o = std::process::Command::new(minilet())
        .args(["image", "pull", &image, "--root", &small_s])
        .output()
        .expect("pull");
    let err = stderr(&o);
    let left: Vec<_> = std::fs::read_dir(small.join("images/tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert!(!o.status.success());
    assert!(err.contains("No space left on device"), "{err}");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn cri_pull_remove_and_garbage_collection() {
    if !is_root() {
        return;
    }
    let env = Env::new("pull-gc");
    let reg = Registry::start(&env.dir.join("registry"), None);
    let host = reg.host();
    reg.push_demo("busybox", "test/busybox:1", Compression::AsIs);
    reg.push_demo("nginx", "test/nginx:1", Compression::AsIs);
    // The state root on its own small filesystem, so usage percentages are the test's own.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&env.root)
        .status()
        .expect("mount");
    assert!(mounted.success());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&env.root);
    let mut agent = Agent::start(
        &env,
        &[
            "--image-gc-high-threshold",
            "20",
            "--image-gc-low-threshold",
            "10",
            "--minimum-image-ttl-duration",
            "0s",
            "--image-gc-period",
            "300ms",
        ],
    );
    use minilet_proto::runtime::v1 as cri;
    let busybox = format!("{host}/test/busybox:1");
    let nginx = format!("{host}/test/nginx:1");
    let usage = || {
        let st = nix::sys::statvfs::statvfs(&env.root).expect("statvfs");
        100 - st.blocks_available() * 100 / st.blocks()
    };
    let root_s = env.root.to_str().expect("utf-8").to_owned();
    let images = || ok(&env, &["image", "ls", "--root", &root_s]);

    // A pod uses busybox; nginx comes through CRI PullImage and nothing uses it.
    env.write_manifest("user.yaml", &pod("user", &busybox, None, "sleep 3600"));
    env.wait_running(&static_pod_name("user"), &["c"]);
    let spec = |image: &str| {
        Some(cri::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        })
    };
    minilet_e2e::grpc::rt().block_on(async {
        let mut c = minilet_e2e::grpc::connect(&env.socket).await;
        // RemoveImage is refused while a container uses the image; an absent image is fine.
        let refused = c
            .image
            .remove_image(cri::RemoveImageRequest { image: spec(&busybox) })
            .await
            .expect_err("in use");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
        c.image
            .remove_image(cri::RemoveImageRequest {
                image: spec(&format!("{host}/nothing:1")),
            })
            .await
            .expect("absent image");
        let r = c
            .image
            .pull_image(cri::PullImageRequest {
                image: spec(&nginx),
                ..Default::default()
            })
            .await
            .expect("PullImage")
            .into_inner();
        assert!(r.image_ref.starts_with("sha256:"));
    });
    let before = usage();
    assert!(
        before >= 20,
        "the test needs the images to fill >20% of 64m, got {before}%"
    );

    // GC: over 20% used, down to 10%: the unused nginx goes, the busybox in use stays.
    wait_for("nginx garbage collected", Duration::from_secs(20), || {
        (!images().contains("test/nginx")).then_some(())
    });
    assert!(images().contains("test/busybox"), "{}", images());
    assert!(usage() < before, "{before}% → {}%", usage());
    assert!(alive(env.pod(&static_pod_name("user")).expect("user").pid("c")));
    // The run's report is logged once its sweep is done, after the image left the list.
    wait_for_showing(
        "the garbage collection's report in the agent's log",
        Duration::from_secs(10),
        || agent.log_text().contains("image garbage collection").then_some(()),
        || agent.log_text(),
    );

    // RemoveImage of an unused image: gone from the store and from ListImages.
    reg.push_demo("busybox", "test/extra:1", Compression::AsIs);
    minilet_e2e::grpc::rt().block_on(async {
        let mut c = minilet_e2e::grpc::connect(&env.socket).await;
        let extra = format!("{host}/test/extra:1");
        c.image
            .pull_image(cri::PullImageRequest {
                image: spec(&extra),
                ..Default::default()
            })
            .await
            .expect("PullImage");
        // The same image as busybox under another name: dropping that name is fine while
        // the image itself (still named) is in use.
        c.image
            .remove_image(cri::RemoveImageRequest { image: spec(&extra) })
            .await
            .expect("RemoveImage");
        let list = c
            .image
            .list_images(cri::ListImagesRequest::default())
            .await
            .expect("ListImages")
            .into_inner();
        assert!(!list.images.iter().any(|i| i.repo_tags.contains(&extra)), "{list:?}");
        assert!(list.images.iter().any(|i| i.repo_tags.contains(&busybox)), "{list:?}");
    });
    agent.stop();
}

#[test]
fn the_etcd_example_runs_from_a_mirror_by_its_upstream_name() {
    if !is_root() {
        return;
    }
    let env = Env::new("pull-etcd");
    let reg = Registry::start(&env.dir.join("registry"), None);
    reg.push_demo("etcd", "etcd:3.4.23", Compression::AsIs);
    let mirror = format!("registry.k8s.io=http://{}", reg.host());
    // The example is hostNetwork, listening on the node's address: here the node is this
    // machine, so the test keeps etcd in a network namespace of its own (loopback only)
    // and gives the node a loopback address there (tests/demo.rs runs it as shipped).
    let _agent = Agent::start(&env, &["--registry-mirror", &mirror, "--node-ip", "127.0.0.2"]);
    let manifest = std::fs::read_to_string(workspace().join("manifests/etcd.yaml")).expect("manifests/etcd.yaml");
    assert!(manifest.contains("image: registry.k8s.io/etcd:3.4.23"));
    assert!(manifest.contains("\n  hostNetwork: true\n"));
    env.write_manifest("etcd.yaml", &manifest.replace("\n  hostNetwork: true\n", "\n"));
    env.wait_running(&static_pod_name("etcd"), &["etcd"]);
    assert!(reg.gets("/v2/etcd/manifests/3.4.23") >= 1, "{}", reg.log());
    // etcd answers inside the pod, through etcdctl from the same image.
    wait_for("etcdctl put", Duration::from_secs(20), || {
        cli(
            &env,
            &[
                "exec",
                &static_pod_name("etcd"),
                "--",
                "etcdctl",
                "put",
                "greeting",
                "hello",
            ],
        )
        .status
        .success()
        .then_some(())
    });
    assert_eq!(
        ok(
            &env,
            &["exec", &static_pod_name("etcd"), "--", "etcdctl", "get", "greeting"]
        ),
        "greeting\nhello\n"
    );
}

#[test]
fn image_pull_shows_per_layer_progress_on_a_terminal() {
    if !is_root() {
        return;
    }
    let env = Env::new("pull-progress");
    let reg = Registry::start(&env.dir.join("registry"), None);
    reg.push_demo("nginx", "test/nginx:1", Compression::AsIs);
    let image = format!("{}/test/nginx:1", reg.host());
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut master = std::fs::File::from(pty.master);
    // Read while it runs (a full terminal buffer would block the writer); EIO ends it once
    // the last slave descriptor (the child's) is closed.
    let reader = std::thread::spawn(move || {
        let mut screen = Vec::new();
        let _ = std::io::Read::read_to_end(&mut master, &mut screen);
        screen
    });
    let status = std::process::Command::new(minilet())
        .args(["image", "pull", &image, "--root"])
        .arg(env.dir.join("root-cli"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::from(pty.slave))
        .status()
        .expect("minilet image pull");
    assert!(status.success(), "{status:?}");
    let screen = reader.join().expect("reader");
    let screen = String::from_utf8_lossy(&screen);
    assert!(
        screen.contains("downloading") || screen.contains("download complete"),
        "{screen}"
    );
    assert!(screen.contains(": pull complete"), "{screen}");
    // Without a terminal: no progress, only the result.
    let out = std::process::Command::new(minilet())
        .args(["image", "pull", &image, "--root"])
        .arg(env.dir.join("root-cli2"))
        .output()
        .expect("minilet image pull");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Image is up to date for sha256:"));
}

#[test]
fn a_pull_interrupted_by_killing_the_agent_resumes_and_leaves_nothing_half_done() {
    if !is_root() {
        return;
    }
    let env = Env::new("pull-kill");
    let reg = Registry::start(&env.dir.join("registry"), None);
    // busybox plus a large incompressible layer, so that the pull takes a while.
    let mut layout = Layout::from(&workspace().join("hack/.images/busybox"), &env.dir.join("layout"));
    let base = layout.base_manifest();
    let mut big = vec![0u8; 64 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut big))
        .expect("random bytes");
    let layer = LayerTar::new().file("big", &big).finish();
    drop(big);
    let desc = layout.image_with(Some(&base), vec![layer], &oci_spec_arch(), false);
    layout.tag(&desc, "big");
    reg.push(
        &format!("oci:{}:big", layout.dir.display()),
        "test/big:1",
        Compression::AsIs,
        false,
    );
    let image = format!("{}/test/big:1", reg.host());

    let mut agent = Agent::start(&env, &[]);
    env.write_manifest("big.yaml", &pod("big", &image, None, "ls -l /big; sleep 3600"));
    // Kill it as soon as the download has begun.
    let partial_seen = wait_for("the download to begin", Duration::from_secs(30), || {
        let tmp = env.root.join("images/tmp");
        let partial = std::fs::read_dir(&tmp)
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".partial") && e.metadata().is_ok_and(|m| m.len() > 0));
        let done = env
            .pod(&static_pod_name("big"))
            .is_some_and(|p| p.containers.contains_key("c"));
        (partial || done).then_some(partial)
    });
    agent.kill9();
    // What decides the verdict is what the kill left on disk: a partial seen a moment before
    // may have been completed (all its bytes written, not yet verified and named) before the
    // kill landed, and a complete one is verified, not resumed. An incomplete one is a
    // partial whose content does not hash to the digest in its name.
    let partial_left = std::fs::read_dir(env.root.join("images/tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_prefix("pull-").and_then(|n| n.strip_suffix(".partial")) else {
                return false;
            };
            let content = std::fs::read(e.path()).unwrap_or_default();
            !content.is_empty() && sha256_hex(&content) != hex
        });
    eprintln!("killed during the download: {partial_seen}, a partial download left: {partial_left}");
    // No layer directory is half there under its final name: every one matches its diff id
    // or is a temporary that the next pull removes.
    let layers: Vec<String> = std::fs::read_dir(env.root.join("images/layers"))
        .expect("layers")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let index = std::fs::read_to_string(env.root.join("images/index.json")).unwrap_or_default();
    assert!(!index.contains("test/big"), "named before it was complete: {index}");

    // A new agent resumes (the partial download is kept) and the pod runs on a whole image.
    let agent2 = Agent::start(&env, &[]);
    env.wait_running(&static_pod_name("big"), &["c"]);
    let log = wait_for("the listing of /big", Duration::from_secs(20), || {
        let l = log_of(&env, &static_pod_name("big"));
        l.contains("/big").then_some(l)
    });
    assert!(log.contains(&(64u64 << 20).to_string()), "{log}");
    if partial_seen && partial_left {
        assert!(
            agent2.log_text().contains("resuming an interrupted download"),
            "{}",
            agent2.log_text()
        );
    }
    let after: Vec<String> = std::fs::read_dir(env.root.join("images/layers"))
        .expect("layers")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        after.iter().all(|l| !l.starts_with(".tmp-")),
        "leftover temporaries: {after:?} (before: {layers:?})"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
