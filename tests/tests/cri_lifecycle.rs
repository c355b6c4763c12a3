//! The CRI lifecycle, driven as crictl and critest drive a runtime: RunPodSandbox,
//! CreateContainer, StartContainer, StopContainer, RemoveContainer, StopPodSandbox,
//! RemovePodSandbox, UpdateContainerResources and GetContainerEvents, checked against the
//! kernel's view (namespaces, cgroups, processes) and the state left on disk.

use std::collections::HashMap;
use std::time::Duration;

use minilet_e2e::grpc::{Clients, connect, container_events, container_status, listed_container, rt};
use minilet_e2e::*;
use minilet_proto::runtime::v1 as cri;

fn sandbox_config(name: &str, uid: &str, log_dir: &std::path::Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "crictl".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["svc.example".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        annotations: HashMap::from([("note".to_string(), "made by a CRI client".to_string())]),
        ..Default::default()
    }
}

fn container_config(name: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: "localhost/busybox:latest".into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        envs: vec![cri::KeyValue {
            key: "GREETING".into(),
            value: "hello from cri".into(),
        }],
        labels: HashMap::from([("tier".to_string(), "test".to_string())]),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

async fn run_sandbox(c: &mut Clients, config: cri::PodSandboxConfig) -> String {
    c.runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id
}

async fn create(c: &mut Clients, sandbox: &str, config: cri::ContainerConfig) -> Result<String, tonic::Status> {
    c.runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().container_id)
}

async fn sandbox_status(c: &mut Clients, id: &str) -> (cri::PodSandboxStatus, serde_json::Value) {
    let r = c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info = serde_json::from_str(&r.info["info"]).expect("verbose info is JSON");
    (r.status.expect("status"), info)
}

