//! CRI latency over the unix socket. The pod round trip a CRI client makes for a one-container
//! busybox pod (RunPodSandbox + CreateContainer + StartContainer, then StopPodSandbox +
//! RemovePodSandbox), timed against minilet and, in the same run, against a private
//! containerd (Debian's 1.6) when it is installed; then ListContainers and ContainerStatus with
//! N static pods running, and the ExecSync round trip.
//! `hack/bench-cri [pods=100] [round-trips=100]`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use minilet_e2e::containerd::{self, Containerd};
use minilet_e2e::grpc::{Clients, connect, rt};
use minilet_e2e::{Agent, Env, is_root, static_pod_name, wait_for};
use minilet_proto::runtime::v1 as cri;

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[(((v.len() as f64) - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

fn line(what: &str, v: &[Duration]) -> String {
    format!(
        "{what:<40} n={:<4} p50 {:>9}  p99 {:>9}  max {:>9}",
        v.len(),
        ms(pct(v, 0.5)),
        ms(pct(v, 0.99)),
        ms(pct(v, 1.0))
    )
}

/// Pods made and torn down before timing starts (first image use, caches).
const WARM_UP: usize = 3;

/// Start and teardown latencies of the pod round trip.
#[derive(Default)]
struct RoundTrips {
    start: Vec<Duration>,
    teardown: Vec<Duration>,
}

fn sandbox_config(i: usize, logs: &Path, cgroup_parent: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("rt-{i}"),
            uid: format!("bench-rt-{i}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        log_directory: logs.join(format!("rt-{i}")).display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "c/0.log".into(),
        ..Default::default()
    }
}

/// `n` timed round trips (after [`WARM_UP`] untimed ones), one pod at a time, each checked to
/// be RUNNING before it is torn down (outside the timed spans).
async fn pod_round_trips(
    c: &mut Clients,
    n: usize,
    image: &str,
    logs: &Path,
    cgroup_parent: &str,
) -> Result<RoundTrips> {
    let mut out = RoundTrips::default();
    for i in 0..n + WARM_UP {
        let config = sandbox_config(i, logs, cgroup_parent);
        let t = Instant::now();
        let sandbox = c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id;
        let id = c
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(container_config(image)),
                sandbox_config: Some(config),
            })
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id;
        c.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .context("StartContainer")?;
        let started = t.elapsed();
        let state = c
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .context("ContainerStatus")?
            .into_inner()
            .status
            .map(|s| s.state);
        anyhow::ensure!(
            state == Some(cri::ContainerState::ContainerRunning as i32),
            "container {id} of pod rt-{i} is {state:?} after StartContainer, not RUNNING"
        );
        let t = Instant::now();
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: sandbox.clone(),
            })
            .await
            .context("StopPodSandbox")?;
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox,
            })
            .await
            .context("RemovePodSandbox")?;
        let torn_down = t.elapsed();
        if i >= WARM_UP {
            out.start.push(started);
            out.teardown.push(torn_down);
        }
    }
    Ok(out)
}

/// containerd's figures, or why there are none.
fn containerd_round_trips(n: usize) -> Result<(String, RoundTrips), String> {
    let env = Env::new("bench-cri-containerd");
    let ctrd = Containerd::start(&env)?;
    let version = std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let logs = env.dir.join("cri-logs");
    let result = rt().block_on(async {
        let mut c = connect(&ctrd.socket).await;
        pod_round_trips(&mut c, n, containerd::BUSYBOX, &logs, &ctrd.cgroup_parent).await
    });
    match result {
        Ok(r) => Ok((format!("containerd {version}"), r)),
        Err(e) => Err(format!("containerd failed: {e:#}; its log: {}", ctrd.log_tail())),
    }
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.1}x", b.as_secs_f64() / a.as_secs_f64().max(f64::MIN_POSITIVE))
}

