//! A pod's sysctls (the CRI's `linux.sysctls`): which ones a pod may set, and setting them.
//!
//! Only sysctls that live in a namespace the pod owns are accepted (the kubelet's
//! "namespaced" list): anything else would change the node for every pod. They are written
//! by the sandbox helper right after it created the pod's namespaces, before the pause runs,
//! so every container sees them from its start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::spec::SandboxNamespaces;

/// One `name=value` for /proc/sys, already checked against the pod's namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctl {
    /// Dotted name, e.g. `kernel.shm_rmid_forced`.
    pub name: String,
    pub value: String,
}

/// The namespace a sysctl belongs to, so it is only accepted when the pod has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Ipc,
    Network,
    Uts,
}

/// IPC-namespaced sysctls by exact name (besides the whole `fs.mqueue.` tree).
const IPC: &[&str] = &[
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
];

fn owner(name: &str) -> Option<Owner> {
    if IPC.contains(&name) || name.starts_with("fs.mqueue.") {
        Some(Owner::Ipc)
    } else if name.starts_with("net.") {
        Some(Owner::Network)
    } else if name == "kernel.hostname" || name == "kernel.domainname" {
        Some(Owner::Uts)
    } else {
        None
    }
}

/// Check one requested sysctl. The kubelet also spells names with `/` (`net/ipv4/ip_forward`);
/// both forms are taken. The error says what is wrong with it, for the caller to name the field.
pub fn check(name: &str, value: &str, ns: &SandboxNamespaces) -> Result<Sysctl, String> {
    let dotted = name.replace('/', ".");
    let well_formed = !dotted.is_empty()
        && dotted
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    if !well_formed {
        return Err("not a sysctl name (dot-separated letters, digits, '_' and '-')".into());
    }
    if value.contains('\0') || value.contains('\n') {
        return Err("the value may not contain a NUL or a newline".into());
    }
    let (own, what) = match owner(&dotted) {
        Some(Owner::Ipc) => (ns.ipc, "the IPC namespace, and the pod shares the host's"),
        Some(Owner::Network) => (ns.network, "the network namespace, and the pod shares the host's"),
        Some(Owner::Uts) => (ns.uts, "the UTS namespace, and the pod shares the host's"),
        None => {
            return Err("not a namespaced sysctl: setting it would change the whole node".into());
        }
    };
    if !own {
        return Err(format!("belongs to {what}"));
    }
    Ok(Sysctl {
        name: dotted,
        value: value.to_string(),
    })
}

impl Sysctl {
    /// Its file under /proc/sys (opened from inside the pod's namespaces, it is the pod's).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/proc/sys").join(self.name.replace('.', "/"))
    }

    /// Write it; called in the sandbox helper after its `unshare`.
    pub fn apply(&self) -> Result<(), String> {
        let path = self.path();
        std::fs::write(&path, self.value.as_bytes())
            .map_err(|e| format!("sysctl {}={:?}: write {}: {e}", self.name, self.value, path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: SandboxNamespaces = SandboxNamespaces {
        network: true,
        pid: true,
        ipc: true,
        uts: true,
    };
    const HOST: SandboxNamespaces = SandboxNamespaces {
        network: false,
        pid: false,
        ipc: false,
        uts: false,
    };

    #[test]
    fn namespaced_sysctls_are_taken_in_both_spellings() {
        let s = check("kernel.shm_rmid_forced", "1", &OWN).unwrap();
        assert_eq!(s.path(), PathBuf::from("/proc/sys/kernel/shm_rmid_forced"));
        assert_eq!(
            check("fs.mqueue.msg_max", "100", &OWN).unwrap().name,
            "fs.mqueue.msg_max"
        );
        let s = check("net/ipv4/ip_unprivileged_port_start", "0", &OWN).unwrap();
        assert_eq!(s.name, "net.ipv4.ip_unprivileged_port_start");
        assert_eq!(s.path(), PathBuf::from("/proc/sys/net/ipv4/ip_unprivileged_port_start"));
    }

    #[test]
    fn node_wide_and_malformed_sysctls_are_refused() {
        for name in ["vm.swappiness", "kernel.panic", "fs.file-max", "kernel.shm_next_id_x"] {
            assert!(check(name, "1", &OWN).unwrap_err().contains("namespaced"), "{name}");
        }
        for name in ["", "net..ipv4", "../../etc/x", "net.ipv4/../x", "net.ipv4.a b", ".net"] {
            assert!(check(name, "1", &OWN).unwrap_err().contains("sysctl name"), "{name:?}");
        }
        assert!(check("net.ipv4.ip_forward", "1\n0", &OWN).is_err());
    }

    #[test]
    fn a_pod_on_a_host_namespace_may_not_set_its_sysctls() {
        assert!(
            check("net.ipv4.ip_forward", "1", &HOST)
                .unwrap_err()
                .contains("network namespace")
        );
        assert!(
            check("kernel.sem", "1 2 3 4", &HOST)
                .unwrap_err()
                .contains("IPC namespace")
        );
        assert!(
            check("kernel.domainname", "x", &HOST)
                .unwrap_err()
                .contains("UTS namespace")
        );
    }
}