async fn wait_state(c: &mut Clients, id: &str, state: cri::ContainerState) -> cri::ContainerStatus {
    for _ in 0..500 {
        let (s, _) = container_status(c, id).await;
        if s.state == state as i32 {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("container {id} never reached {state:?}");
}

fn sandboxes_dir(env: &Env) -> std::path::PathBuf {
    env.root.join("sandboxes")
}

fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn sandbox_and_container_lifecycle_as_a_cri_client_drives_it() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-life");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let pod_logs = env.dir.join("cri-logs");
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let mut events = container_events(&mut c).await;

        // RunPodSandbox: a pause in its own namespaces, with the client's hostname and DNS.
        let sb = run_sandbox(&mut c, sandbox_config("alpha", "uid-alpha-1", &pod_logs)).await;
        let (st, info) = sandbox_status(&mut c, &sb).await;
        assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
        assert_eq!(st.metadata.as_ref().unwrap().name, "alpha");
        assert_eq!(st.labels["app"], "alpha");
        assert_eq!(st.annotations["note"], "made by a CRI client");
        let pause = info["pid"].as_i64().expect("pause pid") as i32;
        assert!(alive(pause));
        for kind in ["net", "ipc", "uts", "pid"] {
            assert_ne!(
                ns(pause, kind),
                ns(std::process::id() as i32, kind),
                "pause has its own {kind} namespace"
            );
        }
        let listed = c
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: HashMap::from([("app".to_string(), "alpha".to_string())]),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, sb);

        // CreateContainer: CREATED, nothing running yet.
        let id = create(
            &mut c,
            &sb[..12],
            container_config(
                "main",
                "trap '' TERM; echo \"$GREETING\"; hostname; cat /etc/resolv.conf; exec sleep 1000",
            ),
        )
        .await
        .expect("CreateContainer");
        let (st, _) = container_status(&mut c, &id).await;
        assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
        assert_eq!(st.labels["tier"], "test");
        let dup = create(&mut c, &sb, container_config("main", "true")).await.unwrap_err();
        assert_eq!(dup.code(), tonic::Code::AlreadyExists, "{dup:?}");

        // StartContainer: RUNNING, in the pause's namespaces and its own cgroup.
        c.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
        let (st, info) = container_status(&mut c, &id).await;
        assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
        assert!(st.started_at >= st.created_at && st.created_at > 0);
        let pid = info["pid"].as_i64().expect("pid") as i32;
        for kind in ["net", "ipc", "uts"] {
            assert_eq!(
                ns(pid, kind),
                ns(pause, kind),
                "container joins the pause's {kind} namespace"
            );
        }
        assert!(
            proc_cgroups(pid).iter().any(|(_, p)| p.ends_with(&id)),
            "container in its own cgroup: {:?}",
            proc_cgroups(pid)
        );
        let again = c
            .runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::FailedPrecondition);

        // Its log, where the client asked for it, in the CRI format.
        let log = pod_logs.join("main/0.log");
        assert_eq!(st.log_path, log.display().to_string());
        let text = wait_for("log lines", Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("options ndots:5"))
        });
        assert!(text.contains(" stdout F hello from cri\n"), "{text}");
        assert!(text.contains(" stdout F alpha-host\n"), "{text}");
        assert!(text.contains(" stdout F nameserver 10.0.0.10\n"), "{text}");

        // ExecSync into it.
        let r = c
            .runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["sh".into(), "-c".into(), "echo $GREETING; exit 3".into()],
                timeout: 10,
            })
            .await
            .expect("ExecSync")
            .into_inner();
        assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"hello from cri\n"[..], 3));

        // Stats: the container's cgroup, by ID, in the list, and in its sandbox's.
        let stats = c
            .runtime
            .container_stats(cri::ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await
            .expect("ContainerStats")
            .into_inner()
            .stats
            .unwrap();
        assert_eq!(stats.attributes.as_ref().unwrap().labels["tier"], "test");
        assert!(
            stats
                .memory
                .and_then(|m| m.working_set_bytes)
                .is_some_and(|w| w.value > 0)
        );
        let listed = c
            .runtime
            .list_container_stats(cri::ListContainerStatsRequest {
                filter: Some(cri::ContainerStatsFilter {
                    pod_sandbox_id: sb.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
        assert_eq!(listed.len(), 1);
        let pod_stats = c
            .runtime
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await
            .expect("PodSandboxStats")
            .into_inner()
            .stats
            .unwrap();
        assert_eq!(pod_stats.attributes.unwrap().labels["app"], "alpha");
        assert_eq!(pod_stats.linux.unwrap().containers.len(), 1);

        // UpdateContainerResources: the cgroup changes now.
        c.runtime
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: 96 << 20,
                    cpu_shares: 512,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("UpdateContainerResources");
        let cg = format!("kubepods/besteffort/poduid-alpha-1/{id}");
        let limit = cgroup_file(&env, &cg, "memory.limit_in_bytes")
            .or_else(|| cgroup_file(&env, &cg, "memory.max"))
            .expect("a memory limit file");
        assert_eq!(limit, (96u64 << 20).to_string());
        let (st, _) = container_status(&mut c, &id).await;
        assert_eq!(
            st.resources.and_then(|r| r.linux).map(|l| l.memory_limit_in_bytes),
            Some(96 << 20)
        );

        // StopContainer: it ignores SIGTERM, so the timeout ends in SIGKILL.
        c.runtime
            .stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 1,
            })
            .await
            .expect("StopContainer");
        let st = wait_state(&mut c, &id, cri::ContainerState::ContainerExited).await;
        assert_eq!(st.exit_code, 137, "{st:?}");
        assert!(!alive(pid));
        assert!(st.finished_at >= st.started_at);
        // Idempotent: stopping again, and stopping what does not exist.
        for cid in [id.clone(), "0123456789abcdef".to_string()] {
            c.runtime
                .stop_container(cri::StopContainerRequest {
                    container_id: cid,
                    timeout: 0,
                })
                .await
                .expect("StopContainer is idempotent");
        }

        // RemoveContainer: its directory and cgroup go; the log stays (it is the client's).
        let dir = info["dir"].as_str().unwrap().to_string();
        c.runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("RemoveContainer");
        assert!(!std::path::Path::new(&dir).exists());
        assert!(env.cgroup_dirs(&cg).is_empty(), "container cgroup removed");
        let gone = c
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), tonic::Code::NotFound);
        c.runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("RemoveContainer is idempotent");
        assert!(log.exists());

        // Events, in order, for this container.
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let ev = minilet_e2e::grpc::next_event(&mut events, |e| e.container_id == id).await;
            seen.push(ev.container_event_type);
        }
        use cri::ContainerEventType as E;
        assert_eq!(
            seen,
            [
                E::ContainerCreatedEvent as i32,
                E::ContainerStartedEvent as i32,
                E::ContainerStoppedEvent as i32,
                E::ContainerDeletedEvent as i32
            ]
        );

        // A container that is running when its sandbox stops: killed with it.
        let id2 = create(&mut c, &sb, container_config("second", "exec sleep 1000"))
            .await
            .expect("CreateContainer");
        c.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id2.clone(),
            })
            .await
            .expect("StartContainer");
        let (_, info2) = container_status(&mut c, &id2).await;
        let pid2 = info2["pid"].as_i64().unwrap() as i32;
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await
            .expect("StopPodSandbox");
        let (st, _) = sandbox_status(&mut c, &sb).await;
        assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
        wait_for("pause and container gone", Duration::from_secs(10), || {
            (!alive(pause) && !alive(pid2)).then_some(())
        });
        let st = wait_state(&mut c, &id2, cri::ContainerState::ContainerExited).await;
        assert_eq!(st.exit_code, 137);
        let refused = create(&mut c, &sb, container_config("third", "true"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");

        // RemovePodSandbox: nothing of it is left; removing again succeeds.
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await
            .expect("RemovePodSandbox");
        assert_eq!(entries(&sandboxes_dir(&env)), 0);
        assert!(
            env.cgroup_dirs("kubepods/besteffort/poduid-alpha-1").is_empty(),
            "pod cgroup removed"
        );
        let listed = c
            .runtime
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(listed.is_empty(), "{listed:?}");
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await
            .expect("RemovePodSandbox is idempotent");
        let gone = c
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sb.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), tonic::Code::NotFound);
    });
}

