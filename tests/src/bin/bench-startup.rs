//! Pod start-up latency: from a manifest landing in the directory (an atomic rename, as an
//! editor or `cp` + `mv` would do it) to the pod's container running, one busybox container
//! per pod. Run with `hack/bench-startup [pods] [idle-pods]` (release build, as root).
//!
//! "Running" is observed without polling: the container's first act is to write to a FIFO
//! (a hostPath volume) that the benchmark is blocked reading.
//!
//! Peer in the same run: the kernel's own work for the same namespaces, `unshare --fork
//! --pid --net --ipc --uts --mount busybox sh -c 'echo up > FIFO'`, no image, no cgroup.
//! Then the same starts with the default CNI network (`--network=cni`), inside a network
//! namespace of the benchmark's own: the difference is what CNI ADD costs.

use std::path::Path;
use std::time::{Duration, Instant};

use minilet_e2e::bench::{Stats, fifo_pod, mkfifo, wait_fifo};
use minilet_e2e::netns::NetNs;
use minilet_e2e::{Agent, Env, is_root, static_pod_name};

fn manifest(i: usize, fifo: &Path) -> String {
    fifo_pod(&format!("bench-{i}"), "localhost/busybox:latest", "IfNotPresent", fifo)
}

/// A `Field:   N kB` line of a /proc file, in kB (0 if absent).
fn proc_kb(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kb(pid: i32) -> u64 {
    proc_kb(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size: shared pages (the binary's text) divided among their users.
fn pss_kb(pid: i32) -> u64 {
    proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn start_pods(env: &Env, from: usize, n: usize, gap: Duration) -> Stats {
    let mut out = Vec::new();
    for i in from..from + n {
        let fifo = env.dir.join(format!("ready-{i}"));
        mkfifo(&fifo);
        let staged = env.dir.join(format!("bench-{i}.yaml"));
        std::fs::write(&staged, manifest(i, &fifo)).expect("write manifest");
        std::thread::sleep(gap);
        let t0 = Instant::now();
        std::fs::rename(&staged, env.manifests.join(format!("bench-{i}.yaml"))).expect("rename manifest");
        wait_fifo(&fifo).expect("pod start");
        out.push(t0.elapsed());
    }
    Stats(out)
}

fn bare_unshare(env: &Env, n: usize, gap: Duration) -> Stats {
    let busybox = which("busybox");
    let mut out = Vec::new();
    for i in 0..n {
        let fifo = env.dir.join(format!("bare-{i}"));
        mkfifo(&fifo);
        std::thread::sleep(gap);
        let t0 = Instant::now();
        let mut child = std::process::Command::new("unshare")
            .args(["--fork", "--pid", "--net", "--ipc", "--uts", "--mount", "--"])
            .arg(&busybox)
            .args(["sh", "-c", &format!("echo up > {}", fifo.display())])
            .spawn()
            .expect("spawn unshare");
        wait_fifo(&fifo).expect("bare start");
        out.push(t0.elapsed());
        let _ = child.wait();
    }
    Stats(out)
}

fn which(name: &str) -> String {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| name.to_string())
}

fn main() {
    if !is_root() {
        std::process::exit(1);
    }
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(50);
    let idle_n = args.get(1).copied().unwrap_or(20);
    let idle_gap = Duration::from_millis(250);

    let env = Env::new("bench");
    env.import_image("busybox");
    // SAFETY: set before any thread is started by this program.
    unsafe {
        std::env::set_var(
            "MINILET_LOG",
            std::env::var("MINILET_LOG").unwrap_or_else(|_| "warn,minilet::agent=info".into()),
        )
    };
    let mut agent = Agent::start(&env, &[]);
    let agent_rss_idle = rss_kb(agent.pid());

    let bare = bare_unshare(&env, n, Duration::ZERO);
    let bare_idle = bare_unshare(&env, idle_n, idle_gap);
    let b2b = start_pods(&env, 0, n, Duration::ZERO);
    let idle = start_pods(&env, n, idle_n, idle_gap);

    let total = n + idle_n;
    let agent_rss = rss_kb(agent.pid());
    let mut monitors = Vec::new();
    let mut monitors_pss = Vec::new();
    let mut pauses = Vec::new();
    for i in 0..total {
        if let Some(p) = env.pod(&static_pod_name(&format!("bench-{i}"))) {
            pauses.extend(p.pause_pid.map(rss_kb));
            monitors.extend(p.containers.values().filter_map(|c| c.monitor_pid).map(rss_kb));
            monitors_pss.extend(p.containers.values().filter_map(|c| c.monitor_pid).map(pss_kb));
        }
    }
    let avg = |v: &[u64]| {
        if v.is_empty() {
            0
        } else {
            v.iter().sum::<u64>() / v.len() as u64
        }
    };

    println!("minilet pod start-up: manifest renamed into the directory -> container running");
    println!("{}", b2b.line("minilet, back-to-back"));
    println!(
        "{}",
        idle.line(&format!("minilet, after {}ms idle", idle_gap.as_millis()))
    );
    println!("{}", bare.line("peer: bare unshare, back-to-back"));
    println!(
        "{}",
        bare_idle.line(&format!("peer: bare unshare, after {}ms idle", idle_gap.as_millis()))
    );
    println!(
        "ratio minilet/bare (median): back-to-back {:.1}x, after idle {:.1}x",
        b2b.pct(0.5).as_secs_f64() / bare.pct(0.5).as_secs_f64(),
        idle.pct(0.5).as_secs_f64() / bare_idle.pct(0.5).as_secs_f64()
    );
    println!(
        "memory: agent RSS {} kB idle, {} kB with {total} pods; per pod: pause {} kB RSS, container monitor {} kB RSS / {} kB PSS",
        agent_rss_idle,
        agent_rss,
        avg(&pauses),
        avg(&monitors),
        avg(&monitors_pss)
    );

    let removal = remove_all(&env, total);
    println!(
        "removing all {total} pods (manifests deleted at once) took {:.0}ms",
        removal.as_secs_f64() * 1000.0
    );
    agent.stop();

    // The same back-to-back starts with minilet's default CNI network (bridge, host-local,
    // portmap), the whole node in a network namespace of its own.
    let ns = NetNs::new(
        &std::env::temp_dir()
            .join("minilet-e2e")
            .join(format!("netns-bench-{}", std::process::id())),
    );
    let mut cni_env = Env::new("bench-cni");
    cni_env.import_image("busybox");
    let conf = cni_env.dir.join("cni-conf");
    std::fs::create_dir_all(&conf).expect("create the CNI conf dir");
    let conf_flag = format!("--cni-conf-dir={}", conf.display());
    let mut cni_agent = Agent::start_in(&mut cni_env, ns.path(), &["--network=cni", &conf_flag]);
    let cni = start_pods(&cni_env, 0, n, Duration::ZERO);
    println!("{}", cni.line("minilet + CNI default network, back-to-back"));
    println!(
        "CNI ADD (bridge, host-local, portmap) adds {:.1}ms to the median start ({:.1}ms at p99)",
        (cni.pct(0.5).as_secs_f64() - b2b.pct(0.5).as_secs_f64()) * 1000.0,
        (cni.pct(0.99).as_secs_f64() - b2b.pct(0.99).as_secs_f64()) * 1000.0
    );
    remove_all(&cni_env, n);
    cni_agent.stop();
}

/// Remove every manifest at once; how long until the last pod is gone.
fn remove_all(env: &Env, total: usize) -> Duration {
    let t0 = Instant::now();
    for i in 0..total {
        let _ = std::fs::remove_file(env.manifests.join(format!("bench-{i}.yaml")));
    }
    let pods = env.root.join("pods");
    while std::fs::read_dir(&pods)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        if t0.elapsed() > Duration::from_secs(120) {
            eprintln!("pods still present after 120s");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}
