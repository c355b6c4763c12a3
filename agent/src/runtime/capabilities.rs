//! Linux capabilities of container processes.
//!
//! A non-privileged Kubernetes container gets the container runtimes' default set, adjusted
//! by `securityContext.capabilities.add/drop`; a privileged one keeps everything. The set is
//! enforced through the bounding set: after execve, root's capabilities are the bounding set,
//! and a non-root user has none unless a file grants them (still capped by the bounding set).

/// Capability names in kernel order (index = capability number).
const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// containerd's default capabilities for a container (what Kubernetes users get).
pub const DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Normalize a Kubernetes capability name (`NET_ADMIN`, `CAP_NET_ADMIN`, any case) to the
/// kernel's (`CAP_NET_ADMIN`), or `None` if there is no such capability.
pub fn normalize(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.contains(&bare).then(|| format!("CAP_{bare}"))
}

/// The capabilities a container keeps: the defaults plus `add` minus `drop`; `ALL` works in
/// either list as in Kubernetes.
pub fn effective_set(add: &[String], drop: &[String]) -> Vec<String> {
    let is_all = |v: &[String]| v.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let mut set: Vec<String> = if is_all(add) {
        NAMES.iter().map(|n| format!("CAP_{n}")).collect()
    } else {
        let mut s: Vec<String> = DEFAULT.iter().map(|n| format!("CAP_{n}")).collect();
        s.extend(add.iter().filter_map(|c| normalize(c)));
        s
    };
    if is_all(drop) {
        // Drop ALL then add: only what was added explicitly.
        set = add.iter().filter_map(|c| normalize(c)).collect();
    } else {
        let dropped: Vec<String> = drop.iter().filter_map(|c| normalize(c)).collect();
        set.retain(|c| !dropped.contains(c));
    }
    set.sort();
    set.dedup();
    set
}

/// Capability numbers missing from `keep`, up to the kernel's last capability.
pub fn to_drop(keep: &[String], last_cap: u32) -> Vec<u32> {
    (0..=last_cap)
        .filter(|&n| {
            let name = NAMES.get(n as usize).map(|s| format!("CAP_{s}"));
            !name.is_some_and(|name| keep.contains(&name))
        })
        .collect()
}

/// The highest capability number this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn names_and_sets() {
        assert_eq!(normalize("net_admin").as_deref(), Some("CAP_NET_ADMIN"));
        assert_eq!(normalize("CAP_SYS_ADMIN").as_deref(), Some("CAP_SYS_ADMIN"));
        assert_eq!(normalize("FLY"), None);
        let d = effective_set(&[], &[]);
        assert_eq!(d.len(), DEFAULT.len());
        let d = effective_set(&s(&["NET_ADMIN"]), &s(&["KILL"]));
        assert!(d.contains(&"CAP_NET_ADMIN".into()) && !d.contains(&"CAP_KILL".into()));
        assert_eq!(
            effective_set(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"])),
            s(&["CAP_NET_BIND_SERVICE"])
        );
        assert_eq!(effective_set(&s(&["ALL"]), &[]).len(), NAMES.len());
    }

    #[test]
    fn drop_list_covers_unknown_numbers() {
        let keep = s(&["CAP_CHOWN"]);
        let drop = to_drop(&keep, 45);
        assert!(!drop.contains(&0));
        assert!(drop.contains(&1) && drop.contains(&45));
    }
}
