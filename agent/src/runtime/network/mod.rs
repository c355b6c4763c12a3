//! The pod network, through CNI plugins as the CNI spec defines their calls.
//!
//! ADD runs once the pause holds the pod's network namespace and before any container
//! starts; what it used and returned is cached in the pod's directory (`network.json`,
//! written before the first plugin runs), so DEL, on teardown or after a crash, undoes
//! exactly that, with the namespace still pinned under the state directory.

pub mod args;
pub mod bandwidth;
pub mod conf;
mod netns;
mod plugin;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::atomic_file;
use conf::NetworkList;
use plugin::{Call, Verb};

/// The interface the pod's network gets inside its namespace (the kubelet's).
pub const IFNAME: &str = "eth0";
/// A pod's cached CNI call, in its state directory.
pub const CACHE: &str = "network.json";

/// `--network`: pod networks through CNI, or loopback only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NetworkMode {
    #[default]
    Cni,
    None,
}

/// The agent's network settings.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub mode: NetworkMode,
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// The default network's address range (when the conf dir has no network).
    pub pod_cidr: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            mode: NetworkMode::None,
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            pod_cidr: conf::DEFAULT_POD_CIDR.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("CNI plugin {plugin} failed ({verb}): {message}")]
    Plugin {
        plugin: String,
        verb: &'static str,
        message: String,
    },
    #[error("CNI plugin {plugin} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("CNI network config {path}: {problem}")]
    Config { path: PathBuf, problem: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl NetworkError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NetworkError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Who the pod is and what it asks of the network (CNI_ARGS and runtimeConfig).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodNetwork {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The `portMappings` capability: containers' ports with a hostPort.
    pub port_mappings: Vec<PortMapping>,
    /// The `bandwidth` capability, from the kubernetes.io/{ingress,egress}-bandwidth annotations.
    pub bandwidth: Option<Bandwidth>,
    /// The `dns` capability: the pod's resolver settings, as its /etc/resolv.conf has them.
    #[serde(default)]
    pub dns: Option<Dns>,
}

/// The `dns` runtimeConfig (containerd passes the sandbox's DNS config the same way).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// From a resolv.conf's text; `None` when it names nothing.
    pub fn from_resolv_conf(text: &str) -> Option<Dns> {
        let mut dns = Dns::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => dns.servers.extend(words.next().map(str::to_string)),
                Some("search") => dns.searches = words.map(str::to_string).collect(),
                Some("options") => dns.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        (dns != Dns::default()).then_some(dns)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp", "udp" or "sctp", as portmap spells them.
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// One host port as the portmap plugin takes it (the same ports the `--network=none`
/// forwarder would open).
impl From<&crate::runtime::host_ports::HostPort> for PortMapping {
    fn from(p: &crate::runtime::host_ports::HostPort) -> Self {
        use crate::runtime::host_ports::Protocol;
        PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
            }
            .into(),
            host_ip: if p.host_ip.is_unspecified() {
                String::new()
            } else {
                p.host_ip.to_string()
            },
        }
    }
}

/// Rates in bits per second, bursts in bits (the bandwidth plugin's units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
}

/// What one ADD used and returned: DEL and CHECK are made from it alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cache {
    container_id: String,
    netns: PathBuf,
    ifname: String,
    args: String,
    /// The network configuration list, as ADD used it.
    network: Value,
    pod: PodNetwork,
    bin_dirs: Vec<PathBuf>,
    /// The last plugin's result; null until ADD finished.
    result: Value,
}

/// The pod network manager of the runtime.
#[derive(Debug, Clone)]
pub struct Network {
    config: NetworkConfig,
    /// `<root>/network`: the default conflist and its host-local data.
    dir: PathBuf,
    /// `<root>/netns`: pinned pod network namespaces.
    netns_dir: PathBuf,
}

