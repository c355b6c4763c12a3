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

/// The paths of keys given twice in one mapping (the last one wins, in the API server as
/// in serde), by one more walk of the document's generic shape. Only string-like keys are
/// compared; a non-scalar key is left to the decoder.
pub fn duplicates<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let mut found = Vec::new();
    serde::de::DeserializeSeed::deserialize(
        Walk {
            path: String::new(),
            found: &mut found,
        },
        de,
    )?;
    Ok(found)
}

/// One node of the walk: its path, and where duplicates go.
struct Walk<'a> {
    path: String,
    found: &'a mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A YAML tag (`!t x`): its value is walked no further.
        let (serde::de::IgnoredAny, variant) = data.variant()?;
        serde::de::VariantAccess::newtype_variant::<serde::de::IgnoredAny>(variant).map(drop)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Walk {
                path: format!("{}[{i}]", self.path),
                found: &mut *self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(Key(key)) = map.next_key()? {
            let path = match &key {
                Some(k) if self.path.is_empty() => k.clone(),
                Some(k) => format!("{}.{k}", self.path),
                None => format!("{}.?", self.path),
            };
            if let Some(k) = key
                && !seen.insert(k)
            {
                self.found.push(path.clone());
            }
            map.next_value_seed(Walk {
                path,
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

/// A mapping key as text, if it is a scalar.
struct Key(Option<String>);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(Some(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Key, E> {
                Ok(Key(Some(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Key, E> {
                Ok(Key(Some(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Key, E> {
                Ok(Key(Some(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Key, E> {
                Ok(Key(Some(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Key(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Key(None))
            }
        }
        de.deserialize_any(V)
    }
}

/// The warnings for these duplicate field paths, in the API server's words.
pub fn duplicate_field_warnings(paths: &[String]) -> Vec<String> {
    paths.iter().map(|p| format!("duplicate field {p:?}")).collect()
}

/// The warnings for these unknown field paths, in the API server's words.
pub fn unknown_field_warnings(paths: &[String]) -> Vec<String> {
    paths.iter().map(|p| format!("unknown field {p:?}")).collect()
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
    for (list, containers) in [
        ("initContainers", spec.init_containers.as_deref().unwrap_or_default()),
        ("containers", &spec.containers[..]),
    ] {
        for (i, c) in containers.iter().enumerate() {
            let path = format!("spec.{list}[{i}]");
            note(nonempty(&c.volume_devices), &format!("{path}.volumeDevices"));
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
                let (pod, mut unknown) =
                    crate::source::parse::parse(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                unknown.extend(not_implemented(&pod));
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
                let Ok((_, unknown)) = crate::source::parse::parse(std::path::Path::new("t.yaml"), &lit) else {
                    continue;
                };
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

    fn dups_yaml(text: &str) -> Vec<String> {
        duplicates(serde_yaml::Deserializer::from_str(text)).unwrap()
    }

    #[test]
    fn duplicate_keys_are_named_by_path() {
        assert_eq!(
            dups_yaml(
                "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {x: '1', x: '2'}}\nspec:\n  containers: [{name: a, image: i, image: j}]\nkind: Pod\n"
            ),
            ["metadata.labels.x", "spec.containers[0].image", "kind"]
        );
        let mut de =
            serde_json::Deserializer::from_str(r#"{"metadata":{"name":"a","name":"b"},"spec":{"x":[1,{"a":null}]}}"#);
        assert_eq!(duplicates(&mut de).unwrap(), ["metadata.name"]);
        assert!(dups_yaml("a: &x {b: 1}\nc: *x\nd: !t {e: 1}\n? [k]\n: v\n1: x\n'1': y\n").len() == 1);
    }

    #[test]
    fn accepted_but_ignored_fields_are_named() {
        let pod: Pod = serde_yaml::from_str(&format!(
            "{POD}spec:\n  imagePullSecrets: [{{name: s}}]\n  tolerations: [{{operator: Exists}}]\n  securityContext: {{sysctls: [{{name: net.core.somaxconn, value: '1024'}}]}}\n  containers:\n  - name: a\n    image: i\n    volumeDevices: [{{name: d, devicePath: /dev/x}}]\n"
        ))
        .unwrap();
        assert_eq!(
            not_implemented(&pod),
            [
                "field \"spec.imagePullSecrets\" is not implemented by minilet and is ignored",
                "field \"spec.containers[0].volumeDevices\" is not implemented by minilet and is ignored",
            ]
        );
        let plain: Pod =
            serde_yaml::from_str(&format!("{POD}spec: {{containers: [{{name: a, image: i}}]}}\n")).unwrap();
        assert!(not_implemented(&plain).is_empty());
    }

    #[test]
    fn warnings_are_bounded() {
        let paths: Vec<String> = (0..25).map(|i| format!("spec.x{i}")).collect();
        let w = bounded(unknown_field_warnings(&paths));
        assert_eq!(w.len(), MAX_WARNINGS + 1);
        assert_eq!(w[0], "unknown field \"spec.x0\"");
        assert_eq!(w[MAX_WARNINGS], "and 5 more");
    }
}
