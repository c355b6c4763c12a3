//! The manifests directory drives the pods: edits replace, touches do nothing, editor
//! leftovers are ignored, broken files are reported without disturbing anything, and a
//! removed file leaves nothing behind.

use std::time::Duration;

use minilet_e2e::*;

fn pod_yaml(name: &str, message: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo {message}; exec sleep 3600"]
    resources:
      limits: {{cpu: 100m, memory: 16Mi}}
"#
    )
}

/// Everything of a pod is gone: processes, mounts, cgroups, state, logs.
fn assert_gone(env: &Env, pod: &PodView, pids: &[i32]) {
    wait_for("pod state directory removed", Duration::from_secs(30), || {
        (!pod.dir.exists()).then_some(())
    });
    for &pid in pids {
        assert!(!alive(pid), "process {pid} still alive");
    }
    assert!(
        host_mounts_containing(&pod.uid).is_empty(),
        "mounts left: {:?}",
        host_mounts_containing(&pod.uid)
    );
    assert!(
        env.cgroup_dirs(&pod.cgroup).is_empty(),
        "cgroups left: {:?}",
        env.cgroup_dirs(&pod.cgroup)
    );
    for c in pod.containers.values() {
        assert!(env.cgroup_dirs(&c.cgroup).is_empty(), "container cgroup left");
    }
    assert!(
        !env.pod_log_dir(&static_pod_name("web"), &pod.uid).exists(),
        "pod log directory left"
    );
}

