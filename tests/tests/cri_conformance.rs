//! CRI behaviour cri-tools' critest checks, driven over the socket with the generated client
//! and checked against the kernel's view: pod sysctls, and a container's masked and
//! read-only paths, the user identity in ContainerStatus (a user name with run_as_group too),
//! the sandbox's user for its pause, HOSTNAME.

use std::collections::HashMap;
use std::process::Command;

use minilet_e2e::grpc::{Clients, connect, rt};
use minilet_e2e::*;
use minilet_proto::runtime::v1 as cri;

fn sandbox_config(name: &str, linux: cri::LinuxPodSandboxConfig) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "conformance".into(),
            attempt: 0,
        }),
        linux: Some(linux),
        ..Default::default()
    }
}

fn sleeper(name: &str, sc: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: "localhost/busybox:latest".into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "1000".into()],
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run_sandbox(c: &mut Clients, config: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
    c.runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

/// StopPodSandbox, then RemovePodSandbox.
async fn remove_sandbox(c: &mut Clients, sb: String) {
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await
        .expect("StopPodSandbox");
    c.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sb })
        .await
        .expect("RemovePodSandbox");
}

/// The `pid` of a sandbox's pause or of a container, from the verbose status.
fn pid_of(info: &str) -> i32 {
    let v: serde_json::Value = serde_json::from_str(info).expect("verbose info is JSON");
    v["pid"].as_i64().expect("pid") as i32
}

async fn pause_pid(c: &mut Clients, sb: &str) -> i32 {
    let r = c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sb.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    pid_of(&r.info["info"])
}

/// CreateContainer in sandbox `sb`: the new container's ID.
async fn create(c: &mut Clients, sb: &str, config: cri::ContainerConfig) -> Result<String, tonic::Status> {
    c.runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sb.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().container_id)
}

/// Create and start a container, and return its ID and PID.
async fn start(c: &mut Clients, sb: &str, config: cri::ContainerConfig) -> (String, i32) {
    let id = create(c, sb, config).await.expect("CreateContainer");
    c.runtime
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("StartContainer");
    let r = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    (id.clone(), pid_of(&r.info["info"]))
}

