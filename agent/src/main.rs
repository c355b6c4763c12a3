//! The `minilet` binary: the node agent, its CLI, and (hidden) its own helper processes.

use std::process::ExitCode;

use clap::Parser;
use minilet::cli::{Cli, Command};

fn main() -> ExitCode {
    // The agent re-executes this binary as small single-threaded helpers (sandbox launcher,
    // container monitor). Dispatch them before anything else starts a thread.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = minilet::runtime::helper::dispatch(&args) {
        return code;
    }

    let cli = Cli::parse();
    // The agent logs what it does; a CLI command speaks through its output and errors.
    init_tracing(if matches!(cli.command, Command::Agent(_)) {
        "info"
    } else {
        "warn"
    });
    let result = match cli.command {
        Command::Agent(args) => minilet::agent::run(*args),
        Command::Image(command) => minilet::cli::image::run(command),
        Command::Reset(args) => minilet::agent::reset(&args),
        // get, describe, logs, exec, top, version: clients of a running agent.
        _ => return client(cli.command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, the whole context chain, no debug dump.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A client command on a small single-threaded runtime; errors are printed in kubectl's words.
fn client(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(minilet::cli::run_client(command));
    // Do not wait for a thread blocked reading stdin (exec -i).
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(err) => minilet::cli::errors::report(&err),
    }
}

fn init_tracing(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MINILET_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
