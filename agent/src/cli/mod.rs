//! The `minilet` command line: the agent itself, local image management, the kubectl-like
//! client commands that talk to a running agent over its socket (get, describe, logs, exec, attach,
//! top, version), and the hidden helper subcommands the agent re-executes itself with (see
//! [`crate::runtime::helper`]).

pub mod attach;
pub mod attempts;
pub mod client;
pub mod describe;
pub mod errors;
pub mod events;
pub mod exec;
pub mod exec_stream;
pub mod get;
pub mod image;
pub mod logfile;
pub mod logs;
pub mod objects;
pub mod pods;
pub mod port_forward;
pub mod printers;
pub mod selector;
pub mod tabwriter;
pub mod terminal;
pub mod top;
pub mod upgrade;
pub mod version;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Where the agent serves gRPC and the CLI finds it.
pub const DEFAULT_SOCKET: &str = "/run/minilet/minilet.sock";

/// The agent's state directory unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/minilet";

/// minilet: a small, fast, real Kubernetes node agent.
#[derive(Debug, Parser)]
#[command(name = "minilet", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: start the pods whose manifests are in --manifests, keep them running.
    Agent(Box<AgentArgs>),
    /// Manage the local image store.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Stop and remove every pod this agent's state directory knows of (for interactive use).
    Reset(ResetArgs),
    /// Display pods or events (like kubectl get).
    Get(get::GetArgs),
    /// Show details of pods (like kubectl describe).
    Describe(describe::DescribeArgs),
    /// Print the logs of a container in a pod (like kubectl logs).
    Logs(logs::LogsArgs),
    /// Execute a command in a container (like kubectl exec).
    Exec(exec::ExecArgs),
    /// Attach to the process of a running container (like kubectl attach).
    Attach(attach::AttachArgs),
    /// Forward local ports to a pod (like kubectl port-forward).
    PortForward(port_forward::PortForwardArgs),
    /// CPU and memory usage of pods (like kubectl top).
    #[command(subcommand)]
    Top(top::TopCommand),
    /// Print the client and agent versions.
    Version(version::VersionArgs),
}

impl Command {
    /// Whether this command is a client of a running agent (run on a small async runtime).
    pub fn is_client(&self) -> bool {
        !matches!(self, Command::Agent(_) | Command::Image(_) | Command::Reset(_))
    }
}

/// Run a client command; errors come back for [`errors::report`].
pub async fn run_client(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Get(a) => get::run(a).await,
        Command::Describe(a) => describe::run(a).await,
        Command::Logs(a) => logs::run(a).await,
        Command::Exec(a) => exec::run(a).await,
        Command::Attach(a) => attach::run(a).await,
        Command::PortForward(a) => port_forward::run(a).await,
        Command::Top(a) => top::run(a).await,
        Command::Version(a) => version::run(a).await,
        Command::Agent(_) | Command::Image(_) | Command::Reset(_) => {
            anyhow::bail!("not a client command")
        }
    }
}

/// The agent's socket, for every client command.
#[derive(Debug, Clone, Args)]
pub struct SocketArgs {
    /// The agent's gRPC socket.
    #[arg(long, env = "MINILET_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// `-n NAMESPACE` / `-A`, as kubectl spells them.
#[derive(Debug, Clone, Args)]
pub struct NamespaceArgs {
    /// The namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Every namespace (wins over -n).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

impl NamespaceArgs {
    /// The namespace to list, or None for all of them.
    pub fn namespace(&self) -> Option<&str> {
        (!self.all_namespaces).then_some(self.namespace.as_str())
    }
}

/// Where state lives; shared by every command that touches the state directory.
#[derive(Debug, Clone, Args)]
pub struct RootArgs {
    /// State directory: images, pods, containers.
    #[arg(long, env = "MINILET_ROOT", default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Directory of Kubernetes Pod manifests (.yaml, .yml, .json), one pod per file.
    #[arg(long, default_value = "/etc/minilet/manifests")]
    pub manifests: PathBuf,