fn print_table(ours: &RoundTrips, theirs: &Result<(String, RoundTrips), String>) {
    println!(
        "\nPod round trip, one busybox container (sleep), through the CRI socket (+{WARM_UP} warm-up pods untimed)"
    );
    println!(
        "{:<32} {:<24} {:>4} {:>11} {:>11}",
        "series", "runtime", "n", "p50", "p99"
    );
    let series = |name: &str, f: fn(&RoundTrips) -> &Vec<Duration>| {
        let v = f(ours);
        println!(
            "{name:<32} {:<24} {:>4} {:>11} {:>11}",
            "minilet",
            v.len(),
            ms(pct(v, 0.5)),
            ms(pct(v, 0.99))
        );
        if let Ok((label, r)) = theirs {
            let w = f(r);
            println!(
                "{name:<32} {label:<24} {:>4} {:>11} {:>11}",
                w.len(),
                ms(pct(w, 0.5)),
                ms(pct(w, 0.99))
            );
            println!(
                "{name:<32} {:<24} {:>4} {:>11} {:>11}",
                "ratio containerd/minilet",
                "",
                ratio(pct(v, 0.5), pct(w, 0.5)),
                ratio(pct(v, 0.99), pct(w, 0.99))
            );
        }
    };
    series("RunPodSandbox+Create+Start", |r| &r.start);
    series("StopPodSandbox+RemovePodSandbox", |r| &r.teardown);
    match theirs {
        Ok(_) => println!(
            "containerd's OCI runtime: {}, {}",
            containerd::oci_runtime(),
            containerd::OOM_SCORE_NOTE
        ),
        Err(why) => println!("containerd: NOT MEASURED: {why}"),
    }
}

fn main() {
    if !is_root() {
        std::process::exit(1);
    }
    let pods: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let trips: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100)
        .max(1);
    let env = Env::new("bench-cri");
    env.import_image("busybox");
    // SAFETY: set before this program starts any thread.
    unsafe { std::env::set_var("MINILET_LOG", "warn,minilet::agent=info") };
    let mut agent = Agent::start(&env, &[]);
    // The round trip first, on an agent with no other pods (as containerd has none).
    let ours = rt()
        .block_on(async {
            let mut c = connect(&env.socket).await;
            pod_round_trips(&mut c, trips, "localhost/busybox:latest", &env.dir.join("cri-logs"), "").await
        })
        .unwrap_or_else(|e| panic!("minilet's pod round trip failed: {e:#}"));
    for i in 0..pods {
        env.write_manifest(
            &format!("p{i}.yaml"),
            &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: localhost/busybox:latest, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}}\n"),
        );
    }
    wait_for("all pods running", Duration::from_secs(300), || {
        let n = std::fs::read_dir(env.root.join("pods")).ok()?.count();
        (n == pods
            && (0..pods).all(|i| {
                env.pod(&static_pod_name(&format!("p{i}")))
                    .is_some_and(|p| p.containers.get("c").is_some_and(|c| c.pid.is_some()))
            }))
        .then_some(())
    });
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let ids: Vec<String> = c
            .runtime
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids.len(), pods);
        let mut list = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let n = c
                .runtime
                .list_containers(cri::ListContainersRequest::default())
                .await
                .unwrap()
                .into_inner()
                .containers
                .len();
            list.push(t.elapsed());
            assert_eq!(n, pods);
        }
        let mut status = Vec::new();
        for i in 0..1000 {
            let t = Instant::now();
            c.runtime
                .container_status(cri::ContainerStatusRequest {
                    container_id: ids[i % ids.len()].clone(),
                    verbose: false,
                })
                .await
                .unwrap();
            status.push(t.elapsed());
        }
        let mut exec = Vec::new();
        for i in 0..50 {
            let t = Instant::now();
            let r = c
                .runtime
                .exec_sync(cri::ExecSyncRequest {
                    container_id: ids[i % ids.len()].clone(),
                    cmd: vec!["true".into()],
                    timeout: 10,
                })
                .await
                .unwrap()
                .into_inner();
            exec.push(t.elapsed());
            assert_eq!(r.exit_code, 0);
        }
        println!("CRI over the unix socket, {pods} pods running (one container each)");
        println!("{}", line("ListContainers (all)", &list));
        println!("{}", line("ContainerStatus", &status));
        println!("{}", line("ExecSync `true` round trip", &exec));
    });
    for i in 0..pods {
        let _ = std::fs::remove_file(env.manifests.join(format!("p{i}.yaml")));
    }
    agent.stop();
    // containerd after minilet has stopped, so the two never compete for the CPUs.
    let theirs = containerd_round_trips(trips);
    print_table(&ours, &theirs);
}
