//! Where and how to reach registries: mirrors, plain-HTTP exceptions and credentials.
//!
//! Docker's rules, which users know: plain HTTP only for loopback registries and those named
//! with `--insecure-registry`; mirrors (`--registry-mirror docker.io=http://127.0.0.1:5000`)
//! are tried in order before the upstream registry, as containerd's `hosts.toml` does, so an
//! unchanged upstream manifest can run from a local mirror; credentials come from a
//! docker-style `config.json` (`auths.<host>.auth` = base64 of `user:password`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use oci_spec::distribution::Reference;

use super::ImageError;

/// The kubelet's default `--image-pull-progress-deadline`.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(60);

/// Registry settings of an agent or a CLI pull.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Upstream registry (as written in references, e.g. `docker.io`) → mirror endpoints.
    pub mirrors: BTreeMap<String, Vec<Mirror>>,
    /// Registries (`host[:port]`) reached over plain HTTP although not on loopback.
    pub insecure: Vec<String>,
    /// A docker-style `config.json`; absent file = no credentials.
    pub auth_file: Option<PathBuf>,
    /// A pull whose transfer makes no progress for this long fails (see the pull module): a
    /// stalled or trickling registry cannot hold a pull forever.
    pub progress_deadline: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            mirrors: BTreeMap::new(),
            insecure: Vec::new(),
            auth_file: None,
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
        }
    }
}

/// One mirror endpoint: `host[:port]` and whether it speaks plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub host: String,
    pub http: bool,
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// A registry token sent as is (`registrytoken`, CRI `registry_token`).
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

/// Where to fetch one reference from: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` requests go to.
    pub host: String,
    pub http: bool,
    pub mirror: bool,
}

impl RegistryOptions {
    /// Parse `--registry-mirror REGISTRY=URL` values (URL: `http://host:port` or
    /// `https://host`; a bare `host:port` means HTTPS unless it is on loopback).
    pub fn parse_mirror(spec: &str) -> Result<(String, Mirror), String> {
        let (registry, url) = spec.split_once('=').ok_or_else(|| {
            format!("registry mirror {spec:?}: expected REGISTRY=URL, e.g. docker.io=http://127.0.0.1:5000")
        })?;
        let (http, rest) = if let Some(r) = url.strip_prefix("http://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (false, r)
        } else {
            (is_loopback(url), url)
        };
        let host = rest.trim_end_matches('/');
        if registry.is_empty() || host.is_empty() || host.contains('/') {
            return Err(format!(
                "registry mirror {spec:?}: expected REGISTRY=URL with a URL of the form http[s]://host[:port]"
            ));
        }
        Ok((
            registry.to_owned(),
            Mirror {
                host: host.to_owned(),
                http,
            },
        ))
    }

    /// Mirrors first (in the order given), then the registry itself.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let registry = reference.registry();
        let mut out: Vec<Endpoint> = self
            .mirrors
            .get(registry)
            .into_iter()
            .flatten()
            .map(|m| Endpoint {
                host: m.host.clone(),
                http: m.http,
                mirror: true,
            })
            .collect();
        let host = reference.resolve_registry().to_owned();
        out.push(Endpoint {
            http: is_loopback(&host) || self.insecure.iter().any(|i| *i == host || *i == registry),
            host,
            mirror: false,
        });
        out
    }

    /// Credentials for `host` from the auth file, if it has any.
    pub fn credentials(&self, host: &str) -> Result<Option<Credentials>, ImageError> {
        let Some(path) = &self.auth_file else {
            return Ok(None);
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io(path, e)),
        };
        credentials_in(&bytes, host).map_err(|reason| ImageError::InvalidConfig {
            path: path.clone(),
            reason,
        })
    }
}

/// The docker config default: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_auth_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker/config.json"))
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// Find `host`'s entry: keys may be `host`, `https://host`, `http://host/v1/`...; Docker Hub's
/// is `https://index.docker.io/v1/`.
fn credentials_in(config: &[u8], host: &str) -> Result<Option<Credentials>, String> {
    let config: DockerConfig = serde_json::from_slice(config).map_err(|e| e.to_string())?;
    let wanted =
        |h: &str| h == host || (host == "index.docker.io" && (h == "docker.io" || h == "registry-1.docker.io"));
    let Some((key, entry)) = config.auths.iter().find(|(key, _)| {
        let h = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        wanted(h)
    }) else {
        return Ok(None);
    };
    if let Some(token) = entry.registrytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::Bearer(token.clone())));
    }
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auths.{key}.auth: not base64: {e}"))?;
        let text = String::from_utf8(decoded).map_err(|_| format!("auths.{key}.auth: not UTF-8"))?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| format!("auths.{key}.auth: expected base64 of \"user:password\""))?;
        return Ok(Some(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials::Basic {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or_default()
    } else {
        host
    };
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(s: &str) -> Reference {
        Reference::try_from(s).expect("reference")
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:5000",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.example.com",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[fd00::1]:5000",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn mirrors_come_first_and_plain_http_only_where_allowed() {
        let mut opts = RegistryOptions::default();
        let (reg, m) = RegistryOptions::parse_mirror("docker.io=http://127.0.0.1:5000").unwrap();
        opts.mirrors.entry(reg).or_default().push(m);
        opts.insecure.push("registry.lan:5000".into());

        let eps = opts.endpoints(&reference("nginx"));
        assert_eq!(
            eps,
            vec![
                Endpoint {
                    host: "127.0.0.1:5000".into(),
                    http: true,
                    mirror: true
                },
                Endpoint {
                    host: "index.docker.io".into(),
                    http: false,
                    mirror: false
                },
            ]
        );
        assert!(opts.endpoints(&reference("registry.lan:5000/a/b:1"))[0].http);
        assert!(opts.endpoints(&reference("localhost:5000/a"))[0].http);
        assert!(!opts.endpoints(&reference("registry.example.com/a"))[0].http);
        assert_eq!(opts.endpoints(&reference("quay.io/a/b")).len(), 1);
    }

    #[test]
    fn mirror_specs() {
        assert_eq!(
            RegistryOptions::parse_mirror("docker.io=https://mirror.example.com/").unwrap(),
            (
                "docker.io".into(),
                Mirror {
                    host: "mirror.example.com".into(),
                    http: false
                }
            )
        );
        assert!(
            RegistryOptions::parse_mirror("docker.io=localhost:5000")
                .unwrap()
                .1
                .http
        );
        for bad in ["docker.io", "=http://x", "docker.io=http://x/path"] {
            assert!(RegistryOptions::parse_mirror(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_config_credentials() {
        let cfg = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "http://tok.example.com": {"registrytoken": "T"},
            "bad.example.com": {"auth": "bm9jb2xvbg=="}
        }}"#;
        assert_eq!(
            credentials_in(cfg, "index.docker.io").unwrap(),
            Some(Credentials::Basic {
                username: "hub".into(),
                password: "secret".into()
            })
        );
        assert_eq!(
            credentials_in(cfg, "127.0.0.1:5000").unwrap(),
            Some(Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            credentials_in(cfg, "tok.example.com").unwrap(),
            Some(Credentials::Bearer("T".into()))
        );
        assert_eq!(credentials_in(cfg, "other.example.com").unwrap(), None);
        let err = credentials_in(cfg, "bad.example.com").unwrap_err();
        assert!(err.contains("auths.bad.example.com.auth"), "{err}");
        assert!(format!("{:?}", credentials_in(cfg, "127.0.0.1:5000").unwrap()).contains("***"));
    }
}
