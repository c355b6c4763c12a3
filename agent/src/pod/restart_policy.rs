//! The pod's `restartPolicy`, parsed once from its spec.

use k8s_openapi::api::core::v1::PodSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Every value, as the API spells them (for validation messages).
    pub const NAMES: [&'static str; 3] = ["Always", "OnFailure", "Never"];

    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        }
    }

    /// The pod's policy; `Always` when unset. Manifests are validated before a pod exists,
    /// so an unknown word cannot reach here; if one did, it restarts nothing, as before.
    pub fn of(spec: &PodSpec) -> Self {
        match spec.restart_policy.as_deref() {
            None => RestartPolicy::Always,
            Some(word) => word.parse().unwrap_or_else(|_| {
                tracing::warn!(restart_policy = word, "unknown restart policy; treated as Never");
                RestartPolicy::Never
            }),
        }
    }

    /// Whether a container that exited with `exit_code` runs again. Init containers never
    /// restart after success, so `Always` means `OnFailure` for them (as the kubelet has it).
    pub fn restarts(self, init: bool, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always if !init => true,
            RestartPolicy::Always | RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "Always" => Ok(RestartPolicy::Always),
            "OnFailure" => Ok(RestartPolicy::OnFailure),
            "Never" => Ok(RestartPolicy::Never),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decides() {
        let spec = |p: Option<&str>| PodSpec {
            restart_policy: p.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(RestartPolicy::of(&spec(None)), RestartPolicy::Always);
        for name in RestartPolicy::NAMES {
            assert_eq!(RestartPolicy::of(&spec(Some(name))).as_str(), name);
        }
        assert_eq!(RestartPolicy::of(&spec(Some("Sometimes"))), RestartPolicy::Never);
        assert!(RestartPolicy::Always.restarts(false, 0));
        assert!(!RestartPolicy::Always.restarts(true, 0), "init containers: OnFailure");
        assert!(RestartPolicy::Always.restarts(true, 1));
        assert!(!RestartPolicy::OnFailure.restarts(false, 0));
        assert!(RestartPolicy::OnFailure.restarts(false, 2));
        assert!(!RestartPolicy::Never.restarts(false, 1));
    }
}