#[test]
fn edit_replaces_touch_does_nothing_leftovers_ignored_remove_cleans_up() {
    if !is_root() {
        return;
    }
    let env = Env::new("manifests");
    env.import_image("busybox");
    let agent = Agent::start(&env, &[]);
    env.write_manifest("web.yaml", &pod_yaml("web", "v1"));
    let first = env.wait_running(&static_pod_name("web"), &["main"]);
    let first_pids = vec![first.pause(), first.pid("main")];
    let mon = first.containers["main"].monitor_pid.unwrap();

    // touch: same content, same pod, nothing restarted.
    let path = env.manifests.join("web.yaml");
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    // Editor leftovers next to it must not become pods.
    std::fs::copy(&path, env.manifests.join("web.yaml.bak")).unwrap();
    std::fs::copy(&path, env.manifests.join(".web.yaml.swp")).unwrap();
    std::fs::copy(&path, env.manifests.join("web.yaml~")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let same = env.pod(&static_pod_name("web")).unwrap();
    assert_eq!(same.uid, first.uid);
    assert_eq!(same.pid("main"), first.pid("main"));
    assert_eq!(
        std::fs::read_dir(env.root.join("pods")).unwrap().count(),
        1,
        "one pod only"
    );

    // A broken second file is reported and disturbs nothing.
    env.write_manifest(
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers: []\n",
    );
    wait_for("the broken manifest is reported", Duration::from_secs(10), || {
        let log = agent.log_text();
        (log.contains("broken.yaml") && log.contains("metadata.name")).then_some(())
    });
    // A broken edit of the running pod's own file keeps the pod of its last good content.
    std::fs::write(&path, "apiVersion: v1\nkind: Pod\nmetadata: {name: web\n").unwrap();
    wait_for("the broken edit is reported", Duration::from_secs(10), || {
        agent.log_text().contains("line").then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        alive(first.pid("main")) && alive(first.pause()),
        "a parse error must not kill the running pod"
    );
    assert_eq!(env.pod(&static_pod_name("web")).unwrap().uid, first.uid);

    // Fixing it with different content replaces the pod: old one gone, new one running.
    env.write_manifest("web.yaml", &pod_yaml("web", "v2"));
    wait_for("a new web pod", Duration::from_secs(30), || {
        env.pod(&static_pod_name("web")).filter(|p| p.uid != first.uid)
    });
    assert_gone(&env, &first, &first_pids);
    assert!(!alive(mon), "the old monitor exited");
    let second = env.wait_running(&static_pod_name("web"), &["main"]);
    assert_ne!(second.pause(), first.pause());
    wait_for("v2 logged", Duration::from_secs(10), || {
        std::fs::read_to_string(&second.containers["main"].log_path)
            .ok()
            .filter(|l| l.contains("v2"))
            .map(|_| ())
    });

    // Removing the file removes the pod and every trace of it.
    let pids = vec![second.pause(), second.pid("main")];
    env.remove_manifest("web.yaml");
    assert_gone(&env, &second, &pids);
}

#[test]
fn a_pod_waits_for_its_image_and_starts_when_it_is_imported() {
    if !is_root() {
        return;
    }
    let env = Env::new("noimage");
    let agent = Agent::start(&env, &[]);
    // imagePullPolicy Never: the image must be imported, and the pod waits for it.
    env.write_manifest("web.yaml", &pod_yaml("web", "hi").replace("IfNotPresent", "Never"));
    // No image yet: the sandbox runs, the container waits (ErrImageNeverPull), nothing crashes.
    wait_for("the pod's sandbox", Duration::from_secs(20), || {
        env.pod(&static_pod_name("web"))
            .and_then(|p| p.pause_pid)
            .filter(|&p| alive(p))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(env.pod(&static_pod_name("web")).unwrap().containers.is_empty());
    wait_for("ErrImageNeverPull reported", Duration::from_secs(10), || {
        agent.log_text().contains("ErrImageNeverPull").then_some(())
    });
    env.import_image("busybox");
    env.wait_running(&static_pod_name("web"), &["main"]);
}

#[test]
fn editor_saves_keep_the_pod_when_the_content_is_the_same() {
    if !is_root() {
        return;
    }
    let env = Env::new("vimsave");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("web.yaml", &pod_yaml("web", "v1"));
    let first = env.wait_running(&static_pod_name("web"), &["main"]);
    let path = env.manifests.join("web.yaml");
    let content = std::fs::read(&path).unwrap();

    // vim's default save: the file is renamed to a backup, then written anew, in pieces.
    std::fs::rename(&path, env.manifests.join("web.yaml~")).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&content[..content.len() / 2]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        f.write_all(&content[content.len() / 2..]).unwrap();
    }
    std::fs::remove_file(env.manifests.join("web.yaml~")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let same = env.pod(&static_pod_name("web")).unwrap();
    assert_eq!(same.uid, first.uid, "same content, same pod");
    assert!(
        alive(first.pid("main")) && alive(first.pause()),
        "the pod was not restarted"
    );
    assert_eq!(same.pid("main"), first.pid("main"));
}

/// The node name goes into every static pod's name: lower-cased as the kubelet lowers
/// `--hostname-override`, and refused at start when it is no DNS subdomain (every pod name
/// would be invalid) before the agent touches anything.
#[test]
fn the_node_name_is_lower_cased_and_an_invalid_one_refused() {
    if !is_root() {
        return;
    }
    let env = Env::new("node-name");
    let out = std::process::Command::new(minilet())
        .args(env.agent_args())
        .args(["--node-name", "bad_node", "--network=none"])
        .output()
        .expect("run minilet agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"node name "bad_node" (--node-name, else the hostname): must be a lowercase RFC 1123 subdomain"#
        ),
        "{err}"
    );
    assert!(
        !env.socket.exists() && !env.root.join("agent.lock").exists(),
        "nothing made"
    );
    assert!(env.cgroup_dirs("").is_empty(), "no cgroup made");

    env.import_image("busybox");
    let _agent = Agent::start(&env, &["--node-name", "Mixed-Case"]);
    env.write_manifest("web.yaml", &pod_yaml("web", "hi"));
    let pod = env.wait_running(&static_pod_name_on("web", "mixed-case"), &["main"]);
    let host = in_container(pod.pid("main"), &["hostname"]);
    assert_eq!(stdout(&host).trim(), "web-mixed-case");
}
