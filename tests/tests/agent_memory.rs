//! The agent's memory in the kernel's view: however many threads a burst of pod starts runs
//! on, its allocations share two glibc malloc arenas (the main heap and one more), not one
//! per thread (docs/performance.md, "The agent at 100 pods").

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
