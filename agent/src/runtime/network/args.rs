//! The agent's network flags.

use std::path::PathBuf;

use super::{NetworkConfig, NetworkMode, conf};

#[derive(Debug, Clone, clap::Args)]
pub struct NetworkArgs {
    /// Pod networking: `cni` gives each pod an address through CNI plugins (the conf dir's
    /// network, else minilet's default bridge); `none` keeps pods on loopback only.
    #[arg(long, value_enum, default_value_t = NetworkMode::Cni)]
    pub network: NetworkMode,
    /// Directory of CNI network configurations: the first .conflist/.conf/.json in lexical
    /// order is used; none there means minilet's default network.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Directories of CNI plugin binaries, searched in order (colon-separated, as CNI_PATH).
    #[arg(long, default_value = "/opt/cni/bin:/usr/lib/cni")]
    pub cni_bin_dir: String,
    /// Address range of the default network (the kubelet's flag of the same name).
    #[arg(long, default_value = conf::DEFAULT_POD_CIDR, value_parser = parse_cidr)]
    pub pod_cidr: String,
}

fn parse_cidr(s: &str) -> Result<String, String> {
    conf::validate_cidr(s).map(|()| s.to_string())
}

impl NetworkArgs {
    pub fn config(&self) -> NetworkConfig {
        NetworkConfig {
            mode: self.network,
            conf_dir: self.cni_conf_dir.clone(),
            bin_dirs: std::env::split_paths(&self.cni_bin_dir)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            pod_cidr: self.pod_cidr.clone(),
        }
    }
}
