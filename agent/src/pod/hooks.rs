//! Container lifecycle hooks (`postStart`, `preStop`) as the kubelet runs them: exec through
//! the runtime's exec path, httpGet from inside the pod's network namespace (the probes'
//! client), sleep. Only a transport error fails an httpGet hook (any HTTP answer is
//! success), and a `tcpSocket` handler, which the API keeps for compatibility, fails at run
//! time, as in the kubelet.
//!
//! When they run is the pod worker's business: postStart right after the start (the
//! container is not started to the rest of the pod until it returns), preStop before the stop
//! signal, within the grace period.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::probes::{self, HttpGet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    PostStart,
    PreStop,
}

impl HookKind {
    /// The `lifecycle` field.
    pub fn field(self) -> &'static str {
        match self {
            HookKind::PostStart => "postStart",
            HookKind::PreStop => "preStop",
        }
    }

    /// The kubelet's event reason when the hook fails.
    pub fn failure_reason(self) -> &'static str {
        match self {
            HookKind::PostStart => "FailedPostStartHook",
            HookKind::PreStop => "FailedPreStopHook",
        }
    }

    /// The kubelet's event message when the hook fails: fixed, as the hook's output may hold
    /// secrets (the details go to the agent's log).
    pub fn failure_message(self) -> &'static str {
        match self {
            HookKind::PostStart => "PostStartHook failed",
            HookKind::PreStop => "PreStopHook failed",
        }
    }

    fn handler(self, c: &Container) -> Option<&LifecycleHandler> {
        let l = c.lifecycle.as_ref()?;
        match self {
            HookKind::PostStart => l.post_start.as_ref(),
            HookKind::PreStop => l.pre_stop.as_ref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<String>),
    Http(HttpGet),
    Sleep(Duration),
    /// A handler the kubelet does not run (`tcpSocket`): the hook fails.
    Unsupported(String),
}

/// One hook of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub kind: HookKind,
    pub action: Action,
}

impl Hook {
    /// The container's hook of `kind`, if it has one.
    pub fn of(kind: HookKind, c: &Container) -> Option<Hook> {
        let h = kind.handler(c)?;
        let action = if let Some(e) = &h.exec {
            Action::Exec(e.command.clone().unwrap_or_default())
        } else if let Some(g) = &h.http_get {
            Action::Http(HttpGet::of(g, c))
        } else if let Some(s) = &h.sleep {
            Action::Sleep(Duration::from_secs(s.seconds.max(0) as u64))
        } else if h.tcp_socket.is_some() {
            Action::Unsupported("tcpSocket".into())
        } else {
            return None;
        };
        Some(Hook { kind, action })
    }

    /// Run the hook to its end. `Err` says why it failed, in the kubelet's words (for the
    /// log); `pod` is the pod as the kubelet formats it (`name_namespace(uid)`).
    pub async fn run(&self, ctx: &probes::Context, pod: &str) -> Result<(), String> {
        let container = &ctx.attempt.name;
        match &self.action {
            Action::Exec(cmd) => {
                let failed = |error: String, output: &[u8]| {
                    format!(
                        "Exec lifecycle hook ([{}]) for Container {container:?} in Pod {pod:?} failed - error: {error}, message: {:?}",
                        cmd.join(" "),
                        String::from_utf8_lossy(output)
                    )
                };
                match ctx.exec_sync(cmd.clone(), None).await {
                    Err(e) => Err(failed(e.to_string(), b"")),
                    Ok(None) => Err(failed("timed out".into(), b"")),
                    Ok(Some(r)) if r.exit_code == 0 => Ok(()),
                    Ok(Some(r)) => {
                        let mut out = r.stdout;
                        out.extend_from_slice(&r.stderr);
                        out.truncate(probes::MAX_OUTPUT);
                        Err(failed(
                            format!("command '{}' exited with {}: ", cmd.join(" "), r.exit_code),
                            &out,
                        ))
                    }
                }
            }
            Action::Http(get) => probes::http_response(ctx, get).await.map(|_| ()).map_err(|e| {
                format!(
                    "HTTP lifecycle hook ({}) for Container {container:?} in Pod {pod:?} failed - error: {e}",
                    get.path
                )
            }),
            Action::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Action::Unsupported(what) => Err(format!("Cannot run handler: invalid handler: {what}")),
        }
    }
}

