//! seccomp, AppArmor and user namespaces: what the kernel says a container process is
//! confined by (`Seccomp:` and `Seccomp_filters:` in /proc/<pid>/status), what the filter
//! denies from inside, and the pods the node refuses (never run unconfined instead).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use minilet_e2e::*;
use minilet_proto::runtime::v1 as cri;

const FAST_BACKOFF: &[&str] = &["--backoff-initial", "500ms", "--backoff-max", "1s"];

/// Each check prints `name=<exit status>:<error text>`; then the container stays up.
/// `unshare -U` needs no capability, so without a filter it works in any container; the
/// default profile allows unshare(2) only with CAP_SYS_ADMIN.
const SCRIPT: &str = r#"
try() { name=$1; shift; "$@" >/dev/null 2>/tmp/err; echo "$name=$?:$(tr ' ' _ < /tmp/err)"; }
try userns unshare -U true
try mkdir mkdir /tmp/made
try touch touch /tmp/touched
try ls ls /
try linux32 linux32 true
echo checks=done
exec sleep 3600
"#;

/// A one-container pod running SCRIPT; `sc` is the container's securityContext (flow YAML).
fn pod(name: &str, pod_sc: &str, sc: &str) -> String {
    let script = SCRIPT.replace('\n', "\n      ");
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  securityContext: {pod_sc}\n  containers:\n  - name: c\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    securityContext: {sc}\n    command: [sh, -c]\n    args:\n    - |{script}\n"
    )
}

/// The kernel's seccomp fields of a process: (`Seccomp`, `Seccomp_filters`, `NoNewPrivs`).
fn seccomp_status(pid: i32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {k} in /proc/{pid}/status"))
    };
    (field("Seccomp"), field("Seccomp_filters"), field("NoNewPrivs"))
}

/// The container's check results, once it printed them all, and its process.
fn checks(env: &Env, name: &str) -> (BTreeMap<String, (i32, String)>, i32) {
    let view = env.wait_running(name, &["c"]);
    let c = view.containers["c"].clone();
    let log = wait_for(&format!("{name}: checks done"), Duration::from_secs(30), || {
        std::fs::read_to_string(&c.log_path)
            .ok()
            .filter(|l| l.contains("checks=done"))
    });
    let mut out = BTreeMap::new();
    for content in log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)) {
        if let Some((k, rest)) = content.split_once('=')
            && let Some((status, err)) = rest.split_once(':')
            && let Ok(status) = status.parse()
        {
            out.insert(k.to_string(), (status, err.replace('_', " ")));
        }
    }
    (out, c.pid.expect("container pid"))
}

fn assert_ordinary_commands_work(name: &str, r: &BTreeMap<String, (i32, String)>) {
    for k in ["mkdir", "touch", "ls", "linux32"] {
        assert_eq!(r.get(k).map(|v| v.0), Some(0), "{name}: {k} failed: {r:?}");
    }
}

fn pod_json(env: &Env, name: &str) -> Option<Pod> {
    serde_json::from_slice(&cli(env, &["get", "pod", name, "-o", "json"]).stdout).ok()
}

/// Events (reason, message) about `object` (a pod name, or a manifest path for a file).
fn events_of(env: &Env, object: &str) -> Vec<(String, String)> {
    let list: Value = serde_json::from_str(&ok(env, &["get", "events", "-o", "json"])).expect("events JSON");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["involvedObject"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(object))
        })
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("reason"), s("message"))
        })
        .collect()
}

