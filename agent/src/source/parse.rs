//! Reading a manifest into a `v1.Pod`, and the defaults the API server and the kubelet's
//! static-pod source would apply to it.

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Deserialize;

use super::{limits, strict};

/// Parse one manifest. Errors are one line without the file name (the caller adds it).
///
/// The text is first held to [`limits`] in one linear pass (nesting, number of values), so
/// the parser's own cost stays linear; a YAML document is then walked once with a budget
/// (aliases expanded, apiVersion and kind noted) and decoded into a Pod straight from the
/// text, so type errors keep their line and column. Alongside the pod: the paths of the
/// warnings of strict decoding: unknown and duplicate fields (see [`strict`]).
pub fn parse(path: &Path, text: &str) -> Result<(Pod, Vec<String>), String> {
    if text.trim().is_empty() {
        return Err("empty manifest".into());
    }
    limits::scan(text).map_err(|e| e.to_string())?;
    if path.extension().is_some_and(|e| e == "json") {
        let mut de = serde_json::Deserializer::from_str(text);
        return strict::decode(&mut de)
            .and_then(|pod| de.end().map(|()| pod))
            .map(|(pod, unknown)| {
                // Only once the text is known to decode: the second pass cannot fail then.
                let mut again = serde_json::Deserializer::from_str(text);
                let dups = strict::duplicates(&mut again).unwrap_or_default();
                (pod, warnings(&unknown, &dups))
            })
            .map_err(|e| {
                // Kind and apiVersion first, for a clearer message than a type mismatch.
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct JsonHead {
                    api_version: Option<serde_json::Value>,
                    kind: Option<serde_json::Value>,
                }
                match serde_json::from_str::<JsonHead>(text) {
                    Err(_) if e.is_syntax() || e.is_eof() => format!("JSON syntax error: {e}"),
                    Ok(head) => {
                        let s = |v: Option<serde_json::Value>| v.and_then(|v| v.as_str().map(str::to_string));
                        let head = limits::Head {
                            null: false,
                            api_version: s(head.api_version),
                            kind: s(head.kind),
                        };
                        check_head(&head).err().unwrap_or_else(|| e.to_string())
                    }
                    Err(_) => e.to_string(),
                }
            });
    }
    let mut docs = serde_yaml::Deserializer::from_str(text);
    let first = docs.next().ok_or("empty manifest")?;
    let head = limits::expansion(first).map_err(yaml_error)?;
    if let Some(second) = docs.next() {
        // Trailing `---` with nothing after it is fine; a second object is not.
        if !limits::expansion(second).map_err(yaml_error)?.null {
            return Err("more than one document: a manifest file holds exactly one Pod".into());
        }
    }
    check_head(&head)?;
    let first = serde_yaml::Deserializer::from_str(text)
        .next()
        .ok_or("empty manifest")?;
    let (pod, unknown) = match strict::decode(first) {
        Ok(decoded) => decoded,
        // The generic document's errors lack the field path: if it fails too, the first
        // error (with path, line and column) is the one to show.
        Err(e) if octal_mode_error(&e) => decode_octal_modes(text).map_err(|_| yaml_error(e))?,
        Err(e) => return Err(yaml_error(e)),
    };
    let dups = serde_yaml::Deserializer::from_str(text)
        .next()
        .and_then(|doc| strict::duplicates(doc).ok())
        .unwrap_or_default();
    Ok((pod, warnings(&unknown, &dups)))
}

/// File modes written the YAML 1.1 way (`defaultMode: 0400`), as Kubernetes reads them: an
/// octal number. serde_yaml speaks YAML 1.2, where `0400` is a string.
const MODE_KEYS: [&str; 2] = ["mode", "defaultMode"];

fn octal_mode_error(e: &serde_yaml::Error) -> bool {
    let msg = e.to_string();
    msg.contains("invalid type: string")
        && MODE_KEYS
            .iter()
            .any(|k| msg.contains(&format!(".{k}: ")) || msg.starts_with(&format!("{k}: ")))
}