async fn exec(c: &mut Clients, id: &str, script: &str) -> (i32, String, String) {
    let r = c
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// A sysctl's value as a process in `pid`'s IPC and network namespaces reads it.
fn sysctl_in(pid: i32, path: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--target={pid}"))
        .args(["--ipc", "--net", "--", "cat", path])
        .output()
        .expect("run nsenter");
    assert!(out.status.success(), "nsenter cat {path}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn host_sysctl(path: &str) -> String {
    std::fs::read_to_string(path).expect("host sysctl").trim().to_string()
}

#[test]
fn pod_sysctls_are_set_in_the_pods_own_namespaces_only() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-sysctl");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let (rmid, msg_max, port_start) = (
        "/proc/sys/kernel/shm_rmid_forced",
        "/proc/sys/fs/mqueue/msg_max",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    );
    let host_before = [rmid, msg_max, port_start].map(host_sysctl);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let sb = run_sandbox(
            &mut c,
            sandbox_config(
                "tuned",
                cri::LinuxPodSandboxConfig {
                    sysctls: HashMap::from([
                        ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
                        ("fs.mqueue.msg_max".to_string(), "100".to_string()),
                        ("net/ipv4/ip_unprivileged_port_start".to_string(), "1".to_string()),
                    ]),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("RunPodSandbox with sysctls");
        let pause = pause_pid(&mut c, &sb).await;
        assert_eq!(sysctl_in(pause, rmid), "1");
        assert_eq!(sysctl_in(pause, msg_max), "100");
        assert_eq!(sysctl_in(pause, port_start), "1");
        let (id, _) = start(&mut c, &sb, sleeper("reader", Default::default())).await;
        let (code, out, err) = exec(&mut c, &id, &format!("cat {rmid} {msg_max} {port_start}")).await;
        assert_eq!((code, out.as_str()), (0, "1\n100\n1\n"), "{err}");

        // Node-wide sysctls, and those of a namespace the pod shares with the host, are
        // refused naming the field; nothing is created for them.
        let before = std::fs::read_dir(env.root.join("sandboxes"))
            .map(|d| d.count())
            .unwrap_or(0);
        let host_ipc = cri::LinuxPodSandboxConfig {
            sysctls: HashMap::from([("kernel.shm_rmid_forced".to_string(), "1".to_string())]),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    ipc: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let node_wide = cri::LinuxPodSandboxConfig {
            sysctls: HashMap::from([("vm.swappiness".to_string(), "1".to_string())]),
            ..Default::default()
        };
        let traversal = cri::LinuxPodSandboxConfig {
            sysctls: HashMap::from([("net/../../vm/swappiness".to_string(), "1".to_string())]),
            ..Default::default()
        };
        for (linux, words) in [
            (host_ipc, "IPC namespace"),
            (node_wide, "not a namespaced sysctl"),
            (traversal, "not a sysctl name"),
        ] {
            let e = run_sandbox(&mut c, sandbox_config("refused", linux)).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(
                e.message().contains("linux.sysctls") && e.message().contains(words),
                "{e:?}"
            );
        }
        let after = std::fs::read_dir(env.root.join("sandboxes"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(before, after, "refused sandboxes leave no directory");
    });
    assert_eq!(
        [rmid, msg_max, port_start].map(host_sysctl),
        host_before,
        "the host's values are untouched"
    );
}

/// Mount points of `pid`'s mount namespace with their per-mount options: (point, options).
fn mounts_of(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .expect("mountinfo")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f.get(4)?.to_string(), f.get(5)?.to_string()))
        })
        .collect()
}

#[test]
fn masked_and_readonly_paths_are_the_clients_when_it_gives_them() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-paths");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let sb = run_sandbox(&mut c, sandbox_config("paths", Default::default()))
            .await
            .expect("RunPodSandbox");

        // The client's lists replace the defaults (containerd's rule).
        let (chosen, pid) = start(
            &mut c,
            &sb,
            sleeper(
                "chosen",
                cri::LinuxContainerSecurityContext {
                    masked_paths: vec!["/root".into(), "/sys/firmware".into(), "/etc/hostname".into()],
                    readonly_paths: vec!["/tmp".into()],
                    ..Default::default()
                },
            ),
        )
        .await;
        let m = mounts_of(pid);
        let opts = |point: &str| m.iter().find(|(p, _)| p == point).map(|(_, o)| o.clone());
        assert!(opts("/root").is_some_and(|o| o.starts_with("ro")), "{m:?}");
        assert!(opts("/etc/hostname").is_some(), "{m:?}");
        assert!(opts("/tmp").is_some_and(|o| o.starts_with("ro")), "{m:?}");
        assert_eq!(opts("/proc/interrupts"), None, "defaults replaced: {m:?}");
        let (code, _, err) = exec(&mut c, &chosen, "touch /tmp/x").await;
        assert_ne!(code, 0);
        assert!(err.contains("Read-only file system"), "{err}");
        let (code, out, _) = exec(&mut c, &chosen, "ls -A /root /sys/firmware; wc -c < /etc/hostname").await;
        assert_eq!(
            (code, out.split_whitespace().collect::<Vec<_>>()),
            (0, vec!["/root:", "/sys/firmware:", "0"]),
            "masked: empty directories, an empty file"
        );
        let (code, _, err) = exec(&mut c, &chosen, "touch /sys/firmware/x").await;
        assert_ne!(code, 0);
        assert!(err.contains("Read-only file system"), "{err}");
        // The masked directories share one empty tmpfs (one superblock: the same device).
        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let device = |point: &str| {
            info.lines()
                .map(|l| l.split(' ').collect::<Vec<_>>())
                .find(|f| f.get(4) == Some(&point))
                .map(|f| {
                    (
                        f[2].to_string(),
                        f.iter().skip_while(|x| **x != "-").nth(1).map(|t| t.to_string()),
                    )
                })
        };
        let root = device("/root").expect("/root is a mount");
        assert_eq!(root.1.as_deref(), Some("tmpfs"), "{info}");
        assert_eq!(device("/sys/firmware"), Some(root), "{info}");

        // No lists: the runtime's defaults.
        let (_, pid) = start(&mut c, &sb, sleeper("defaults", Default::default())).await;
        let m = mounts_of(pid);
        assert!(m.iter().any(|(p, _)| p == "/proc/interrupts"), "{m:?}");
        assert!(m.iter().any(|(p, o)| p == "/proc/sys" && o.starts_with("ro")), "{m:?}");
        assert!(!m.iter().any(|(p, _)| p == "/root"), "{m:?}");

        // A relative path is refused naming the field.
        let e = create(
            &mut c,
            &sb,
            sleeper(
                "relative",
                cri::LinuxContainerSecurityContext {
                    masked_paths: vec!["proc/kcore".into()],
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("masked_paths"), "{e:?}");
    });
}

