//! The STATUS column of `minilet get pods`, as kubectl's printPod computes it, for every
//! string a manifest can bring about for real: each pod is run and the column watched until
//! it says what kubectl would (the pod's real state, not a constructed status; the unit tests
//! in `cli/printers.rs` cover the combinations a manifest cannot produce on demand, such as
//! `Init:ExitCode:N` for a termination without a reason).

use std::time::Duration;

use minilet_e2e::*;

fn status_column(env: &Env, name: &str) -> Option<String> {
    let o = cli(env, &["get", "pod", name]);
    if !o.status.success() {
        return None;
    }
    stdout(&o)
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(2))
        .map(str::to_string)
}

fn wait_status(env: &Env, name: &str, want: &str) {
    let mut last = None;
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(&format!("STATUS {want} for {name}"), Duration::from_secs(60), || {
            last = status_column(env, name);
            (last.as_deref() == Some(want)).then_some(())
        })
    }));
    if found.is_err() {
        panic!(
            "pod {name}: STATUS never became {want} (last: {last:?})\n{}",
            ok(env, &["get", "pods"])
        );
    }
}

/// A pod with `restart` policy, init containers running `init` commands, app containers
/// running `apps` commands (`sh -c`), and `extra` spec lines (indented by two).
fn pod(name: &str, restart: &str, init: &[&str], apps: &[&str], extra: &str) -> String {
    let container = |prefix: &str, i: usize, cmd: &str| {
        format!(
            "  - name: {prefix}{i}\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, '{cmd}']\n"
        )
    };
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n{extra}"
    );
    if !init.is_empty() {
        y.push_str("  initContainers:\n");
        for (i, c) in init.iter().enumerate() {
            y.push_str(&container("init", i, c));
        }
    }
    y.push_str("  containers:\n");
    for (i, c) in apps.iter().enumerate() {
        y.push_str(&container("app", i, c));
    }
    y
}

#[test]
fn status_strings_as_kubectl_shows_them() {
    if !is_root() {
        return;
    }
    let env = Env::new("status");
    env.import_image("busybox");
    // A back-off long enough to be seen, short enough for the test.
    let _agent = Agent::start(&env, &["--backoff-initial", "10s"]);
    let pods = [
        ("completed", pod("completed", "Never", &[], &["true"], ""), "Completed"),
        ("error", pod("error", "Never", &[], &["exit 1"], ""), "Error"),
        (
            "crash",
            pod("crash", "Always", &[], &["exit 1"], ""),
            "CrashLoopBackOff",
        ),
        (
            "running",
            pod("running", "Always", &[], &["exec sleep 3600"], ""),
            "Running",
        ),
        // One container completed, one runs: the Ready condition is false, so NotReady.
        (
            "notready",
            pod("notready", "Never", &[], &["true", "exec sleep 3600"], ""),
            "NotReady",
        ),
        (
            "init-waiting",
            pod(
                "init-waiting",
                "Always",
                &["exec sleep 3600", "true"],
                &["exec sleep 3600"],
                "",
            ),
            "Init:0/2",
        ),
        (
            "init-second",
            pod(
                "init-second",
                "Always",
                &["true", "exec sleep 3600"],
                &["exec sleep 3600"],
                "",
            ),
            "Init:1/2",
        ),
        (
            "init-error",
            pod("init-error", "Never", &["exit 1"], &["exec sleep 3600"], ""),
            "Init:Error",
        ),
        (
            "init-crash",
            pod("init-crash", "Always", &["exit 1"], &["exec sleep 3600"], ""),
            "Init:CrashLoopBackOff",
        ),
        (
            "oom",
            pod("oom", "Never", &[], &["tail /dev/zero"], "").replace(
                "    command: [sh, -c, 'tail /dev/zero']\n",
                "    command: [tail, /dev/zero]\n    resources:\n      limits: {memory: 24Mi}\n",
            ),
            "OOMKilled",
        ),
        (
            // Nothing listens on port 1 of the loopback: the pull fails at once.
            "pull",
            pod("pull", "Always", &[], &["true"], "").replace("localhost/busybox:latest", "127.0.0.1:1/nope:1"),
            "ErrImagePull|ImagePullBackOff",
        ),
        (
            "big",
            pod("big", "Always", &[], &["true"], "").replace(
                "    imagePullPolicy: IfNotPresent\n",
                "    imagePullPolicy: IfNotPresent\n    resources:\n      requests: {cpu: '1000'}\n",
            ),
            "OutOfcpu",
        ),
    ];
    for (name, yaml, _) in &pods {
        env.write_manifest(&format!("{name}.yaml"), yaml);
    }
    for (name, _, want) in &pods {
        match want.split_once('|') {
            // The first is brief (until the next sync after the failure): either is right.
            Some((a, b)) => wait_for(&format!("{name}: {want}"), Duration::from_secs(60), || {
                let s = status_column(&env, &static_pod_name(name))?;
                (s == a || s == b).then_some(())
            }),
            None => wait_status(&env, &static_pod_name(name), want),
        }
    }

    // While init containers run, the containers not yet created wait as the kubelet says:
    // PodInitializing (the STATUS once the init containers are done and the app is being
    // created; too brief to catch here).
    let p: serde_json::Value = serde_json::from_str(&ok(
        &env,
        &["get", "pod", &static_pod_name("init-waiting"), "-o", "json"],
    ))
    .expect("pod JSON");
    let app = &p["status"]["containerStatuses"][0];
    assert_eq!(app["state"]["waiting"]["reason"], "PodInitializing", "{app}");
    assert_eq!(
        p["status"]["initContainerStatuses"][1]["state"]["waiting"]["reason"], "PodInitializing",
        "{p}"
    );

    // Terminating: the manifest is gone and the container ignores SIGTERM for its grace period.
    let stubborn = pod(
        "stubborn",
        "Always",
        &[],
        &["trap \"\" TERM; while true; do sleep 1; done"],
        "",
    )
    .replace("terminationGracePeriodSeconds: 1", "terminationGracePeriodSeconds: 20");
    env.write_manifest("stubborn.yaml", &stubborn);
    wait_status(&env, &static_pod_name("stubborn"), "Running");
    env.remove_manifest("stubborn.yaml");
    wait_status(&env, &static_pod_name("stubborn"), "Terminating");
}