/// Decode again through a generic document in which `mode`/`defaultMode` strings of octal
/// digits are numbers. Only after a direct decode failed on one: errors from here on have
/// no line numbers, so the usual path stays the direct one.
fn decode_octal_modes(text: &str) -> Result<(Pod, Vec<String>), serde_yaml::Error> {
    fn fix(v: &mut serde_yaml::Value) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, val) in m.iter_mut() {
                    if let (Some(key), serde_yaml::Value::String(s)) = (k.as_str(), &*val)
                        && MODE_KEYS.contains(&key)
                        && s.len() > 1
                        && s.starts_with('0')
                        && let Ok(n) = i64::from_str_radix(s, 8)
                    {
                        *val = serde_yaml::Value::Number(n.into());
                    } else {
                        fix(val);
                    }
                }
            }
            serde_yaml::Value::Sequence(s) => s.iter_mut().for_each(fix),
            serde_yaml::Value::Tagged(t) => fix(&mut t.value),
            _ => {}
        }
    }
    let mut doc: serde_yaml::Value = serde_yaml::from_str(text)?;
    fix(&mut doc);
    strict::decode(doc)
}

/// The strict-decoding warnings, bounded as a whole.
fn warnings(unknown: &[String], dups: &[String]) -> Vec<String> {
    let mut all = strict::unknown_field_warnings(unknown);
    all.extend(strict::duplicate_field_warnings(dups));
    strict::bounded(all)
}

fn check_head(head: &limits::Head) -> Result<(), String> {
    if head.null {
        return Err("empty manifest".into());
    }
    match head.api_version.as_deref() {
        Some("v1") => {}
        Some(other) => {
            return Err(format!(
                "apiVersion: Unsupported value: {other:?}: supported values: \"v1\""
            ));
        }
        None => return Err("apiVersion: Required value".into()),
    }
    match head.kind.as_deref() {
        Some("Pod") => Ok(()),
        Some(other) => Err(format!(
            "kind: Unsupported value: {other:?}: minilet runs Pods (one per file)"
        )),
        None => Err("kind: Required value".into()),
    }
}

/// serde_yaml's message already names the field path and the line/column; keep it whole.
fn yaml_error(e: serde_yaml::Error) -> String {
    match e.location() {
        Some(loc) if !e.to_string().contains("line") => format!("{e} at line {} column {}", loc.line(), loc.column()),
        _ => e.to_string(),
    }
}

/// What the API server's defaulting and the kubelet's static-pod source fill in.
pub fn apply_defaults(pod: &mut Pod, node_name: &str) {
    let meta = &mut pod.metadata;
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".into());
    }
    let Some(spec) = pod.spec.as_mut() else { return };
    or_default(&mut spec.restart_policy, || {
        crate::pod::restart_policy::RestartPolicy::Always.as_str().into()
    });
    spec.termination_grace_period_seconds.get_or_insert(30);
    or_default(&mut spec.dns_policy, || "ClusterFirst".into());
    or_default(&mut spec.scheduler_name, || "default-scheduler".into());
    spec.enable_service_links.get_or_insert(true);
    spec.security_context.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    default_volumes(spec);
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        default_container(c);
    }
    default_pod_requests(spec);
}

/// A volume that names no source is an emptyDir; a downward API file's `fieldRef.apiVersion`
/// is `v1` when absent or empty.
fn default_volumes(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    for vol in spec.volumes.iter_mut().flatten() {
        // The sources are the fields other than `name`.
        let no_source = serde_json::to_value(&*vol)
            .ok()
            .and_then(|j| j.as_object().map(|o| o.keys().all(|k| k == "name")))
            .unwrap_or(false);
        if no_source {
            vol.empty_dir = Some(Default::default());
        }
        let projected = vol
            .projected
            .iter_mut()
            .flat_map(|p| p.sources.iter_mut().flatten())
            .filter_map(|s| s.downward_api.as_mut())
            .flat_map(|d| d.items.iter_mut().flatten());
        let direct = vol.downward_api.iter_mut().flat_map(|d| d.items.iter_mut().flatten());
        for f in direct.chain(projected).filter_map(|i| i.field_ref.as_mut()) {
            or_default(&mut f.api_version, || "v1".into());
        }
    }
}