/// `mount ARGS...` on the host, which must succeed.
fn host_mount(args: &[&str]) {
    let out = Command::new("mount").args(args).output().expect("run mount");
    assert!(out.status.success(), "mount {args:?}: {out:?}");
}

/// Lazily unmounts everything at and under a test's directory, even when the test fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-R", "-l"]).arg(&self.0).status();
    }
}

fn is_mount_point(pid: &str, path: &std::path::Path) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*path.to_string_lossy()))
}

#[test]
fn host_paths_come_from_the_host_with_their_propagation() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods, mounts under its own directory");
    }
    let env = Env::new("cri-propagation");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    // A shared mount of the test's own, as a kubelet's pod volumes dir would be.
    let src = env.dir.join("src");
    std::fs::create_dir_all(src.join("late")).unwrap();
    std::fs::create_dir_all(src.join("after")).unwrap();
    let s = src.to_str().unwrap();
    host_mount(&["--bind", s, s]);
    let _unmount = Unmount(src.clone());
    host_mount(&["--make-rshared", s]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let sb = run_sandbox(&mut c, sandbox_config("prop", Default::default()))
            .await
            .expect("RunPodSandbox");
        // Mounted on the host after the pod started: containers created now still see it.
        host_mount(&["-t", "tmpfs", "none", src.join("late").to_str().unwrap()]);
        let with_mount = |name: &str, propagation: cri::MountPropagation, readonly: bool| -> cri::ContainerConfig {
            let mut config = sleeper(
                name,
                cri::LinuxContainerSecurityContext {
                    privileged: true,
                    ..Default::default()
                },
            );
            config.mounts = vec![cri::Mount {
                container_path: "/mnt".into(),
                host_path: s.into(),
                readonly,
                propagation: propagation as i32,
                ..Default::default()
            }];
            config
        };

        // Private, read-only: the top is read-only, the host's later tmpfs under it is not
        // (non-recursive read-only, as the CRI's `readonly` is).
        let (ro, _) = start(
            &mut c,
            &sb,
            with_mount("ro", cri::MountPropagation::PropagationPrivate, true),
        )
        .await;
        let (code, _, err) = exec(&mut c, &ro, "touch /mnt/late/x && ! touch /mnt/top 2>/dev/null").await;
        assert_eq!(code, 0, "{err}");
        assert!(src.join("late/x").exists(), "written through to the host's tmpfs");

        // HOST_TO_CONTAINER: a mount made on the host afterwards appears in the container.
        let (slave, slave_pid) = start(
            &mut c,
            &sb,
            with_mount("slave", cri::MountPropagation::PropagationHostToContainer, false),
        )
        .await;
        host_mount(&["-t", "tmpfs", "none", src.join("after").to_str().unwrap()]);
        let seen = std::path::Path::new("/mnt/after");
        assert!(is_mount_point(&slave_pid.to_string(), seen), "host mount propagated in");
        // ... and one made in the container does not reach the host.
        let (code, _, err) = exec(&mut c, &slave, "mkdir -p /mnt/s && mount -t tmpfs none /mnt/s").await;
        assert_eq!(code, 0, "{err}");
        assert!(
            !is_mount_point("self", &src.join("s")),
            "rslave: nothing propagates out"
        );

        // BIDIRECTIONAL: a mount made in the container reaches the host.
        let (shared, _) = start(
            &mut c,
            &sb,
            with_mount("shared", cri::MountPropagation::PropagationBidirectional, false),
        )
        .await;
        let (code, _, err) = exec(&mut c, &shared, "mkdir -p /mnt/b && mount -t tmpfs none /mnt/b").await;
        assert_eq!(code, 0, "{err}");
        assert!(
            is_mount_point("self", &src.join("b")),
            "rshared: propagated out to the host"
        );
        // The private one saw neither later mount.
        let (code, out, _) = exec(&mut c, &ro, "grep -c ' /mnt/\\(after\\|b\\) ' /proc/self/mountinfo").await;
        assert_eq!((code, out.trim()), (1, "0"), "rprivate: nothing propagates in");

        // recursive_read_only: the submounts too, and the runtime says it can.
        let status = c
            .runtime
            .status(cri::StatusRequest { verbose: false })
            .await
            .expect("Status");
        let handlers = status.into_inner().runtime_handlers;
        assert!(
            handlers
                .iter()
                .any(|h| h.name.is_empty() && h.features.is_some_and(|f| f.recursive_read_only_mounts)),
            "{handlers:?}"
        );
        let mut config = with_mount("rro", cri::MountPropagation::PropagationPrivate, true);
        config.mounts[0].recursive_read_only = true;
        let (rro, _) = start(&mut c, &sb, config).await;
        let (code, _, err) = exec(&mut c, &rro, "touch /mnt/late/y").await;
        assert_ne!(code, 0);
        assert!(err.contains("Read-only file system"), "{err}");
        for (propagation, readonly) in [
            (cri::MountPropagation::PropagationHostToContainer, true),
            (cri::MountPropagation::PropagationBidirectional, true),
            (cri::MountPropagation::PropagationPrivate, false),
        ] {
            let mut config = with_mount("bad-rro", propagation, readonly);
            config.mounts[0].recursive_read_only = true;
            let e = create(&mut c, &sb, config).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains("mounts[0].recursive_read_only"), "{e:?}");
        }

        remove_sandbox(&mut c, sb).await;
    });
}

