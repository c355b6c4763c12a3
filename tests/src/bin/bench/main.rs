//! `hack/bench`: minilet and its peers measured side by side in one run, printed as one
//! table. Sections (`--only start,memory,scale`; all by default):
//!
//! - start: a one-container busybox pod, start (until the container's first instruction)
//!   and teardown, back-to-back and after an idle gap, for minilet, `podman kube play`,
//!   `crun run` and a bare `unshare`; ratios minilet/peer;
//! - memory: private and PSS memory of each pod's helper processes (minilet's pause and
//!   monitor; podman's conmons and infra), sampled in the start series;
//! - scale: agent memory and idle CPU at 0, 100 and `--pods` pods, the start of one more pod
//!   at 0 and at `--pods`, a manifest edit, `get pods` and `ListContainers` latency.
//!
//! Options: `-n N` (pods per back-to-back series, default 40), `--idle-n N` (default = n),
//! `--gap-ms MS` (idle gap, default 1000), `--pods P` (default 500; the agent runs with `--max-pods` to fit), `--idle-secs S` (idle CPU
//! window, default 60), `--quick` (n 10, pods 100, idle window 5 s), `--only LIST`,
//! `--no-peers`. `BENCH_SMAPS_DIR=DIR` saves the agent's `smaps` at each scale step there.

mod bare;
mod crun;
mod minilet;
mod peers;
mod podman;
mod procfs;
mod scale;
mod series;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use minilet_e2e::bench::Stats;
use minilet_e2e::{Agent, Env, is_root, workspace};

use crate::minilet::Minilet;
use crate::series::Series;

/// Pods kept running at once, per runtime, for the memory sample.
const HOLD: usize = 5;
/// Starts of one more pod timed at the first and the last scale step.
const SCALE_K: usize = 20;

struct Opts {
    n: usize,
    idle_n: usize,
    gap: Duration,
    pods: usize,
    idle_secs: u64,
    start: bool,
    memory: bool,
    scale: bool,
    peers: bool,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        n: 40,
        idle_n: 0,
        gap: Duration::from_millis(1000),
        pods: 500,
        idle_secs: 60,
        start: true,
        memory: true,
        scale: true,
        peers: true,
    };
    let mut it = args.iter();
    let num = |flag: &str, v: Option<&String>| -> Result<u64> {
        v.with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag}: not a whole number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "-n" => o.n = num(a, it.next())? as usize,
            "--idle-n" => o.idle_n = num(a, it.next())? as usize,
            "--gap-ms" => o.gap = Duration::from_millis(num(a, it.next())?),
            "--pods" => o.pods = num(a, it.next())? as usize,
            "--idle-secs" => o.idle_secs = num(a, it.next())?,
            "--quick" => {
                o.n = 10;
                o.pods = 100;
                o.idle_secs = 5;
            }
            "--no-peers" => o.peers = false,
            "--only" => {
                let list = it.next().context("--only needs a list: start,memory,scale")?;
                (o.start, o.memory, o.scale) = (false, false, false);
                for s in list.split(',') {
                    match s {
                        "start" => o.start = true,
                        "memory" => o.memory = true,
                        "scale" => o.scale = true,
                        other => bail!("--only: unknown section {other:?} (start, memory, scale)"),
                    }
                }
            }
            other => bail!("unknown option {other:?} (see hack/bench's header)"),
        }
    }
    if o.idle_n == 0 {
        o.idle_n = o.n;
    }
    if o.n == 0 {
        bail!("-n must be at least 1");
    }
    Ok(o)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__peers") => return peers::child(args.get(1).context("__peers: no plan")?),
        Some("__cleanup") => {
            return peers::cleanup(args.get(1).context("__cleanup: no tag")?);
        }
        _ => {}
    }
    if !is_root() {
        bail!("hack/bench runs as root (it starts the agent, crun and podman)");
    }
    let o = parse_opts(&args)?;
    let tag = std::env::var("BENCH_TAG").unwrap_or_else(|_| std::process::id().to_string());
    header(&o);

    // Quiet by default (logging is part of what is measured); BENCH_AGENT_LOG to trace a run.
    let log = std::env::var("BENCH_AGENT_LOG").unwrap_or_else(|_| "warn,minilet::agent=info".into());
    // SAFETY: set before this program starts any thread.
    unsafe { std::env::set_var("MINILET_LOG", log) };
    let env = Env::new("bench");
    env.import_image("busybox");
    // Room for every pod the run makes at once (the kubelet's default --max-pods is 110).
    let max_pods = (o.pods + SCALE_K + HOLD + 10).to_string();
    let mut agent = Agent::start(&env, &["--max-pods", &max_pods]);

    let mut rows: Vec<(String, String, Series)> = Vec::new();
    let mut notes = Vec::new();
    if o.start || o.memory {
        let hold = if o.memory { HOLD } else { 0 };
        let mut m = Minilet {
            env: &env,
            prefix: "warm",
        };
        series::run(&mut m, &env.dir, 0, 2, Duration::ZERO).context("minilet warm-up")?;
        if o.start {
            let mut m = Minilet {
                env: &env,
                prefix: "b2b",
            };
            rows.push((
                "minilet".into(),
                "back-to-back".into(),
                series::run(&mut m, &env.dir, 0, o.n, Duration::ZERO)?,
            ));
            let mut m = Minilet {
                env: &env,
                prefix: "idle",
            };
            rows.push((
                "minilet".into(),
                "after idle".into(),
                series::run(&mut m, &env.dir, 0, o.idle_n, o.gap)?,
            ));
        }
        if hold > 0 {
            let mut m = Minilet {
                env: &env,
                prefix: "mem",
            };
            rows.push((
                "minilet".into(),
                "memory".into(),
                series::hold(&mut m, &env.dir, 0, hold)?,
            ));
        }
        if o.peers {
            match run_peers(&tag, &o, hold) {
                Ok(r) => {
                    rows.extend(r.series);
                    notes.extend(r.notes);
                }
                Err(e) => notes.push(format!("peers: NOT MEASURED: {e:#}")),
            }
        }
    }
    if o.start {
        print_starts(&rows, o.gap);
    }
    if o.memory {
        print_memory(&rows);
    }
    for n in &notes {
        println!("{n}");
    }
    if o.scale {
        let mut steps = vec![0, o.pods.min(100), o.pods];
        steps.dedup();
        let plan = scale::Plan {
            steps,
            idle_window: Duration::from_secs(o.idle_secs),
            k: SCALE_K,
            queries: 10,
        };
        let r = scale::run(&env, agent.pid(), &plan)?;
        print_scale(&r);
        let gone = scale::remove_all(&env)?;
        println!(
            "all {} manifests removed at once: every pod gone after {}",
            o.pods,
            ms(gone)
        );
    }
    agent.stop();
    Ok(())
}

