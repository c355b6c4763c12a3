//! CRI latency with many pods: ListContainers and ContainerStatus (p50/p99) over the unix
//! socket with N pods running, and the ExecSync round trip. `hack/bench-cri [pods=100]`.

use std::time::{Duration, Instant};

use minilet_e2e::grpc::{connect, rt};
use minilet_e2e::{Agent, Env, is_root, wait_for};
use minilet_proto::runtime::v1 as cri;

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[(((v.len() as f64) - 1.0) * p).round() as usize]
}

fn line(what: &str, v: &[Duration]) -> String {
    let ms = |d: Duration| format!("{:.3}ms", d.as_secs_f64() * 1000.0);
    format!(
        "{what:<40} n={:<4} p50 {:>9}  p99 {:>9}  max {:>9}",
        v.len(),
        ms(pct(v, 0.5)),
        ms(pct(v, 0.99)),
        ms(pct(v, 1.0))
    )
}

fn main() {
    if !is_root() {
        std::process::exit(1);
    }
    let pods: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let env = Env::new("bench-cri");
    env.import_image("busybox");
    // SAFETY: set before this program starts any thread.
    unsafe { std::env::set_var("MINILET_LOG", "warn,minilet::agent=info") };
    let mut agent = Agent::start(&env, &[]);
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
                env.pod(&format!("p{i}"))
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
}