/// The effective uid, gid and the groups of `pid`, read here from /proc.
fn kernel_identity(pid: i32) -> (i64, i64, Vec<i64>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let ids = |name: &str| -> Vec<i64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .expect(name)
            .split_whitespace()
            .map(|v| v.parse().expect("an id"))
            .collect()
    };
    (ids("Uid:")[1], ids("Gid:")[1], ids("Groups:"))
}

async fn container_user(c: &mut Clients, id: &str) -> Option<cri::ContainerUser> {
    c.runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("status")
        .user
}

async fn container_count(c: &mut Clients) -> usize {
    c.runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .len()
}

#[test]
fn container_status_reports_the_users_identity_as_the_kernel_has_it() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-user");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let status = c
            .runtime
            .status(cri::StatusRequest { verbose: false })
            .await
            .expect("Status")
            .into_inner();
        assert!(
            status.features.is_some_and(|f| f.supplemental_groups_policy),
            "the SupplementalGroupsPolicy feature is announced"
        );
        let sb = run_sandbox(&mut c, sandbox_config("who", cri::LinuxPodSandboxConfig::default()))
            .await
            .expect("RunPodSandbox");
        let sc = cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            run_as_group: Some(cri::Int64Value { value: 3000 }),
            supplemental_groups: vec![5000, 4000],
            supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        };
        let (id, pid) = start(&mut c, &sb, sleeper("who", sc)).await;
        let (uid, gid, mut groups) = kernel_identity(pid);
        assert_eq!((uid, gid), (1000, 3000));
        groups.sort();
        assert_eq!(groups, [4000, 5000], "Strict: the pod's groups only");
        let linux = container_user(&mut c, &id)
            .await
            .and_then(|u| u.linux)
            .expect("user of a running container");
        assert_eq!((linux.uid, linux.gid), (uid, gid));
        let mut reported = linux.supplemental_groups.clone();
        reported.sort();
        // What `id -G` shows in the container: its group, then the supplementary ones.
        assert_eq!(reported, [3000, 4000, 5000]);
        let (code, out, _) = exec(&mut c, &id, "id -G").await;
        assert_eq!(code, 0);
        let mut shown: Vec<i64> = out.split_whitespace().map(|g| g.parse().expect("a gid")).collect();
        shown.sort();
        assert_eq!(shown, reported);

        // A user name with a group (containerd's "name:gid"): that user with that group, as
        // the kubelet asks for an image's named user with runAsGroup.
        let named = cri::LinuxContainerSecurityContext {
            run_as_username: "nobody".into(),
            run_as_group: Some(cri::Int64Value { value: 3000 }),
            ..Default::default()
        };
        let (_, named_pid) = start(&mut c, &sb, sleeper("named", named)).await;
        let (uid, gid, _) = kernel_identity(named_pid);
        assert_eq!((uid, gid), (65534, 3000), "busybox's nobody with run_as_group");

        // IDs past Linux's range are refused naming the field, never wrapped (2^32 would be
        // root), and nothing is created for them.
        let before = container_count(&mut c).await;
        for (sc, field) in [
            (
                cri::LinuxContainerSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 1 << 32 }),
                    ..Default::default()
                },
                "run_as_user: 4294967296",
            ),
            (
                cri::LinuxContainerSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 0 }),
                    supplemental_groups: vec![-1],
                    ..Default::default()
                },
                "supplemental_groups[0]: -1",
            ),
        ] {
            let e = create(&mut c, &sb, sleeper("wrapped", sc)).await.expect_err(field);
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(field), "{e:?}");
        }
        assert_eq!(container_count(&mut c).await, before, "no container for a refused user");
        // A user name of digits is an ID: one past the range fails the start, saying so.
        let digits = cri::LinuxContainerSecurityContext {
            run_as_username: "4294967296".into(),
            ..Default::default()
        };
        let created = create(&mut c, &sb, sleeper("digits", digits))
            .await
            .expect("CreateContainer");
        let e = c
            .runtime
            .start_container(cri::StartContainerRequest { container_id: created })
            .await
            .expect_err("a user no ID can be");
        assert!(
            e.message().contains("4294967296 is not a valid user or group ID"),
            "{e:?}"
        );

        // Stopped: no process, no identity to report.
        c.runtime
            .stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .expect("StopContainer");
        assert_eq!(container_user(&mut c, &id).await, None);
        remove_sandbox(&mut c, sb).await;
    });
}

