//! Helpers started ahead of need. Every pod start runs two helpers, `__sandbox` and
//! `__monitor`; starting one costs the exec of this binary, the C library's and Rust's
//! start-up, and, in the child, a copy of the agent's descriptor table that the exec closes
//! again one descriptor at a time: ~1 ms each with no pods, more with hundreds (the agent
//! holds descriptors per pod). So one of each kind is started beforehand and waits for its
//! spec's path on stdin ([`super::helper::WAIT_FOR_SPEC`]); a start hands it its spec and
//! starts the next one, off the start's path. A waiting sandbox helper also makes the next
//! pod's namespaces meanwhile ([`super::helper::sandbox::Premade`]). A waiting helper exits
//! when its stdin ends, so none outlives the agent or a discarded slot.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use super::helper;
use super::process::PidFd;
use super::reaper;

/// The helper kinds worth keeping one of at hand: one per pod start each.
const KINDS: [&str; 2] = [helper::SANDBOX, helper::MONITOR];

/// A helper process and the pidfd that watches it.
pub struct Spawned {
    pub child: Child,
    pub pidfd: PidFd,
}

/// The waiting helpers, at most one per kind.
#[derive(Default)]
pub struct WarmHelpers {
    waiting: Mutex<HashMap<&'static str, Spawned>>,
}

impl WarmHelpers {
    /// A waiting helper of `subcommand`, given `spec_path`; `None` if there is none (or the
    /// one there died). The caller then starts one as usual.
    pub fn take(&self, subcommand: &'static str, spec_path: &Path) -> Option<Spawned> {
        let mut spawned = self.lock().remove(subcommand)?;
        if spawned.pidfd.has_exited() {
            return None;
        }
        let mut line = spec_path.as_os_str().as_encoded_bytes().to_vec();
        line.push(b'\n');
        // A few bytes into an empty pipe: the write does not block. Closing stdin after it
        // is what a waiting helper that got no path sees as "not needed".
        let mut stdin = spawned.child.stdin.take()?;
        if stdin.write_all(&line).is_err() {
            let _ = spawned.pidfd.signal(nix::sys::signal::Signal::SIGKILL);
            return None;
        }
        Some(spawned)
    }

    /// Start a helper of `subcommand` to wait for the next spec, unless one waits already.
    /// In the background: the caller does not wait for the spawn.
    pub fn refill(self: &Arc<Self>, subcommand: &'static str) {
        if !KINDS.contains(&subcommand) || self.lock().contains_key(subcommand) {
            return;
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = super::helper_command(subcommand, helper::WAIT_FOR_SPEC.as_ref(), Stdio::piped());
            match reaper::spawn(&mut cmd) {
                // Another refill may have won meanwhile: the one dropped here sees its stdin
                // end and exits.
                Ok((child, pidfd)) => {
                    this.lock().entry(subcommand).or_insert(Spawned { child, pidfd });
                }
                Err(e) => tracing::debug!(helper = subcommand, error = %e, "start a helper ahead of need"),
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Spawned>> {
        // The map is consistent after any single insert or removal.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}
