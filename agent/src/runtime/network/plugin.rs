//! Running one CNI plugin: its environment, its config on stdin, its result or error on
//! stdout, within a time limit.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::NetworkError;
use crate::runtime::{read_pipe, reaper};

/// How long one plugin call may take before it is killed.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Check,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
        }
    }
}

/// What every plugin of one pod's call gets in its environment.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub verb: Verb,
    pub container_id: &'a str,
    /// The pod's network namespace; `None` on a DEL whose namespace is already gone.
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub args: &'a str,
    pub bin_dirs: &'a [PathBuf],
}

/// The plugin binary `kind` in the first plugin directory that has it.
pub fn find(kind: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, NetworkError> {
    bin_dirs
        .iter()
        .map(|d| d.join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| NetworkError::PluginNotFound {
            plugin: kind.to_string(),
            dirs: bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })
}

/// Run plugin `kind` with `config` on stdin; its stdout (the result) on success.
pub async fn run(kind: &str, call: &Call<'_>, config: &Value) -> Result<String, NetworkError> {
    let failed = |message: String| NetworkError::Plugin {
        plugin: kind.to_string(),
        verb: call.verb.as_str(),
        message,
    };
    let binary = find(kind, call.bin_dirs)?;
    let path = std::env::join_paths(call.bin_dirs).map_err(|e| failed(format!("CNI_PATH: {e}")))?;
    let mut cmd = std::process::Command::new(&binary);
    cmd.env_clear()
        // Plugins run iptables and friends by name.
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.verb.as_str())
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns.map(Path::as_os_str).unwrap_or_default())
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // No current_dir, as libcni sets none: with one, std forks the whole agent instead of
    // spawning with posix_spawn (a vfork); plugins take every path absolute.
    let (mut child, pidfd) = tokio::task::spawn_blocking(move || reaper::spawn(&mut cmd))
        .await
        .map_err(|e| failed(format!("spawn: {e}")))?
        .map_err(|e| failed(format!("spawn {}: {e}", binary.display())))?;
    let input = serde_json::to_vec(config).map_err(|e| failed(format!("encode its config: {e}")))?;
    let stdin = child.stdin.take();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let io = async {
        let write = async {
            use tokio::io::AsyncWriteExt;
            if let Some(pipe) = stdin
                && let Ok(mut tx) = tokio::net::unix::pipe::Sender::from_owned_fd(pipe.into())
            {
                // A plugin that exits without reading its config fails on its own terms.
                let _ = tx.write_all(&input).await;
            }
        };
        let ((), out, err) = tokio::join!(write, read_pipe(stdout), read_pipe(stderr));
        let _ = pidfd.exited().await;
        (out, err)
    };
    let (out, err) = match tokio::time::timeout(TIMEOUT, io).await {
        Ok(v) => v,
        Err(_) => {
            let _ = pidfd.signal(nix::sys::signal::Signal::SIGKILL);
            return Err(failed(format!("did not finish within {}s", TIMEOUT.as_secs())));
        }
    };
    // The agent's reaper may have collected the exit status first: then the output decides
    // (a plugin reports failure as an error object on stdout).
    let status = child.try_wait().ok().flatten();
    let error_object = serde_json::from_str::<Value>(&out)
        .ok()
        .filter(|v| v.get("code").is_some() && v.get("msg").is_some());
    let exited_badly = status.is_some_and(|s| !s.success());
    if let Some(e) = &error_object {
        let msg = e["msg"].as_str().unwrap_or_default();
        let details = e.get("details").and_then(Value::as_str).filter(|d| !d.is_empty());
        return Err(failed(match details {
            Some(d) => format!("{msg}: {d}"),
            None => msg.to_string(),
        }));
    }
    if exited_badly {
        let said = [err.trim(), out.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(failed(match status {
            Some(s) if said.is_empty() => format!("{s} without a message"),
            Some(s) => format!("{s}: {said}"),
            None => said,
        }));
    }
    Ok(out)
}