/// `Seccomp:` of `/proc/<pid>/status`: 0 none, 2 a filter.
fn seccomp_mode(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .expect("Seccomp line")
        .trim()
        .to_string()
}

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.to_string()))
                .and_then(|rest| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(pid)
        })
        .collect()
}

#[test]
fn the_pause_runs_as_the_sandboxs_user_and_still_does_its_job() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-pause-user");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    let rmid = "/proc/sys/kernel/shm_rmid_forced";
    let (sb, pause) = rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let linux = cri::LinuxPodSandboxConfig {
            sysctls: HashMap::from([("kernel.shm_rmid_forced".to_string(), "1".to_string())]),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                run_as_group: Some(cri::Int64Value { value: 3000 }),
                supplemental_groups: vec![5000, 4000],
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sb = run_sandbox(&mut c, sandbox_config("nonroot", linux))
            .await
            .expect("RunPodSandbox as a user");
        let pause = pause_pid(&mut c, &sb).await;
        let (uid, gid, mut groups) = kernel_identity(pause);
        groups.sort();
        assert_eq!(
            (uid, gid, groups),
            (1000, 3000, vec![4000, 5000]),
            "the pause's identity"
        );
        assert_eq!(seccomp_mode(pause), "2", "the pause is filtered (RuntimeDefault)");
        // Set as root in the pod's namespaces before the pause took its user.
        assert_eq!(sysctl_in(pause, rmid), "1");

        // A root container in the pod's PID namespace: its orphan goes to the pause, which
        // reaps it although it runs as another user.
        let mut config = sleeper("parent", Default::default());
        config.command = vec!["sh".into(), "-c".into(), "(sleep 2 &); exec sleep 1000".into()];
        if let Some(sc) = config.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            sc.namespace_options = Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Pod as i32,
                ..Default::default()
            });
        }
        let (id, pid) = start(&mut c, &sb, config).await;
        let orphan = wait_for(
            "an orphan adopted by the pause",
            std::time::Duration::from_secs(10),
            || children_of(pause).into_iter().find(|p| *p != pid),
        );
        wait_for(
            "the orphan reaped by the pause",
            std::time::Duration::from_secs(15),
            || (!std::path::Path::new(&format!("/proc/{orphan}")).exists()).then_some(()),
        );
        let (code, out, err) = exec(
            &mut c,
            &id,
            "echo kept > /dev/shm/f && cat /dev/shm/f && grep ' /dev/shm ' /proc/mounts",
        )
        .await;
        assert_eq!(code, 0, "{err}");
        assert!(
            out.starts_with("kept\n") && out.contains("tmpfs"),
            "the pod's /dev/shm: {out}"
        );
        (sb, pause)
    });

    agent.kill9();
    assert!(alive(pause), "the pause outlives the agent");
    let _agent = Agent::start(&env, &[]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let st = c
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sb.clone(),
                verbose: false,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner()
            .status
            .expect("status");
        assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
        assert_eq!(pause_pid(&mut c, &sb).await, pause, "the same pause, re-adopted");
        assert_eq!(kernel_identity(pause).0, 1000);
        remove_sandbox(&mut c, sb).await;
        assert!(!alive(pause), "the pause is stopped with its sandbox");
    });
}

