//! Pull and unpack the nginx image from a local docker-registry with `minilet image pull`,
//! against `skopeo copy` of the same image into an OCI layout in the same run (the peer only
//! downloads and writes blobs; minilet also verifies and unpacks every layer). Then pod start
//! with a warm image: `IfNotPresent` (no registry round trip) and `Always` (a manifest check
//! per start). Run with `hack/bench-pull [N]` (release build, as root).

use std::process::Command;
use std::time::{Duration, Instant};

use minilet_e2e::bench::{Stats, fifo_pod, mkfifo, wait_fifo};
use minilet_e2e::registry::{Compression, Registry};
use minilet_e2e::{Agent, Env, is_root, minilet};

fn timed(cmd: &mut Command) -> Duration {
    let t0 = Instant::now();
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed()
}

fn main() {
    if !is_root() {
        eprintln!("bench-pull: run as root");
        std::process::exit(1);
    }
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let env = Env::new("bench-pull");
    let reg = Registry::start(&env.dir.join("registry"), None);
    reg.push_demo("nginx", "bench/nginx:1", Compression::AsIs);
    reg.push_demo("busybox", "bench/busybox:1", Compression::AsIs);
    let image = format!("{}/bench/nginx:1", reg.host());

    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for i in 0..n {
        let root = env.dir.join(format!("root-{i}"));
        ours.push(timed(
            Command::new(minilet())
                .args(["image", "pull", &image, "--root"])
                .arg(&root),
        ));
        let layout = env.dir.join(format!("skopeo-{i}"));
        peer.push(timed(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{image}"))
                .arg(format!("oci:{}:latest", layout.display())),
        ));
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&layout);
    }
    let ours = Stats(ours);
    let peer = Stats(peer);
    let size: u64 = std::fs::metadata(minilet_e2e::workspace().join("hack/.images/nginx.tar"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "pull nginx ({:.1} MB archive) from a local docker-registry",
        size as f64 / 1e6
    );
    println!("{}", ours.line("minilet image pull (+unpack)"));
    println!("{}", peer.line("peer: skopeo copy → OCI layout"));
    println!(
        "ratio minilet/skopeo (median): {:.2}x",
        ours.pct(0.5).as_secs_f64() / peer.pct(0.5).as_secs_f64()
    );

    // Warm image: pods start without fetching a blob.
    let _agent = Agent::start(&env, &[]);
    let busybox = format!("{}/bench/busybox:1", reg.host());
    let run = |phase: &str, policy: &str, count: usize| {
        let mut out = Vec::new();
        for i in 0..count {
            let name = format!("{phase}-{i}");
            let fifo = env.dir.join(format!("ready-{name}"));
            mkfifo(&fifo);
            let staged = env.dir.join(format!("{name}.yaml"));
            std::fs::write(&staged, fifo_pod(&name, &busybox, policy, &fifo)).expect("manifest");
            let t0 = Instant::now();
            std::fs::rename(&staged, env.manifests.join(format!("{name}.yaml"))).expect("rename");
            wait_fifo(&fifo).expect("pod start");
            out.push(t0.elapsed());
        }
        Stats(out)
    };
    // The first pod pulls; the rest find the image warm.
    let cold = run("cold", "IfNotPresent", 1);
    let warm = run("warm", "IfNotPresent", 20);
    let always = run("always", "Always", 20);
    println!("{}", cold.line("pod start, cold (pull busybox)"));
    println!("{}", warm.line("pod start, warm, IfNotPresent"));
    println!("{}", always.line("pod start, warm, Always"));
}