#[test]
fn bad_requests_are_refused_with_their_reason_and_leave_nothing() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-bad");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let logs = env.dir.join("cri-logs");
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let code = |r: Result<tonic::Response<cri::RunPodSandboxResponse>, tonic::Status>| r.unwrap_err();
        let mut no_meta = sandbox_config("bad", "uid-bad", &logs);
        no_meta.metadata = None;
        let mut bad_uid = sandbox_config("bad", "../../etc", &logs);
        bad_uid.hostname.clear();
        let mut sysctls = sandbox_config("bad", "uid-bad", &logs);
        sysctls.linux = Some(cri::LinuxPodSandboxConfig {
            sysctls: HashMap::from([("vm.swappiness".to_string(), "1".to_string())]),
            ..Default::default()
        });
        let mut escape = sandbox_config("bad", "uid-bad", &logs);
        escape.linux = Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/../../escape".into(),
            ..Default::default()
        });
        // A client's sandbox cannot pass for a static pod's.
        let mut manifest = sandbox_config("bad", "uid-bad", &logs);
        manifest
            .annotations
            .insert("minilet.dev/manifest".into(), "/etc/minilet/x.yaml".into());
        for (config, want, words) in [
            (
                manifest,
                tonic::Code::InvalidArgument,
                "reserved for the agent's static pods",
            ),
            (no_meta, tonic::Code::InvalidArgument, "metadata"),
            (bad_uid, tonic::Code::InvalidArgument, "metadata.uid"),
            (sysctls, tonic::Code::InvalidArgument, "linux.sysctls"),
            (escape, tonic::Code::InvalidArgument, "cgroup_parent"),
        ] {
            let e = code(
                c.runtime
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    })
                    .await,
            );
            assert_eq!(e.code(), want, "{e:?}");
            assert!(e.message().contains(words), "{e:?}");
        }
        let e = code(
            c.runtime
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(sandbox_config("bad", "uid-bad", &logs)),
                    runtime_handler: "kata".into(),
                })
                .await,
        );
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(entries(&sandboxes_dir(&env)), 0, "refused sandboxes leave no directory");

        let sb = run_sandbox(&mut c, sandbox_config("good", "uid-good", &logs)).await;
        let mut unknown_image = container_config("x", "true");
        unknown_image.image = Some(cri::ImageSpec {
            image: "example.com/nothing:here".into(),
            ..Default::default()
        });
        let mut propagation = container_config("x", "true");
        propagation.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: env.dir.join("data").display().to_string(),
            propagation: 7,
            ..Default::default()
        }];
        let mut relative = container_config("x", "true");
        relative.mounts = vec![cri::Mount {
            container_path: "data".into(),
            host_path: env.dir.join("data").display().to_string(),
            ..Default::default()
        }];
        let mut devices = container_config("x", "true");
        devices.devices = vec![cri::Device {
            container_path: "/dev/xnull".into(),
            host_path: "/dev/null".into(),
            permissions: "rwm".into(),
        }];
        for (config, want) in [
            (unknown_image, tonic::Code::NotFound),
            (propagation, tonic::Code::InvalidArgument),
            (relative, tonic::Code::InvalidArgument),
            (devices, tonic::Code::Unimplemented),
        ] {
            let e = create(&mut c, &sb, config).await.unwrap_err();
            assert_eq!(e.code(), want, "{e:?}");
        }
        let e = create(&mut c, "no-such-sandbox", container_config("x", "true"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert_eq!(entries(&sandboxes_dir(&env).join(&sb).join("containers")), 0);
        assert!(!env.dir.join("data").exists(), "nothing created for a refused mount");
    });
}