#[test]
fn sandbox_security_fields_the_pause_cannot_take_are_refused_and_leave_nothing() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-pause-refused");
    let _agent = Agent::start(&env, &[]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        for (sc, field) in [
            (
                cri::LinuxSandboxSecurityContext {
                    readonly_rootfs: true,
                    ..Default::default()
                },
                "linux.security_context.readonly_rootfs",
            ),
            (
                cri::LinuxSandboxSecurityContext {
                    run_as_group: Some(cri::Int64Value { value: 3000 }),
                    ..Default::default()
                },
                "linux.security_context.run_as_group",
            ),
        ] {
            let linux = cri::LinuxPodSandboxConfig {
                security_context: Some(sc),
                ..Default::default()
            };
            let e = run_sandbox(&mut c, sandbox_config("refused", linux))
                .await
                .expect_err("refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(field), "{e:?}");
        }
        let left = std::fs::read_dir(env.root.join("sandboxes"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "nothing is made for a refused sandbox");
    });
}

/// The environment of `pid`, as the kernel holds it.
fn environ(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn containers_get_the_sandboxs_hostname_in_their_environment() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-hostname-env");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let mut config = sandbox_config("named", cri::LinuxPodSandboxConfig::default());
        config.hostname = "envhost".into();
        let sb = run_sandbox(&mut c, config).await.expect("RunPodSandbox");
        let (_, pid) = start(&mut c, &sb, sleeper("plain", Default::default())).await;
        let vars = environ(pid);
        assert_eq!(
            vars.iter().filter(|v| v.starts_with("HOSTNAME=")).collect::<Vec<_>>(),
            ["HOSTNAME=envhost"],
            "{vars:?}"
        );
        // A HOSTNAME the client sets wins, as with containerd.
        let mut own = sleeper("own", Default::default());
        own.envs = vec![cri::KeyValue {
            key: "HOSTNAME".into(),
            value: "mine".into(),
        }];
        let (_, pid) = start(&mut c, &sb, own).await;
        let vars = environ(pid);
        assert_eq!(
            vars.iter().filter(|v| v.starts_with("HOSTNAME=")).collect::<Vec<_>>(),
            ["HOSTNAME=mine"],
            "{vars:?}"
        );
        remove_sandbox(&mut c, sb).await;
    });
}

