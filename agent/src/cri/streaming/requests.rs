//! Pending streaming requests: what a CRI Exec/Attach/PortForward call asked for, kept
//! under a random single-use token until the client connects to the URL (or it expires),
//! as the kubelet's streaming request cache does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// The kubelet's token lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// At most this many requests wait at once (the kubelet's cache holds 1000); beyond it the
/// CRI call fails rather than the agent's memory growing.
const MAX_PENDING: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Exec or attach (remotecommand either way).
    Exec(super::ExecParams),
    PortForward {
        sandbox_id: String,
    },
}

impl Request {
    /// The URL path segment it is served under.
    pub fn path(&self) -> &'static str {
        match self {
            Request::Exec(p) => match p.target {
                super::exec::Target::Command(_) => "exec",
                super::exec::Target::Attach => "attach",
            },
            Request::PortForward { .. } => "portforward",
        }
    }
}

pub struct Requests {
    ttl: Duration,
    pending: Mutex<HashMap<String, (Request, Instant)>>,
}

#[derive(Debug, thiserror::Error)]
#[error("too many streaming requests are pending ({MAX_PENDING}); retry later")]
pub struct Full;

impl Requests {
    pub fn new(ttl: Duration) -> Requests {
        Requests {
            ttl,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Request, Instant)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep `req`; the token that redeems it.
    pub fn insert(&self, req: Request) -> Result<String, Full> {
        let now = Instant::now();
        let mut pending = self.lock();
        pending.retain(|_, (_, deadline)| *deadline > now);
        if pending.len() >= MAX_PENDING {
            return Err(Full);
        }
        // 16 random bytes, URL-safe: unguessable, and never reused while pending.
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        pending.insert(token.clone(), (req, now + self.ttl));
        Ok(token)
    }

    /// The request under `token`, once: a second call, or one after the expiry, gets None.
    pub fn take(&self, token: &str) -> Option<Request> {
        let (req, deadline) = self.lock().remove(token)?;
        (deadline > Instant::now()).then_some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Request {
        Request::PortForward { sandbox_id: "s".into() }
    }

    #[test]
    fn tokens_are_single_use_and_distinct() {
        let r = Requests::new(DEFAULT_TTL);
        let a = r.insert(pf()).unwrap();
        let b = r.insert(pf()).unwrap();
        assert_ne!(a, b);
        assert!(a.len() >= 20 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(r.take(&a), Some(pf()));
        assert_eq!(r.take(&a), None);
        assert_eq!(r.take("nonsense"), None);
        assert_eq!(r.take(&b), Some(pf()));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let r = Requests::new(Duration::ZERO);
        let a = r.insert(pf()).unwrap();
        assert_eq!(r.take(&a), None);
    }
}
