//! Strict decoding, as the API server warns about it: fields of a manifest that the `v1.Pod`
//! schema does not have (a misspelt `livenesProbe`), which decoding would otherwise drop
//! without a word. The pod is still accepted, as the API server accepts it by default; the
//! warnings become events on the file and on the pod.

use k8s_openapi::api::core::v1::Pod;

/// At most this many fields are named; the rest are counted in one more warning.
pub const MAX_WARNINGS: usize = 20;

/// Decode a Pod from `de`, noting every field the schema does not have, by its path as the
/// API server writes it (`spec.containers[0].livenesProbe`).
pub fn decode<'de, D: serde::Deserializer<'de>>(de: D) -> Result<(Pod, Vec<String>), D::Error> {
    let mut unknown = Vec::new();
    let pod = serde_ignored::deserialize(de, |path| unknown.push(api_path(&path)))?;
    Ok((pod, unknown))
}

/// The warnings for these unknown field paths, in the API server's words, bounded.
pub fn unknown_field_warnings(paths: &[String]) -> Vec<String> {
    bounded(paths.iter().map(|p| format!("unknown field {p:?}")).collect())
}

/// Fields minilet accepts but does not act on, each once per pod by its first path: the
/// pod runs, and the user is told what it does not get. Scheduler-only fields
/// (`tolerations`, `priority`, `schedulerName`, topology spread, preferred affinity),
/// service accounts and links (no API server) and Windows/SELinux options (a Linux host
/// without SELinux) are left out: the kubelet does not act on them for a static pod either.
/// Keep in step with README.md's "Not implemented" list.
pub fn not_implemented(pod: &Pod) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    let Some(spec) = pod.spec.as_ref() else { return fields };
    let mut note = |set: bool, path: &str| {
        if set {
            fields.push(path.to_string());
        }
    };
    note(spec.active_deadline_seconds.is_some(), "spec.activeDeadlineSeconds");
    note(nonempty(&spec.image_pull_secrets), "spec.imagePullSecrets");
    note(nonempty(&spec.resource_claims), "spec.resourceClaims");
    note(
        spec.runtime_class_name.as_deref().is_some_and(|r| !r.is_empty()),
        "spec.runtimeClassName",
    );
    note(spec.set_hostname_as_fqdn == Some(true), "spec.setHostnameAsFQDN");
    note(
        spec.subdomain.as_deref().is_some_and(|s| !s.is_empty()),
        "spec.subdomain",
    );
    if let Some(sc) = &spec.security_context {
        note(nonempty(&sc.sysctls), "spec.securityContext.sysctls");
        note(
            sc.fs_group_change_policy.is_some(),
            "spec.securityContext.fsGroupChangePolicy",
        );
        note(
            sc.supplemental_groups_policy.as_deref().is_some_and(|p| p != "Merge"),
            "spec.securityContext.supplementalGroupsPolicy",
        );
    }
    for (list, containers) in [
        ("initContainers", spec.init_containers.as_deref().unwrap_or_default()),
        ("containers", &spec.containers[..]),
    ] {
        for (i, c) in containers.iter().enumerate() {
            let path = format!("spec.{list}[{i}]");
            note(c.lifecycle.is_some(), &format!("{path}.lifecycle"));
            note(nonempty(&c.volume_devices), &format!("{path}.volumeDevices"));
            note(c.stdin_once == Some(true), &format!("{path}.stdinOnce"));
            note(
                c.security_context
                    .as_ref()
                    .and_then(|sc| sc.proc_mount.as_deref())
                    .is_some_and(|m| m != "Default"),
                &format!("{path}.securityContext.procMount"),
            );
        }
    }
    bounded(
        fields
            .into_iter()
            .map(|f| format!("field {f:?} is not implemented by minilet and is ignored"))
            .collect(),
    )
}

fn nonempty<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

/// At most [`MAX_WARNINGS`] warnings, the rest counted in one more.
pub fn bounded(mut warnings: Vec<String>) -> Vec<String> {
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - MAX_WARNINGS;
        warnings.truncate(MAX_WARNINGS);
        warnings.push(format!("and {more} more"));
    }
    warnings
}

/// `a.b[0].c`: map keys joined by dots, list indices in brackets; serde's wrappers
/// (`Option`, newtypes) are not part of a field path.
fn api_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", api_path(parent)),
        Path::Map { parent, key } => match api_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => api_path(parent),
    }
}