/// minilet's `minilet.dev/memory-volumes` sandbox annotation (a static pod's memory-backed
/// emptyDirs as its generated config names them): a tmpfs inside the pod only, with the
/// size and group asked for, shared by the pod's containers, never on the host.
#[test]
fn memory_volumes_are_a_tmpfs_inside_the_pod_only() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-memory-volume");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let vol = env.root.join("pods/uid-mem/volumes/kubernetes.io~empty-dir/cache");
    std::fs::create_dir_all(&vol).unwrap();
    let annotation = |path: &std::path::Path| {
        HashMap::from([(
            "minilet.dev/memory-volumes".to_string(),
            format!(
                r#"[{{"path": "{}", "sizeBytes": 1048576, "gid": 2000}}]"#,
                path.display()
            ),
        )])
    };
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        // Only under the agent's pod directories: elsewhere is refused, and nothing is made.
        let outside = env.dir.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let e = run_sandbox(
            &mut c,
            cri::PodSandboxConfig {
                annotations: annotation(&outside),
                ..sandbox_config("mem-outside", Default::default())
            },
        )
        .await
        .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("minilet.dev/memory-volumes") && e.message().contains("pod directories"),
            "{e:?}"
        );
        let left = std::fs::read_dir(env.root.join("sandboxes"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "nothing is made for a refused sandbox");

        let sb = run_sandbox(
            &mut c,
            cri::PodSandboxConfig {
                annotations: annotation(&vol),
                ..sandbox_config("mem", Default::default())
            },
        )
        .await
        .expect("RunPodSandbox");
        let with_volume = |name: &str| {
            let mut config = sleeper(name, Default::default());
            config.mounts = vec![cri::Mount {
                container_path: "/cache".into(),
                host_path: vol.display().to_string(),
                ..Default::default()
            }];
            config
        };
        let (writer, pid) = start(&mut c, &sb, with_volume("writer")).await;
        let m = mounts_of(pid);
        let opts = m.iter().find(|(p, _)| p == "/cache").map(|(_, o)| o.clone());
        assert!(opts.is_some_and(|o| o.starts_with("rw")), "{m:?}");
        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/cache"))
            .expect("/cache is a mount point");
        assert!(line.contains(" - tmpfs ") && line.contains("size=1024k"), "{line}");
        let (code, out, err) = exec(&mut c, &writer, "stat -c '%g %a' /cache && echo hi > /cache/x").await;
        assert_eq!((code, out.trim()), (0, "2000 2777"), "{err}");

        // The pod's other containers share it; the host never sees it.
        let (reader, _) = start(&mut c, &sb, with_volume("reader")).await;
        let (code, out, _) = exec(&mut c, &reader, "cat /cache/x").await;
        assert_eq!((code, out.trim()), (0, "hi"));
        assert_eq!(
            std::fs::read_dir(&vol).unwrap().count(),
            0,
            "nothing written on the host's disk"
        );
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !host.contains(&*vol.to_string_lossy()),
            "the tmpfs is not in the host's mount namespace"
        );
        remove_sandbox(&mut c, sb).await;
    });
}

