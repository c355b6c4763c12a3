//! The agent can die (SIGKILL) and come back without losing a pod, a log line or an exit
//! code, and without duplicating anything; changes made while it was down are applied.

use std::time::Duration;

use minilet_e2e::*;

const COUNTER: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: counter}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: count
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done"]
"#;

#[test]
fn sigkill_and_restart_readopts_everything() {
    if !is_root() {
        return;
    }
    let env = Env::new("restart");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    env.write_manifest("counter.yaml", COUNTER);
    env.write_manifest("stay.yaml", &sleeper_pod("stay"));
    env.write_manifest("gone.yaml", &sleeper_pod("gone"));
    env.write_manifest("edited.yaml", &sleeper_pod("edited"));
    let counter = env.wait_running(&static_pod_name("counter"), &["count"]);
    let stay = env.wait_running(&static_pod_name("stay"), &["main"]);
    let gone = env.wait_running(&static_pod_name("gone"), &["main"]);
    let edited = env.wait_running(&static_pod_name("edited"), &["main"]);

    agent.kill9();
    // While no agent runs: pods keep running, logs keep flowing, manifests change.
    let log_path = counter.containers["count"].log_path.clone();
    let lines_before = std::fs::read_to_string(&log_path).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(800));
    let lines_during = std::fs::read_to_string(&log_path).unwrap().lines().count();
    assert!(
        lines_during > lines_before + 5,
        "the monitor keeps logging without an agent ({lines_before} -> {lines_during})"
    );
    assert!(alive(counter.pause()) && alive(counter.pid("count")));
    env.remove_manifest("gone.yaml");
    env.write_manifest("edited.yaml", &sleeper_pod("edited").replace("3600", "3601"));

    let agent2 = Agent::start(&env, &[]);
    // Same processes, not new ones.
    let again = env.wait_running(&static_pod_name("counter"), &["count"]);
    assert_eq!(again.pause(), counter.pause());
    assert_eq!(again.pid("count"), counter.pid("count"));
    assert_eq!(again.containers["count"].id, counter.containers["count"].id);
    assert_eq!(again.containers["count"].attempt, 0, "not restarted");
    let s = env.wait_running(&static_pod_name("stay"), &["main"]);
    assert_eq!((s.pause(), s.pid("main")), (stay.pause(), stay.pid("main")));
    // No duplicates: in the pod's cgroup there is the one pause and the one container
    // process, plus only that process's own children (the loop's `sleep`).
    let mut procs: Vec<i32> = Vec::new();
    for d in env.cgroup_dirs(&counter.cgroup) {
        collect_procs(&d, &mut procs);
    }
    for pid in procs {
        // A process that has exited since the listing (the loop's `sleep`) is no duplicate;
        // it is asked last, as it may exit while its parents are being read.
        assert!(
            pid == counter.pause() || descends_from(pid, counter.pid("count")) || !alive(pid),
            "unexpected process {pid} in the pod cgroup: {}",
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default()
        );
    }
    let container_cgroups: Vec<_> = env
        .cgroup_dirs(&counter.cgroup)
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    let mut unique = container_cgroups.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        2,
        "one sandbox cgroup and one container cgroup: {unique:?}"
    );

    // Changes made while the agent was down.
    wait_for(
        "the pod whose manifest was removed is cleaned up",
        Duration::from_secs(30),
        || (!gone.dir.exists() && !alive(gone.pause())).then_some(()),
    );
    assert!(!alive(gone.pid("main")));
    wait_for("the edited pod is replaced", Duration::from_secs(30), || {
        env.pod(&static_pod_name("edited")).filter(|p| p.uid != edited.uid)
    });
    // The new pod's record may appear while its predecessor is still being stopped (a slow
    // machine shows it): wait for the old container's end rather than catching it in the act.
    wait_for("the edited pod's old container ends", Duration::from_secs(30), || {
        (!alive(edited.pid("main"))).then_some(())
    });
    env.wait_running(&static_pod_name("edited"), &["main"]);
    wait_for("old edited pod removed", Duration::from_secs(30), || {
        (!edited.dir.exists()).then_some(())
    });
    assert_eq!(
        std::fs::read_dir(env.root.join("pods")).unwrap().count(),
        3,
        "counter, stay, edited: one pod each"
    );

    // The log has every line, including those written while the agent was down: a gapless count.
    let text = std::fs::read_to_string(&log_path).unwrap();
    let numbers: Vec<u64> = text
        .lines()
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(numbers.len() > 20);
    for w in numbers.windows(2) {
        assert_eq!(w[1], w[0] + 1, "log lines lost between {} and {}", w[0], w[1]);
    }
    assert!(!agent2.log_text().contains("panicked"));
}