impl Network {
    pub fn new(config: NetworkConfig, root: &Path) -> Self {
        Network {
            config,
            dir: root.join("network"),
            netns_dir: root.join("netns"),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.mode == NetworkMode::Cni
    }

    /// Whether pods can be networked now, for the CRI's NetworkReady condition: what they
    /// get, or why not (a configuration that does not parse, a plugin binary that is missing),
    /// in words. Reads the conf dir: call it off the async threads.
    pub fn readiness(&self) -> Result<String, String> {
        if !self.enabled() {
            return Ok("--network=none: pods get their own network namespace with loopback only; hostNetwork pods use the node's".into());
        }
        let (what, list) = match conf::load_first(&self.config.conf_dir).map_err(|e| e.to_string())? {
            Some(list) => (
                format!("CNI network {:?} from {}", list.name, list.source.display()),
                list,
            ),
            None => {
                // What network_list() would write, read without writing it.
                let text = conf::default_list(&self.dir.join("host-local"), &self.config.pod_cidr).to_string();
                let list = NetworkList::parse(&self.dir.join("default.conflist"), text.as_bytes())
                    .map_err(|e| e.to_string())?;
                let what = format!(
                    "minilet's default CNI network (bridge {}, {}; {} has no configuration)",
                    conf::DEFAULT_BRIDGE,
                    self.config.pod_cidr,
                    self.config.conf_dir.display()
                );
                (what, list)
            }
        };
        for kind in list.plugins.iter().map(NetworkList::plugin_type) {
            plugin::find(kind, &self.config.bin_dirs).map_err(|e| format!("{what}: {e}"))?;
        }
        Ok(what)
    }

    /// The network pods get now: the conf dir's first configuration, else minilet's default
    /// (written under the state directory, so users can see what ran).
    fn network_list(&self) -> Result<NetworkList, NetworkError> {
        if let Some(list) = conf::load_first(&self.config.conf_dir)? {
            return Ok(list);
        }
        let path = self.dir.join("default.conflist");
        let text = conf::default_list(&self.dir.join("host-local"), &self.config.pod_cidr).to_string();
        crate::file_modes::create_dir_all(&self.dir, crate::file_modes::STATE_DIR)
            .map_err(|e| NetworkError::io(format!("create {}", self.dir.display()), e))?;
        atomic_file::write_mode(&path, text.as_bytes(), crate::file_modes::STATE_FILE)
            .map_err(|e| NetworkError::io(format!("write {}", path.display()), e))?;
        NetworkList::parse(&path, text.as_bytes())
    }

    /// CNI ADD for a sandbox whose pause is `pause_pid`; the pod's IPs. On failure every
    /// plugin gets DEL, so nothing half-made stays.
    pub async fn add(
        &self,
        pod: &PodNetwork,
        pod_dir: &Path,
        sandbox_id: &str,
        pause_pid: i32,
    ) -> Result<Vec<IpAddr>, NetworkError> {
        // A previous sandbox of this pod (its pause died) may still hold an address.
        if let Err(e) = self.remove(pod_dir).await {
            tracing::warn!(dir = %pod_dir.display(), error = %e, "tear down the previous sandbox's network");
        }
        let netns = self.netns_dir.join(sandbox_id);
        let cache = {
            let (network, pod, pod_dir, id, netns) = (
                self.clone(),
                pod.clone(),
                pod_dir.to_path_buf(),
                sandbox_id.to_string(),
                netns.clone(),
            );
            spawn_blocking(move || {
                let list = network.network_list()?;
                let cache = Cache {
                    args: cni_args(&pod, &id),
                    container_id: id,
                    netns: netns.clone(),
                    ifname: IFNAME.to_string(),
                    network: list.to_json(),
                    pod,
                    bin_dirs: network.config.bin_dirs.clone(),
                    result: Value::Null,
                };
                // Cached first: a crash in the middle of ADD still gets its DEL.
                write_cache(&pod_dir, &cache)?;
                netns::pin(pause_pid, &netns)?;
                Ok(cache)
            })
            .await?
        };
        match self.add_all(&cache).await {
            Ok(result) => {
                let ips = result_ips(&result);
                let cache = Cache { result, ..cache };
                let dir = pod_dir.to_path_buf();
                spawn_blocking(move || write_cache(&dir, &cache)).await?;
                Ok(ips)
            }
            Err(e) => {
                // Undo what the plugins before the failing one made; the cache goes even when a
                // plugin's DEL fails too (the failing one usually does), as it can never work.
                if let Err(del) = del_all(&cache).await {
                    tracing::warn!(dir = %pod_dir.display(), error = %del, "DEL after a failed ADD");
                }
                let dir = pod_dir.to_path_buf();
                let _ = spawn_blocking(move || forget(&dir, &netns)).await;
                Err(e)
            }
        }
    }

    async fn add_all(&self, cache: &Cache) -> Result<Value, NetworkError> {
        let list = cached_list(cache)?;
        let call = Call {
            verb: Verb::Add,
            container_id: &cache.container_id,
            netns: Some(&cache.netns),
            ifname: &cache.ifname,
            args: &cache.args,
            bin_dirs: &cache.bin_dirs,
        };
        let mut prev = Value::Null;
        for p in &list.plugins {
            let kind = NetworkList::plugin_type(p);
            let out = plugin::run(kind, &call, &plugin_config(&list, p, &prev, &cache.pod)).await?;
            prev = serde_json::from_str(&out).map_err(|e| NetworkError::Plugin {
                plugin: kind.to_string(),
                verb: "ADD",
                message: format!("its result is not JSON: {e}"),
            })?;
        }
        Ok(prev)
    }

    /// CNI DEL from the pod's cache, then the pinned namespace and the cache go. Nothing
    /// cached: nothing to do. A failing DEL keeps the cache, so it can be tried again.
    pub async fn remove(&self, pod_dir: &Path) -> Result<(), NetworkError> {
        let dir = pod_dir.to_path_buf();
        let Some(cache) = spawn_blocking(move || read_cache(&dir)).await? else {
            return Ok(());
        };
        del_all(&cache).await?;
        let (dir, netns) = (pod_dir.to_path_buf(), cache.netns.clone());
        spawn_blocking(move || forget(&dir, &netns)).await?;
        tracing::info!(dir = %pod_dir.display(), "pod network removed");
        Ok(())
    }

    /// CNI CHECK from the pod's cache (a re-adopted pod): Ok when nothing is cached, the
    /// version has no CHECK, or the list disables it.
    pub async fn check(&self, pod_dir: &Path) -> Result<(), NetworkError> {
        let dir = pod_dir.to_path_buf();
        let Some(cache) = spawn_blocking(move || read_cache(&dir)).await? else {
            return Ok(());
        };
        let list = cached_list(&cache)?;
        if cache.result.is_null() || !list.supports_check() {
            return Ok(());
        }
        let call = Call {
            verb: Verb::Check,
            container_id: &cache.container_id,
            netns: Some(&cache.netns),
            ifname: &cache.ifname,
            args: &cache.args,
            bin_dirs: &cache.bin_dirs,
        };
        for p in &list.plugins {
            let kind = NetworkList::plugin_type(p);
            plugin::run(kind, &call, &plugin_config(&list, p, &cache.result, &cache.pod)).await?;
        }
        Ok(())
    }
}

/// The pod's IPs as its cached ADD result has them (blocking; none when there is no cache).
pub fn cached_ips(pod_dir: &Path) -> Vec<IpAddr> {
    match read_cache(pod_dir) {
        Ok(Some(c)) => result_ips(&c.result),
        _ => Vec::new(),
    }
}

/// Whether an ADD began for the pod but never finished (the agent stopped in the middle):
/// its sandbox has a network of unknown shape and must be replaced (blocking).
pub fn interrupted(pod_dir: &Path) -> bool {
    matches!(read_cache(pod_dir), Ok(Some(c)) if c.result.is_null())
}

async fn del_all(cache: &Cache) -> Result<(), NetworkError> {
    let list = cached_list(cache)?;
    let pinned = {
        let netns = cache.netns.clone();
        spawn_blocking(move || Ok(netns::is_pinned(&netns))).await?
    };
    let call = Call {
        verb: Verb::Del,
        container_id: &cache.container_id,
        netns: pinned.then_some(cache.netns.as_path()),
        ifname: &cache.ifname,
        args: &cache.args,
        bin_dirs: &cache.bin_dirs,
    };
    // In reverse, each with the ADD result; every plugin gets its DEL even when one fails.
    let mut first_error = None;
    for p in list.plugins.iter().rev() {
        let kind = NetworkList::plugin_type(p);
        if let Err(e) = plugin::run(kind, &call, &plugin_config(&list, p, &cache.result, &cache.pod)).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn cached_list(cache: &Cache) -> Result<NetworkList, NetworkError> {
    NetworkList::parse(Path::new(CACHE), cache.network.to_string().as_bytes())
}

/// One plugin's stdin: its own config with the list's name and version, the previous
/// result, and the runtimeConfig of the capabilities it declares.
fn plugin_config(list: &NetworkList, plugin: &Map<String, Value>, prev: &Value, pod: &PodNetwork) -> Value {
    let mut cfg = plugin.clone();
    cfg.insert("name".into(), Value::String(list.name.clone()));
    cfg.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if !prev.is_null() {
        cfg.insert("prevResult".into(), prev.clone());
    }
    let mut runtime = Map::new();
    if let Some(Value::Object(caps)) = plugin.get("capabilities") {
        for (cap, on) in caps {
            if on != &Value::Bool(true) {
                continue;
            }
            match cap.as_str() {
                "portMappings" => {
                    runtime.insert(cap.clone(), json!(pod.port_mappings));
                }
                "bandwidth" => {
                    if let Some(b) = &pod.bandwidth {
                        runtime.insert(cap.clone(), json!(b));
                    }
                }
                "dns" => {
                    if let Some(d) = &pod.dns {
                        runtime.insert(cap.clone(), json!(d));
                    }
                }
                _ => {}
            }
        }
    }
    if !runtime.is_empty() {
        cfg.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(cfg)
}

/// CNI_ARGS as the kubelet's runtimes set them.
fn cni_args(pod: &PodNetwork, sandbox_id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={sandbox_id};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.uid
    )
}

/// The addresses of a CNI result (`ips[].address`, without the prefix length).
fn result_ips(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
        .collect()
}

fn read_cache(pod_dir: &Path) -> Result<Option<Cache>, NetworkError> {
    let path = pod_dir.join(CACHE);
    atomic_file::read_json::<Cache>(&path).map_err(|e| NetworkError::io(format!("read {}", path.display()), e))
}

fn write_cache(pod_dir: &Path, cache: &Cache) -> Result<(), NetworkError> {
    let path = pod_dir.join(CACHE);
    atomic_file::write_json(&path, cache).map_err(|e| NetworkError::io(format!("write {}", path.display()), e))
}

/// Drop the pinned namespace, then the cache (last: while it exists, DEL can still run).
fn forget(pod_dir: &Path, netns: &Path) -> Result<(), NetworkError> {
    netns::unpin(netns)?;
    let path = pod_dir.join(CACHE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io(format!("remove {}", path.display()), e)),
    }
}

async fn spawn_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NetworkError::io("pod network task", std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_capability_from_the_pods_resolv_conf() {
        let dns =
            Dns::from_resolv_conf("nameserver 10.0.0.10\nnameserver 1.1.1.1\nsearch a.svc b\noptions ndots:5 edns0\n")
                .unwrap();
        assert_eq!(dns.servers, ["10.0.0.10", "1.1.1.1"]);
        assert_eq!(dns.searches, ["a.svc", "b"]);
        assert_eq!(dns.options, ["ndots:5", "edns0"]);
        assert_eq!(Dns::from_resolv_conf("# nothing\n"), None);
        let list = NetworkList::parse(
            Path::new("x"),
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a","capabilities":{"dns":true}},{"type":"b"}]}"#,
        )
        .unwrap();
        let pod = PodNetwork {
            dns: Some(dns),
            ..Default::default()
        };
        let with = plugin_config(&list, &list.plugins[0], &Value::Null, &pod);
        assert_eq!(
            with["runtimeConfig"]["dns"],
            json!({"servers":["10.0.0.10","1.1.1.1"],"searches":["a.svc","b"],"options":["ndots:5","edns0"]})
        );
        // Only to plugins that declare the capability.
        assert!(
            plugin_config(&list, &list.plugins[1], &Value::Null, &pod)
                .get("runtimeConfig")
                .is_none()
        );
    }

    #[test]
    fn plugin_config_carries_name_version_prev_and_declared_capabilities() {
        let list = NetworkList::parse(
            Path::new("x"),
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true,"bandwidth":true}}]}"#,
        )
        .unwrap();
        let pod = PodNetwork {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            ..Default::default()
        };
        let first = plugin_config(&list, &list.plugins[0], &Value::Null, &pod);
        assert_eq!(first["name"], "n");
        assert!(first.get("prevResult").is_none() && first.get("runtimeConfig").is_none());
        let prev = json!({"ips":[{"address":"10.244.0.5/16"}]});
        let second = plugin_config(&list, &list.plugins[1], &prev, &pod);
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
        );
        assert_eq!(result_ips(&prev), vec!["10.244.0.5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn cni_args_name_the_pod() {
        let pod = PodNetwork {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            ..Default::default()
        };
        assert_eq!(
            cni_args(&pod, "s1"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=s1;K8S_POD_UID=u1"
        );
    }
}
