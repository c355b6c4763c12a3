//! minilet-pause as PID 1: reaps every orphan, exits 0 on SIGTERM and SIGINT.

use std::process::Command;
use std::time::Duration;

use minilet_e2e::*;

fn pause_in_new_pid_namespace() -> std::process::Child {
    Command::new("unshare")
        .args(["--fork", "--pid", "--"])
        .arg(bin_dir().join("minilet-pause"))
        .spawn()
        .expect("spawn unshare")
}

/// The pause inside `unshare --fork`: the child of the unshare process.
fn pause_pid(unshare: &std::process::Child) -> i32 {
    wait_for("the pause process", Duration::from_secs(5), || {
        let children =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", unshare.id(), unshare.id())).ok()?;
        children.split_whitespace().next()?.parse().ok()
    })
}

#[test]
fn exits_zero_on_sigterm_and_sigint() {
    if !is_root() {
        return;
    }
    for sig in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGINT] {
        let mut unshare = pause_in_new_pid_namespace();
        let pid = pause_pid(&unshare);
        // Other signals are ignored: it keeps running.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGUSR1).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(alive(pid), "the pause ignores SIGHUP/SIGUSR1");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
        let status = unshare.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{sig:?}: {status:?}");
    }
}

#[test]
fn reaps_orphans_of_the_pod() {
    if !is_root() {
        return;
    }
    let env = Env::new("reap");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    // Each round leaves an orphan (the backgrounded sleep of a subshell that exits at once);
    // in a shared PID namespace orphans go to the pause, which must reap them.
    env.write_manifest(
        "reap.yaml",
        r#"apiVersion: v1
kind: Pod
metadata: {name: reap}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do (sleep 0.05 &); sleep 0.1; done"]
"#,
    );
    let pod = env.wait_running(&static_pod_name("reap"), &["c"]);
    std::thread::sleep(Duration::from_secs(1));
    // Orphans did reach the pause...
    let ns_pids = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| {
                std::fs::read_link(format!("/proc/{p}/ns/pid"))
                    .ok()
                    .map(|l| l.display().to_string())
                    == Some(ns(pod.pause(), "pid"))
            })
            .collect()
    };
    let ppid_state = |p: i32| {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let rest = s.rsplit_once(')').map(|(_, r)| r.to_string()).unwrap_or_default();
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("").to_string();
        (f.next().and_then(|x| x.parse::<i32>().ok()).unwrap_or(0), state)
    };
    let adopted = wait_for("an orphan re-parented to the pause", Duration::from_secs(10), || {
        ns_pids()
            .into_iter()
            .find(|&p| p != pod.pause() && ppid_state(p).0 == pod.pause())
    });
    assert!(adopted > 0);
    // ...and none of them stays a zombie.
    for _ in 0..20 {
        for p in ns_pids() {
            let (ppid, state) = ppid_state(p);
            if ppid == pod.pause() && state == "Z" {
                // A zombie may exist for the instant between exit and SIGCHLD handling;
                // it must be gone a moment later.
                std::thread::sleep(Duration::from_millis(50));
                assert!(
                    !std::path::Path::new(&format!("/proc/{p}")).exists() || ppid_state(p).1 != "Z",
                    "zombie {p} not reaped"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