    #[command(flatten)]
    pub root: RootArgs,

    /// Directory for container logs: <log-dir>/<namespace>_<name>_<uid>/<container>/<n>.log.
    #[arg(long, default_value = "/var/log/pods")]
    pub log_dir: PathBuf,

    /// Parent of all pod cgroups. A relative path is taken under the agent's own cgroup in
    /// every hierarchy; an absolute one is used as is.
    #[arg(long, default_value = "minilet")]
    pub cgroup_parent: String,

    /// The CRI (runtime.v1) and minilet.v1 gRPC endpoint: a unix socket, mode 0660.
    #[arg(long, env = "MINILET_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Node name (lower-cased), used in static pod names (`<name>-<node name>`), UIDs and pod
    /// status. Defaults to the hostname.
    #[arg(long)]
    pub node_name: Option<String>,

    /// The node's address (status.hostIP, and hostNetwork pods' IP), as the kubelet's
    /// --node-ip. Defaults to the first non-loopback IPv4 address.
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<std::net::IpAddr>,

    /// Labels of this node, `key=value,...`, matched by pods' nodeSelector and required node
    /// affinity besides the well-known kubernetes.io/hostname, kubernetes.io/os and
    /// kubernetes.io/arch (and their beta.kubernetes.io forms).
    #[arg(long, value_name = "KEY=VALUE,...", value_parser = crate::pod::admission::parse_node_labels, default_value = "")]
    pub node_labels: crate::pod::admission::NodeLabels,

    /// The most pods this node runs (the kubelet's --max-pods): one more is rejected at
    /// admission as `OutOfpods`.
    #[arg(long, default_value_t = crate::pod::admission::MAX_PODS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pods: u32,

    /// Sysctls pods may set beyond the kubelet's safe set (the kubelet's
    /// --allowed-unsafe-sysctls): names or prefixes ending in '*', comma-separated. A pod
    /// asking for another is rejected at admission as `SysctlForbidden`.
    #[arg(long, value_name = "NAME,...", value_parser = crate::pod::sysctls::parse_allowed, default_value = "")]
    pub allowed_unsafe_sysctls: crate::pod::sysctls::AllowedSysctls,

    /// The pause binary. Defaults to `minilet-pause` next to this binary, then $PATH.
    #[arg(long)]
    pub pause_binary: Option<PathBuf>,

    /// Stop and remove all pods when the agent exits (default: leave them running, as the
    /// kubelet does, to be re-adopted by the next agent).
    #[arg(long)]
    pub cleanup_on_exit: bool,

    /// How often the manifests directory is re-listed as a safety net behind inotify.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub relist_period: Duration,

    /// Where the CRI streaming server (Exec, PortForward URLs) listens: a loopback address;
    /// port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub streaming_address: std::net::SocketAddr,

    /// How long a streaming URL stays valid (kubelet: 1m). For tests.
    #[arg(long, default_value = "1m", value_parser = parse_duration, hide = true)]
    pub streaming_token_ttl: Duration,

    /// First container restart back-off (kubelet: 10s). For tests.
    #[arg(long, default_value = "10s", value_parser = parse_duration, hide = true)]
    pub backoff_initial: Duration,

    /// How often pod-level usage limits are checked: emptyDir `sizeLimit` (the kubelet's
    /// flag of the same name).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub housekeeping_interval: Duration,

    /// Maximum container restart back-off (kubelet: 300s). For tests.
    #[arg(long, default_value = "300s", value_parser = parse_duration, hide = true)]
    pub backoff_max: Duration,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub seccomp: crate::runtime::seccomp::SeccompArgs,

    #[command(flatten)]
    pub log_rotation: crate::runtime::log_rotation::LogRotationArgs,

    #[command(flatten)]
    pub network: crate::runtime::network::args::NetworkArgs,

    /// Image store disk usage (percent) above which unused images are removed (kubelet: 85).
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high_threshold: u8,

