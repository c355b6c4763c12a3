//! Which pod sysctls the node allows: the kubelet's safe set, plus what
//! `--allowed-unsafe-sysctls` names. A pod asking for any other is rejected at admission as
//! `SysctlForbidden`, as the kubelet does; API validation (namespaced, not shared with the
//! host) happened when the manifest was read.

use k8s_openapi::api::core::v1::Pod;

use super::security::Rejection;

/// The kubelet's safe sysctls: namespaced, and unable to hurt other pods.
const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// `--allowed-unsafe-sysctls`: names, or prefixes ending in `*` (`kernel.msg*`, `net.core.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedSysctls(Vec<String>);

/// Parse the flag's value (comma-separated; empty allows nothing beyond the safe set).
pub fn parse_allowed(s: &str) -> Result<AllowedSysctls, String> {
    let mut out = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let name = p.replace('/', ".");
        let (stem, prefix) = match name.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (name.as_str(), false),
        };
        let chars = !stem.is_empty()
            && stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        let parts = if prefix {
            !stem.starts_with('.') && !stem.contains("..")
        } else {
            stem.split('.').all(|part| !part.is_empty())
        };
        if !(chars && parts) {
            return Err(format!(
                "{p:?}: a sysctl name or a prefix ending in '*' (e.g. 'kernel.msg*' or 'net.core.somaxconn')"
            ));
        }
        out.push(name);
    }
    Ok(AllowedSysctls(out))
}

impl AllowedSysctls {
    fn allows(&self, name: &str) -> bool {
        SAFE.contains(&name)
            || self.0.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => p == name,
            })
    }

    /// The kubelet's sysctl admission: every sysctl of the pod is safe or allowed.
    pub fn admit(&self, pod: &Pod) -> Result<(), Rejection> {
        let sysctls = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.sysctls.as_ref());
        for s in sysctls.into_iter().flatten() {
            let name = s.name.replace('/', ".");
            if !self.allows(&name) {
                return Err(Rejection {
                    reason: "SysctlForbidden".into(),
                    message: format!(
                        "forbidden sysctl: {name:?} not allowlisted (the node allows the safe set and --allowed-unsafe-sysctls)"
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(sysctls: &str) -> Pod {
        serde_yaml::from_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  securityContext: {{sysctls: {sysctls}}}\n  containers: [{{name: a, image: i}}]\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_safe_set_is_allowed_and_the_rest_only_when_named() {
        let none = AllowedSysctls::default();
        assert!(
            none.admit(&pod("[{name: net.ipv4.ip_unprivileged_port_start, value: '0'}]"))
                .is_ok()
        );
        assert!(
            none.admit(&pod("[{name: net/ipv4/tcp_syncookies, value: '1'}]"))
                .is_ok()
        );
        let e = none.admit(&pod("[{name: kernel.msgmax, value: '9000'}]")).unwrap_err();
        assert_eq!(e.reason, "SysctlForbidden");
        assert!(e.message.contains("\"kernel.msgmax\""), "{}", e.message);
        let some = parse_allowed("kernel.msg*, net.core.somaxconn").unwrap();
        assert!(
            some.admit(&pod(
                "[{name: kernel.msgmax, value: '9000'}, {name: net.core.somaxconn, value: '1024'}]"
            ))
            .is_ok()
        );
        assert!(some.admit(&pod("[{name: net.core.rmem_default, value: '1'}]")).is_err());
    }

    #[test]
    fn bad_flag_values_are_refused() {
        for bad in ["*", "kernel.*.x", "kernel msg", "a*b"] {
            assert!(parse_allowed(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_allowed("").unwrap(), AllowedSysctls::default());
        assert!(parse_allowed("net.core.*").is_ok());
    }
}
