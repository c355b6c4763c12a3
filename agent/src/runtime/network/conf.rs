//! Network configuration lists: the first one of the CNI conf dir, or minilet's default.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::NetworkError;

/// The default network's name, its bridge and its address range.
pub const DEFAULT_NETWORK: &str = "minilet";
pub const DEFAULT_BRIDGE: &str = "minilet0";
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";

/// A parsed network configuration list (a `.conf` becomes a list of one plugin).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from (for messages).
    pub source: PathBuf,
}

impl NetworkList {
    /// Parse and validate one configuration file's content.
    pub fn parse(source: &Path, text: &[u8]) -> Result<Self, NetworkError> {
        let problem = |p: String| NetworkError::Config {
            path: source.to_path_buf(),
            problem: p,
        };
        let value: Value = serde_json::from_slice(text).map_err(|e| problem(format!("not JSON: {e}")))?;
        let Value::Object(top) = value else {
            return Err(problem("must be a JSON object".into()));
        };
        let string = |obj: &Map<String, Value>, key: &str| -> Result<String, NetworkError> {
            match obj.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(_) => Err(problem(format!("field \"{key}\" must be a non-empty string"))),
                None => Err(problem(format!("field \"{key}\" is missing"))),
            }
        };
        let name = string(&top, "name")?;
        let cni_version = string(&top, "cniVersion")?;
        let plugins = match top.get("plugins") {
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, p)| match p {
                    Value::Object(m) => Ok(m.clone()),
                    _ => Err(problem(format!("plugins[{i}] must be an object"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(problem("field \"plugins\" must be an array".into())),
            // A single-plugin `.conf`: the object itself is the plugin.
            None => vec![top.clone()],
        };
        if plugins.is_empty() {
            return Err(problem("field \"plugins\" is empty".into()));
        }
        for (i, p) in plugins.iter().enumerate() {
            let kind =
                string(p, "type").map_err(|_| problem(format!("plugins[{i}].type must be a non-empty string")))?;
            // The type names a file in the plugin directories: never a path.
            if !kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                || kind.starts_with('.')
            {
                return Err(problem(format!(
                    "plugins[{i}].type {kind:?} is not a plugin name (letters, digits, '-', '_', '.')"
                )));
            }
        }
        Ok(NetworkList {
            name,
            cni_version,
            disable_check: top.get("disableCheck").and_then(Value::as_bool).unwrap_or(false),
            plugins,
            source: source.to_path_buf(),
        })
    }

    /// The list as JSON (cached with a pod's result, so that DEL uses what ADD used).
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "cniVersion": self.cni_version,
            "disableCheck": self.disable_check,
            "plugins": self.plugins,
        })
    }

    pub fn plugin_type(plugin: &Map<String, Value>) -> &str {
        plugin.get("type").and_then(Value::as_str).unwrap_or_default()
    }

    /// Whether CHECK exists for this list's version (CNI 0.4.0 and later).
    pub fn supports_check(&self) -> bool {
        !self.disable_check && !matches!(self.cni_version.as_str(), "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1")
    }
}

/// The first configuration in `dir` in lexical order (`.conflist`, `.conf`, `.json`, as
/// containerd and CRI-O pick it); `None` when there is none (or no such directory).
pub fn load_first(dir: &Path) -> Result<Option<NetworkList>, NetworkError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NetworkError::io(format!("read {}", dir.display()), e)),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
        })
        .collect();
    files.sort();
    let Some(first) = files.into_iter().next() else {
        return Ok(None);
    };
    let text = std::fs::read(&first).map_err(|e| NetworkError::io(format!("read {}", first.display()), e))?;
    NetworkList::parse(&first, &text).map(Some)
}

/// minilet's own network: a bridge with host-local addresses (kept under `data_dir`), the
/// bridge as gateway with masquerading out of the node, then portmap for hostPorts.
pub fn default_list(data_dir: &Path, pod_cidr: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": DEFAULT_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": DEFAULT_BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_cidr }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": data_dir,
                }
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true
            }
        ]
    })
}

/// Check a `--pod-cidr` value: an IPv4 network `a.b.c.d/n` with n in 8..=30.
pub fn validate_cidr(cidr: &str) -> Result<(), String> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| format!("--pod-cidr {cidr:?}: expected an IPv4 network such as {DEFAULT_POD_CIDR}"))?;
    addr.parse::<std::net::Ipv4Addr>()
        .map_err(|e| format!("--pod-cidr {cidr:?}: address {addr:?}: {e}"))?;
    match len.parse::<u8>() {
        Ok(n) if (8..=30).contains(&n) => Ok(()),
        _ => Err(format!("--pod-cidr {cidr:?}: prefix length must be 8 to 30")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_and_single_conf_parse() {
        let list = NetworkList::parse(
            Path::new("a.conflist"),
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        assert_eq!(list.plugins.len(), 2);
        assert!(list.supports_check());
        let one = NetworkList::parse(
            Path::new("a.conf"),
            br#"{"cniVersion":"0.3.1","name":"n","type":"bridge"}"#,
        )
        .unwrap();
        assert_eq!(NetworkList::plugin_type(&one.plugins[0]), "bridge");
        assert!(!one.supports_check());
    }

    #[test]
    fn bad_lists_name_the_field() {
        for (text, want) in [
            (r#"{"name":"n","plugins":[{"type":"x"}]}"#, "\"cniVersion\" is missing"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "\"plugins\" is empty",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#, "plugins[0].type"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
                "is not a plugin name",
            ),
            ("[1]", "must be a JSON object"),
        ] {
            let err = NetworkList::parse(Path::new("x.conflist"), text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("x.conflist"), "{err}");
        }
    }

    #[test]
    fn default_list_is_valid_and_uses_the_cidr() {
        let v = default_list(Path::new("/x/ipam"), "10.9.0.0/16");
        let list = NetworkList::parse(Path::new("d"), v.to_string().as_bytes()).unwrap();
        assert_eq!(list.name, DEFAULT_NETWORK);
        assert_eq!(v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.9.0.0/16");
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/x/ipam");
    }

    #[test]
    fn cidr_validation() {
        assert!(validate_cidr("10.244.0.0/16").is_ok());
        assert!(validate_cidr("10.244.0.0").is_err());
        assert!(validate_cidr("10.244.0.0/31").is_err());
        assert!(validate_cidr("foo/16").is_err());
    }
}
