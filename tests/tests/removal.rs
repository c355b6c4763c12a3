//! A removed manifest wins over everything in progress: a pod being started stops starting,
//! a pod whose manifest went while no agent ran is never started again, and a pause that
//! dies gets a new sandbox without a bogus container failure.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minilet_e2e::*;

/// Container cgroups (names) under the pod cgroup `rel`, in every hierarchy.
fn child_cgroups(env: &Env, rel: &str) -> BTreeSet<String> {
    env.cgroup_dirs(rel)
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Record every child cgroup of `rel` that ever appears, until stopped.
struct CgroupWatch {
    seen: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CgroupWatch {
    fn start(env: &Env, rel: &str) -> Self {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let dirs: Vec<_> = env.cgroup_dirs(rel);
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                for d in &dirs {
                    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                        if e.path().is_dir() {
                            s.lock().unwrap().insert(e.file_name().to_string_lossy().into_owned());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        CgroupWatch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> BTreeSet<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for CgroupWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn removing_a_manifest_cancels_a_start_in_progress() {
    if !is_root() {
        return;
    }
    const N: usize = 80;
    let env = Env::new("cancel");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: big}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n",
    );
    for i in 0..N {
        yaml.push_str(&format!(
            "  - name: c{i}\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n"
        ));
    }
    env.write_manifest("big.yaml", &yaml);
    // As soon as the pod's cgroup exists, watch every container cgroup that ever appears.
    let pod = wait_for("pod record", Duration::from_secs(30), || {
        env.pod(&static_pod_name("big"))
            .filter(|p| !env.cgroup_dirs(&p.cgroup).is_empty())
    });
    let watch = CgroupWatch::start(&env, &pod.cgroup);
    // Remove the manifest while the containers are being started (sandbox + 3 containers).
    let pod = wait_for("a few containers started", Duration::from_secs(30), || {
        (child_cgroups(&env, &pod.cgroup).len() >= 4)
            .then(|| env.pod(&static_pod_name("big")))
            .flatten()
    });
    env.remove_manifest("big.yaml");
    let at_removal = child_cgroups(&env, &pod.cgroup).len();
    wait_for("the pod is removed", Duration::from_secs(60), || {
        (!pod.dir.exists() && env.cgroup_dirs(&pod.cgroup).is_empty()).then_some(())
    });
    let seen = watch.seen().len();
    drop(watch);
    // At most the container whose start was under way when the order came (and a couple
    // noticed between the removal and our count) may have appeared after it.
    assert!(
        seen <= at_removal + 2 && seen < N,
        "{seen} sandbox/container cgroups appeared in total, {at_removal} at removal: the start went on after the manifest was gone"
    );
    assert!(!alive(pod.pause()), "pause left behind");
}

const SIMPLE: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: gone}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
"#;

#[test]
fn a_pod_whose_manifest_went_while_the_agent_was_down_is_not_started_again() {
    if !is_root() {
        return;
    }
    let env = Env::new("gone-down");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    env.write_manifest("gone.yaml", SIMPLE);
    let pod = env.wait_running(&static_pod_name("gone"), &["main"]);
    agent.kill9();
    // With no agent: the sandbox dies (and its container), and the manifest goes.
    for pid in [pod.pid("main"), pod.pause()] {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    wait_for("pause and container dead", Duration::from_secs(10), || {
        (!alive(pod.pause()) && !alive(pod.pid("main"))).then_some(())
    });
    env.remove_manifest("gone.yaml");
    let before = child_cgroups(&env, &pod.cgroup);
    let watch = CgroupWatch::start(&env, &pod.cgroup);

    let agent2 = Agent::start(&env, &[]);
    wait_for("the pod is removed", Duration::from_secs(30), || {
        (!pod.dir.exists() && env.cgroup_dirs(&pod.cgroup).is_empty()).then_some(())
    });
    let new: Vec<String> = watch.seen().difference(&before).cloned().collect();
    drop(watch);
    assert!(new.is_empty(), "a new sandbox or container was created: {new:?}");
    let log = agent2.log_text();
    assert!(
        !log.contains("sandbox running") && !log.contains("SandboxChanged"),
        "the removed pod was started again:\n{log}"
    );
}

const SHARED: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  terminationGracePeriodSeconds: 1
  shareProcessNamespace: true
  containers:
  - name: a
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
  - name: b
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
"#;

#[test]
fn a_dead_pause_gets_a_new_sandbox_without_a_start_error() {
    if !is_root() {
        return;
    }
    let env = Env::new("pause-death");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("shared.yaml", SHARED);
    let first = env.wait_running(&static_pod_name("shared"), &["a", "b"]);
    // The pause is PID 1 of the shared PID namespace: its death kills both containers.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pause()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let again = wait_for("a new sandbox with both containers", Duration::from_secs(60), || {
        let p = env.pod(&static_pod_name("shared"))?;
        (p.pause_pid? != first.pause()).then_some(())?;
        let p = env.wait_running(&static_pod_name("shared"), &["a", "b"]);
        (p.pause() != first.pause()).then_some(p)
    });
    // The kernel's view: the new containers are in the new pause's PID namespace.
    for c in ["a", "b"] {
        assert_eq!(ns(again.pid(c), "pid"), ns(again.pause(), "pid"));
    }
    // No attempt failed to start: every recorded exit is the kill, none a StartError.
    for (name, attempts) in &again.attempts {
        for a in attempts {
            if let Some(exit) = &a.exit {
                assert_ne!(exit["reason"], "StartError", "{name}: {exit}");
            }
        }
    }
    let events = ok(&env, &["get", "events"]);
    assert!(events.contains("SandboxChanged"), "{events}");
    assert!(!events.contains("StartError") && !events.contains("Failed"), "{events}");
}