#[test]
fn cri_pods_survive_an_agent_kill_and_are_re_adopted() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-adopt");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    let logs = env.dir.join("cri-logs");
    let (sb, id, pid) = rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let sb = run_sandbox(&mut c, sandbox_config("kept", "uid-kept", &logs)).await;
        let id = create(&mut c, &sb, container_config("main", "exec sleep 1000"))
            .await
            .expect("CreateContainer");
        c.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
        let created = create(&mut c, &sb, container_config("later", "echo later"))
            .await
            .expect("CreateContainer");
        let (_, info) = container_status(&mut c, &id).await;
        let _ = created;
        (sb, id, info["pid"].as_i64().unwrap() as i32)
    });
    agent.kill9();
    assert!(alive(pid), "the container outlives the agent");
    let _agent = Agent::start(&env, &[]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let (st, info) = container_status(&mut c, &id).await;
        assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
        assert_eq!(info["pid"].as_i64(), Some(pid as i64), "the same process, re-adopted");
        let (st, _) = sandbox_status(&mut c, &sb).await;
        assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
        // `minilet get pods` lists CRI pods beside static ones, marked as not from a manifest.
        let out = ok(&env, &["get", "pods", "-n", "crictl"]);
        let row = out
            .lines()
            .find(|l| l.starts_with("kept "))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(row.contains(" 1/2 "), "one of two containers running: {out}");
        let out = ok(&env, &["describe", "pod", "kept", "-n", "crictl"]);
        assert!(out.contains("CRI client"), "{out}");
        // A container created before the kill starts now.
        let all = c
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sb.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(all.len(), 2, "{all:?}");
        let later = all.iter().find(|x| x.id != id).unwrap();
        assert_eq!(later.state, cri::ContainerState::ContainerCreated as i32);
        c.runtime
            .start_container(cri::StartContainerRequest {
                container_id: later.id.clone(),
            })
            .await
            .expect("StartContainer after re-adoption");
        let st = wait_state(&mut c, &later.id, cri::ContainerState::ContainerExited).await;
        assert_eq!(st.exit_code, 0);
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await
            .expect("RemovePodSandbox");
        assert!(!alive(pid));
    });
}

const STATIC: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: keeper
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "1000"]
"#;

/// An agent with short restart back-offs running the static pod `keeper` (main running).
fn keeper(tag: &str) -> (Env, Agent, PodView) {
    let env = Env::new(tag);
    env.import_image("busybox");
    let agent = Agent::start(&env, &["--backoff-initial", "200ms", "--backoff-max", "400ms"]);
    env.write_manifest("keeper.yaml", STATIC);
    let pod = env.wait_running(&static_pod_name("keeper"), &["main"]);
    (env, agent, pod)
}

