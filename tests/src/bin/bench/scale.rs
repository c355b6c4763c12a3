//! minilet with many pods: agent memory and idle CPU at each step, the start of one more pod
//! at the first and the last step, a manifest edit applied at the last, and the latency of
//! `minilet get pods` and CRI `ListContainers`.
//!
//! The filler pods all write one line into a shared FIFO when their container starts; the
//! benchmark holds it open read-write (so writers never block) and counts lines.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use minilet_e2e::bench::{fifo_pod, mkfifo, wait_fifo};
use minilet_e2e::grpc::{connect, rt};
use minilet_e2e::{Env, cli, static_pod_name};
use minilet_proto::runtime::v1 as cri;

use crate::minilet::{IMAGE, Minilet};
use crate::procfs::{self, Mem};
use crate::series;

#[derive(Debug, Default)]
pub struct Step {
    pub pods: usize,
    pub agent: Mem,
    pub idle_cpu: Duration,
    /// CPU of every pause and monitor process over the same window.
    pub pods_idle_cpu: Duration,
    pub get_pods: Vec<Duration>,
    pub list_containers: Vec<Duration>,
    /// How long the filler manifests added for this step took to be all running.
    pub fill: Option<(usize, Duration)>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub steps: Vec<Step>,
    pub idle_window: Duration,
    /// Back-to-back start of one more pod (p50 over k) with 0 and with the most pods running.
    pub first_pod: Vec<Duration>,
    pub last_pod: Vec<Duration>,
    pub edit: Vec<Duration>,
}

pub struct Plan {
    pub steps: Vec<usize>,
    pub idle_window: Duration,
    pub k: usize,
    pub queries: usize,
}

pub fn run(env: &Env, agent: i32, plan: &Plan) -> Result<Report> {
    let mut report = Report {
        idle_window: plan.idle_window,
        ..Report::default()
    };
    let ready = env.dir.join("fill-ready");
    mkfifo(&ready);
    // Read-write: the FIFO always has a writer, so reads never see end-of-file and the
    // containers' writes never block on a missing reader.
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&ready)
        .context("open the fill FIFO")?;
    let mut running = 0usize;
    for (si, &target) in plan.steps.iter().enumerate() {
        let mut fill = None;
        if target > running {
            let t0 = Instant::now();
            for i in running..target {
                env.write_manifest(
                    &format!("fill-{i}.yaml"),
                    &fifo_pod(&format!("fill-{i}"), IMAGE, "IfNotPresent", &ready),
                );
            }
            count_lines(&mut fifo, target - running, Duration::from_secs(600))?;
            fill = Some((target - running, t0.elapsed()));
            running = target;
        }
        if si == 0 || si == plan.steps.len() - 1 {
            // Both series start from a quiet agent: right after a fill it is still writing
            // the new pods' statuses, which would be timed as the cost of the pods running.
            wait_quiet(agent)?;
            let mut m = Minilet {
                env,
                prefix: if si == 0 { "first" } else { "last" },
            };
            let s = series::run(&mut m, &env.dir, 0, plan.k, Duration::ZERO)?;
            if si == 0 {
                report.first_pod = s.start;
            } else {
                report.last_pod = s.start;
            }
        }
        let mut step = measure_idle(env, agent, running, plan.idle_window)?;
        step.fill = fill;
        step.get_pods = get_pods(env, plan.queries, running)?;
        step.list_containers = list_containers(env, plan.queries, running)?;
        report.steps.push(step);
    }
    if running > 0 {
        report.edit = edits(env, running, plan.k.min(3))?;
    }
    Ok(report)
}

fn count_lines(fifo: &mut std::fs::File, n: usize, limit: Duration) -> Result<()> {
    let t0 = Instant::now();
    let mut seen = 0usize;
    let mut buf = [0u8; 4096];
    while seen < n {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(fifo),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        match fifo.read(&mut buf) {
            Ok(k) => seen += buf[..k].iter().filter(|&&b| b == b'\n').count(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("read the fill FIFO"),
        }
        if t0.elapsed() > limit {
            bail!("only {seen} of {n} filler pods running after {limit:?}");
        }
    }
    Ok(())
}

/// Wait until the agent's CPU time stays unchanged for half a second and the machine is 90%
/// idle over it (at most 20 s): after a fill, the kernel goes on with the new pods' work
/// (cgroups, memory accounting) for a while after the agent is done.
fn wait_quiet(agent: i32) -> Result<()> {
    let t0 = Instant::now();
    let mut last = procfs::cpu_time(agent).context("agent gone")?;
    let mut machine = procfs::machine_ticks();
    while t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        let now = procfs::cpu_time(agent).context("agent gone")?;
        let ticks = procfs::machine_ticks();
        let idle = match (machine, ticks) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) * 10 <= t1 - t0,
            _ => true,
        };
        if now == last && idle {
            break;
        }
        last = now;
        machine = ticks;
    }
    Ok(())
}

