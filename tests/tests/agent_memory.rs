//! The agent's memory and descriptors in the kernel's view: however many threads a burst of
//! pod starts runs on, its allocations share two glibc malloc arenas (the main heap and one
//! more), not one per thread (docs/performance.md, "The agent at 100 pods"); and each running
//! container costs it one pidfd.

use minilet_e2e::*;

const PODS: usize = 6;

/// glibc's malloc heaps besides the main one, in `/proc/PID/maps`: each is an anonymous
/// reservation of 64 MiB at a 64 MiB-aligned address, its used part read-write and the rest
/// `PROT_NONE`. Thread stacks and other mappings are neither aligned nor laid out so.
fn malloc_heaps(pid: i32) -> Vec<String> {
    const HEAP: u64 = 64 << 20;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("the agent's maps");
    let anon: Vec<(u64, u64, &str, &str)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            // offset, device, inode; a pathname means a file or [heap]/[stack]/...
            if f.nth(2).is_some_and(|_| f.next().is_some()) {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                perms,
                l,
            ))
        })
        .collect();
    anon.iter()
        .enumerate()
        .filter(|(i, (start, end, perms, _))| {
            if start % HEAP != 0 || !perms.starts_with("rw") {
                return false;
            }
            *end == start + HEAP
                || anon
                    .get(i + 1)
                    .is_some_and(|(s, e, p, _)| s == end && *e == start + HEAP && p.starts_with("---"))
        })
        .map(|(_, (.., line))| line.to_string())
        .collect()
}

#[test]
fn pod_starts_at_once_share_two_malloc_arenas() {
    if !is_root() {
        return;
    }
    let env = Env::new("arenas");
    env.import_image("busybox");
    let agent = Agent::start(&env, &[]);
    // Dropped together: their starts run on several blocking threads at once.
    for i in 0..PODS {
        env.write_manifest(&format!("arena-{i}.yaml"), &sleeper_pod(&format!("arena-{i}")));
    }
    for i in 0..PODS {
        env.wait_running(&static_pod_name(&format!("arena-{i}")), &["main"]);
    }
    let heaps = malloc_heaps(agent.pid());
    assert!(
        heaps.len() <= 1,
        "the agent has {} malloc heaps besides the main one (at most 1 expected):\n{}",
        heaps.len(),
        heaps.join("\n")
    );
}

/// The agent's pidfds of process `pid`, as the kernel lists them (`Pid:` in the fdinfo of
/// each `anon_inode:[pidfd]` descriptor).
fn pidfds_of(agent: i32, pid: i32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{agent}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("pidfd")))
        .filter(|fd| {
            let info = std::fs::read_to_string(format!("/proc/{agent}/fdinfo/{}", fd.file_name().to_string_lossy()));
            info.is_ok_and(|i| i.lines().any(|l| l.split_whitespace().eq(["Pid:", &pid.to_string()])))
        })
        .count()
}

/// A running container is watched once: the static pod's worker waits on the runtime's own
/// watcher of its monitor, so the agent holds one pidfd of each monitor, also after a restart
/// re-adopted the pod.
#[test]
fn each_container_monitor_is_watched_through_one_pidfd() {
    if !is_root() {
        return skip("needs root: runs the agent and real pods");
    }
    let env = Env::new("one-watcher");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, &[]);
    env.write_manifest("p.yaml", &sleeper_pod("p"));
    let name = static_pod_name("p");
    let pod = env.wait_running(&name, &["main"]);
    let monitor = pod.containers["main"].monitor_pid.expect("the monitor's pid");
    wait_agent_ready(&env, &name);
    wait_for(
        "the agent watches the monitor",
        std::time::Duration::from_secs(10),
        || (pidfds_of(agent.pid(), monitor) > 0).then_some(()),
    );
    assert_eq!(pidfds_of(agent.pid(), monitor), 1, "one watcher of the monitor");

    agent.kill9();
    let agent2 = Agent::start(&env, &[]);
    wait_agent_ready(&env, &name);
    wait_for(
        "the new agent watches the monitor",
        std::time::Duration::from_secs(10),
        || (pidfds_of(agent2.pid(), monitor) > 0).then_some(()),
    );
    assert_eq!(pidfds_of(agent2.pid(), monitor), 1, "one watcher after re-adoption");
}
