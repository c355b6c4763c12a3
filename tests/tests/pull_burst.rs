//! More pulls at once than the agent has blocking threads (it bounds tokio's pool), with
//! image removals asked over CRI meanwhile: each removal sweeps the store, waiting for its
//! lock while the pulls hold it, and the pulls need blocking threads to finish. Everything
//! must finish: pods running, every RemoveImage answered.

use std::time::Duration;

use minilet_e2e::grpc::{connect, rt};
use minilet_e2e::registry::{Compression, Registry};
use minilet_e2e::*;
use minilet_proto::runtime::v1 as cri;

/// Distinct references, each its own pull (more than the agent's 8 blocking threads).
const PULLS: usize = 12;
/// Sweeps asked for while the pulls run (also more than the pool).
const REMOVALS: usize = 12;

fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: Always\n    command: [sleep, '3600']\n"
    )
}

#[test]
fn pulls_and_sweeps_beyond_the_blocking_pool_all_finish() {
    if !is_root() {
        return;
    }
    if which("docker-registry").is_none() || which("skopeo").is_none() {
        return skip("docker-registry and skopeo (hack/setup) are needed for a registry");
    }
    let env = Env::new("pull-burst");
    let reg = Registry::start(&env.dir.join("registry"), None);
    let host = reg.host();
    for i in 0..PULLS {
        let image = if i % 2 == 0 { "busybox" } else { "nginx" };
        reg.push_demo(image, &format!("burst/img{i}:1"), Compression::AsIs);
    }
    let _agent = Agent::start(&env, &[]);
    for i in 0..PULLS {
        env.write_manifest(
            &format!("burst-{i}.yaml"),
            &pod(&format!("burst-{i}"), &format!("{host}/burst/img{i}:1")),
        );
    }
    // Removals of an image no pod uses, each answered after its sweep.
    rt().block_on(async {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..REMOVALS {
            let socket = env.socket.clone();
            calls.spawn(async move {
                let mut c = connect(&socket).await;
                c.image
                    .remove_image(cri::RemoveImageRequest {
                        image: Some(cri::ImageSpec {
                            image: "localhost/not-here:1".into(),
                            ..Default::default()
                        }),
                    })
                    .await
            });
        }
        let answered = tokio::time::timeout(Duration::from_secs(120), async {
            let mut n = 0;
            while let Some(r) = calls.join_next().await {
                r.expect("RemoveImage task").expect("RemoveImage");
                n += 1;
            }
            n
        })
        .await
        .expect("every RemoveImage answered within 120 s");
        assert_eq!(answered, REMOVALS);
    });
    for i in 0..PULLS {
        env.wait_running(&static_pod_name(&format!("burst-{i}")), &["c"]);
    }
}
