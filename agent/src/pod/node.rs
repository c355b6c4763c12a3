//! Facts about this node that pods see: its name, address, capacity, DNS and hosts files.

#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    /// --node-ip, else the first non-loopback IPv4 address, if any (status.hostIP,
    /// hostNetwork pods' IP).
    pub host_ip: Option<String>,
    pub cpus: i64,
    pub memory_bytes: i64,
    /// The node's /etc/resolv.conf (the kubelet's --resolv-conf), read at start-up.
    pub resolv_conf: String,
    /// The node's /etc/hosts, for hostNetwork pods.
    pub hosts: String,
}

impl NodeInfo {
    pub fn detect(name: Option<&str>, ip: Option<std::net::IpAddr>) -> Self {
        NodeInfo {
            name: node_name(name),
            host_ip: ip.map(|ip| ip.to_string()).or_else(host_ip),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as i64)
                .unwrap_or(1),
            memory_bytes: mem_total().unwrap_or(1 << 30),
            resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        }
    }
}

/// The node's name: `--node-name` trimmed and lower-cased (as the kubelet treats
/// `--hostname-override`), else the hostname.
pub fn node_name(flag: Option<&str>) -> String {
    flag.map(|n| n.trim().to_ascii_lowercase()).unwrap_or_else(hostname)
}

/// The hostname, lower-cased as the kubelet does for node names.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn host_ip() -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            let ip = sin.ip();
            if !ip.is_loopback() {
                return Some(ip.to_string());
            }
        }
    }
    None
}

fn mem_total() -> Option<i64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: i64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
