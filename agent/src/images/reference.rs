//! Image references, `[host[:port]/]path[:tag][@digest]`, read by the distribution
//! reference grammar (what Docker, containerd and the kubelet accept) and normalized as
//! Docker does (`busybox` is `docker.io/library/busybox:latest`).
//!
//! Why not `oci_spec`'s parser: its pattern has a Unicode `\w` in the tag, whose `{0,127}`
//! repetition compiles into an automaton of about 4 MB that the agent kept for its whole
//! life (and ~300 ms to build unoptimised). The grammar is ASCII (Go's `\w`), so the same
//! language with ASCII classes is a few kilobytes. The result is the same `Reference` type
//! the registry client takes.

use std::sync::OnceLock;

use oci_spec::distribution::Reference;
use regex::Regex;

/// The longest repository path, as the grammar allows.
const MAX_REPOSITORY: usize = 255;

/// The grammar, built from its named parts; groups: 1 name, 2 tag, 3 digest.
fn grammar() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let alnum = "[a-z0-9]+";
        let separator = "(?:[._]|__|-*)";
        let component = format!("{alnum}(?:{separator}{alnum})*");
        let path = format!("{component}(?:/{component})*");
        let host_part = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain = format!(r"{host_part}(?:\.{host_part})*(?::[0-9]+)?");
        let tag = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
        let algorithm = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*";
        let digest = format!("{algorithm}:[0-9a-fA-F]{{32,}}");
        // A fixed pattern (no input reaches it), compiled by every test that parses.
        Regex::new(&format!("^((?:{domain}/)?{path})(?::({tag}))?(?:@({digest}))?$"))
            .expect("the reference grammar is a valid pattern")
    })
}

/// Parse `s`; the error is the reason, in the words `oci_spec` used for the same cases.
pub fn parse(s: &str) -> Result<Reference, String> {
    if s.is_empty() {
        return Err("repository name must have at least one component".into());
    }
    let caps = grammar()
        .captures(s)
        .ok_or_else(|| "invalid reference format".to_string())?;
    let name = caps.get(1).map_or("", |m| m.as_str());
    let tag = caps.get(2).map(|m| m.as_str().to_owned());
    let digest = caps.get(3).map(|m| m.as_str().to_owned());
    let (registry, repository) = split_domain(name);
    if repository.len() > MAX_REPOSITORY {
        return Err(format!(
            "repository name must not be more than {MAX_REPOSITORY} characters"
        ));
    }
    if let Some(d) = &digest {
        check_digest(d)?;
    }
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(registry, repository, tag, digest),
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or_else(|| "latest".into())),
    })
}

/// Docker's normalization: a first component that is no host (no `.` or `:`, not
/// `localhost`) is part of the path on Docker Hub, whose one-component names live under
/// `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

/// The digest algorithms registries use, with the length of their hex.
fn check_digest(digest: &str) -> Result<(), String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| "invalid checksum digest format".to_string())?;
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm".into()),
    };
    if hex.len() != want {
        return Err("invalid checksum digest length".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same answers as `oci_spec`'s parser for the grammar's cases, ASCII or not valid.
    #[test]
    fn agrees_with_oci_spec_on_the_grammar() {
        let long_tag = format!("busybox:{}", "t".repeat(128));
        let too_long_tag = format!("busybox:{}", "t".repeat(129));
        let sha = format!("sha256:{}", "a".repeat(64));
        let cases: Vec<String> = [
            "busybox",
            "busybox:1.36",
            "library/busybox",
            "docker.io/busybox",
            "index.docker.io/library/busybox:1",
            "foo/bar",
            "localhost/busybox",
            "localhost:5000/a/b:v1",
            "quay.io/x/y:z",
            "test.com:tag",
            "test.com:5000",
            "foo_bar.com:8080",
            "lowercase:Uppercase",
            "a__b/c--d/e.f:_tag",
            "registry.k8s.io/etcd:3.4.23",
            "127.0.0.1:5000/x:1",
            "Busybox",
            "foo/Bar",
            "busybox:",
            "busybox:-x",
            "a b",
            "a//b",
            "-a",
            "a-",
            "busybox@sha256:abc",
            "busybox@sha999:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            ":tag",
            "/a",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            long_tag,
            too_long_tag,
            format!("busybox@{sha}"),
            format!("localhost/x:1@{sha}"),
            format!("x@sha512:{}", "b".repeat(128)),
            format!("x@sha512:{}", "b".repeat(64)),
            format!("{}/x", "a".repeat(300)),
            format!("a/{}", "b".repeat(300)),
        ])
        .collect();
        for s in &cases {
            let ours = parse(s);
            let theirs = Reference::try_from(s.as_str());
            assert_eq!(ours.is_ok(), theirs.is_ok(), "{s:?}: {ours:?} vs {theirs:?}");
            match (ours, theirs) {
                (Ok(a), Ok(b)) => assert_eq!(
                    (
                        a.whole(),
                        a.registry().to_owned(),
                        a.repository().to_owned(),
                        a.tag().map(str::to_owned),
                        a.digest().map(str::to_owned)
                    ),
                    (
                        b.whole(),
                        b.registry().to_owned(),
                        b.repository().to_owned(),
                        b.tag().map(str::to_owned),
                        b.digest().map(str::to_owned)
                    ),
                    "{s:?}"
                ),
                (Err(a), Err(b)) => assert_eq!(a, b.to_string(), "{s:?}"),
                _ => unreachable!(),
            }
        }
    }

    /// Tags are ASCII in the grammar (Go's `\w`); `oci_spec` took any Unicode letter.
    #[test]
    fn a_tag_is_ascii() {
        assert_eq!(parse("busybox:tâg").unwrap_err(), "invalid reference format");
        assert_eq!(parse("busybox:tag_1.2-x").unwrap().tag(), Some("tag_1.2-x"));
    }
}
