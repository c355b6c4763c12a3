//! `minilet attach`: kubectl attach over CRI Attach and the streaming server, on the same
//! session machinery as `minilet exec`. The container's output from now on is shown; with
//! `-i` local stdin goes to the container's stdin (if it was started with `stdin: true`);
//! the session ends when the container exits (with its exit code) or when stdin ends.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use minilet_proto::minilet::v1::ExecStart;
use minilet_proto::runtime::v1::AttachRequest;

use super::exec::{Streams, exit_status, run_streams, running_container, stdin_size};
use super::{SocketArgs, client};

#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the annotated default container, else the first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Pass stdin to the container.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Stdin is a TTY (the container must have one).
    #[arg(short = 't', long)]
    pub tty: bool,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// kubectl attach's rules for the terminal: `-t` needs a container with one (else a
/// message, and none); a container with a terminal gets one anyway (its output is one
/// stream). Returns (remote terminal, local raw mode, message).
pub fn terminal(
    asked: bool,
    container_tty: bool,
    stdin: bool,
    stdin_is_terminal: bool,
    container: &str,
) -> (bool, bool, Option<String>) {
    let message = (asked && !container_tty)
        .then(|| format!("error: Unable to use a TTY - container {container} did not allocate one"));
    let raw = container_tty && asked && stdin && stdin_is_terminal;
    (container_tty, raw, message)
}

pub async fn run(args: AttachArgs) -> Result<ExitCode> {
    let client = client::connect(&args.socket.socket).await?;
    let (pod, container, current) = running_container(
        &client,
        &args.namespace,
        &args.pod,
        args.container.as_deref(),
        "cannot attach a container in a completed pod",
    )
    .await?;
    let spec = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == container));
    let container_tty = spec.and_then(|c| c.tty) == Some(true);

    let (tty, raw, message) = terminal(
        args.tty,
        container_tty,
        args.stdin,
        std::io::stdin().is_terminal(),
        &container,
    );
    if let Some(m) = message {
        eprintln!("{m}");
    }
    if raw {
        eprintln!("If you don't see a command prompt, try pressing enter.");
    }
    let start = ExecStart {
        container_id: current.id.clone(),
        cmd: Vec::new(),
        tty,
        stdin: args.stdin,
        size: if raw { stdin_size() } else { None },
    };
    let req = AttachRequest {
        container_id: current.id,
        stdin: args.stdin,
        tty,
        stdout: true,
        stderr: !tty,
    };
    let streams = Streams {
        tty,
        raw,
        stdin: args.stdin,
    };
    let code = run_streams(start, streams, &args.socket.socket, client.cri_attach(req)).await?;
    Ok(ExitCode::from(exit_status(code)))
}

#[cfg(test)]
mod tests {
    use super::terminal;

    #[test]
    fn kubectl_attach_terminal_rules() {
        // -t on a container without a terminal: a message, no terminal.
        let (tty, raw, msg) = terminal(true, false, true, true, "app");
        assert!(!tty && !raw);
        assert_eq!(
            msg.as_deref(),
            Some("error: Unable to use a TTY - container app did not allocate one")
        );
        // A container with a terminal is attached as one, raw only with -it on a terminal.
        assert_eq!(terminal(false, true, true, true, "app"), (true, false, None));
        assert_eq!(terminal(true, true, true, true, "app"), (true, true, None));
        assert_eq!(terminal(true, true, true, false, "app"), (true, false, None));
        assert_eq!(terminal(false, false, false, false, "app"), (false, false, None));
    }
}
