//! `minilet version`: this CLI's version and the agent's runtime (RuntimeService.Version).

use std::process::ExitCode;

use anyhow::Result;
use minilet_proto::runtime::v1::VersionResponse;

use super::{SocketArgs, client};

#[derive(Debug, Clone, clap::Args)]
pub struct VersionArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
}

pub fn client_line() -> String {
    format!("Client Version: v{}", env!("CARGO_PKG_VERSION"))
}

pub fn server_line(v: &VersionResponse) -> String {
    format!(
        "Server Version: {} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    )
}

/// The client version always prints; an unreachable agent is then the error (exit 1), as
/// `kubectl version` does it.
pub async fn run(args: VersionArgs) -> Result<ExitCode> {
    println!("{}", client_line());
    let client = client::connect(&args.socket.socket).await?;
    let v = client.version().await?;
    println!("{}", server_line(&v));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(client_line(), format!("Client Version: v{}", env!("CARGO_PKG_VERSION")));
        let v = VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "minilet".into(),
            runtime_version: "0.1.0".into(),
            runtime_api_version: "v1".into(),
        };
        assert_eq!(server_line(&v), "Server Version: minilet 0.1.0 (CRI v1)");
    }
}