/// The agent's memory now, and the CPU it and the pods' helpers use over `window` once the
/// agent and the machine have gone quiet ([`wait_quiet`]).
fn measure_idle(env: &Env, agent: i32, pods: usize, window: Duration) -> Result<Step> {
    wait_quiet(agent)?;
    let helpers: Vec<i32> = (0..pods)
        .filter_map(|i| env.pod(&static_pod_name(&format!("fill-{i}"))))
        .flat_map(|p| {
            let mut v: Vec<i32> = p.pause_pid.into_iter().collect();
            v.extend(p.containers.values().filter_map(|c| c.monitor_pid));
            v
        })
        .collect();
    let helper_cpu = |pids: &[i32]| pids.iter().filter_map(|&p| procfs::cpu_time(p)).sum::<Duration>();
    let a0 = procfs::cpu_time(agent).context("agent gone")?;
    let h0 = helper_cpu(&helpers);
    std::thread::sleep(window);
    let a1 = procfs::cpu_time(agent).context("agent gone")?;
    let h1 = helper_cpu(&helpers);
    save_smaps(agent, pods);
    Ok(Step {
        pods,
        agent: procfs::mem(agent).context("agent gone")?,
        idle_cpu: a1.saturating_sub(a0),
        pods_idle_cpu: h1.saturating_sub(h0),
        ..Step::default()
    })
}

/// With `BENCH_SMAPS_DIR` set, the agent's `/proc/PID/smaps` at each step is copied there
/// (`agent-<pods>.smaps`), to see its memory by mapping.
fn save_smaps(agent: i32, pods: usize) {
    let Some(dir) = std::env::var_os("BENCH_SMAPS_DIR") else {
        return;
    };
    let to = std::path::Path::new(&dir).join(format!("agent-{pods}.smaps"));
    if let Err(e) = std::fs::copy(format!("/proc/{agent}/smaps"), &to) {
        eprintln!("bench: copy the agent's smaps to {}: {e}", to.display());
    }
}

fn get_pods(env: &Env, n: usize, pods: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let o = cli(env, &["get", "pods"]);
        out.push(t0.elapsed());
        if !o.status.success() {
            bail!("minilet get pods: {}", String::from_utf8_lossy(&o.stderr));
        }
        let rows = String::from_utf8_lossy(&o.stdout).lines().count().saturating_sub(1);
        if rows < pods {
            bail!("minilet get pods listed {rows} pods, {pods} are running");
        }
    }
    Ok(out)
}

fn list_containers(env: &Env, n: usize, pods: usize) -> Result<Vec<Duration>> {
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let mut out = Vec::new();
        for _ in 0..n {
            let t0 = Instant::now();
            let got = c
                .runtime
                .list_containers(cri::ListContainersRequest::default())
                .await
                .context("ListContainers")?
                .into_inner()
                .containers
                .len();
            out.push(t0.elapsed());
            if got < pods {
                bail!("ListContainers returned {got} containers, {pods} are running");
            }
        }
        Ok(out)
    })
}

/// Edit running filler pods' manifests (a new hostPath FIFO, so the pod is replaced):
/// time from the edited file landing to the new container's line.
fn edits(env: &Env, running: usize, k: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::new();
    for j in 0..k {
        let i = running - 1 - j;
        let fifo = env.dir.join(format!("edited-{i}"));
        mkfifo(&fifo);
        let staged = env.dir.join(format!("fill-{i}.yaml.new"));
        std::fs::write(&staged, fifo_pod(&format!("fill-{i}"), IMAGE, "IfNotPresent", &fifo))?;
        let t0 = Instant::now();
        std::fs::rename(&staged, env.manifests.join(format!("fill-{i}.yaml")))?;
        wait_fifo(&fifo).with_context(|| format!("edited pod fill-{i} did not start"))?;
        out.push(t0.elapsed());
    }
    Ok(out)
}

/// Remove every manifest at once: how long until no pod is left in the state directory.
pub fn remove_all(env: &Env) -> Result<Duration> {
    let t0 = Instant::now();
    for e in std::fs::read_dir(&env.manifests)?.flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let pods = env.root.join("pods");
    series::poll_until("all pods removed", Duration::from_secs(300), || {
        std::fs::read_dir(&pods).map(|mut d| d.next().is_none()).unwrap_or(true)
    })?;
    Ok(t0.elapsed())
}
