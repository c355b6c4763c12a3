//! Static pod UIDs, derived like the kubelet's: an MD5 over the pod, the node and the file.
//!
//! The kubelet hashes its in-memory Go object; we hash the canonical JSON of the parsed and
//! defaulted pod (field order fixed by the types, maps sorted). Same property: reformatting or
//! comments change nothing, any semantic edit makes a new UID, and the same content at another
//! path or on another node is another pod.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use md5::{Digest, Md5};

/// 32 lowercase hex digits. `pod` must not carry the `config.seen` annotation or a UID yet.
pub fn static_uid(pod: &Pod, node_name: &str, path: &Path) -> String {
    let mut hasher = Md5::new();
    // Serializing a Pod cannot fail (no non-string map keys); an empty hash input would
    // still give a stable UID.
    hasher.update(serde_json::to_vec(pod).unwrap_or_default());
    hasher.update(format!("host:{node_name}"));
    hasher.update(format!("file:{}", path.display()));
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn stable_under_formatting_changed_by_edits_path_and_node() {
        let a = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: w}\nspec: {containers: [{name: a, image: i}]}\n");
        let b = pod(
            "# a comment\napiVersion: v1\nkind: Pod\nmetadata:\n  name: w\nspec:\n  containers:\n  - image: i\n    name: a\n",
        );
        let c = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: w}\nspec: {containers: [{name: a, image: j}]}\n");
        let p = Path::new("/etc/minilet/manifests/w.yaml");
        let u = static_uid(&a, "n1", p);
        assert_eq!(u.len(), 32);
        assert!(u.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(u, static_uid(&b, "n1", p));
        assert_ne!(u, static_uid(&c, "n1", p));
        assert_ne!(u, static_uid(&a, "n2", p));
        assert_ne!(u, static_uid(&a, "n1", Path::new("/other/w.yaml")));
    }
}