/// Pod-level limits without a pod-level request: the request is the limit, unless a
/// container requests that resource (then the containers' requests stand for the pod's, as
/// without pod-level requests).
fn default_pod_requests(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    let Some(limits) = spec.resources.as_ref().and_then(|r| r.limits.clone()) else {
        return;
    };
    let containers_request = |name: &str| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .is_some_and(|r| r.contains_key(name))
            })
    };
    let defaults: Vec<_> = limits
        .into_iter()
        .filter(|(name, _)| ["cpu", "memory"].contains(&name.as_str()) && !containers_request(name))
        .collect();
    if let Some(res) = spec.resources.as_mut() {
        let requests = res.requests.get_or_insert_with(Default::default);
        for (name, q) in defaults {
            requests.entry(name).or_insert(q);
        }
    }
}

/// Kubernetes' defaulting tests a string field against "", and Go decodes an absent one and
/// `""` alike: both get the default.
fn or_default(field: &mut Option<String>, default: impl FnOnce() -> String) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(default());
    }
}

fn default_container(c: &mut Container) {
    let image = c.image.as_deref().unwrap_or("");
    or_default(&mut c.image_pull_policy, || default_pull_policy(image).into());
    or_default(&mut c.termination_message_path, || "/dev/termination-log".into());
    or_default(&mut c.termination_message_policy, || "File".into());
    for p in c.ports.iter_mut().flatten() {
        or_default(&mut p.protocol, || "TCP".into());
    }
    let probes = [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe];
    let hooks = c.lifecycle.as_mut().map(|l| [&mut l.post_start, &mut l.pre_stop]);
    let probe_gets = probes.into_iter().flatten().filter_map(|p| p.http_get.as_mut());
    let hook_gets = hooks
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|h| h.http_get.as_mut());
    for h in probe_gets.chain(hook_gets) {
        or_default(&mut h.path, || "/".into());
        or_default(&mut h.scheme, || "HTTP".into());
    }
    let env_refs = c
        .env
        .iter_mut()
        .flatten()
        .filter_map(|e| e.value_from.as_mut()?.field_ref.as_mut());
    for f in env_refs {
        or_default(&mut f.api_version, || "v1".into());
    }
    // A limit without a request: the request is the limit.
    if let Some(res) = c.resources.as_mut()
        && let Some(limits) = res.limits.clone()
    {
        let requests = res.requests.get_or_insert_with(Default::default);
        for (name, q) in limits {
            requests.entry(name).or_insert(q);
        }
    }
}