/// When a container's process exits, what it left in its cgroup (a child in the pod's PID
/// namespace, which the pause adopted) dies and the container's cgroup goes, as runc's delete
/// does once containerd sees the exit: by the time its CONTAINER_STOPPED event arrives.
#[test]
fn an_exited_containers_leftovers_and_cgroup_are_gone_by_its_stopped_event() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-exit-leftovers");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let shared = cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sb = run_sandbox(&mut c, sandbox_config("leftovers", shared))
            .await
            .expect("RunPodSandbox");
        let pause = pause_pid(&mut c, &sb).await;
        let mut events = minilet_e2e::grpc::container_events(&mut c).await;
        // The parent leaves a child to the pause, and exits when the test says so.
        let mut config = sleeper("parent", Default::default());
        config.command = vec![
            "sh".into(),
            "-c".into(),
            "(sleep 1000 &); while [ ! -e /tmp/go ]; do sleep 0.05; done".into(),
        ];
        let (id, _) = start(&mut c, &sb, config).await;
        let (_, info) = minilet_e2e::grpc::container_status(&mut c, &id).await;
        let dirs: Vec<String> = serde_json::from_value(info["cgroupDirs"].clone()).expect("cgroupDirs");
        assert!(
            !dirs.is_empty() && dirs.iter().all(|d| std::path::Path::new(d).is_dir()),
            "{dirs:?}"
        );
        let orphan = wait_for(
            "the child adopted by the pause",
            std::time::Duration::from_secs(10),
            || children_of(pause).into_iter().next(),
        );
        let (code, _, err) = exec(&mut c, &id, "touch /tmp/go").await;
        assert_eq!(code, 0, "{err}");
        minilet_e2e::grpc::next_event(&mut events, |e| {
            e.container_id == id && e.container_event_type == cri::ContainerEventType::ContainerStoppedEvent as i32
        })
        .await;
        // By now: the orphan is killed (a zombie until the pause reaps it, or gone) and the
        // container's cgroup removed, in every hierarchy.
        let state = std::fs::read_to_string(format!("/proc/{orphan}/stat")).unwrap_or_default();
        let state = state
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string));
        assert!(
            matches!(state.as_deref(), None | Some("Z")),
            "the orphan {orphan} still runs: {state:?}"
        );
        for d in &dirs {
            assert!(!std::path::Path::new(d).exists(), "{d} is still there");
        }
        remove_sandbox(&mut c, sb).await;
    });
}

/// A sandbox whose pause dies is reported as containerd reports it: a CONTAINER_STOPPED
/// event that names the sandbox, with its status NOTREADY by then.
#[test]
fn a_dead_pause_is_a_stopped_event_naming_the_sandbox() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("cri-pause-event");
    let _agent = Agent::start(&env, &[]);
    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let sb = run_sandbox(&mut c, sandbox_config("dies", Default::default()))
            .await
            .expect("RunPodSandbox");
        let pause = pause_pid(&mut c, &sb).await;
        let mut events = minilet_e2e::grpc::container_events(&mut c).await;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pause), nix::sys::signal::Signal::SIGKILL)
            .expect("kill the pause");
        let event = minilet_e2e::grpc::next_event(&mut events, |e| e.container_id == sb).await;
        assert_eq!(
            event.container_event_type,
            cri::ContainerEventType::ContainerStoppedEvent as i32
        );
        let status = event.pod_sandbox_status.expect("the sandbox's status");
        assert_eq!(status.id, sb);
        assert_eq!(status.state, cri::PodSandboxState::SandboxNotready as i32);
        assert_eq!(status.metadata.map(|m| m.uid).as_deref(), Some("uid-dies"));
        remove_sandbox(&mut c, sb).await;
    });
}
