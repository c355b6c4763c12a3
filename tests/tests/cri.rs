//! The CRI runtime.v1 and minilet.v1 endpoint, exercised through generated clients against a
//! running agent with real pods, and cross-checked against the kernel.

use std::collections::HashMap;
use std::time::Duration;

use minilet_e2e::grpc::{connect, rt};
use minilet_e2e::*;
use minilet_proto::minilet::v1 as node;
use minilet_proto::runtime::v1 as cri;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: setup
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["true"]
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done"]
    resources:
      limits: {cpu: 200m, memory: 64Mi}
  - name: burner
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; dd if=/dev/zero of=/big bs=1M count=4 2>/dev/null; while true; do :; done"]
"#;

async fn pod_sandbox_id(c: &mut minilet_e2e::grpc::Clients, name: &str) -> String {
    let items = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    items
        .into_iter()
        .find(|s| s.metadata.as_ref().is_some_and(|m| m.name == name))
        .map(|s| s.id)
        .expect("sandbox listed")
}

fn sel(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn runtime_service_over_real_pods() {
    if !is_root() {
        return;
    }
    let env = Env::new("cri");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("web.yaml", POD);
    let pod = env.wait_running(&static_pod_name("web"), &["main", "burner"]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;

        // Version and Status.
        let v = c
            .runtime
            .version(cri::VersionRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(
            !v.version.is_empty()
                && v.runtime_name == "minilet"
                && !v.runtime_version.is_empty()
                && v.runtime_api_version == "v1",
            "{v:?}"
        );
        let s = c
            .runtime
            .status(cri::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
        let conds = s.status.unwrap().conditions;
        for kind in ["RuntimeReady", "NetworkReady"] {
            assert!(conds.iter().any(|c| c.r#type == kind && c.status), "{kind}: {conds:?}");
        }
        let cfg: serde_json::Value = serde_json::from_str(&s.info["config"]).expect("verbose info is JSON");
        assert!(cfg["cgroupVersion"].as_str().is_some(), "{cfg}");

        // ListPodSandbox: kubelet labels, filters.
        let all = c
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        assert_eq!(all.len(), 1);
        let sb = &all[0];
        // The runtime's sandbox, made from the pod's generated config and listed once.
        let dir = env.root.join("sandboxes").join(&sb.id);
        assert_eq!(pod.sandbox_dir.as_ref(), Some(&dir));
        assert!(dir.join("cri-sandbox.pb").is_file(), "{}", dir.display());
        assert_eq!(sb.labels["io.kubernetes.pod.name"], static_pod_name("web"));
        assert_eq!(
            sb.metadata.as_ref().map(|m| m.name.clone()),
            Some(static_pod_name("web"))
        );
        assert_eq!(sb.labels["io.kubernetes.pod.namespace"], "default");
        assert_eq!(sb.labels["io.kubernetes.pod.uid"], pod.uid);
        assert_eq!(sb.labels["app"], "web");
        // The kubelet's annotations on a pod from a file.
        assert_eq!(sb.annotations["kubernetes.io/config.source"], "file");
        assert_eq!(sb.annotations["kubernetes.io/config.hash"], pod.uid);
        assert!(
            sb.annotations["kubernetes.io/config.seen"].starts_with("20"),
            "{:?}",
            sb.annotations
        );
        assert_eq!(sb.state, cri::PodSandboxState::SandboxReady as i32);
        assert!(
            sb.created_at > 1_600_000_000_000_000_000,
            "nanoseconds: {}",
            sb.created_at
        );
        let filtered = |f: cri::PodSandboxFilter| {
            let mut rc = c.runtime.clone();
            async move {
                rc.list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(f) })
                    .await
                    .unwrap()
                    .into_inner()
                    .items
                    .len()
            }
        };
        assert_eq!(
            filtered(cri::PodSandboxFilter {
                label_selector: sel(&[("app", "web")]),
                ..Default::default()
            })
            .await,
            1
        );
        assert_eq!(
            filtered(cri::PodSandboxFilter {
                label_selector: sel(&[("app", "db")]),
                ..Default::default()
            })
            .await,
            0
        );
        assert_eq!(
            filtered(cri::PodSandboxFilter {
                id: sb.id[..8].into(),
                ..Default::default()
            })
            .await,
            1
        );
        let notready = Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxNotready as i32,
        });
        assert_eq!(
            filtered(cri::PodSandboxFilter {
                state: notready,
                ..Default::default()
            })
            .await,
            0
        );

        // PodSandboxStatus by a truncated ID; verbose info names the pause, as the kernel sees it.
        let st = c
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sb.id[..12].into(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        let status = st.status.unwrap();
        assert_eq!(status.id, sb.id);
        let opts = status.linux.unwrap().namespaces.unwrap().options.unwrap();
        assert_eq!(opts.network, cri::NamespaceMode::Pod as i32);
        assert_eq!(
            opts.pid,
            cri::NamespaceMode::Container as i32,
            "no shareProcessNamespace"
        );
        let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
        assert_eq!(info["pid"].as_i64(), Some(pod.pause() as i64));
        assert!(
            std::fs::read_to_string(format!("/proc/{}/cmdline", pod.pause()))
                .unwrap()
                .starts_with("minilet-pause")
        );
        // The runtime's own sandbox, whose owner is the manifest.
        assert_eq!(info["owner"], "manifest");
        assert!(
            info["manifest"].as_str().is_some_and(|m| m.ends_with("web.yaml")),
            "{info}"
        );
        let missing = c
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: "nope".into(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);

        // ListContainers: the init container (exited) and the two app containers.
        let list = c
            .runtime
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(list.len(), 3, "{list:#?}");
        let by_name = |n: &str| {
            list.iter()
                .find(|c| c.metadata.as_ref().unwrap().name == n)
                .unwrap()
                .clone()
        };
        let (main, setup) = (by_name("main"), by_name("setup"));
        assert_eq!(main.state, cri::ContainerState::ContainerRunning as i32);
        assert_eq!(setup.state, cri::ContainerState::ContainerExited as i32);
        assert_eq!(main.pod_sandbox_id, sb.id);
        for (k, v) in [
            ("io.kubernetes.pod.name", static_pod_name("web").as_str()),
            ("io.kubernetes.pod.namespace", "default"),
            ("io.kubernetes.container.name", "main"),
        ] {
            assert_eq!(main.labels[k], v);
        }
        assert_eq!(main.labels["io.kubernetes.pod.uid"], pod.uid);
        let running = Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        });
        let f = cri::ContainerFilter {
            state: running,
            pod_sandbox_id: sb.id[..10].into(),
            label_selector: sel(&[("io.kubernetes.container.name", "main")]),
            ..Default::default()
        };
        let only = c
            .runtime
            .list_containers(cri::ListContainersRequest { filter: Some(f) })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].id, main.id);

        // ContainerStatus: state, times, log path, mounts, verbose pid = the kernel's process.
        let cs = c
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: main.id[..12].into(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        let s = cs.status.unwrap();
        assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
        assert!(s.created_at > 0 && s.started_at >= s.created_at && s.finished_at == 0);
        assert!(std::path::Path::new(&s.log_path).is_file(), "{}", s.log_path);
        assert!(s.log_path.ends_with("/main/0.log"));
        assert!(s.mounts.iter().any(|m| m.container_path == "/etc/hosts"));
        assert!(s.image.unwrap().image.contains("busybox"));
        assert!(s.image_ref.starts_with("sha256:"));
        let info: serde_json::Value = serde_json::from_str(&cs.info["info"]).unwrap();
        let pid = info["pid"].as_i64().unwrap() as i32;
        assert_eq!(pid, pod.pid("main"));
        assert!(
            proc_cgroups(pid).iter().any(|(_, p)| p.ends_with(&main.id)),
            "in its cgroup"
        );
        let done = c
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: setup.id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!((done.exit_code, done.reason.as_str()), (0, "Completed"));
        assert!(done.finished_at >= done.started_at && done.started_at > 0);

        // Stats: CPU (the burner keeps a core busy), memory, the writable layer (4 MiB written).
        let burner = by_name("burner");
        let stats = wait_for_async_stats(&mut c, &burner.id).await;
        let cpu = stats.cpu.unwrap();
        assert!(cpu.usage_core_nano_seconds.unwrap().value > 0);
        assert!(
            cpu.usage_nano_cores.unwrap().value > 300_000_000,
            "a busy loop uses most of a core: {cpu:?}"
        );
        assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
        assert!(stats.writable_layer.unwrap().used_bytes.unwrap().value >= 4 << 20);
        let ls = c
            .runtime
            .list_container_stats(cri::ListContainerStatsRequest {
                filter: Some(cri::ContainerStatsFilter {
                    pod_sandbox_id: sb.id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
        assert_eq!(ls.len(), 2, "running containers only");
        let ps = c
            .runtime
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: sb.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let linux = ps.linux.unwrap();
        assert_eq!(linux.containers.len(), 2);
        assert!(
            linux.process.unwrap().process_count.unwrap().value >= 3,
            "pause, main, burner"
        );
        let lps = c
            .runtime
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .stats;
        assert_eq!(lps.len(), 1);

        // ExecSync: output, exit codes, stderr, a missing binary, a timeout that kills.
        let exec = |cmd: &[&str], timeout: i64| {
            let mut rc = c.runtime.clone();
            let req = cri::ExecSyncRequest {
                container_id: main.id.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            };
            async move { rc.exec_sync(req).await }
        };
        let r = exec(&["sh", "-c", "echo out; echo err >&2; exit 3"], 0)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
            (&b"out\n"[..], &b"err\n"[..], 3)
        );
        let r = exec(&["hostname"], 5).await.unwrap().into_inner();
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), static_pod_name("web"));
        let r = exec(&["no-such-thing"], 5).await.unwrap().into_inner();
        assert_eq!(r.exit_code, 126);
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("executable file not found"),
            "{r:?}"
        );
        // Output is capped as the kubelet caps it, and the command still runs to its end.
        let r = exec(&["sh", "-c", "head -c 40000000 /dev/zero; echo done >&2; exit 4"], 60)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.exit_code, 4);
        assert_eq!(r.stdout.len(), 16 * 1024 * 1024 - 64 * 1024, "stdout kept");
        assert!(r.stderr.is_empty(), "no room left for stderr");
        let err = exec(&["sleep", "30"], 1).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        // The timed-out process is gone from the container.
        let cgroup = &pod.containers["main"].cgroup;
        wait_for("the timed-out exec is killed", Duration::from_secs(5), || {
            let mut procs = Vec::new();
            for d in env.cgroup_dirs(cgroup) {
                procs.extend(
                    std::fs::read_to_string(d.join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                        .map(str::to_string),
                );
            }
            (!procs.iter().any(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .unwrap_or_default()
                    .starts_with("sleep\u{0}30")
            }))
            .then_some(())
        });

        // ReopenContainerLog: rename the file away (as rotation does); new lines land in a new file.
        let log = std::path::PathBuf::from(&s.log_path);
        let rotated = log.with_extension("log.1");
        std::fs::rename(&log, &rotated).unwrap();
        c.runtime
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: main.id.clone(),
            })
            .await
            .unwrap();
        wait_for("lines in the reopened log", Duration::from_secs(5), || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains(" stdout F line "))
                .map(|_| ())
        });
        let _ = std::fs::remove_file(&rotated);

        // The manifests own static pods: no containers are created in their sandboxes.
        let sandbox_id = pod_sandbox_id(&mut c, &static_pod_name("web")).await;
        let refused = c
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id,
                config: Some(cri::ContainerConfig::default()),
                sandbox_config: None,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains("manifest"), "{refused:?}");
        // Nor are its containers started or resized by a client (its worker does that).
        let refused = c
            .runtime
            .start_container(cri::StartContainerRequest {
                container_id: main.id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("manifest"), "{refused:?}");
        let refused = c
            .runtime
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: main.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("manifest"), "{refused:?}");
        let refused = c
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

        // Images.
        let images = c
            .image
            .list_images(cri::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images;
        assert!(
            images
                .iter()
                .any(|i| i.repo_tags.contains(&"localhost/busybox:latest".to_string())),
            "{images:?}"
        );
        let st = c
            .image
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: "localhost/busybox".into(),
                    ..Default::default()
                }),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(st.image.unwrap().id.starts_with("sha256:"));
        assert!(serde_json::from_str::<serde_json::Value>(&st.info["info"]).is_ok());
        let absent = c
            .image
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: "localhost/absent:1".into(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(absent.image.is_none());
        let fs = c
            .image
            .image_fs_info(cri::ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(fs.image_filesystems[0].used_bytes.as_ref().unwrap().value > 0);

        // minilet.v1: pods as v1.Pod, events.
        let pods = c
            .node
            .list_pods(node::ListPodsRequest {
                cgroup_details: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .pods;
        let p: k8s_openapi::api::core::v1::Pod = serde_json::from_str(&pods[0].pod_json).unwrap();
        let status = p.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.container_statuses.unwrap().len(), 2);
        assert_eq!(status.qos_class.as_deref(), Some("Burstable"));
        let main_cg = pods[0].containers.iter().find(|c| c.name == "main").unwrap();
        assert!(
            main_cg
                .limits
                .get("memory.limit_in_bytes")
                .or(main_cg.limits.get("memory.max"))
                .is_some_and(|v| v == &(64u64 << 20).to_string()),
            "{:?}",
            main_cg.limits
        );
        let events = c
            .node
            .list_events(node::ListEventsRequest {
                namespace: "default".into(),
                name: static_pod_name("web"),
                uid: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .event_json;
        let events: Vec<k8s_openapi::api::core::v1::Event> =
            events.iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        assert!(
            events.iter().any(|e| e.reason.as_deref() == Some("Started")),
            "{events:?}"
        );
    });
}

async fn wait_for_async_stats(c: &mut minilet_e2e::grpc::Clients, id: &str) -> cri::ContainerStats {
    for _ in 0..50 {
        let s = c
            .runtime
            .container_stats(cri::ContainerStatsRequest {
                container_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let busy = s
            .cpu
            .as_ref()
            .and_then(|c| c.usage_nano_cores.as_ref())
            .is_some_and(|v| v.value > 300_000_000);
        let written = s
            .writable_layer
            .as_ref()
            .and_then(|w| w.used_bytes.as_ref())
            .is_some_and(|v| v.value >= 4 << 20);
        if busy && written {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap();
    panic!("container {id} never showed CPU and disk use");
}

#[test]
fn interactive_exec_streams_stdin_tty_and_exit_code() {
    if !is_root() {
        return;
    }
    let env = Env::new("exec");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "box.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: box}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: localhost/busybox:latest, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}\n",
    );
    let pod = env.wait_running(&static_pod_name("box"), &["c"]);
    let id = pod.containers["c"].id.clone();
    rt().block_on(async {
        let c = connect(&env.socket).await;
        // The state directory shows the process before the agent has taken it in: wait
        // for the agent's own view before asking it to exec.
        let start = std::time::Instant::now();
        loop {
            let mut rc = c.runtime.clone();
            let req = cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            };
            if rc.container_status(req).await.is_ok() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the agent never saw container c"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let run = |cmd: &[&str], tty: bool, input: Vec<node::exec_request::Msg>| {
            let mut nc = c.node.clone();
            let id = id.clone();
            let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
            async move {
                let start = node::ExecRequest {
                    msg: Some(node::exec_request::Msg::Start(node::ExecStart {
                        container_id: id,
                        cmd,
                        tty,
                        stdin: true,
                        size: Some(node::TerminalSize { width: 100, height: 30 }),
                    })),
                };
                let msgs: Vec<node::ExecRequest> = std::iter::once(start)
                    .chain(input.into_iter().map(|m| node::ExecRequest { msg: Some(m) }))
                    .collect();
                let mut out = nc.exec(tokio_stream_iter(msgs)).await.unwrap().into_inner();
                let (mut stdout, mut stderr, mut code) = (Vec::new(), Vec::new(), None);
                while let Some(m) = out.message().await.unwrap() {
                    match m.msg {
                        Some(node::exec_response::Msg::Stdout(b)) => stdout.extend(b),
                        Some(node::exec_response::Msg::Stderr(b)) => stderr.extend(b),
                        Some(node::exec_response::Msg::ExitCode(c)) => code = Some(c),
                        None => {}
                    }
                }
                (
                    String::from_utf8_lossy(&stdout).into_owned(),
                    String::from_utf8_lossy(&stderr).into_owned(),
                    code,
                )
            }
        };
        use node::exec_request::Msg;
        // stdin reaches the process; closing it ends `cat`.
        let (out, _, code) = run(
            &["cat"],
            false,
            vec![Msg::Stdin(b"hello\n".to_vec()), Msg::CloseStdin(true)],
        )
        .await;
        assert_eq!((out.as_str(), code), ("hello\n", Some(0)));
        // Exit codes and stderr come back.
        let (_, err, code) = run(
            &["sh", "-c", "echo oops >&2; exit 7"],
            false,
            vec![Msg::CloseStdin(true)],
        )
        .await;
        assert_eq!((err.as_str(), code), ("oops\n", Some(7)));
        // A terminal: the process sees a pty of the container's own devpts, with our size.
        let (out, _, code) = run(&["sh", "-c", "tty; stty size"], true, vec![]).await;
        assert_eq!(code, Some(0));
        assert!(out.contains("/dev/pts/0"), "{out:?}");
        assert!(out.contains("30 100"), "{out:?}");
        // A resize reaches the terminal.
        let (out, _, _) = run(
            &["sh", "-c", "read x; stty size"],
            true,
            vec![
                Msg::Resize(node::TerminalSize { width: 120, height: 40 }),
                Msg::Stdin(b"go\r".to_vec()),
            ],
        )
        .await;
        assert!(out.contains("40 120"), "{out:?}");
    });
}

/// A request stream from a fixed list of messages, sent with small pauses.
fn tokio_stream_iter(msgs: Vec<node::ExecRequest>) -> tokio_stream::wrappers::ReceiverStream<node::ExecRequest> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        for m in msgs {
            let _ = tx.send(m).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Keep the stream open a little: a tty session ends with the process, not with stdin.
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[test]
fn socket_is_private_single_owner_and_taken_over_when_stale() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        return;
    }
    let env = Env::new("socket");
    // Under umask 000 (inherited by the agent; nextest runs each test in its own process),
    // a socket bound then chmodded would exist for a moment with mode 0777. Watch the path
    // from before the agent starts: every mode it ever shows must be 0660.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (path, stop) = (env.socket.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut modes = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(md) = std::fs::symlink_metadata(&path) {
                    modes.insert(md.permissions().mode() & 0o777);
                }
            }
            modes
        })
    };
    let mut first = Agent::start(&env, &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let modes = watcher.join().unwrap();
    assert_eq!(modes.into_iter().collect::<Vec<_>>(), [0o660], "modes the socket had");
    let mode = std::fs::metadata(&env.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // A second agent (own root) on the same socket refuses to start.
    let other = Env::new("socket2");
    let out = std::process::Command::new(minilet())
        .args(["agent", "--manifests"])
        .arg(&other.manifests)
        .arg("--root")
        .arg(&other.root)
        .arg("--log-dir")
        .arg(&other.logs)
        .arg("--cgroup-parent")
        .arg(&other.cgroup_parent)
        .arg("--socket")
        .arg(&env.socket)
        .args(["--node-name", NODE])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another minilet agent is serving"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Killed: the socket file stays behind, stale; the next agent takes it over.
    first.kill9();
    assert!(env.socket.exists());
    let _second = Agent::start(&env, &[]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        c.runtime.version(cri::VersionRequest::default()).await.unwrap();
    });
}