/// Whether `pid`'s chain of parents reaches `ancestor`.
fn descends_from(mut pid: i32, ancestor: i32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok() else {
            return false;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            return false;
        };
        if ppid <= 1 {
            return false;
        }
        pid = ppid;
    }
    false
}

fn collect_procs(dir: &std::path::Path, out: &mut Vec<i32>) {
    if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            collect_procs(&e.path(), out);
        }
    }
}

/// Agents before static pods were named `<name>-<node>` left pods under the manifest's bare
/// name (same UID: the hash is over the manifest's pod). Such a pod is replaced, not re-adopted:
/// its hostname, environment and log directory carry the old name.
#[test]
fn a_pod_named_by_an_older_agent_is_replaced_under_its_static_name() {
    if !is_root() {
        return;
    }
    let env = Env::new("restart-rename");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    env.write_manifest("legacy.yaml", &sleeper_pod("legacy"));
    let full = static_pod_name("legacy");
    let old = env.wait_running(&full, &["main"]);
    agent.kill9();

    // Rewrite the state into what an older agent wrote: the bare name in the pod record
    // and in its logs' directory.
    let new_logs = env.pod_log_dir(&full, &old.uid);
    let old_logs = env.pod_log_dir("legacy", &old.uid);
    std::fs::rename(&new_logs, &old_logs).expect("rename the log directory");
    let record_path = old.dir.join("pod.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).expect("pod.json")).expect("pod.json is JSON");
    record["name"] = "legacy".into();
    record["pod"]["metadata"]["name"] = "legacy".into();
    std::fs::write(&record_path, serde_json::to_vec(&record).expect("JSON")).expect("write pod.json");
    for c in old.containers.values() {
        let path = c.dir.join("container.json");
        let text = std::fs::read_to_string(&path).expect("container.json");
        let moved = text.replace(&new_logs.display().to_string(), &old_logs.display().to_string());
        assert_ne!(text, moved, "container.json names the log directory");
        std::fs::write(&path, moved).expect("write container.json");
    }
    assert!(env.pod("legacy").is_some() && env.pod(&full).is_none());

    let agent2 = Agent::start(&env, &[]);
    // The old pod's processes end, then the pod runs again under its new name, same UID.
    wait_for("the old pod's processes end", Duration::from_secs(30), || {
        (!alive(old.pause()) && !alive(old.pid("main"))).then_some(())
    });
    let new = env.wait_running(&full, &["main"]);
    assert_eq!(new.uid, old.uid, "an unchanged manifest keeps its UID");
    assert_ne!(new.pause(), old.pause());
    wait_pod_removed(&env, "legacy");
    wait_for("the old log directory removed", Duration::from_secs(30), || {
        (!old_logs.exists()).then_some(())
    });
    assert!(new_logs.is_dir(), "{} missing", new_logs.display());
    // The kernel's view: the container's hostname is the new name.
    let host = in_container(new.pid("main"), &["hostname"]);
    assert_eq!(stdout(&host).trim(), full);
    assert_eq!(std::fs::read_dir(env.root.join("pods")).unwrap().count(), 1);
    assert!(agent2.log_text().contains("replacing it under its static pod name"));
    assert!(!agent2.log_text().contains("panicked"));
}

/// The static pod's sandbox is the runtime's (`sandboxes/<id>/`, named by the pod's record).
/// Agents before that kept it in the pod's own directory: such a sandbox is replaced (its
/// pause and containers stop, a new sandbox starts), and nothing of the old one stays.
#[test]
fn a_sandbox_kept_by_an_older_agent_is_replaced() {
    if !is_root() {
        return;
    }
    let env = Env::new("restart-legacy-sandbox");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    env.write_manifest("old.yaml", &sleeper_pod("old"));
    let name = static_pod_name("old");
    let old = env.wait_running(&name, &["main"]);
    let sandbox_dir = old.sandbox_dir.clone().expect("the pod's record names its sandbox");
    assert!(sandbox_dir.join("cri-sandbox.pb").is_file(), "a runtime sandbox");
    agent.kill9();

    // What an older agent left: the pause recorded in the pod's directory, no runtime record,
    // the containers in the pod's directory too.
    std::fs::rename(sandbox_dir.join("sandbox.json"), old.dir.join("sandbox.json")).unwrap();
    std::fs::create_dir_all(old.dir.join("containers")).unwrap();
    for c in std::fs::read_dir(sandbox_dir.join("containers")).unwrap().flatten() {
        std::fs::rename(c.path(), old.dir.join("containers").join(c.file_name())).unwrap();
    }
    std::fs::remove_dir_all(&sandbox_dir).unwrap();

    let agent2 = Agent::start(&env, &[]);
    wait_for("the old sandbox's processes end", Duration::from_secs(30), || {
        (!alive(old.pause()) && !alive(old.pid("main"))).then_some(())
    });
    let new = env.wait_running(&name, &["main"]);
    assert_eq!(new.uid, old.uid);
    assert_ne!(new.pause(), old.pause());
    assert!(!old.dir.join("sandbox.json").exists(), "the old record is gone");
    let sandboxes: Vec<_> = std::fs::read_dir(env.root.join("sandboxes"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(sandboxes.len(), 1, "only the new sandbox");
    assert_eq!(Some(sandboxes[0].path()), new.sandbox_dir);
    assert!(agent2.log_text().contains("sandbox of an older agent"));
    assert!(!agent2.log_text().contains("panicked"));
}

/// Containers an older agent kept in the pod's own directory (beside a runtime sandbox),
/// outside the runtime's store, are replaced once when the agent takes the pod over: the
/// running process is stopped (its stop signal, the pod's grace), its cgroup goes, and its
/// container starts again as the sandbox's next attempt, whatever the restart policy; the
/// old attempt stays as the last state (and for `logs --previous`) until it is retired,
/// when its directory goes.
#[test]
fn containers_kept_in_the_pods_directory_by_an_older_agent_are_replaced() {
    if !is_root() {
        return;
    }
    let env = Env::new("restart-legacy-containers");
    env.import_image("busybox");
    let fast = ["--backoff-initial", "200ms", "--backoff-max", "400ms"];
    let mut agent = Agent::start(&env, &fast);
    // `never`: the replacement is not the restart policy's doing. `always`: its next restart
    // retires the old attempt.
    let never = sleeper_pod("never").replace("  containers:", "  restartPolicy: Never\n  containers:");
    env.write_manifest("never.yaml", &never);
    env.write_manifest("always.yaml", &sleeper_pod("always"));
    let names = [static_pod_name("never"), static_pod_name("always")];
    let olds: Vec<PodView> = names.iter().map(|n| env.wait_running(n, &["main"])).collect();
    agent.kill9();

    // What the older agent left: the attempts in the pods' directories, not the runtime's
    // store.
    let mut legacies = Vec::new();
    for old in &olds {
        let first = &old.containers["main"];
        let sandbox_dir = old.sandbox_dir.clone().expect("the pod's record names its sandbox");
        assert_eq!(first.dir.parent(), Some(sandbox_dir.join("containers").as_path()));
        let legacy = old.dir.join("containers").join(&first.id);
        std::fs::create_dir_all(old.dir.join("containers")).unwrap();
        std::fs::rename(&first.dir, &legacy).unwrap();
        std::fs::remove_file(legacy.join("cri-container.pb")).unwrap();
        assert!(alive(first.pid.expect("running")));
        assert!(!env.cgroup_dirs(&first.cgroup).is_empty(), "its cgroup exists");
        legacies.push(legacy);
    }

    let mut agent2 = Agent::start(&env, &fast);
    let mut seconds = Vec::new();
    for (old, name) in olds.iter().zip(&names) {
        let first = &old.containers["main"];
        let second = wait_attempt(&env, name, 1);
        assert!(
            !alive(first.pid.unwrap()),
            "{name}: the older agent's process is stopped"
        );
        let sandbox_dir = old.sandbox_dir.clone().unwrap();
        assert_eq!(
            second.dir.parent(),
            Some(sandbox_dir.join("containers").as_path()),
            "{name}: the next attempt is the sandbox's"
        );
        let left = env.cgroup_dirs(&first.cgroup);
        assert!(left.is_empty(), "{name}: the old attempt's cgroup is gone: {left:?}");
        // Its end is the last state: stopped by SIGTERM, the stop signal (143), or, since its
        // monitor's directory was moved here and it could not write its record, 137 as the
        // agent records a death its monitor did not.
        let out = ok(&env, &["get", "pod", name, "-o", "json"]);
        let pod: serde_json::Value = serde_json::from_str(&out).expect("json");
        let status = &pod["status"]["containerStatuses"][0];
        assert_eq!(status["restartCount"], 1, "{name}: {status}");
        let code = status["lastState"]["terminated"]["exitCode"].as_i64();
        assert!(matches!(code, Some(137 | 143)), "{name}: {status}");
        assert!(status["state"]["running"].is_object(), "{name}: {status}");
        seconds.push(second);
    }
    assert!(legacies.iter().all(|l| l.exists()), "kept as the previous attempts");

    // Taken over again by the next agent: the old attempt stays the previous one, the
    // sandbox's runs on.
    agent2.kill9();
    let agent3 = Agent::start(&env, &fast);
    let again = wait_attempt(&env, &names[0], 1);
    assert_eq!(again.pid, seconds[0].pid, "the sandbox's attempt runs on");
    assert!(legacies[0].exists(), "still the previous attempt");

    // The next attempt retires the old one, directory and all.
    kill9(seconds[1].pid.unwrap());
    wait_attempt(&env, &names[1], 2);
    assert!(!legacies[1].exists(), "the older agent's attempt is retired");
    assert!(seconds[1].dir.exists(), "attempt 1 is now the previous one");
    assert!(!agent3.log_text().contains("panicked"));
    assert!(!agent2.log_text().contains("panicked"));
}

/// Attempt `n` of pod `name`'s container `main`, once it runs.
fn wait_attempt(env: &Env, name: &str, n: u32) -> ContainerView {
    wait_for(&format!("attempt {n} of main runs"), Duration::from_secs(30), || {
        let c = env.pod(name)?.containers.get("main")?.clone();
        (c.attempt == n && c.exit.is_none() && alive(c.pid?)).then_some(c)
    })
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
}

/// A sandbox replaced after its pause died stays, stopped, while it holds the containers'
/// last attempts (their last state and `logs --previous`), also across an agent restart;
/// it goes once no attempt the pod shows lives in it, as the kubelet's garbage collection
/// removes dead sandboxes.
#[test]
fn a_replaced_sandbox_stays_while_it_holds_the_last_attempts() {
    if !is_root() {
        return;
    }
    let env = Env::new("restart-old-sandbox");
    env.import_image("busybox");
    let fast = ["--backoff-initial", "200ms", "--backoff-max", "400ms"];
    let mut agent = Agent::start(&env, &fast);
    env.write_manifest("p.yaml", &sleeper_pod("p"));
    let name = static_pod_name("p");
    let first = env.wait_running(&name, &["main"]);
    let old_sandbox = first.sandbox_dir.clone().expect("sandbox");
    kill9(first.pause());
    let second = wait_for("a new sandbox runs main", Duration::from_secs(30), || {
        let p = env.pod(&name)?;
        (p.pause_pid? != first.pause()).then_some(())?;
        let c = p.containers.get("main")?;
        (c.attempt == 1 && c.exit.is_none() && alive(c.pid?)).then_some(p)
    });
    assert_ne!(second.sandbox_dir.as_ref(), Some(&old_sandbox));
    assert!(old_sandbox.is_dir(), "the old sandbox holds the last attempt");
    assert!(first.containers["main"].dir.starts_with(&old_sandbox));
    assert!(first.containers["main"].dir.is_dir());

    // Across an agent restart, the last state is still there, read from the old sandbox.
    agent.kill9();
    let agent2 = Agent::start(&env, &fast);
    let last_exit = || {
        let out = ok(&env, &["get", "pod", &name, "-o", "json"]);
        let pod: serde_json::Value = serde_json::from_str(&out).expect("json");
        pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"].as_i64()
    };
    wait_for("the agent serves the pod again", Duration::from_secs(30), || {
        cli(&env, &["get", "pod", &name]).status.success().then_some(())
    });
    assert_eq!(last_exit(), Some(137), "the attempt killed with the sandbox");
    assert!(old_sandbox.is_dir(), "kept by the restarted agent");

    // The next attempt retires the one in the old sandbox, and the sandbox goes with it.
    kill9(second.pid("main"));
    wait_attempt(&env, &name, 2);
    wait_for("the old sandbox is removed", Duration::from_secs(10), || {
        (!old_sandbox.exists()).then_some(())
    });
    assert!(
        second.containers["main"].dir.is_dir(),
        "attempt 1 is the previous one now"
    );
    assert!(!agent2.log_text().contains("panicked"));
}

/// A static pod's sandbox that no pod record names (the agent died between RunPodSandbox
/// and saving the pod's record) is removed when the agent comes back; the pod, whose record
/// names a sandbox that does not exist, gets a new one.
#[test]
fn a_static_sandbox_no_pod_records_is_removed_at_start() {
    if !is_root() {
        return;
    }
    let env = Env::new("restart-unrecorded-sandbox");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    env.write_manifest("p.yaml", &sleeper_pod("p"));
    let name = static_pod_name("p");
    let old = env.wait_running(&name, &["main"]);
    agent.kill9();
    let record_path = old.dir.join("pod.json");
    let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record["sandbox_id"] = "0000000000000000000000000000000000000000000000000000000000000000".into();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();

    let agent2 = Agent::start(&env, &[]);
    wait_for("the unrecorded sandbox's pause ends", Duration::from_secs(30), || {
        (!alive(old.pause())).then_some(())
    });
    let new = env.wait_running(&name, &["main"]);
    assert_ne!(new.pause(), old.pause());
    let sandboxes: Vec<_> = std::fs::read_dir(env.root.join("sandboxes"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(sandboxes.len(), 1, "only the new sandbox");
    assert!(!old.sandbox_dir.expect("old sandbox dir").exists());
    assert!(agent2.log_text().contains("no pod records"));
}