/// Validation of a container's `lifecycle` with Kubernetes' rules and wording; each error is
/// `field.path: problem`. `grace` is the pod's terminationGracePeriodSeconds (a sleep may not
/// outlast it).
pub fn validate(path: &str, c: &Container, init: bool, grace: i64) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(l) = &c.lifecycle else { return errs };
    let lp = format!("{path}.lifecycle");
    if init && c.restart_policy.as_deref() != Some("Always") {
        errs.push(format!(
            "{lp}: Forbidden: may not be set for init containers without restartPolicy=Always"
        ));
        return errs;
    }
    for (kind, h) in [(HookKind::PostStart, &l.post_start), (HookKind::PreStop, &l.pre_stop)] {
        let Some(h) = h else { continue };
        let hp = format!("{lp}.{}", kind.field());
        let handlers = [
            h.exec.is_some(),
            h.http_get.is_some(),
            h.tcp_socket.is_some(),
            h.sleep.is_some(),
        ]
        .iter()
        .filter(|&&set| set)
        .count();
        match handlers {
            0 => errs.push(format!("{hp}: Required value: must specify a handler type")),
            1 => {}
            _ => errs.push(format!("{hp}: Forbidden: may not specify more than 1 handler type")),
        }
        if let Some(e) = &h.exec
            && e.command.as_ref().is_none_or(|c| c.is_empty())
        {
            errs.push(format!("{hp}.exec.command: Required value"));
        }
        if let Some(g) = &h.http_get {
            if let IntOrString::Int(n) = g.port
                && !(1..=65535).contains(&n)
            {
                errs.push(format!(
                    "{hp}.httpGet.port: Invalid value: {n}: must be between 1 and 65535, inclusive"
                ));
            }
            if let Some(s) = g.scheme.as_deref()
                && s != "HTTP"
                && s != "HTTPS"
            {
                errs.push(format!(
                    "{hp}.httpGet.scheme: Unsupported value: {s:?}: supported values: \"HTTP\", \"HTTPS\""
                ));
            }
        }
        if let Some(s) = &h.sleep
            && (s.seconds <= 0 || s.seconds > grace)
        {
            errs.push(format!(
                "{hp}.sleep.seconds: Invalid value: {}: must be greater than 0 and less than terminationGracePeriodSeconds ({grace})",
                s.seconds
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Container {
        serde_yaml::from_str(yaml).expect("container yaml")
    }

    #[test]
    fn handlers_parse() {
        let c = container(
            "name: a\nports: [{name: web, containerPort: 8080}]\nlifecycle:\n  postStart: {httpGet: {port: web, path: hook}}\n  preStop: {sleep: {seconds: 3}}\n",
        );
        let post = Hook::of(HookKind::PostStart, &c).expect("postStart");
        match post.action {
            Action::Http(get) => {
                assert_eq!(get.target.port, Ok(8080));
                assert_eq!(get.path, "/hook");
            }
            other => panic!("httpGet expected: {other:?}"),
        }
        assert_eq!(
            Hook::of(HookKind::PreStop, &c).map(|h| h.action),
            Some(Action::Sleep(Duration::from_secs(3)))
        );
        assert!(Hook::of(HookKind::PostStart, &container("name: a\n")).is_none());
    }

    #[test]
    fn validation_as_kubernetes() {
        let c =
            container("name: a\nlifecycle:\n  postStart: {}\n  preStop: {sleep: {seconds: 40}, exec: {command: []}}\n");
        assert_eq!(
            validate("spec.containers[0]", &c, false, 30),
            [
                "spec.containers[0].lifecycle.postStart: Required value: must specify a handler type",
                "spec.containers[0].lifecycle.preStop: Forbidden: may not specify more than 1 handler type",
                "spec.containers[0].lifecycle.preStop.exec.command: Required value",
                "spec.containers[0].lifecycle.preStop.sleep.seconds: Invalid value: 40: must be greater than 0 and less than terminationGracePeriodSeconds (30)",
            ]
        );
        let init = container("name: a\nlifecycle: {preStop: {sleep: {seconds: 1}}}\n");
        assert_eq!(
            validate("spec.initContainers[0]", &init, true, 30),
            [
                "spec.initContainers[0].lifecycle: Forbidden: may not be set for init containers without restartPolicy=Always"
            ]
        );
        let sidecar = container("name: a\nrestartPolicy: Always\nlifecycle: {preStop: {sleep: {seconds: 1}}}\n");
        assert!(validate("spec.initContainers[0]", &sidecar, true, 30).is_empty());
    }
}