/// The peers run in a private mount namespace (see peers.rs), as this binary's child.
fn run_peers(tag: &str, o: &Opts, hold: usize) -> Result<peers::Report> {
    let dir = peers::run_dir(tag);
    std::fs::create_dir_all(&dir)?;
    let plan = peers::Plan {
        dir: dir.clone(),
        tag: tag.to_string(),
        image: workspace().join("hack/.images/busybox"),
        archive: workspace().join("hack/.images/busybox.tar"),
        n: o.n,
        idle_n: o.idle_n,
        gap: o.gap,
        warmup: 2,
        start: o.start,
        hold,
    };
    let exe = std::env::current_exe()?;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .arg("__peers")
        .arg(serde_json::to_string(&plan)?)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("run the peers")?;
    // Their namespace is gone with them: no mount of theirs is left under `dir`.
    peers::remove_cgroups(tag, false);
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        bail!("peer run failed ({})", out.status);
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.lines().last().unwrap_or_default()).context("peer report")
}

fn header(o: &Opts) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let kernel = read("/proc/sys/kernel/osrelease");
    let load = read("/proc/loadavg");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mode = cgroup_mode();
    // How this bench was built, which hack/bench builds as it builds minilet; not its path,
    // which says nothing once the binaries are copied elsewhere for an A/B run.
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("# minilet benchmark, {profile} build");
    println!("# kernel {kernel}, cgroups {mode}, {cpus} CPUs, load average {load}");
    println!(
        "# n = {} back-to-back, {} after {} ms idle; scale up to {} pods, idle CPU over {} s",
        o.n,
        o.idle_n,
        o.gap.as_millis(),
        o.pods,
        o.idle_secs
    );
}

fn cgroup_mode() -> &'static str {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
    let is_v2 = |p: &str| statfs(p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC);
    if is_v2("/sys/fs/cgroup") {
        "v2"
    } else if is_v2("/sys/fs/cgroup/unified") {
        "v1 (hybrid: v2 mounted at /sys/fs/cgroup/unified)"
    } else {
        "v1"
    }
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn p(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        Duration::ZERO
    } else {
        Stats(v.to_vec()).pct(q)
    }
}

