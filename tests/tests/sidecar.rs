//! The headline demo, manifests/sidecar-nginx.yaml as shipped: the renderer rewrites nginx's
//! configuration in a shared emptyDir and reloads nginx with SIGHUP across the shared PID
//! namespace; nginx serves what was rendered.

use std::time::Duration;

use minilet_e2e::*;

fn fetch(pid: i32) -> Option<(String, String)> {
    let out = in_container(pid, &["wget", "-q", "-S", "-O-", "http://127.0.0.1:8080/"]);
    if !out.status.success() {
        return None;
    }
    // busybox wget -S prints the response headers on stderr.
    Some((
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn generation(headers: &str) -> Option<u64> {
    headers
        .lines()
        .find_map(|l| l.trim().strip_prefix("X-Generation: "))
        .and_then(|g| g.trim().parse().ok())
}

#[test]
fn renderer_reloads_nginx_across_the_shared_pid_namespace() {
    if !is_root() {
        return;
    }
    let env = Env::new("sidecar");
    env.import_image("busybox");
    env.import_image("nginx");
    let _agent = Agent::start(&env, &[]);
    let manifest = std::fs::read_to_string(workspace().join("manifests/sidecar-nginx.yaml")).unwrap();
    env.write_manifest("sidecar-nginx.yaml", &manifest);
    let pod = env.wait_running(&static_pod_name("sidecar-nginx"), &["nginx", "renderer"]);
    let (pause, nginx, renderer) = (pod.pause(), pod.pid("nginx"), pod.pid("renderer"));
    assert_eq!(ns(nginx, "pid"), ns(pause, "pid"));
    assert_eq!(ns(renderer, "pid"), ns(pause, "pid"));
    assert_eq!(ns(nginx, "net"), ns(renderer, "net"));

    // nginx (the container's main process is the master) serves the rendered page, and the
    // generation it reports goes up as the renderer re-renders and sends SIGHUP.
    let (headers, body) = wait_for("nginx serving the rendered config", Duration::from_secs(30), || {
        fetch(renderer).filter(|(h, _)| generation(h).is_some())
    });
    let first = generation(&headers).unwrap();
    assert!(
        body.contains(&format!("{}: generation", static_pod_name("sidecar-nginx"))),
        "{body}"
    );
    let later = wait_for(
        "a later generation after a SIGHUP reload",
        Duration::from_secs(30),
        || fetch(renderer).and_then(|(h, _)| generation(&h)).filter(|&g| g > first),
    );
    assert!(later > first);
    // Reloaded, not restarted: same master process, same container attempt.
    let now = env.pod(&static_pod_name("sidecar-nginx")).unwrap();
    assert_eq!(now.pid("nginx"), nginx);
    assert_eq!(now.containers["nginx"].attempt, 0);
    let renderer_log = std::fs::read_to_string(&now.containers["renderer"].log_path).unwrap();
    assert!(renderer_log.contains("sent SIGHUP to nginx master"), "{renderer_log}");
    let nginx_log = std::fs::read_to_string(&now.containers["nginx"].log_path).unwrap();
    assert!(nginx_log.contains("signal 1 (SIGHUP) received"), "{nginx_log}");
    // The access log goes to stdout (the image links it to /dev/stdout), so it is in the CRI log.
    assert!(
        nginx_log.contains("stdout F") && nginx_log.contains("\"GET / HTTP/1.1\" 200"),
        "{nginx_log}"
    );
}
