//! Static pod names as the kubelet's file source makes them: `<metadata.name>-<node name>`.
//!
//! The kubelet renames every pod it reads from its manifests directory so that pods of the
//! same manifest on different nodes have distinct names (their mirror pods share one API
//! server). minilet does the same, so names, logs and tools match a kubelet node's.

/// A DNS subdomain's length limit (`metadata.name` of a pod).
const MAX_NAME: usize = 253;

/// The name a pod of manifest name `name` has on node `node` (already lower-cased).
pub fn static_pod_name(name: &str, node: &str) -> String {
    format!("{name}-{node}")
}

/// The problem with the renamed pod's name, as a `field: problem` line, if any. The
/// manifest's name and the node name are valid subdomains already, and so is the two joined
/// by '-' (a subdomain's parts have no length limit of their own): only the length can break.
pub fn check(manifest_name: &str, node: &str) -> Option<String> {
    let full = static_pod_name(manifest_name, node);
    (full.len() > MAX_NAME).then(|| {
        format!(
            "metadata.name: Invalid value: static pod name {manifest_name:?} + \"-\" + node name {node:?} is {} characters, must have at most {MAX_NAME} (the kubelet names static pods <name>-<node name>)",
            full.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_its_limits() {
        assert_eq!(static_pod_name("web", "node1"), "web-node1");
        assert_eq!(check("web", "node1"), None);
        // Parts of 62, 62, 62 and 60 characters and 3 dots: 249.
        let long = ["a".repeat(62), "b".repeat(62), "c".repeat(62), "d".repeat(60)].join(".");
        assert_eq!(check(&long, "n"), None, "251 characters fit");
        let e = check(&long, "node1234").expect("too long");
        assert!(e.starts_with("metadata.name: Invalid value: static pod name"), "{e}");
        assert!(e.contains("is 258 characters, must have at most 253"), "{e}");
        // The last part grows past a label's 63 characters: a subdomain's part may.
        assert_eq!(check(&format!("x.{}", "a".repeat(60)), "node1"), None);
    }
}
