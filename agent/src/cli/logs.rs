//! `minilet logs`: find the container attempt (current, or `--previous`), ask the agent for
//! its CRI log path, and read the file (see [`super::logfile`]).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use minilet_proto::runtime::v1::ContainerState;

use super::attempts::{self, Attempt};
use super::errors::ServerError;
use super::logfile::{self, LogOptions};
use super::{SocketArgs, client, parse_duration, pods};

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The pod.
    pub pod: String,
    /// The container (optional when the pod has one, or names a default).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Keep streaming until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// The previous attempt of the container (before its last restart).
    #[arg(short, long)]
    pub previous: bool,
    /// Lines of recent output to show (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Only output newer than this duration (e.g. 10s, 5m, 1h).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Prefix each line with its RFC 3339 timestamp.
    #[arg(long)]
    pub timestamps: bool,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Which attempt to read: the newest, or the one before it for `--previous`, with the
/// kubelet's messages when there is none.
pub fn choose(
    attempts: &[Attempt],
    previous: bool,
    pod: &str,
    container: &str,
    waiting: Option<&str>,
) -> Result<Attempt> {
    let n = attempts.len();
    if previous {
        return match n {
            2.. => Ok(attempts[n - 2].clone()),
            _ => Err(ServerError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{pod}\" not found"
            ))
            .into()),
        };
    }
    match attempts.last() {
        Some(a) => Ok(a.clone()),
        None => Err(ServerError::bad_request(match waiting {
            Some(reason) => format!("container \"{container}\" in pod \"{pod}\" is waiting to start: {reason}"),
            None => format!("container \"{container}\" in pod \"{pod}\" is not available"),
        })
        .into()),
    }
}

pub async fn run(args: LogsArgs) -> Result<ExitCode> {
    let tail = usize::try_from(args.tail).ok();
    let since = match args.since {
        Some(d) => Some(logfile::since_time(jiff::Timestamp::now(), d)?),
        None => None,
    };
    let client = client::connect(&args.socket.socket).await?;
    let np = pods::get(&client, &args.namespace, &args.pod, client::Details::Dirs).await?;
    let (container, notice) = pods::container_for_logs(&np.pod, args.container.as_deref())?;
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    let found = attempts::find(&client, &np.pod, &container).await?;
    let waiting = pods::waiting_reason(&np.pod, &container);
    let attempt = choose(&found, args.previous, &args.pod, &container, waiting.as_deref())?;
    let status = client.container_status(&attempt.id).await?;
    if status.log_path.is_empty() {
        anyhow::bail!("container {container} (CRI container {}) has no log file", attempt.id);
    }
    let path = std::path::PathBuf::from(&status.log_path);
    let opts = LogOptions {
        tail,
        since,
        timestamps: args.timestamps,
        ..Default::default()
    };
    let mut stdout = std::io::stdout().lock();
    // A previous attempt has exited already; following it only reads it.
    let follow = args.follow && !args.previous && status.state() != ContainerState::ContainerExited;
    if follow {
        let id = attempt.id.clone();
        logfile::follow(&path, &opts, &mut stdout, async || {
            match client.container_status(&id).await {
                Ok(s) => Ok(s.state() == ContainerState::ContainerExited),
                // Removed already (its pod went away): it has certainly stopped.
                Err(e) if e.downcast_ref::<ServerError>().is_some_and(|s| s.reason == "NotFound") => Ok(true),
                Err(e) => Err(e.context("checking whether the container exited")),
            }
        })
        .await?;
    } else {
        logfile::read(&path, &opts, &mut stdout)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::errors::line;

    fn attempt(id: &str, n: u32) -> Attempt {
        Attempt {
            id: id.into(),
            sandbox_id: "sb".into(),
            created_at: i64::from(n),
            restart_count: n,
            state: ContainerState::ContainerExited,
        }
    }

    #[test]
    fn current_previous_and_messages() {
        let list = vec![attempt("a0", 0), attempt("a1", 1), attempt("a2", 2)];
        assert_eq!(choose(&list, false, "p", "c", None).unwrap().id, "a2");
        assert_eq!(choose(&list, true, "p", "c", None).unwrap().id, "a1");
        let err = choose(&list[..1], true, "p", "c", None).unwrap_err();
        assert_eq!(
            line(&err).unwrap(),
            "Error from server (BadRequest): previous terminated container \"c\" in pod \"p\" not found"
        );
        let err = choose(&[], false, "p", "c", Some("ContainerCreating")).unwrap_err();
        assert_eq!(
            line(&err).unwrap(),
            "Error from server (BadRequest): container \"c\" in pod \"p\" is waiting to start: ContainerCreating"
        );
    }
}
