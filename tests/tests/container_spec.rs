//! What a container sees: command/args, env and `$(VAR)`, the downward API, user, working
//! directory, capabilities, read-only root, volumes, init containers, generated /etc files,
//! its own /proc and a minimal /dev. The container reports from the inside (its log); the
//! test compares with what Kubernetes specifies.

use std::collections::BTreeMap;
use std::time::Duration;

use minilet_e2e::*;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: spec
  labels: {tier: test}
spec:
  restartPolicy: Never
  hostname: spechost
  securityContext:
    supplementalGroups: [4242]
  volumes:
  - {name: shared, emptyDir: {}}
  - {name: host, hostPath: {path: HOSTDIR, type: Directory}}
  initContainers:
  - name: prepare
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo prepared-by-init > /shared/note"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: report
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    workingDir: /work/dir
    env:
    - {name: GREETING, value: hello}
    - {name: MESSAGE, value: "$(GREETING) world"}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
    - {name: MEM_LIMIT_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    command: ["sh", "-c"]
    args:
    - |
      echo "arg0=$0 arg1=$1"
      echo "message=$MESSAGE"
      echo "pod=$POD_NAME tier=$TIER mem=$MEM_LIMIT_MI"
      echo "hostname_env=$HOSTNAME"
      echo "uid=`id -u` gid=`id -g` groups=`id -G`"
      echo "pwd=`pwd`"
      echo "home=$HOME"
      echo "note=`cat /shared/note`"
      echo "hostfile=`cat /host/file.txt`"
      echo "hostname=`cat /etc/hostname` uname=`uname -n`"
      grep -q spechost /etc/hosts && echo "hosts=ok"
      [ -c /dev/null ] && [ -c /dev/urandom ] && [ -e /dev/ptmx ] && [ -d /dev/shm ] && echo "dev=ok"
      echo "pid1=`cat /proc/1/cmdline | tr '\0' ' '`"
      touch /sys/x 2>/dev/null || echo "sys=ro"
      touch /probe 2>/dev/null || echo "root=ro"
      echo "capbnd=`grep CapBnd /proc/self/status | awk '{print $2}'`"
      echo "fds=`ls /proc/self/fd | tr '\n' ,`"
    - "$(GREETING)-arg"
    resources:
      limits: {memory: 48Mi}
    securityContext:
      runAsUser: 65534
      runAsGroup: 65534
      readOnlyRootFilesystem: true
    volumeMounts:
    - {name: shared, mountPath: /shared, readOnly: true}
    - {name: host, mountPath: /host}
"#;

#[test]
fn what_a_container_sees() {
    if !is_root() {
        return;
    }
    let env = Env::new("spec");
    env.import_image("busybox");
    let host_dir = env.dir.join("hostdir");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("file.txt"), "from-the-host").unwrap();
    // A descriptor the agent inherits without close-on-exec (as from a careless parent) must
    // not reach the container.
    let devnull = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: dup2 onto a descriptor number this test owns from here on (closed below).
    let leaked = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), 237) };
    assert_eq!(leaked, 237);
    let _agent = Agent::start(&env, &[]);
    // SAFETY: closing the descriptor dup2 made above, used nowhere else.
    unsafe { libc::close(leaked) };
    env.write_manifest("spec.yaml", &POD.replace("HOSTDIR", &host_dir.display().to_string()));

    let pod = wait_for("the report container to finish", Duration::from_secs(30), || {
        env.pod(&static_pod_name("spec"))
            .filter(|p| p.containers.get("report").is_some_and(|c| c.exit.is_some()))
    });
    let init = &pod.containers["prepare"];
    assert_eq!(init.exit.as_ref().unwrap()["exit_code"], 0, "init container succeeded");
    let report = &pod.containers["report"];
    assert!(
        init.exit.as_ref().unwrap()["finished_at"].as_i64() <= report.started_at,
        "the init container finished before the app container started"
    );
    let log = std::fs::read_to_string(&report.log_path).unwrap();
    // `key=value` words; the first occurrence wins (the pid1 line echoes the script itself).
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    for content in log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)) {
        for (k, v) in content.split(' ').filter_map(|w| w.split_once('=')) {
            kv.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    let get = |k: &str| {
        kv.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{k} missing in:\n{log}"))
    };
    assert_eq!(report.exit.as_ref().unwrap()["exit_code"], 0, "{log}");

    // args after `sh -c script` become $0, $1...: "$(GREETING)-arg" expanded by Kubernetes rules.
    assert_eq!(get("arg0"), "hello-arg");
    assert_eq!(get("arg1"), "", "only $0 is set");
    assert!(log.contains("message=hello world"), "{log}");
    assert_eq!(get("pod"), static_pod_name("spec"));
    assert_eq!(get("tier"), "test");
    assert_eq!(get("mem"), "48");
    assert_eq!(get("hostname_env"), "spechost");
    assert_eq!(get("uid"), "65534");
    assert_eq!(get("gid"), "65534");
    assert!(
        log.contains("groups=65534 4242") || log.contains("groups=4242 65534"),
        "{log}"
    );
    assert_eq!(get("pwd"), "/work/dir", "workingDir is created if the image lacks it");
    assert_eq!(get("home"), "/home", "HOME from the image's passwd entry for nobody");
    assert_eq!(get("note"), "prepared-by-init");
    assert_eq!(get("hostfile"), "from-the-host");
    assert_eq!(get("hostname"), "spechost");
    assert_eq!(get("uname"), "spechost");
    assert_eq!(get("hosts"), "ok");
    assert_eq!(get("dev"), "ok");
    assert_eq!(get("sys"), "ro");
    assert_eq!(get("root"), "ro");
    assert!(
        log.contains("pid1=sh -c"),
        "the container is PID 1 of its own PID namespace: {log}"
    );
    // Default capabilities only (containerd's 14), not CAP_SYS_ADMIN (bit 21).
    let capbnd = u64::from_str_radix(get("capbnd"), 16).unwrap();
    assert_eq!(capbnd & (1 << 21), 0, "no CAP_SYS_ADMIN: {capbnd:x}");
    assert_eq!(capbnd.count_ones(), 14, "{capbnd:x}");
    // stdio, and `ls`'s own directory handle: nothing inherited.
    assert_eq!(get("fds"), "0,1,2,3,", "{log}");
}

#[test]
fn a_container_that_cannot_start_reports_why() {
    if !is_root() {
        return;
    }
    let env = Env::new("starterr");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [no-such-binary]\n",
    );
    let pod = wait_for("a StartError", Duration::from_secs(30), || {
        env.pod(&static_pod_name("bad"))
            .filter(|p| p.containers.get("c").is_some_and(|c| c.exit.is_some()))
    });
    let exit = pod.containers["c"].exit.clone().unwrap();
    assert_eq!(exit["reason"], "StartError", "{exit}");
    assert_eq!(exit["exit_code"], 128);
    assert!(
        exit["message"]
            .as_str()
            .unwrap()
            .contains("\"no-such-binary\": executable file not found in $PATH"),
        "{exit}"
    );
}