#[test]
fn a_static_pod_stopped_through_the_cri_is_restarted_by_its_worker() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let (env, _agent, pod) = keeper("cri-static");
    let old = pod.pid("main");
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let main = listed_container(&mut c, "the static pod's container", |x| x.pod_sandbox_id.len() == 64).await;
        c.runtime
            .stop_container(cri::StopContainerRequest {
                container_id: main.id.clone(),
                timeout: 0,
            })
            .await
            .expect("StopContainer on a static pod");
    });
    wait_for("the worker restarts it", Duration::from_secs(30), || {
        env.pod(&static_pod_name("keeper"))
            .and_then(|p| p.containers.get("main").cloned())
            .filter(|c| c.attempt >= 1 && c.pid.is_some_and(|p| p != old && alive(p)))
            .map(|_| ())
    });
    assert!(!alive(old));
}

/// A client's RemoveContainer or RemovePodSandbox of a static pod's is a stop: the worker
/// restarts the container, or makes a new sandbox, and what it keeps (the last attempt, the
/// old sandbox that holds it) stays, as the manifest's pod still shows it.
#[test]
fn a_clients_removal_of_a_static_pods_container_or_sandbox_stops_it() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let (env, _agent, first) = keeper("cri-static-remove");
    let name = static_pod_name("keeper");
    let main = rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let main = listed_container(&mut c, "the static pod's container", |x| x.pod_sandbox_id.len() == 64).await;
        c.runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: main.id.clone(),
            })
            .await
            .expect("RemoveContainer on a static pod");
        main
    });
    let again = wait_for("the worker restarts it", Duration::from_secs(30), || {
        let p = env.pod(&name)?;
        let c = p.containers.get("main")?;
        (c.attempt >= 1 && c.exit.is_none() && c.pid.is_some_and(alive)).then_some(p)
    });
    assert!(!alive(first.pid("main")));
    assert!(
        first.containers["main"].dir.is_dir(),
        "the stopped attempt is the worker's last one"
    );

    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        c.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: main.pod_sandbox_id.clone(),
            })
            .await
            .expect("RemovePodSandbox on a static pod");
    });
    wait_for("a new sandbox runs main", Duration::from_secs(30), || {
        let p = env.pod(&name)?;
        (p.pause_pid? != first.pause()).then_some(())?;
        let c = p.containers.get("main")?;
        (c.exit.is_none() && c.pid.is_some_and(alive)).then_some(())
    });
    assert!(!alive(first.pause()));
    let old_sandbox = again.sandbox_dir.expect("sandbox");
    assert!(old_sandbox.is_dir(), "the stopped sandbox holds the last attempt");
}

/// The runtime's store is the one CRI view of a static pod too, and it is not read from disk
/// on a list: its watcher records a container's exit before the CONTAINER_STOPPED event goes
/// out, so a client that lists on the event sees the container EXITED with its code.
#[test]
fn a_static_pods_exit_is_listed_by_the_time_its_event_arrives() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let (env, _agent, pod) = keeper("cri-static-exit");
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let main = listed_container(&mut c, "the static pod's container", |x| x.pod_sandbox_id.len() == 64).await;
        let mut events = container_events(&mut c).await;
        // Killed as the kernel would kill it: nothing of the agent's is in the path.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pod.pid("main")), nix::sys::signal::SIGKILL)
            .expect("kill the container's process");
        minilet_e2e::grpc::next_event(&mut events, |e| {
            e.container_id == main.id && e.container_event_type == cri::ContainerEventType::ContainerStoppedEvent as i32
        })
        .await;
        let listed = c
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    id: main.id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .expect("ListContainers")
            .into_inner()
            .containers;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].state, cri::ContainerState::ContainerExited as i32);
        let status = c
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: main.id.clone(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status");
        assert_eq!(
            (status.state, status.exit_code),
            (cri::ContainerState::ContainerExited as i32, 137)
        );
        // The kubelet's labels, as its worker gave them.
        assert_eq!(status.labels["io.kubernetes.container.name"], "main");
        assert_eq!(status.labels["io.kubernetes.pod.uid"], pod.uid);
    });
}