/// `Always` for `:latest` or no tag (and no digest), else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p2(text: &str) -> (Pod, Vec<String>) {
        parse(Path::new("/m/x.yaml"), text).unwrap()
    }

    fn p(text: &str) -> Result<Pod, String> {
        parse(Path::new("/m/x.yaml"), text).map(|(pod, _)| pod)
    }

    #[test]
    fn kind_version_documents() {
        assert_eq!(p("").unwrap_err(), "empty manifest");
        assert_eq!(p("# only a comment\n").unwrap_err(), "empty manifest");
        assert!(
            p("apiVersion: apps/v1\nkind: Deployment\n")
                .unwrap_err()
                .starts_with("apiVersion: Unsupported value: \"apps/v1\"")
        );
        assert!(
            p("apiVersion: v1\nkind: Service\n")
                .unwrap_err()
                .starts_with("kind: Unsupported value: \"Service\"")
        );
        assert!(p("kind: Pod\n").unwrap_err().starts_with("apiVersion: Required"));
        let two =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\n";
        assert!(p(two).unwrap_err().contains("more than one document"));
        assert!(p("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n").is_ok());
    }

    #[test]
    fn syntax_and_type_errors_carry_position_and_path() {
        let e = p("apiVersion: v1\nkind: Pod\nmetadata: {name: web\n").unwrap_err();
        assert!(e.contains("line") && e.contains("column"), "{e}");
        let e = p("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: a\n    ports:\n    - containerPort: eighty\n").unwrap_err();
        assert!(
            e.contains("spec.containers[0].ports[0].containerPort") && e.contains("line 8"),
            "{e}"
        );
        let json = parse(
            Path::new("/m/x.json"),
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"a","image":"i"}]}}"#,
        );
        assert_eq!(json.unwrap().0.metadata.name.as_deref(), Some("j"));
        let (_, unknown) = parse(
            Path::new("/m/x.json"),
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"a","image":"i","livenesProbe":{}}]}}"#,
        )
        .unwrap();
        assert_eq!(unknown, ["unknown field \"spec.containers[0].livenesProbe\""]);
        let (_, dups) = p2(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, name: b}\nspec: {containers: [{name: a, image: i, imag: j}]}\n",
        );
        assert_eq!(
            dups,
            [
                "unknown field \"spec.containers[0].imag\"",
                "duplicate field \"metadata.name\""
            ]
        );
        assert!(parse(Path::new("/m/x.json"), "{").unwrap_err().contains("line 1"));
    }

    #[test]
    fn defaults() {
        let mut pod = p("apiVersion: v1\nkind: Pod\nmetadata: {name: w}\nspec:\n  containers:\n  - name: a\n    image: nginx\n    ports: [{containerPort: 80}]\n    resources: {limits: {cpu: 500m}}\n").unwrap();
        apply_defaults(&mut pod, "node1");
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        let mut pod = p("apiVersion: v1\nkind: Pod\nmetadata: {name: w}\nspec: {dnsPolicy: '', containers: [{name: a, image: i}]}\n").unwrap();
        apply_defaults(&mut pod, "node1");
        assert_eq!(pod.spec.and_then(|s| s.dns_policy).as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.node_name.as_deref(), Some("node1"));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(c.termination_message_path.as_deref(), Some("/dev/termination-log"));
        assert_eq!(c.ports.as_ref().unwrap()[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(
            c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
            "500m"
        );
    }

    #[test]
    fn empty_strings_get_the_defaults_as_absent_ones_do() {
        let yaml = r#"apiVersion: v1
kind: Pod
metadata: {name: w}
spec:
  restartPolicy: ""
  dnsPolicy: ""
  schedulerName: ""
  volumes:
  - name: d
    downwardAPI: {items: [{path: n, fieldRef: {apiVersion: "", fieldPath: metadata.name}}]}
  - name: p
    projected: {sources: [{downwardAPI: {items: [{path: n, fieldRef: {fieldPath: metadata.name}}]}}]}
  containers:
  - name: a
    image: nginx:1.25
    imagePullPolicy: ""
    terminationMessagePath: ""
    terminationMessagePolicy: ""
    ports: [{containerPort: 80, protocol: ""}]
    env: [{name: N, valueFrom: {fieldRef: {apiVersion: "", fieldPath: metadata.name}}}]
    livenessProbe: {httpGet: {port: 80, path: "", scheme: ""}}
    readinessProbe: {httpGet: {port: 80}}
    lifecycle: {preStop: {httpGet: {port: 80, path: "", scheme: ""}}}
"#;
        let mut pod = p(yaml).unwrap();
        apply_defaults(&mut pod, "node1");
        // Refused as "Unsupported value: \"\"" before: defaulting comes first.
        assert_eq!(crate::source::validate::validate(&pod), Vec::<String>::new());
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(c.termination_message_path.as_deref(), Some("/dev/termination-log"));
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(c.ports.as_ref().unwrap()[0].protocol.as_deref(), Some("TCP"));
        let env_ref = c.env.as_ref().unwrap()[0]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(env_ref.api_version.as_deref(), Some("v1"));
        let gets = [
            c.liveness_probe.as_ref().unwrap().http_get.as_ref(),
            c.readiness_probe.as_ref().unwrap().http_get.as_ref(),
            c.lifecycle
                .as_ref()
                .unwrap()
                .pre_stop
                .as_ref()
                .unwrap()
                .http_get
                .as_ref(),
        ];
        for h in gets.map(Option::unwrap) {
            assert_eq!((h.path.as_deref(), h.scheme.as_deref()), (Some("/"), Some("HTTP")));
        }
        let vols = spec.volumes.as_ref().unwrap();
        let direct = &vols[0].downward_api.as_ref().unwrap().items.as_ref().unwrap()[0];
        let sources = vols[1].projected.as_ref().unwrap().sources.as_ref().unwrap();
        let projected = &sources[0].downward_api.as_ref().unwrap().items.as_ref().unwrap()[0];
        for item in [direct, projected] {
            assert_eq!(item.field_ref.as_ref().unwrap().api_version.as_deref(), Some("v1"));
        }
        // A volume with only a name is an emptyDir (and valid).
        let mut pod = p("apiVersion: v1\nkind: Pod\nmetadata: {name: w}\nspec: {volumes: [{name: scratch}], containers: [{name: a, image: i, volumeMounts: [{name: scratch, mountPath: /s}]}]}\n").unwrap();
        apply_defaults(&mut pod, "node1");
        assert_eq!(crate::source::validate::validate(&pod), Vec::<String>::new());
        let vol = &pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        assert_eq!(vol.empty_dir, Some(Default::default()));
        // A value given stays as given.
        let mut pod = p("apiVersion: v1\nkind: Pod\nmetadata: {name: w}\nspec: {restartPolicy: Never, schedulerName: mine, containers: [{name: a, image: i, imagePullPolicy: Never, terminationMessagePolicy: FallbackToLogsOnError}]}\n").unwrap();
        apply_defaults(&mut pod, "node1");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("mine"));
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Never"));
        assert_eq!(
            spec.containers[0].termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
    }

    #[test]
    fn octal_modes_as_kubernetes_reads_them() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: m}\nspec:\n  volumes:\n  - name: d\n    downwardAPI:\n      defaultMode: 0440\n      items: [{path: n, fieldRef: {fieldPath: metadata.name}, mode: 0400}]\n  containers: [{name: a, image: i, command: [\"mode: 0400\"]}]\n";
        let (pod, warnings) = parse(Path::new("m.yaml"), text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let spec = pod.spec.unwrap();
        let d = spec.volumes.unwrap()[0].downward_api.clone().unwrap();
        assert_eq!(d.default_mode, Some(0o440));
        assert_eq!(d.items.unwrap()[0].mode, Some(0o400));
        assert_eq!(spec.containers[0].command.as_ref().unwrap()[0], "mode: 0400");
        // Decimal stays decimal; a non-octal string is still the type error it was.
        let (pod, _) = parse(Path::new("m.yaml"), &text.replace("0440", "288")).unwrap();
        assert_eq!(
            pod.spec.unwrap().volumes.unwrap()[0]
                .downward_api
                .as_ref()
                .unwrap()
                .default_mode,
            Some(288)
        );
        let e = parse(Path::new("m.yaml"), &text.replace("0440", "0999")).unwrap_err();
        assert!(e.contains("defaultMode: invalid type: string \"0999\""), "{e}");
    }

    #[test]
    fn pull_policies() {
        assert_eq!(default_pull_policy("img"), "Always");
        assert_eq!(default_pull_policy("img:latest"), "Always");
        assert_eq!(default_pull_policy("img:1.2"), "IfNotPresent");
        assert_eq!(default_pull_policy("img@sha256:abc"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/img"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/img:v2"), "IfNotPresent");
    }

    /// Fuzzing, briefly: whatever the text, parsing never panics, the pre-scan's work is
    /// linear in the size, and nesting beyond the bound is refused however it is dressed.
    mod fuzz {
        use proptest::prelude::*;

        use super::super::limits::{self, MAX_DEPTH};
        use super::*;

        /// Fragments that change YAML's state: brackets, quotes, comments, block scalars,
        /// indentation, anchors and aliases, tags, document markers, odd line breaks.
        const FRAGMENTS: &[&str] = &[
            "[",
            "]",
            "{",
            "}",
            ", ",
            ": ",
            ":",
            "- ",
            "? ",
            "'",
            "''",
            "\"",
            "\\\"",
            "#",
            " #",
            "\n",
            "\r\n",
            "\u{2028}",
            "  ",
            "\t",
            "|\n",
            ">-\n",
            "|2\n",
            "&a ",
            "*a",
            "!t ",
            "!<x[y]> ",
            "---\n",
            "...\n",
            "x",
            "a'b",
            "é",
            "apiVersion: v1\nkind: Pod\n",
            "metadata: {name: p}\n",
            "%YAML 1.2\n",
            "\u{feff}",
        ];

        fn yamlish() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(FRAGMENTS), 0..400).prop_map(|v| v.concat())
        }

        /// Flow nesting `depth` deep, each level dressed in scalars and comments holding
        /// brackets that must not count (and must not hide the ones that do).
        fn dressed(depth: usize, dress: Vec<usize>) -> String {
            const DRESS: &[&str] = &[
                "'it''s [{', ",
                "\"a\\\"[{\", ",
                "a'b, ",
                "# [[[ {{{\n",
                "&x ",
                "!t ",
                "? k: v, ",
                "",
            ];
            let mut s = String::from("k: ");
            for i in 0..depth {
                s.push('[');
                s.push_str(DRESS[dress[i % dress.len()] % DRESS.len()]);
            }
            s.push('x');
            s.push_str(&"]".repeat(depth));
            s.push('\n');
            s
        }

        fn within_budget(text: &str) {
            let (steps, _) = limits::scan_counting(text);
            assert!(steps <= 2 * text.len() + 2, "{steps} steps for {} bytes", text.len());
            let start = std::time::Instant::now();
            let _ = parse(Path::new("/m/x.yaml"), text);
            let _ = parse(Path::new("/m/x.json"), text);
            // Generous: these inputs take milliseconds; a quadratic parse of the deepest
            // ones would take minutes.
            assert!(start.elapsed() < std::time::Duration::from_secs(20));
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
                within_budget(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn yaml_fragments(text in yamlish()) {
                within_budget(&text);
            }

            #[test]
            fn deep_nesting_is_refused_however_dressed(depth in 1usize..200, dress in prop::collection::vec(0usize..8, 1..8)) {
                let text = dressed(depth, dress);
                within_budget(&text);
                // The block mapping around it is one level more.
                let refused = matches!(limits::scan(&text), Err(limits::ScanError::TooDeep { .. }));
                prop_assert_eq!(refused, depth + 1 > MAX_DEPTH, "{}", text);
                if depth < 100 {
                    prop_assert!(serde_yaml::from_str::<serde_yaml::Value>(&text).is_ok(), "the dressed nesting is valid YAML: {}", text);
                }
            }

        }

        proptest! {
            // Each case costs up to the whole expansion budget: fewer of them.
            #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn huge_scalars_and_alias_bombs(len in 0usize..200_000, levels in 1usize..12, fanout in 1usize..12) {
                within_budget(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p, annotations: {{a: '{}'}}}}\n", "x".repeat(len)));
                let mut bomb = String::from("apiVersion: v1\nkind: Pod\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
                for i in 1..levels {
                    bomb.push_str(&format!("l{i}: &l{i} [{}]\n", vec![format!("*l{}", i - 1); fanout].join(", ")));
                }
                within_budget(&bomb);
            }
        }
    }
}
