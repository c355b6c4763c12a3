//! The demo's renderer, a small confd: `renderer watch` renders files from etcd keys through
//! templates and runs a reload command when a file changes; `renderer register` is the
//! backends' registration sidecar. See demo/README.md and manifests/lb.yaml.

mod etcd;
mod output;
mod register;
mod render;
mod resource;
mod watch;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "renderer",
    about = "A small confd: etcd keys -> templates -> files -> reload"
)]
struct Cli {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        global = true
    )]
    endpoints: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render every template resource in <confdir>/conf.d/*.toml, then again on each change.
    Watch {
        /// confd's layout: conf.d/*.toml (template resources) and templates/*.tmpl.
        #[arg(long, default_value = "/etc/confd")]
        confdir: PathBuf,
    },
    /// Put KEY=VALUE with a lease kept alive until SIGTERM, which revokes it.
    Register {
        #[arg(long)]
        key: String,
        #[arg(long)]
        value: String,
        /// Lease TTL in seconds: how long the key outlives a killed registrar.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(2..=3600))]
        ttl: i64,
        /// Register only once this host:port accepts connections.
        #[arg(long, value_name = "HOST:PORT")]
        wait_tcp: Option<String>,
    },
}

/// SIGTERM (the kubelet stopping the container) or SIGINT.
async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!("cannot handle SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Container logs already carry timestamps, but the demo reads these lines for timing.
    tracing_subscriber::fmt().with_ansi(false).with_target(false).init();
    let cli = Cli::parse();
    let shutdown = std::pin::pin!(terminated());
    match cli.command {
        Command::Watch { confdir } => {
            let resources = resource::load_all(&confdir).context("load template resources")?;
            for r in &resources {
                tracing::info!(
                    "{}: {} -> {} (keys {})",
                    r.origin.display(),
                    r.src,
                    r.dest.display(),
                    r.keys.join(" ")
                );
            }
            watch::run(&cli.endpoints, resources, shutdown).await
        }
        Command::Register {
            key,
            value,
            ttl,
            wait_tcp,
        } => {
            let reg = register::Registration {
                key,
                value,
                ttl,
                wait_tcp,
            };
            register::run(&cli.endpoints, &reg, shutdown).await
        }
    }
}