    /// Disk usage (percent) image garbage collection frees down to (kubelet: 80).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,

    /// Minimum age of an unused image before it may be garbage collected (kubelet: 2m).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub minimum_image_ttl_duration: Duration,

    /// How often image garbage collection looks at disk usage (kubelet: 5m). For tests.
    #[arg(long, default_value = "5m", value_parser = parse_duration, hide = true)]
    pub image_gc_period: Duration,
}

/// How to reach registries (the agent's pulls and `minilet image pull`).
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry credentials: a docker-style config.json ("auths") [default:
    /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    pub registry_config: Option<PathBuf>,
    /// A registry (host[:port]) to reach over plain HTTP. Loopback registries always are. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Try this mirror first for REGISTRY's images, e.g. docker.io=http://127.0.0.1:5000. Repeatable.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=URL", value_parser = crate::images::registry::RegistryOptions::parse_mirror)]
    pub registry_mirrors: Vec<(String, crate::images::registry::Mirror)>,
    /// A pull fails when a download makes no progress for this long: no response, or less
    /// than 64 KiB received (kubelet flag of the same name; containerd's
    /// image_pull_progress_timeout). Also bounds connecting (at most 30s).
    #[arg(long, default_value = "1m", value_parser = parse_deadline)]
    pub image_pull_progress_deadline: Duration,
}

impl RegistryArgs {
    /// The flags given that only a pull into a store of this process's own can honour
    /// (an agent pulls with its own).
    pub fn own_settings(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.registry_config.is_some() {
            set.push("--registry-config");
        }
        if !self.insecure_registries.is_empty() {
            set.push("--insecure-registry");
        }
        if !self.registry_mirrors.is_empty() {
            set.push("--registry-mirror");
        }
        set
    }

