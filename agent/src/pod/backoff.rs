//! Container restart back-off, as the kubelet does it (its flowcontrol.Backoff):
//!
//! - the first restart of a container happens at once and arms a back-off of `initial`;
//! - a container that exits again within the current back-off of its previous restart waits
//!   until `finished + backoff`; the back-off then doubles, up to `max`;
//! - once a container has run for more than 2 × `max` (10 minutes with the defaults) since
//!   its last restart, the history is forgotten and the next restart is immediate again.

use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    /// Unix nanoseconds of the last restart.
    last_update: i64,
}

/// Back-off state of the containers of one pod, keyed by container name.
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    entries: HashMap<String, Entry>,
}

/// What to do about a container that exited and is to be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart now; the back-off has been advanced.
    RestartNow,
    /// Wait until this time (Unix nanoseconds); the current back-off is given for messages.
    Wait { until: i64, backoff: Duration },
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Backoff {
            config,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, finished_at: i64, e: &Entry) -> bool {
        finished_at - e.last_update > 2 * self.config.max.as_nanos() as i64
    }

    /// Decide for container `key`, which finished at `finished_at`, at time `now`.
    ///
    /// The back-off advances with every restart, immediate or delayed (the kubelet's `Next`
    /// at restart time); a `Wait` therefore commits the restart at `until` already, and the
    /// caller restarts then without asking again.
    pub fn decide(&mut self, key: &str, finished_at: i64, now: i64) -> Decision {
        let current = self.entries.get(key).copied().filter(|e| !self.expired(finished_at, e));
        match current {
            Some(e) if now - finished_at < e.backoff.as_nanos() as i64 => {
                let until = finished_at + e.backoff.as_nanos() as i64;
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        backoff: (e.backoff * 2).min(self.config.max),
                        last_update: until,
                    },
                );
                Decision::Wait {
                    until,
                    backoff: e.backoff,
                }
            }
            Some(e) => {
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        backoff: (e.backoff * 2).min(self.config.max),
                        last_update: now,
                    },
                );
                Decision::RestartNow
            }
            None => {
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        backoff: self.config.initial,
                        last_update: now,
                    },
                );
                Decision::RestartNow
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn doubles_from_10s_to_300s_and_resets_after_10_minutes() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut now = 1000 * S;
        // First crash: restart at once.
        assert_eq!(b.decide("app", now, now), Decision::RestartNow);
        let mut waits = Vec::new();
        for _ in 0..8 {
            // Crash right after each restart; the restart happens at `until`.
            let finished = now + S;
            match b.decide("app", finished, finished) {
                Decision::Wait { until, backoff } => {
                    waits.push(backoff.as_secs());
                    now = until;
                }
                Decision::RestartNow => panic!("expected a back-off"),
            }
        }
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        // Ran cleanly for more than 10 minutes: forgiven.
        let finished = now + 601 * S;
        assert_eq!(b.decide("app", finished, finished), Decision::RestartNow);
        let again = finished + S;
        assert!(
            matches!(b.decide("app", again, again), Decision::Wait { backoff, .. } if backoff == Duration::from_secs(10))
        );
    }

    #[test]
    fn containers_back_off_independently() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        assert_eq!(b.decide("a", 0, 0), Decision::RestartNow);
        assert_eq!(b.decide("b", 0, 0), Decision::RestartNow);
        assert!(matches!(b.decide("a", 10, 10), Decision::Wait { .. }));
        // A container that exits long after its back-off restarts at once (and doubles it).
        let late = S;
        assert_eq!(b.decide("b", late, late + S / 2), Decision::RestartNow);
        let again = late + S;
        assert!(
            matches!(b.decide("b", again, again), Decision::Wait { backoff, .. } if backoff == Duration::from_millis(200))
        );
    }
}