#[test]
fn runtime_default_filters_unconfined_does_not() {
    if !is_root() {
        return;
    }
    let env = Env::new("seccomp-default");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let rd = "{seccompProfile: {type: RuntimeDefault}}";
    env.write_manifest("rd.yaml", &pod("rd", "{}", rd));
    // Pod-level profile, a non-root user, no_new_privs: the filter is loaded last, after setuid.
    env.write_manifest(
        "nnp.yaml",
        &pod(
            "nnp",
            "{seccompProfile: {type: RuntimeDefault}, runAsUser: 1000}",
            "{allowPrivilegeEscalation: false}",
        ),
    );
    env.write_manifest(
        "unconfined.yaml",
        &pod("unconfined", rd, "{seccompProfile: {type: Unconfined}}"),
    );
    env.write_manifest("unset.yaml", &pod("unset", "{}", "{}"));
    // containerd never filters a privileged container.
    env.write_manifest(
        "privileged.yaml",
        &pod(
            "privileged",
            "{}",
            "{privileged: true, seccompProfile: {type: RuntimeDefault}}",
        ),
    );

    let (r, pid) = checks(&env, &static_pod_name("rd"));
    assert_eq!(seccomp_status(pid), ("2".into(), "1".into(), "0".into()));
    let (status, err) = &r["userns"];
    assert_ne!(*status, 0, "unshare -U must be denied by RuntimeDefault: {r:?}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_ordinary_commands_work("rd", &r);
    // A process exec'd into the container gets the container's filter too.
    let exec = ok(
        &env,
        &[
            "exec",
            &static_pod_name("rd"),
            "--",
            "sh",
            "-c",
            "grep -E '^Seccomp(_filters)?:' /proc/self/status; unshare -U true 2>/dev/null; echo unshare=$?",
        ],
    );
    assert!(
        exec.contains("Seccomp:\t2") && exec.contains("Seccomp_filters:\t1"),
        "{exec}"
    );
    assert!(exec.contains("unshare=1"), "{exec}");

    let (r, pid) = checks(&env, &static_pod_name("nnp"));
    assert_eq!(seccomp_status(pid), ("2".into(), "1".into(), "1".into()));
    assert_ne!(r["userns"].0, 0, "{r:?}");
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(uid.lines().any(|l| l.starts_with("Uid:\t1000\t")), "{uid}");
    for k in ["ls", "linux32"] {
        assert_eq!(r[k].0, 0, "nnp: {k}: {r:?}");
    }

    for name in ["unconfined", "unset", "privileged"] {
        let (r, pid) = checks(&env, &static_pod_name(name));
        assert_eq!(seccomp_status(pid).0, "0", "{name}");
        assert_eq!(seccomp_status(pid).1, "0", "{name}");
        // The same call the filter denies works without it: the denial above is the filter's.
        assert_eq!(r["userns"].0, 0, "{name}: {r:?}");
        assert_ordinary_commands_work(name, &r);
    }
}

#[test]
fn seccomp_default_flag_applies_runtime_default_when_unset() {
    if !is_root() {
        return;
    }
    let env = Env::new("seccomp-flag");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &["--seccomp-default"]);
    env.write_manifest("unset.yaml", &pod("unset", "{}", "{}"));
    env.write_manifest(
        "unconfined.yaml",
        &pod("unconfined", "{}", "{seccompProfile: {type: Unconfined}}"),
    );
    let (r, pid) = checks(&env, &static_pod_name("unset"));
    assert_eq!(seccomp_status(pid).0, "2");
    assert_ne!(r["userns"].0, 0, "{r:?}");
    let (r, pid) = checks(&env, &static_pod_name("unconfined"));
    assert_eq!(seccomp_status(pid).0, "0");
    assert_eq!(r["userns"].0, 0, "{r:?}");
}

