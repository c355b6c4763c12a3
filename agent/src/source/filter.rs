//! Which files in the manifests directory are manifests.
//!
//! The kubelet reads every non-dot file; a `.bak` copy an editor or admin left next to a
//! manifest then becomes a second pod. minilet accepts only `.yaml`, `.yml` and `.json`, and
//! ignores the usual leftovers even when they end in one of those.

use std::ffi::OsStr;

const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];
const LEFTOVER_SUFFIXES: &[&str] = &["~", ".swp", ".swx", ".bak", ".tmp", ".orig"];

/// Whether a file name is a manifest candidate.
pub fn is_manifest_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else { return false };
    if name.starts_with('.') || (name.starts_with('#') && name.ends_with('#')) || name.contains(".dpkg-") {
        return false;
    }
    if LEFTOVER_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return false;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) => !stem.is_empty() && EXTENSIONS.contains(&ext),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_and_ignored_names() {
        for ok in ["web.yaml", "web.yml", "web.json", "a.b.yaml", "kube-apiserver.yaml"] {
            assert!(is_manifest_name(OsStr::new(ok)), "{ok}");
        }
        for ignored in [
            ".web.yaml",
            ".web.yaml.swp",
            "web.yaml~",
            "web.yaml.swp",
            "web.yaml.swx",
            "web.yaml.bak",
            "web.yaml.tmp",
            "web.yaml.orig",
            "#web.yaml#",
            "web.yaml.dpkg-new",
            "web.yaml.dpkg-old",
            "web.dpkg-dist.yaml",
            "web",
            "web.txt",
            "web.conf",
            ".yaml",
            "README",
        ] {
            assert!(!is_manifest_name(OsStr::new(ignored)), "{ignored}");
        }
    }
}
