//! A network namespace of the test's own, pinned on a file in its temp directory: the whole
//! node (agent, bridge, veths, iptables rules) lives in it and never touches the machine's
//! network. Dropping it unpins it; the kernel frees it once nothing runs in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian's containernetworking-plugins puts the CNI plugins.
pub const CNI_PLUGINS: &str = "/usr/lib/cni";

/// Whether what a pod network test needs is here (the bridge, host-local and portmap plugins,
/// iptables for portmap and masquerading); if not, a visible skip saying what is missing.
pub fn cni_plugins_present() -> bool {
    let missing: Vec<&str> = ["bridge", "host-local", "portmap"]
        .into_iter()
        .filter(|p| !Path::new(CNI_PLUGINS).join(p).is_file())
        .collect();
    if !missing.is_empty() {
        crate::skip(&format!(
            "CNI plugins {missing:?} missing from {CNI_PLUGINS} (hack/setup installs containernetworking-plugins)"
        ));
        return false;
    }
    if crate::which("iptables-save").is_none() {
        crate::skip("iptables missing (hack/setup installs it)");
        return false;
    }
    true
}

pub struct NetNs {
    path: PathBuf,
}

impl NetNs {
    /// A new network namespace pinned at `dir/netns`, with loopback up.
    pub fn new(dir: &Path) -> NetNs {
        std::fs::create_dir_all(dir).expect("create the netns directory");
        let path = dir.join("netns");
        std::fs::File::create(&path).expect("create the netns file");
        let out = Command::new("unshare")
            .arg(format!("--net={}", path.display()))
            .arg("true")
            .output()
            .expect("run unshare");
        assert!(
            out.status.success(),
            "unshare --net: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = NetNs { path };
        let up = ns.run(&["ip", "link", "set", "lo", "up"]);
        assert!(
            up.status.success(),
            "ip link set lo up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        ns
    }

    /// One for test `name`, pinned outside the test's directory (which is removed while the
    /// namespace may still be pinned).
    pub fn for_test(name: &str) -> NetNs {
        NetNs::new(
            &std::env::temp_dir()
                .join("minilet-e2e")
                .join(format!("netns-{name}-{}", std::process::id())),
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on a thread that has joined this namespace: sockets it makes belong to it.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.path, f)
    }

    /// Run a program of the host inside this namespace (network only).
    pub fn run(&self, cmd: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path.display()))
            .arg("--")
            .args(cmd)
            .output()
            .expect("run nsenter")
    }

    /// `run`, insisting on success; stdout.
    pub fn ok(&self, cmd: &[&str]) -> String {
        let out = self.run(cmd);
        assert!(
            out.status.success(),
            "{cmd:?} in the test netns failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Names of the veth interfaces in this namespace (pods' host ends).
    pub fn veths(&self) -> Vec<String> {
        self.ok(&["ip", "-o", "link", "show", "type", "veth"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// iptables chains in table `table` whose name starts with `prefix`.
    pub fn chains(&self, table: &str, prefix: &str) -> Vec<String> {
        self.ok(&["iptables-save", "-t", table])
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| c.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Run `f` on a thread that has joined the network namespace at `ns` (a pinned file or
/// `/proc/<pid>/ns/net`): setns is per thread, and a socket belongs to the namespace of the
/// thread that made it.
pub fn in_netns<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(move || {
            let file = std::fs::File::open(ns).expect("open netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns(net)");
            f()
        })
        .join()
        .expect("thread in the netns")
    })
}