    pub fn options(&self) -> crate::images::registry::RegistryOptions {
        let mut opts = crate::images::registry::RegistryOptions {
            insecure: self.insecure_registries.clone(),
            auth_file: self
                .registry_config
                .clone()
                .or_else(crate::images::registry::default_auth_file),
            progress_deadline: self.image_pull_progress_deadline,
            ..Default::default()
        };
        for (registry, mirror) in &self.registry_mirrors {
            opts.mirrors.entry(registry.clone()).or_default().push(mirror.clone());
        }
        opts
    }
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an OCI image layout directory or an OCI archive (tar) into the store.
    Import {
        /// Path to an OCI layout directory or an OCI archive tar file.
        path: PathBuf,
        /// Name to give the image; without it, the layout's org.opencontainers.image.ref.name decides.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Pull an image from a registry into the store (progress per layer on a terminal).
    Pull {
        /// Image reference, e.g. nginx, registry.example.com/team/app:1.2, repo@sha256:...
        reference: String,
        /// Registry credentials for this pull.
        #[arg(long, value_name = "USERNAME:PASSWORD")]
        creds: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        target: ImageTargetArgs,
    },
    /// Remove images by name, or by id with all their names (refused while a container uses them).
    #[command(alias = "rmi", alias = "remove")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
        #[command(flatten)]
        target: ImageTargetArgs,
    },
    /// Show an image: CRI status, config, layers (like crictl inspecti).
    Inspect {
        reference: String,
        #[command(flatten)]
        target: ImageTargetArgs,
    },
    /// List the images in the store, one line per name.
    #[command(alias = "list")]
    Ls {
        /// Only print image IDs.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        target: ImageTargetArgs,
    },
}

/// Which store an image command works on: the running agent's, through its CRI
/// ImageService (as crictl does), or one under `--root`, directly.
#[derive(Debug, Clone, Args)]
pub struct ImageTargetArgs {
    /// Go through the agent serving this socket (its store, registry mirrors and
    /// credentials). Without --socket or --root: the agent on the default socket if one
    /// answers, else the store under the default --root.
    #[arg(long, env = "MINILET_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Work on the store under this state directory directly, without an agent (wins over
    /// --socket).
    #[arg(long, env = "MINILET_ROOT")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Parent of all pod cgroups, as given to the agent.
    #[arg(long, default_value = "minilet")]
    pub cgroup_parent: String,
    /// Directory for container logs (their pod directories are removed too).
    #[arg(long, default_value = "/var/log/pods")]
    pub log_dir: PathBuf,
}

/// Durations as the kubelet's flags spell them: `300ms`, `10s`, `5m`, `1h`, `1m30s`.
/// A duration that must be more than zero (a zero deadline would fail every pull at once).
fn parse_deadline(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("invalid duration {s:?}: must be more than 0")),
        d => Ok(d),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?} (expected e.g. 500ms, 10s, 5m, 1h30m)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(err)?;
        let value: f64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total = Duration::try_from_secs_f64(value * scale)
            .ok()
            .and_then(|d| total.checked_add(d))
            .ok_or_else(|| format!("invalid duration {s:?}: out of range"))?;
    }
    // Go's durations are i64 nanoseconds (about 292 years); a longer one is an error there.
    if total.as_nanos() > i64::MAX as u128 {
        return Err(format!("invalid duration {s:?}: out of range"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten seconds").is_err());
        // Out of range is an error, never a panic.
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(parse_duration("1e400s").is_err());
        assert!(parse_duration("3000000h").is_err());
        assert!(parse_duration("2000000h").is_ok());
        assert!(parse_duration(&"9".repeat(400)).is_err());
        assert!(parse_duration("1.5h").is_ok());
    }

    #[test]
    fn node_ip_must_be_an_address() {
        let parse = |args: &[&str]| Cli::try_parse_from(["minilet", "agent"].into_iter().chain(args.iter().copied()));
        let Command::Agent(a) = parse(&["--node-ip", "192.0.2.10"]).unwrap().command else {
            panic!("not agent")
        };
        assert_eq!(a.node_ip, Some("192.0.2.10".parse().unwrap()));
        let e = parse(&["--node-ip", "node1"]).err().unwrap().to_string();
        assert!(e.contains("--node-ip") && e.contains("node1"), "{e}");
    }

    #[test]
    fn client_commands_parse_like_kubectl() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("minilet").chain(args.iter().copied()));
        let Command::Get(g) = parse(&["get", "po", "web", "-n", "prod", "-o", "wide", "-l", "app=web"])
            .unwrap()
            .command
        else {
            panic!("not get")
        };
        assert_eq!(
            (g.resource.as_str(), g.names.as_slice()),
            ("po", &["web".to_string()][..])
        );
        assert_eq!(g.scope.namespace(), Some("prod"));
        assert_eq!(g.output, Some(objects::OutputFormat::Wide));
        let Command::Get(g) = parse(&["get", "pods", "-A", "-n", "x"]).unwrap().command else {
            panic!("not get")
        };
        assert_eq!(g.scope.namespace(), None);
        let Command::Exec(e) = parse(&["exec", "-it", "web", "-c", "app", "--", "sh", "-c", "echo hi"])
            .unwrap()
            .command
        else {
            panic!("not exec")
        };
        assert!(e.stdin && e.tty);
        assert_eq!(e.command, vec!["sh", "-c", "echo hi"]);
        let Command::Logs(l) = parse(&[
            "logs",
            "web",
            "-f",
            "-p",
            "--tail",
            "5",
            "--since",
            "1m",
            "--timestamps",
        ])
        .unwrap()
        .command
        else {
            panic!("not logs")
        };
        assert!(l.follow && l.previous && l.timestamps);
        assert_eq!((l.tail, l.since), (5, Some(Duration::from_secs(60))));
        assert!(matches!(
            parse(&["top", "po", "--containers"]).unwrap().command,
            Command::Top(_)
        ));
        assert!(parse(&["describe", "pod", "web"]).unwrap().command.is_client());
        assert!(parse(&["get", "pods", "-o", "table"]).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