/// For tests: the unknown fields of a YAML manifest.
#[cfg(test)]
pub fn unknown_in_yaml(text: &str) -> Result<Vec<String>, serde_yaml::Error> {
    let de = serde_yaml::Deserializer::from_str(text);
    decode(de).map(|(_, unknown)| unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: w}\n";

    fn unknown(spec: &str) -> Vec<String> {
        unknown_in_yaml(&format!("{POD}{spec}")).unwrap()
    }

    #[test]
    fn misspelt_and_unknown_fields_are_named_by_path() {
        assert_eq!(
            unknown("spec:\n  containers:\n  - name: a\n    image: i\n    livenesProbe: {exec: {command: [x]}}\n"),
            ["spec.containers[0].livenesProbe"]
        );
        assert_eq!(
            unknown("spec:\n  nodeSelektor: {a: b}\n  containers: [{name: a, image: i}]\n"),
            ["spec.nodeSelektor"]
        );
        assert_eq!(
            unknown("status2: {}\nspec: {containers: [{name: a, image: i}]}\n"),
            ["status2"]
        );
        assert_eq!(
            unknown(
                "spec:\n  containers:\n  - name: a\n    image: i\n  - name: b\n    image: i\n    readinessProbe:\n      httpGet: {path: /, port: 80, hots: x}\n      periodSecond: 3\n"
            ),
            [
                "spec.containers[1].readinessProbe.httpGet.hots",
                "spec.containers[1].readinessProbe.periodSecond"
            ]
        );
        assert_eq!(
            unknown(
                "spec:\n  containers: [{name: a, image: i}]\n  volumes:\n  - name: v\n    emptyDir: {medium: Memory, sizelimit: 1Gi}\n  - name: h\n    hostPath: {path: /x, typ: Directory}\n"
            ),
            ["spec.volumes[0].emptyDir.sizelimit", "spec.volumes[1].hostPath.typ"]
        );
        assert_eq!(
            unknown(
                "metadata2: {}\nspec:\n  initContainers: [{name: a, image: i, comand: [x]}]\n  containers: [{name: b, image: i, securityContext: {privilegd: true}}]\n"
            ),
            [
                "metadata2",
                "spec.initContainers[0].comand",
                "spec.containers[0].securityContext.privilegd"
            ]
        );
    }

    #[test]
    fn nulls_empty_objects_and_odd_values_are_not_unknown() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: w\n  creationTimestamp: null\n  labels: {}\n  annotations: {a: b}\nspec:\n  nodeSelector: null\n  volumes: []\n  tolerations: []\n  securityContext: {}\n  containers:\n  - name: a\n    image: i\n    args: null\n    env: [{name: X, value: null}]\n    resources: {}\n    ports: [{containerPort: 80, name: http}]\n    livenessProbe: {httpGet: {port: http, path: null}, periodSeconds: 3}\n    readinessProbe: {tcpSocket: {port: 80}}\n    resources: {limits: {cpu: 1, memory: 1Gi}, requests: {}}\n    securityContext: {capabilities: {add: [NET_ADMIN], drop: []}}\nstatus: {}\n";
        // A duplicate key is serde_yaml's error, not ours: take it out of the way.
        let text = text.replacen("    resources: {}\n", "", 1);
        assert_eq!(unknown_in_yaml(&text).unwrap(), Vec::<String>::new());
    }

    /// Every manifest shipped with minilet, and every pod the end-to-end tests write, is valid:
    /// none of them may draw a warning.
    #[test]
    fn shipped_and_tested_manifests_have_no_unknown_fields() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut checked = 0;
        for entry in std::fs::read_dir(root.join("manifests"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let unknown = unknown_in_yaml(&text).unwrap_or_default();
                assert!(unknown.is_empty(), "{}: {unknown:?}", path.display());
                checked += 1;
            }
        }
        assert!(checked > 0, "no manifests found under {}", root.display());
        // The tests' manifests are Rust string literals: decode each literal that is a pod.
        let mut pods = 0;
        for entry in std::fs::read_dir(root.join("tests/tests"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            let src = std::fs::read_to_string(&path).unwrap_or_default();
            for lit in string_literals(&src) {
                if !lit.contains("kind: Pod") {
                    continue;
                }
                let lit = fill_holes(&lit);
                // A literal that is not a whole pod (or whose holes were numbers): skip it.
                let Ok(unknown) = unknown_in_yaml(&lit) else { continue };
                pods += 1;
                // The strict-decoding test writes unknown fields on purpose.
                if path.file_name().is_some_and(|n| n == "strict.rs") {
                    continue;
                }
                assert!(unknown.is_empty(), "{}: {unknown:?} in\n{lit}", path.display());
            }
        }
        assert!(pods >= 20, "only {pods} pod manifests found in tests/tests");
    }

    /// The contents of the raw (`r#"…"#`) and plain string literals of a Rust source, roughly
    /// (escapes `\n` and `\"` undone); good enough for manifests.
    fn string_literals(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find(['"', 'r']) {
            let after = &rest[i..];
            if let Some(body) = after.strip_prefix("r#\"") {
                let Some(end) = body.find("\"#") else { break };
                out.push(body[..end].to_string());
                rest = &body[end + 2..];
            } else if let Some(body) = after.strip_prefix('"') {
                let mut s = String::new();
                let mut chars = body.char_indices();
                let mut end = body.len();
                while let Some((j, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, '\n')) => {
                                // a line continuation: skip the next line's indentation
                                while chars.clone().next().is_some_and(|(_, c)| c == ' ') {
                                    chars.next();
                                }
                            }
                            Some((_, c)) => s.push(c),
                            None => {}
                        },
                        '"' => {
                            end = j + 1;
                            break;
                        }
                        c => s.push(c),
                    }
                }
                out.push(s);
                rest = &body[end.min(body.len())..];
            } else {
                rest = &after[1..];
            }
        }
        out
    }

    /// A `format!` string made YAML: each hole (`{}`, `{name}`, `{x:?}`) is dropped, `{{`
    /// and `}}` become braces.
    fn fill_holes(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(r) = after.strip_prefix("{{").or_else(|| after.strip_prefix("}}")) {
                out.push_str(&after[..1]);
                rest = r;
            } else if let Some((hole, r)) = after[1..].split_once('}')
                && after.starts_with('{')
                && hole.chars().all(|c| c.is_alphanumeric() || "_:?.#".contains(c))
            {
                // Empty: a hole may stand for a value, a line or an indentation.
                rest = r;
            } else {
                out.push_str(&after[..1]);
                rest = &after[1..];
            }
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn warnings_are_bounded() {
        let paths: Vec<String> = (0..25).map(|i| format!("spec.x{i}")).collect();
        let w = unknown_field_warnings(&paths);
        assert_eq!(w.len(), MAX_WARNINGS + 1);
        assert_eq!(w[0], "unknown field \"spec.x0\"");
        assert_eq!(w[MAX_WARNINGS], "and 5 more");
    }
}