#[test]
fn a_static_pods_pause_runs_as_the_pods_user() {
    if !is_root() {
        return;
    }
    let env = Env::new("pauseuser");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "u.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: u}\nspec:\n  shareProcessNamespace: true\n  securityContext: {runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000], fsGroup: 2000}\n  containers:\n  - name: c\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '1000']\n",
    );
    let pod = env.wait_running(&static_pod_name("u"), &["c"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pod.pause())).unwrap();
    let field = |name: &str| -> Vec<u32> {
        let mut ids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(field("Uid:"), [1000; 4], "{status}");
    assert_eq!(field("Gid:"), [3000; 4], "{status}");
    assert_eq!(
        field("Groups:"),
        [2000, 4000],
        "supplemental groups and fsGroup: {status}"
    );
    // The kubelet asks for the runtime's default seccomp profile for every sandbox.
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    // The container joined the pod's PID namespace owned by that pause.
    assert_eq!(ns(pod.pid("c"), "pid"), ns(pod.pause(), "pid"));
}

#[test]
fn dollar_references_in_the_images_cmd_stay_literal() {
    if !is_root() {
        return;
    }
    let env = Env::new("literal");
    env.import_image("busybox");
    // busybox with `Cmd: [echo, image-cmd=$(X)]`: the kubelet expands the pod's command and
    // args only, never what the image says.
    let mut layout = minilet_e2e::oci::Layout::from(&workspace().join("hack/.images/busybox"), &env.dir.join("layout"));
    let base = layout.base_manifest();
    let desc = layout.image_with_cmd(&base, minilet_e2e::oci::host_arch(), &["echo", "image-cmd=$(X)"]);
    layout.tag(&desc, "literal");
    let out = std::process::Command::new(minilet())
        .args(["image", "import"])
        .arg(&layout.dir)
        .args(["--name", "localhost/literal:latest", "--root"])
        .arg(&env.root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "lit.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lit}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: image\n    image: localhost/literal:latest\n    imagePullPolicy: IfNotPresent\n    env: [{name: X, value: expanded}]\n  - name: pod\n    image: localhost/literal:latest\n    imagePullPolicy: IfNotPresent\n    args: [echo, 'pod-args=$(X)']\n    env: [{name: X, value: expanded}]\n",
    );
    let pod = wait_for("both containers to finish", Duration::from_secs(30), || {
        env.pod(&static_pod_name("lit")).filter(|p| {
            ["image", "pod"]
                .iter()
                .all(|c| p.containers.get(*c).is_some_and(|c| c.exit.is_some()))
        })
    });
    let output = |name: &str| -> String {
        let log = std::fs::read_to_string(&pod.containers[name].log_path).unwrap();
        log.lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(output("image"), "image-cmd=$(X)", "the image's Cmd as it is");
    assert_eq!(output("pod"), "pod-args=expanded", "the pod's args expanded");
}

/// runAsGroup without runAsUser, as the kubelet and containerd treat it: on a container, the
/// image's user (busybox has none: root) with that group; on the pod, no sandbox at all
/// (the kubelet sends the group alone for the sandbox, which the runtime refuses), retried.
#[test]
fn run_as_group_without_run_as_user() {
    if !is_root() {
        return;
    }
    let env = Env::new("runasgroup");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let manifest = |name: &str, pod_sc: &str, container_sc: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  securityContext: {pod_sc}\n  containers:\n  - name: c\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '1000']\n    securityContext: {container_sc}\n"
        )
    };
    env.write_manifest("gc.yaml", &manifest("gc", "{}", "{runAsGroup: 3000}"));
    env.write_manifest("gp.yaml", &manifest("gp", "{runAsGroup: 3000}", "{}"));

    let pod = env.wait_running(&static_pod_name("gc"), &["c"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pod.pid("c"))).expect("container status");
    let ids = |name: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(ids("Uid:"), ["0"; 4], "the image's user (none: root): {status}");
    assert_eq!(ids("Gid:"), ["3000"; 4], "runAsGroup: {status}");

    let gp = static_pod_name("gp");
    let message = wait_pod_event(
        &env,
        &gp,
        "FailedCreatePodSandBox",
        "spec.securityContext.runAsGroup (3000)",
    );
    assert!(
        message.starts_with("Failed to create pod sandbox: ")
            && message.contains("without spec.securityContext.runAsUser"),
        "{message}"
    );
    // Retried with back-off, as the kubelet retries, and never half made.
    wait_for("a second failed attempt", Duration::from_secs(30), || {
        pod_events(&env, &gp)
            .into_iter()
            .find(|(_, reason, _, count)| reason == "FailedCreatePodSandBox" && *count >= 2)
    });
    let view = env.pod(&gp).expect("gp's state");
    assert!(
        view.pause_pid.is_none() && view.containers.is_empty(),
        "no pause, no container: {:?}",
        view.containers.keys()
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&env, &["get", "pod", &gp, "-o", "json"])).expect("pod JSON");
    assert_eq!(json["status"]["phase"], "Pending", "{json}");

    env.remove_manifest("gp.yaml");
    env.remove_manifest("gc.yaml");
    wait_pod_removed(&env, &gp);
    wait_pod_removed(&env, &static_pod_name("gc"));
}