fn print_starts(rows: &[(String, String, Series)], gap: Duration) {
    println!();
    println!("## Pod start (manifest/command -> container's first instruction) and teardown");
    println!(
        "{:<18} {:<18} {:>4} {:>10} {:>10} {:>14} {:>12} {:>12}",
        "runtime", "mode", "n", "start p50", "start p99", "minilet/this", "teardown p50", "teardown p99"
    );
    let minilet = |mode: &str| {
        rows.iter()
            .find(|(r, m, _)| r == "minilet" && m == mode)
            .map(|(_, _, s)| s)
    };
    for (rt, mode, s) in rows.iter().filter(|(_, m, _)| m != "memory") {
        let ratio = match minilet(mode) {
            Some(m) if rt != "minilet" && !s.start.is_empty() => {
                format!(
                    "{:.2}x",
                    p(&m.start, 0.5).as_secs_f64() / p(&s.start, 0.5).as_secs_f64()
                )
            }
            _ => String::new(),
        };
        let mode = if mode == "after idle" {
            format!("after {} ms idle", gap.as_millis())
        } else {
            mode.clone()
        };
        println!(
            "{:<18} {:<18} {:>4} {:>10} {:>10} {:>14} {:>12} {:>12}",
            rt,
            mode,
            s.start.len(),
            ms(p(&s.start, 0.5)),
            ms(p(&s.start, 0.99)),
            ratio,
            ms(p(&s.teardown, 0.5)),
            ms(p(&s.teardown, 0.99))
        );
    }
    println!("(minilet/this: minilet's start p50 over this runtime's in the same mode; below 1 = minilet faster)");
}

fn print_memory(rows: &[(String, String, Series)]) {
    println!();
    println!("## Per-pod helper processes, kB (median; {HOLD} pods of each runtime running at once; smaps_rollup)");
    println!(
        "{:<26} {:>6} {:>9} {:>9} {:>9} {:>8}",
        "process", "count", "private", "PSS", "RSS", "per pod"
    );
    let mut roles: Vec<&str> = Vec::new();
    for (_, _, s) in rows {
        for (r, _) in &s.memory {
            if !roles.contains(&r.as_str()) {
                roles.push(r);
            }
        }
    }
    let pods_of = |role: &str| -> usize {
        rows.iter()
            .filter(|(_, _, s)| s.memory.iter().any(|(r, _)| r == role))
            .map(|(_, _, s)| s.teardown.len())
            .sum()
    };
    for role in roles {
        let ms: Vec<_> = rows
            .iter()
            .flat_map(|(_, _, s)| s.memory.iter())
            .filter(|(r, _)| r == role)
            .map(|(_, m)| *m)
            .collect();
        let col = |f: fn(&procfs::Mem) -> u64| procfs::median(&ms.iter().map(f).collect::<Vec<_>>());
        let per_pod = ms.len() as f64 / pods_of(role).max(1) as f64;
        println!(
            "{:<26} {:>6} {:>9} {:>9} {:>9} {:>8.1}",
            role,
            ms.len(),
            col(|m| m.private_kb),
            col(|m| m.pss_kb),
            col(|m| m.rss_kb),
            per_pod
        );
    }
}

fn print_scale(r: &scale::Report) {
    println!();
    println!("## Scale (minilet; filler pods: one busybox container each)");
    println!(
        "{:>5} {:>13} {:>12} {:>11} {:>15} {:>13} {:>18} {:>22}",
        "pods",
        "agent RSS kB",
        "private kB",
        "idle CPU",
        "helpers' CPU",
        "get pods p50",
        "ListContainers p50",
        "fill (all running)"
    );
    for s in &r.steps {
        let fill = s.fill.map_or(String::new(), |(n, d)| format!("+{n} in {}", ms(d)));
        println!(
            "{:>5} {:>13} {:>12} {:>11} {:>15} {:>13} {:>18} {:>22}",
            s.pods,
            s.agent.rss_kb,
            s.agent.private_kb,
            ms(s.idle_cpu),
            ms(s.pods_idle_cpu),
            ms(p(&s.get_pods, 0.5)),
            ms(p(&s.list_containers, 0.5)),
            fill
        );
    }
    println!(
        "(idle CPU: utime+stime over {} s once the agent is quiet; helpers: every pause and monitor together)",
        r.idle_window.as_secs()
    );
    let last = r.steps.last().map_or(0, |s| s.pods);
    let (a, b) = (p(&r.first_pod, 0.5), p(&r.last_pod, 0.5));
    println!(
        "one more pod, back-to-back start p50 (n={}): with 0 running {}, with {last} running {} ({:.2}x)",
        r.first_pod.len(),
        ms(a),
        ms(b),
        b.as_secs_f64() / a.as_secs_f64().max(1e-9)
    );
    if !r.edit.is_empty() {
        println!(
            "manifest edit with {last} running (edited file lands -> new container runs): p50 {} (n={})",
            ms(p(&r.edit, 0.5)),
            r.edit.len()
        );
    }
}