#[test]
fn localhost_profiles_load_from_the_profile_root_or_fail_the_container() {
    if !is_root() {
        return;
    }
    let env = Env::new("seccomp-local");
    env.import_image("busybox");
    let root = env.dir.join("seccomp");
    std::fs::create_dir_all(root.join("profiles")).expect("profile root");
    std::fs::write(
        root.join("profiles/no-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .expect("write profile");
    std::fs::write(
        root.join("profiles/broken.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscals": []}"#,
    )
    .expect("write profile");
    let root_arg = root.display().to_string();
    let mut args = vec!["--seccomp-profile-root", root_arg.as_str()];
    args.extend_from_slice(FAST_BACKOFF);
    let _agent = Agent::start(&env, &args);
    let local = |p: &str| format!("{{seccompProfile: {{type: Localhost, localhostProfile: '{p}'}}}}");

    env.write_manifest("local.yaml", &pod("local", "{}", &local("profiles/no-mkdir.json")));
    let (r, pid) = checks(&env, &static_pod_name("local"));
    assert_eq!(seccomp_status(pid), ("2".into(), "1".into(), "0".into()));
    assert_eq!(r["mkdir"].0, 1, "{r:?}");
    assert!(r["mkdir"].1.contains("Operation not permitted"), "{r:?}");
    assert_eq!(r["touch"].0, 0, "{r:?}");
    // This profile allows everything else, unshare too.
    assert_eq!(r["userns"].0, 0, "{r:?}");

    // A missing or broken profile: CreateContainerError naming the file; nothing runs.
    env.write_manifest("missing.yaml", &pod("missing", "{}", &local("profiles/later.json")));
    env.write_manifest("broken.yaml", &pod("broken", "{}", &local("profiles/broken.json")));
    for (name, file, problem) in [
        ("missing", "profiles/later.json", "No such file or directory"),
        ("broken", "profiles/broken.json", "unknown field `syscals`"),
    ] {
        let (reason, message) = wait_for(
            &format!("{name}: CreateContainerError"),
            Duration::from_secs(30),
            || {
                let w = pod_json(&env, &static_pod_name(name))?
                    .status?
                    .container_statuses?
                    .into_iter()
                    .next()?
                    .state?
                    .waiting?;
                let reason = w.reason.filter(|r| r == "CreateContainerError")?;
                Some((reason, w.message.unwrap_or_default()))
            },
        );
        assert_eq!(reason, "CreateContainerError");
        let path = root.join(file).display().to_string();
        assert!(
            message.contains(&path) && message.contains(problem),
            "{name}: {message}"
        );
        // The sandbox runs, but no container attempt was ever made.
        let view = env.pod(&static_pod_name(name)).expect("pod state");
        assert!(view.pause_pid.is_some_and(alive), "{name}: sandbox");
        assert!(view.containers.is_empty(), "{name}: a container was created: {view:?}");
        assert!(
            events_of(&env, &static_pod_name(name))
                .iter()
                .any(|(r, m)| r == "Failed" && m.contains(&path)),
            "{name}: {:?}",
            events_of(&env, &static_pod_name(name))
        );
    }
    // The profile appears: the next try starts the container, filtered by it.
    std::fs::copy(root.join("profiles/no-mkdir.json"), root.join("profiles/later.json")).expect("copy profile");
    let (r, pid) = checks(&env, &static_pod_name("missing"));
    assert_eq!(seccomp_status(pid).0, "2");
    assert_eq!(r["mkdir"].0, 1, "{r:?}");

    // A path out of the profile root is an invalid manifest: no pod at all.
    env.write_manifest("escape.yaml", &pod("escape", "{}", &local("../escape.json")));
    let (_, message) = wait_for("InvalidManifest for escape.yaml", Duration::from_secs(30), || {
        events_of(&env, "escape.yaml")
            .into_iter()
            .find(|(r, _)| r == "InvalidManifest")
    });
    assert!(
        message.contains(
            "spec.containers[0].securityContext.seccompProfile.localhostProfile: Invalid value: \"../escape.json\": must not contain '..'"
        ),
        "{message}"
    );
    assert!(env.pod(&static_pod_name("escape")).is_none());
}

#[test]
fn apparmor_and_user_namespace_pods_are_refused() {
    if !is_root() {
        return;
    }
    let env = Env::new("seccomp-refuse");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let apparmor_on =
        std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'));

    env.write_manifest("aa.yaml", &pod("aa", "{}", "{appArmorProfile: {type: RuntimeDefault}}"));
    let annotated = pod("aa-annotated", "{}", "{}").replace(
        "metadata: {name: aa-annotated}",
        "metadata: {name: aa-annotated, annotations: {container.apparmor.security.beta.kubernetes.io/c: runtime/default}}",
    );
    env.write_manifest("aa-annotated.yaml", &annotated);
    env.write_manifest(
        "userns.yaml",
        &pod("userns", "{}", "{}").replace("spec:\n", "spec:\n  hostUsers: false\n"),
    );

    for name in ["aa", "aa-annotated"] {
        let status = wait_for(&format!("{name} rejected"), Duration::from_secs(30), || {
            pod_json(&env, &static_pod_name(name))?
                .status
                .filter(|s| s.phase.as_deref() == Some("Failed"))
        });
        assert_eq!(status.reason.as_deref(), Some("AppArmor"), "{name}");
        let message = status.message.unwrap_or_default();
        assert!(
            message.starts_with("Pod was rejected: Cannot enforce AppArmor: "),
            "{message}"
        );
        if !apparmor_on {
            assert_eq!(
                message,
                "Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host"
            );
        }
        // kubectl's STATUS column shows the reason.
        let table = ok(&env, &["get", "pod", &static_pod_name(name)]);
        assert!(
            table
                .lines()
                .nth(1)
                .is_some_and(|l| l.split_whitespace().nth(2) == Some("AppArmor")),
            "{table}"
        );
        assert!(
            events_of(&env, &static_pod_name(name))
                .iter()
                .any(|(r, m)| r == "AppArmor" && m.starts_with("Cannot enforce AppArmor")),
            "{name}"
        );
        // Nothing was created for it: no state, no pause.
        assert!(env.pod(&static_pod_name(name)).is_none(), "{name} has state");
    }
    // Nor does a CRI client see a sandbox for them (the kubelet never asks the runtime).
    let sandboxes = grpc::rt().block_on(async {
        let mut c = grpc::connect(&env.socket).await;
        c.runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items
    });
    let names: Vec<String> = sandboxes
        .iter()
        .filter_map(|s| Some(s.metadata.as_ref()?.name.clone()))
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("aa")), "{names:?}");

    let (_, message) = wait_for("userns: FailedCreatePodSandBox", Duration::from_secs(30), || {
        events_of(&env, &static_pod_name("userns"))
            .into_iter()
            .find(|(r, _)| r == "FailedCreatePodSandBox")
    });
    assert!(
        message.starts_with("Failed to create pod sandbox: ") && message.contains("does not support user namespaces"),
        "{message}"
    );
    let p = pod_json(&env, &static_pod_name("userns"))
        .and_then(|p| p.status)
        .expect("userns status");
    assert_eq!(p.phase.as_deref(), Some("Pending"));
    assert!(
        env.pod(&static_pod_name("userns"))
            .is_none_or(|v| v.pause_pid.is_none() && v.containers.is_empty())
    );

    // Removing the manifests removes the refused pods.
    for f in ["aa.yaml", "aa-annotated.yaml", "userns.yaml"] {
        env.remove_manifest(f);
    }
    wait_for("refused pods gone", Duration::from_secs(30), || {
        let list = ok(&env, &["get", "pods"]);
        (!list.contains("aa") && !list.contains("userns")).then_some(())
    });
}
