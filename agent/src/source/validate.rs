//! Validation of a defaulted Pod, with Kubernetes' field paths and wording
//! (`spec.containers[1].name: Duplicate value: "app"`), plus what minilet cannot run.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Volume};

use crate::pod::restart_policy::RestartPolicy;
use crate::quantity::Quantity;

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const ENV_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit";
const NO_API_SERVER: &str = "minilet runs static pods without an API server";
const UID_MSG: &str = "a UID must be 1 to 64 characters of letters, digits and '-' (e.g. a UUID)";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const ID_MSG: &str = "must be between 0 and 2147483647, inclusive";

const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
/// Kubernetes' `MaxDNSNameservers`, `MaxDNSSearchPaths`, `MaxDNSSearchListChars`: what libc's
/// resolver reads of resolv.conf.
const MAX_DNS_NAMESERVERS: usize = 3;
const MAX_DNS_SEARCHES: usize = 32;
const MAX_DNS_SEARCH_CHARS: usize = 2048;

/// Kubernetes' `TotalAnnotationSizeLimitB`: keys and values of all annotations together.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Kubernetes' `MaxUserID` / `MaxGroupID` (`math.MaxInt32`): IDs must be in 0..=this.
const MAX_ID: i64 = i32::MAX as i64;
/// Longest value quoted in a message: the message names the field, the rest is noise (and
/// an unbounded value would put a megabyte into a log line and an event).
const MAX_QUOTED: usize = 128;

/// Every problem found, each `field.path: what is wrong`.
pub fn validate(pod: &Pod) -> Vec<String> {
    let mut v = Errors::default();
    match pod.metadata.name.as_deref() {
        None | Some("") => v.push(
            "metadata.name",
            "Required value: name or generateName is required".into(),
        ),
        Some(name) if !is_subdomain(name) => v.invalid("metadata.name", name, SUBDOMAIN_MSG),
        Some(_) => {}
    }
    if let Some(ns) = pod.metadata.namespace.as_deref()
        && !is_label(ns)
    {
        v.invalid("metadata.namespace", ns, LABEL_MSG);
    }
    if let Some(uid) = pod.metadata.uid.as_deref()
        && !uid.is_empty()
        && !is_uid(uid)
    {
        // The UID names the pod's state and log directories and its cgroup.
        v.invalid("metadata.uid", uid, UID_MSG);
    }
    validate_labels(pod.metadata.labels.as_ref(), &mut v);
    validate_annotations(pod.metadata.annotations.as_ref(), &mut v);
    match &pod.spec {
        None => v.push("spec", "Required value".into()),
        Some(spec) => validate_spec(spec, &mut v),
    }
    v.0.extend(crate::pod::security::validate(pod));
    v.0
}

#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, path: &str, msg: String) {
        self.0.push(format!("{path}: {msg}"));
    }
    fn invalid(&mut self, path: &str, value: impl std::fmt::Debug, why: &str) {
        self.push(path, format!("Invalid value: {}: {why}", quoted(&value)));
    }
    fn unsupported(&mut self, path: &str, value: &str, supported: &[&str]) {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.push(path, format!("Unsupported value: {value:?}: supported values: {list}"));
    }
}

fn validate_spec(spec: &PodSpec, v: &mut Errors) {
    if spec.containers.is_empty() {
        v.push("spec.containers", "Required value".into());
    }
    validate_pod_resources(spec, v);
    if let Some(p) = spec.restart_policy.as_deref()
        && p.parse::<RestartPolicy>().is_err()
    {
        v.unsupported("spec.restartPolicy", p, &RestartPolicy::NAMES);
    }
    validate_dns(spec, v);
    validate_host_aliases(spec, v);
    // Not acted on (no scheduler picks a static pod), but Kubernetes refuses a bad one.
    if let Some(s) = spec.scheduler_name.as_deref()
        && !s.is_empty()
    {
        subdomain("spec.schedulerName", s, v);
    }
    if let Some(h) = spec.hostname.as_deref()
        && !h.is_empty()
        && !is_label(h)
    {
        v.invalid("spec.hostname", h, LABEL_MSG);
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        v.invalid(
            "spec.terminationGracePeriodSeconds",
            g,
            "must be greater than or equal to 0",
        );
    }

    if let Some(d) = spec.active_deadline_seconds
        && !(1..=MAX_ID).contains(&d)
    {
        v.invalid(
            "spec.activeDeadlineSeconds",
            d,
            "must be between 1 and 2147483647, inclusive",
        );
    }
    if let Some(sc) = &spec.security_context {
        validate_ids(
            "spec.securityContext",
            &[
                ("runAsUser", sc.run_as_user),
                ("runAsGroup", sc.run_as_group),
                ("fsGroup", sc.fs_group),
            ],
            v,
        );
        for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
            validate_ids(
                "spec.securityContext",
                &[(&format!("supplementalGroups[{i}]"), Some(*g))],
                v,
            );
        }
        let namespaces = crate::pod::config::sandbox_namespaces(spec);
        let mut seen = HashSet::new();
        for (i, s) in sc.sysctls.iter().flatten().enumerate() {
            let field = format!("spec.securityContext.sysctls[{i}].name");
            if let Err(e) = crate::runtime::sysctl::check(&s.name, &s.value, &namespaces) {
                v.invalid(&field, &s.name, &e);
            } else if !seen.insert(s.name.replace('/', ".")) {
                v.push(&field, format!("Duplicate value: {:?}", s.name));
            }
        }
        if let Some(p) = sc.fs_group_change_policy.as_deref()
            && !["OnRootMismatch", "Always"].contains(&p)
        {
            v.unsupported(
                "spec.securityContext.fsGroupChangePolicy",
                p,
                &["OnRootMismatch", "Always"],
            );
        }
        if let Some(p) = sc.supplemental_groups_policy.as_deref()
            && !["Merge", "Strict"].contains(&p)
        {
            v.unsupported("spec.securityContext.supplementalGroupsPolicy", p, &["Merge", "Strict"]);
        }
    }

    if spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
        // The API server's words: they are added to a running pod, never in its spec.
        v.push("spec.ephemeralContainers", "Forbidden: cannot be set on create".into());
    }
    let mut volume_names = HashSet::new();
    for (i, vol) in spec.volumes.iter().flatten().enumerate() {
        validate_volume(&format!("spec.volumes[{i}]"), vol, spec, &mut volume_names, v);
    }

    let mut names = HashSet::new();
    for (list, containers) in [
        ("initContainers", spec.init_containers.as_deref().unwrap_or_default()),
        ("containers", &spec.containers[..]),
    ] {
        // A host port once per list (the API server's check; the forwarder could not bind
        // it twice): protocol, hostIP and port together.
        let mut host_ports = HashSet::new();
        for (i, c) in containers.iter().enumerate() {
            let path = format!("spec.{list}[{i}]");
            validate_container(&path, c, &mut names, &volume_names, v);
            // Hooks: their own rules, kept with the hooks (a sleep may not outlast the grace).
            let grace = spec.termination_grace_period_seconds.unwrap_or(30);
            v.0.extend(crate::pod::hooks::validate(&path, c, list == "initContainers", grace));
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let Some(hp) = p.host_port.filter(|hp| *hp != 0) else {
                    continue;
                };
                // The pod is the node's network: a port can only be published as itself.
                if spec.host_network == Some(true) && hp != p.container_port {
                    v.invalid(
                        &format!("{path}.ports[{j}].containerPort"),
                        p.container_port,
                        "must match `hostPort` when `hostNetwork` is true",
                    );
                }
                let key = format!(
                    "{}/{}/{hp}",
                    p.protocol.as_deref().unwrap_or("TCP"),
                    p.host_ip.as_deref().unwrap_or_default()
                );
                if !host_ports.insert(key.clone()) {
                    v.push(
                        &format!("{path}.ports[{j}].hostPort"),
                        format!("Duplicate value: {key:?}"),
                    );
                }
            }
        }
    }
}

/// `spec.dnsPolicy` and `spec.dnsConfig` as Kubernetes' `validateDNSPolicy` and
/// `validatePodDNSConfig` check them; the kubelet refuses a static pod they refuse.
fn validate_dns(spec: &PodSpec, v: &mut Errors) {
    let policy = spec.dns_policy.as_deref();
    let policies = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
    if let Some(p) = policy
        && !policies.contains(&p)
    {
        v.unsupported("spec.dnsPolicy", p, &policies);
    }
    let none = policy == Some("None");
    let Some(c) = &spec.dns_config else {
        if none {
            v.push(
                "spec.dnsConfig",
                "Required value: must provide `dnsConfig` when `dnsPolicy` is None".into(),
            );
        }
        return;
    };
    let servers = c.nameservers.as_deref().unwrap_or_default();
    if none && servers.is_empty() {
        // Kubernetes says only this of such a config: the rest is not looked at.
        v.push(
            "spec.dnsConfig.nameservers",
            "Required value: must provide at least one DNS nameserver when `dnsPolicy` is None".into(),
        );
        return;
    }
    if servers.len() > MAX_DNS_NAMESERVERS {
        v.invalid(
            "spec.dnsConfig.nameservers",
            GoStrings(servers),
            &format!("must not have more than {MAX_DNS_NAMESERVERS} nameservers"),
        );
    }
    for (i, s) in servers.iter().enumerate() {
        if !is_ip(s) {
            v.invalid(&format!("spec.dnsConfig.nameservers[{i}]"), s, IP_MSG);
        }
    }
    let searches = c.searches.as_deref().unwrap_or_default();
    if searches.len() > MAX_DNS_SEARCHES {
        v.invalid(
            "spec.dnsConfig.searches",
            GoStrings(searches),
            &format!("must not have more than {MAX_DNS_SEARCHES} search paths"),
        );
    }
    // Counted as the `search` line holds them: one space between two.
    let chars = searches.iter().map(String::len).sum::<usize>() + searches.len().saturating_sub(1);
    if chars > MAX_DNS_SEARCH_CHARS {
        v.invalid(
            "spec.dnsConfig.searches",
            GoStrings(searches),
            &format!("must not have more than {MAX_DNS_SEARCH_CHARS} characters (including spaces) in the search list"),
        );
    }
    for (i, s) in searches.iter().enumerate() {
        // A trailing dot (an absolute name) is allowed; the rest is a DNS subdomain.
        let name = s.strip_suffix('.').unwrap_or(s);
        subdomain(&format!("spec.dnsConfig.searches[{i}]"), name, v);
    }
    for (i, o) in c.options.iter().flatten().enumerate() {
        if o.name.as_deref().is_none_or(str::is_empty) {
            v.push(
                &format!("spec.dnsConfig.options[{i}]"),
                "Required value: must not be empty".into(),
            );
        }
    }
}

/// `spec.hostAliases` as Kubernetes' `ValidateHostAliases`: each line of /etc/hosts they add
/// must be an address and names.
fn validate_host_aliases(spec: &PodSpec, v: &mut Errors) {
    for (i, alias) in spec.host_aliases.iter().flatten().enumerate() {
        let path = format!("spec.hostAliases[{i}]");
        if !is_ip(&alias.ip) {
            v.invalid(&format!("{path}.ip"), &alias.ip, IP_MSG);
        }
        for (j, name) in alias.hostnames.iter().flatten().enumerate() {
            subdomain(&format!("{path}.hostnames[{j}]"), name, v);
        }
    }
}

/// What Kubernetes' `ValidateDNS1123Subdomain` says of `name`: length and pattern are two
/// messages.
fn subdomain(path: &str, name: &str, v: &mut Errors) {
    if name.len() > 253 {
        v.invalid(path, name, "must be no more than 253 characters");
    }
    if !name.split('.').all(is_label_chars) {
        v.invalid(path, name, SUBDOMAIN_MSG);
    }
}

/// A string list as Go prints one in a validation message: `[]string{"a", "b"}`.
struct GoStrings<'a>(&'a [String]);

impl std::fmt::Debug for GoStrings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[]string{")?;
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{s:?}")?;
        }
        f.write_str("}")
    }
}

fn validate_volume(path: &str, vol: &Volume, spec: &PodSpec, names: &mut HashSet<String>, v: &mut Errors) {
    if vol.name.is_empty() {
        v.push(&format!("{path}.name"), "Required value".into());
    } else if !is_label(&vol.name) {
        v.invalid(&format!("{path}.name"), &vol.name, LABEL_MSG);
    } else if !names.insert(vol.name.clone()) {
        v.push(&format!("{path}.name"), format!("Duplicate value: {:?}", vol.name));
    }
    // The volume sources are the fields other than `name`.
    let json = serde_json::to_value(vol).unwrap_or_default();
    let sources: Vec<String> = json
        .as_object()
        .map(|o| o.keys().filter(|k| *k != "name").cloned().collect())
        .unwrap_or_default();
    match sources.as_slice() {
        [] => v.push(path, "Required value: must specify a volume type".into()),
        [one] if one == "emptyDir" => {
            if let Some(limit) = vol.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
                let fp = format!("{path}.emptyDir.sizeLimit");
                match (Quantity::parse(&limit.0), Quantity::parse("0")) {
                    (Err(e), _) => v.invalid(&fp, &limit.0, &e.to_string()),
                    // It becomes a tmpfs size or a disk quota.
                    (Ok(val), Ok(zero)) if val < zero => v.invalid(&fp, &limit.0, "must be greater than or equal to 0"),
                    _ => {}
                }
            }
        }
        [one] if one == "hostPath" => {
            if let Some(hp) = &vol.host_path {
                if hp.path.is_empty() {
                    v.push(&format!("{path}.hostPath.path"), "Required value".into());
                } else if hp.path.split('/').any(|c| c == "..") {
                    v.invalid(&format!("{path}.hostPath.path"), &hp.path, "must not contain '..'");
                }
                let types = [
                    "",
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice",
                ];
                if let Some(t) = hp.type_.as_deref()
                    && !types.contains(&t)
                {
                    v.unsupported(&format!("{path}.hostPath.type"), t, &types[1..]);
                }
            }
        }
        [one] if one == "downwardAPI" => {
            if let Some(d) = &vol.downward_api {
                let dp = format!("{path}.downwardAPI");
                validate_mode(&format!("{dp}.defaultMode"), d.default_mode, v);
                let mut seen = HashSet::new();
                validate_downward_items(&dp, d.items.as_deref().unwrap_or_default(), spec, &mut seen, v);
            }
        }
        [one] if one == "projected" => {
            if let Some(p) = &vol.projected {
                let pp = format!("{path}.projected");
                validate_mode(&format!("{pp}.defaultMode"), p.default_mode, v);
                let mut seen = HashSet::new();
                for (k, source) in p.sources.iter().flatten().enumerate() {
                    let sp = format!("{pp}.sources[{k}]");
                    match &source.downward_api {
                        Some(d) => validate_downward_items(
                            &format!("{sp}.downwardAPI"),
                            d.items.as_deref().unwrap_or_default(),
                            spec,
                            &mut seen,
                            v,
                        ),
                        None => v.push(
                            &sp,
                            format!("Unsupported value: {NO_API_SERVER}; only downwardAPI projections are supported"),
                        ),
                    }
                }
            }
        }
        [one] => v.push(
            &format!("{path}.{one}"),
            format!(
                "Unsupported value: {NO_API_SERVER}; only emptyDir, hostPath, downwardAPI and projected (downwardAPI) volumes are supported"
            ),
        ),
        many => v.push(
            &format!("{path}.{}", many[1]),
            "Forbidden: may not specify more than 1 volume type".into(),
        ),
    }
}

/// Pod-level `spec.resources` (cpu and memory only): requests within limits, requests at
/// least what the containers request together, limits at least any one container's limit.
fn validate_pod_resources(spec: &PodSpec, v: &mut Errors) {
    let Some(res) = &spec.resources else { return };
    type List = std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;
    let mut parsed = |list: &str, map: Option<&List>| {
        let mut out = std::collections::BTreeMap::new();
        for (name, q) in map.into_iter().flatten() {
            let fp = format!("spec.resources.{list}[{name}]");
            if !["cpu", "memory"].contains(&name.as_str()) {
                v.unsupported(&fp, name, &["cpu", "memory"]);
                continue;
            }
            match Quantity::parse(&q.0) {
                Ok(val) if val.milli_value() < 0 => v.invalid(&fp, &q.0, "must be greater than or equal to 0"),
                Ok(val) => {
                    out.insert(name.clone(), (val, q.0.clone()));
                }
                Err(e) => v.invalid(&fp, &q.0, &e.to_string()),
            }
        }
        out
    };
    let limits = parsed("limits", res.limits.as_ref());
    let requests = parsed("requests", res.requests.as_ref());
    let container_amount = |c: &Container, list: &str, name: &str| {
        let r = c.resources.as_ref()?;
        let map = if list == "limits" {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        };
        map?.get(name).and_then(|q| Quantity::parse(&q.0).ok())
    };
    for (name, (req, raw)) in &requests {
        if let Some((lim, lim_raw)) = limits.get(name)
            && req > lim
        {
            v.invalid(
                &format!("spec.resources.requests[{name}]"),
                raw,
                &format!("must be less than or equal to {name} limit of {lim_raw}"),
            );
            continue;
        }
        let apps: i64 = spec
            .containers
            .iter()
            .filter_map(|c| container_amount(c, "requests", name))
            .map(|q| q.milli_value())
            .sum();
        if req.milli_value() < apps {
            let shown = if name == "cpu" {
                format!("{apps}m")
            } else {
                (apps / 1000).to_string()
            };
            v.invalid(
                &format!("spec.resources.requests[{name}]"),
                raw,
                &format!("must be greater than or equal to aggregate container requests of {shown}"),
            );
        }
    }
    for (name, (lim, raw)) in &limits {
        for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
            if let Some(cl) = container_amount(c, "limits", name)
                && cl > *lim
            {
                v.invalid(
                    &format!("spec.resources.limits[{name}]"),
                    raw,
                    &format!(
                        "must be greater than or equal to the {name} limit of container {:?}",
                        c.name
                    ),
                );
            }
        }
    }
}

/// The fields a downwardAPI volume item may name (the API server's list).
const DOWNWARD_FIELDS: [&str; 5] = [
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];
/// What an environment variable's fieldRef may name (besides a label or annotation by key).
const ENV_DOWNWARD_FIELDS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
/// The pod fields a `v1` fieldRef can name at all (Kubernetes' conversion of a downward API
/// field label); which of them a volume or a variable may use is narrower.
const POD_FIELD_LABELS: [&str; 14] = [
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.phase",
    "status.podIP",
    "status.podIPs",
];
const DOWNWARD_RESOURCES: [&str; 6] = [
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn validate_mode(path: &str, mode: Option<i32>, v: &mut Errors) {
    if let Some(m) = mode
        && !(0..=0o777).contains(&m)
    {
        v.invalid(path, m, "must be a number between 0 and 0777 (octal), both inclusive");
    }
}

fn validate_downward_items(
    path: &str,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    spec: &PodSpec,
    seen: &mut HashSet<String>,
    v: &mut Errors,
) {
    for (k, item) in items.iter().enumerate() {
        let ip = format!("{path}.items[{k}]");
        let pp = format!("{ip}.path");
        if item.path.is_empty() {
            v.push(&pp, "Required value".into());
        } else if item.path.starts_with('/') {
            v.invalid(&pp, &item.path, "must be a relative path");
        } else if item.path.split('/').any(|c| c == "..") {
            v.invalid(&pp, &item.path, "must not contain '..'");
        } else if item.path.starts_with("..") {
            v.invalid(&pp, &item.path, "must not start with '..'");
        } else if !seen.insert(item.path.clone()) {
            v.invalid(&pp, &item.path, "conflicting duplicate paths");
        }
        validate_mode(&format!("{ip}.mode"), item.mode, v);
        match (&item.field_ref, &item.resource_field_ref) {
            (Some(_), Some(_)) => v.invalid(
                &ip,
                "resource",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            ),
            (None, None) => v.push(
                &ip,
                "Required value: one of fieldRef and resourceFieldRef is required".into(),
            ),
            (Some(f), None) => validate_field_ref(&format!("{ip}.fieldRef"), f, &DOWNWARD_FIELDS, v),
            (None, Some(r)) => {
                let rp = format!("{ip}.resourceFieldRef");
                match r.container_name.as_deref().filter(|n| !n.is_empty()) {
                    None => v.push(&format!("{rp}.containerName"), "Required value".into()),
                    Some(name) => {
                        let known = spec
                            .containers
                            .iter()
                            .chain(spec.init_containers.iter().flatten())
                            .any(|c| c.name == name);
                        if !known {
                            v.invalid(
                                &format!("{rp}.containerName"),
                                name,
                                "must name a container of this pod",
                            );
                        }
                    }
                }
                if !DOWNWARD_RESOURCES.contains(&r.resource.as_str()) {
                    v.unsupported(&format!("{rp}.resource"), &r.resource, &DOWNWARD_RESOURCES);
                }
                if let Some(d) = &r.divisor
                    && Quantity::parse(&d.0).map_or(true, |q| q.milli_value() <= 0)
                {
                    v.invalid(&format!("{rp}.divisor"), &d.0, "must be a positive quantity");
                }
            }
        }
    }
}

fn validate_container(
    path: &str,
    c: &Container,
    names: &mut HashSet<String>,
    volumes: &HashSet<String>,
    v: &mut Errors,
) {
    if c.name.is_empty() {
        v.push(&format!("{path}.name"), "Required value".into());
    } else if !is_label(&c.name) {
        v.invalid(&format!("{path}.name"), &c.name, LABEL_MSG);
    } else if !names.insert(c.name.clone()) {
        v.push(&format!("{path}.name"), format!("Duplicate value: {:?}", c.name));
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        v.push(&format!("{path}.image"), "Required value".into());
    }
    if let Some(p) = c.image_pull_policy.as_deref()
        && !["Always", "IfNotPresent", "Never"].contains(&p)
    {
        v.unsupported(
            &format!("{path}.imagePullPolicy"),
            p,
            &["Always", "IfNotPresent", "Never"],
        );
    }
    match c.restart_policy.as_deref() {
        None | Some("Always") if path.starts_with("spec.initContainers") => {}
        Some(p) if path.starts_with("spec.initContainers") => {
            v.unsupported(&format!("{path}.restartPolicy"), p, &["Always"]);
        }
        None => {}
        Some(_) => v.push(
            &format!("{path}.restartPolicy"),
            "Forbidden: may not be set for non-init containers".into(),
        ),
    }
    // Probes: their own rules, kept with the probes (init containers are under
    // spec.initContainers).
    v.0.extend(crate::pod::probes::validate(
        path,
        c,
        path.starts_with("spec.initContainers"),
    ));

    let mut port_names = HashSet::new();
    for (j, p) in c.ports.iter().flatten().enumerate() {
        let pp = format!("{path}.ports[{j}]");
        if !(1..=65535).contains(&p.container_port) {
            v.invalid(
                &format!("{pp}.containerPort"),
                p.container_port,
                "must be between 1 and 65535, inclusive",
            );
        }
        if let Some(hp) = p.host_port
            && !(0..=65535).contains(&hp)
        {
            v.invalid(&format!("{pp}.hostPort"), hp, "must be between 1 and 65535, inclusive");
        }
        // The forwarder binds it: anything but an address would fail only when the pod starts.
        if let Some(ip) = p.host_ip.as_deref()
            && !ip.is_empty()
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            v.invalid(&format!("{pp}.hostIP"), ip, "must be a valid IP address");
        }
        if let Some(proto) = p.protocol.as_deref()
            && !["TCP", "UDP", "SCTP"].contains(&proto)
        {
            v.unsupported(&format!("{pp}.protocol"), proto, &["SCTP", "TCP", "UDP"]);
        }
        if let Some(name) = p.name.as_deref() {
            if !is_port_name(name) {
                v.invalid(&format!("{pp}.name"), name, "must be no more than 15 characters, contain only lowercase alphanumeric characters or '-', contain at least one letter, and not start or end with '-'");
            } else if !port_names.insert(name.to_string()) {
                v.push(&format!("{pp}.name"), format!("Duplicate value: {name:?}"));
            }
        }
    }

    if let Some(res) = &c.resources {
        let mut parsed = |list: &str,
                          map: &Option<
            std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            let mut out = std::collections::BTreeMap::new();
            for (name, q) in map.iter().flatten() {
                // A request defaulted from its limit (see parse.rs) would repeat the limit's error.
                let limit = res.limits.as_ref().and_then(|l| l.get(name));
                if list == "requests" && limit == Some(q) {
                    if let Ok(val) = Quantity::parse(&q.0) {
                        out.insert(name.clone(), (val, q.0.clone()));
                    }
                    continue;
                }
                let fp = format!("{path}.resources.{list}[{name}]");
                match Quantity::parse(&q.0) {
                    Ok(val) if val < Quantity::parse("0").unwrap_or(val) => {
                        v.invalid(&fp, &q.0, "must be greater than or equal to 0")
                    }
                    Ok(val) => {
                        out.insert(name.clone(), (val, q.0.clone()));
                    }
                    Err(e) => v.invalid(&fp, &q.0, &e.to_string()),
                }
                let known = ["cpu", "memory", "ephemeral-storage"].contains(&name.as_str())
                    || name.starts_with("hugepages-")
                    || name.contains('/');
                if !known {
                    v.push(
                        &fp,
                        "Invalid value: must be a standard resource type or fully qualified".into(),
                    );
                }
            }
            out
        };
        let limits = parsed("limits", &res.limits);
        let requests = parsed("requests", &res.requests);
        for (name, (req, raw)) in &requests {
            if let Some((lim, lim_raw)) = limits.get(name)
                && req > lim
            {
                v.invalid(
                    &format!("{path}.resources.requests[{name}]"),
                    raw,
                    &format!("must be less than or equal to {name} limit of {lim_raw}"),
                );
            }
        }
    }

    // What would hand a container host devices without `privileged`: block volumes (PVCs
    // only, which need an API server). Device-plugin (extended) resources are refused at
    // admission instead, as the kubelet words it (`OutOf<resource>`; see pod::admission).
    for (k, d) in c.volume_devices.iter().flatten().enumerate() {
        v.invalid(
            &format!("{path}.volumeDevices[{k}].name"),
            &d.name,
            &format!(
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode; {NO_API_SERVER}"
            ),
        );
    }
    for (k, e) in c.env.iter().flatten().enumerate() {
        let ep = format!("{path}.env[{k}]");
        if e.name.is_empty() {
            v.push(&format!("{ep}.name"), "Required value".into());
        } else if !is_env_name(&e.name) {
            v.invalid(&format!("{ep}.name"), &e.name, ENV_NAME_MSG);
        }
        if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                validate_field_ref(&format!("{ep}.valueFrom.fieldRef"), f, &ENV_DOWNWARD_FIELDS, v);
            }
            if e.value.as_deref().is_some_and(|s| !s.is_empty()) {
                v.push(
                    &format!("{ep}.valueFrom"),
                    "Invalid value: \"\": may not be specified when `value` is not empty".into(),
                );
            }
            let api = [
                (from.config_map_key_ref.as_ref().map(|r| r.optional), "configMapKeyRef"),
                (from.secret_key_ref.as_ref().map(|r| r.optional), "secretKeyRef"),
            ];
            for (optional, kind) in api {
                if let Some(opt) = optional
                    && opt != Some(true)
                {
                    v.push(&format!("{ep}.valueFrom.{kind}"), format!("Unsupported value: {NO_API_SERVER}; only fieldRef and resourceFieldRef (or optional references) are supported"));
                }
            }
        }
    }
    for (k, e) in c.env_from.iter().flatten().enumerate() {
        let optional = e
            .config_map_ref
            .as_ref()
            .map(|r| r.optional)
            .or(e.secret_ref.as_ref().map(|r| r.optional))
            .flatten();
        if optional != Some(true) {
            v.push(
                &format!("{path}.envFrom[{k}]"),
                format!("Unsupported value: {NO_API_SERVER}; configMapRef and secretRef must be optional"),
            );
        }
    }

    let mut mount_paths = HashSet::new();
    for (k, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mp = format!("{path}.volumeMounts[{k}]");
        if !volumes.contains(&m.name) {
            v.push(&format!("{mp}.name"), format!("Not found: {:?}", m.name));
        }
        if m.mount_path.is_empty() {
            v.push(&format!("{mp}.mountPath"), "Required value".into());
        } else if !m.mount_path.starts_with('/') {
            v.invalid(&format!("{mp}.mountPath"), &m.mount_path, "must be an absolute path");
        } else if !mount_paths.insert(m.mount_path.clone()) {
            v.invalid(&format!("{mp}.mountPath"), &m.mount_path, "must be unique");
        }
        if let Some(sub) = m.sub_path.as_deref()
            && (sub.starts_with('/') || sub.split('/').any(|c| c == ".."))
        {
            v.invalid(&format!("{mp}.subPath"), sub, "must be a relative path without '..'");
        }
    }
    if let Some(sc) = &c.security_context {
        validate_ids(
            &format!("{path}.securityContext"),
            &[("runAsUser", sc.run_as_user), ("runAsGroup", sc.run_as_group)],
            v,
        );
    }
    for (probe, p) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        validate_probe(&format!("{path}.{probe}"), p.as_ref(), v);
    }
}

/// A fieldRef as Kubernetes validates one (validateObjectFieldSelector): `v1` only, a field
/// label the pod has, a label or annotation by a valid key, else one of `allowed`.
fn validate_field_ref(
    path: &str,
    f: &k8s_openapi::api::core::v1::ObjectFieldSelector,
    allowed: &[&str],
    v: &mut Errors,
) {
    // Defaulting made an absent or empty apiVersion `v1` before this runs.
    let version = f.api_version.as_deref().filter(|a| !a.is_empty()).unwrap_or("v1");
    let fp = f.field_path.as_str();
    if fp.is_empty() {
        return v.push(&format!("{path}.fieldPath"), "Required value".into());
    }
    let subscripted = fp.strip_suffix("']").and_then(|rest| rest.split_once("['"));
    let converted = match subscripted {
        _ if version != "v1" => Err(format!("unsupported pod version: {version}")),
        Some(("metadata.labels" | "metadata.annotations", _)) => Ok(()),
        Some(_) => Err(format!("field label not supported: {fp}")),
        None if POD_FIELD_LABELS.contains(&fp) => Ok(()),
        None => Err(format!("field label not supported: {fp}")),
    };
    if let Err(why) = converted {
        return v.invalid(
            &format!("{path}.fieldPath"),
            fp,
            &format!("error converting fieldPath: {why}"),
        );
    }
    match subscripted {
        Some(("metadata.annotations", key)) if !is_qualified_name(&key.to_ascii_lowercase()) => {
            v.invalid(path, key, QUALIFIED_NAME_MSG)
        }
        Some(("metadata.labels", key)) if !is_qualified_name(key) => v.invalid(path, key, QUALIFIED_NAME_MSG),
        Some(_) => {}
        None if !allowed.contains(&fp) => v.unsupported(&format!("{path}.fieldPath"), fp, allowed),
        None => {}
    }
}

/// `{value:?}`, cut to [`MAX_QUOTED`] characters.
fn quoted(value: &impl std::fmt::Debug) -> String {
    let s = format!("{value:?}");
    match s.char_indices().nth(MAX_QUOTED) {
        Some((at, _)) => format!("{}...({} more bytes)", &s[..at], s.len() - at),
        None => s,
    }
}

fn validate_labels(labels: Option<&std::collections::BTreeMap<String, String>>, v: &mut Errors) {
    for (k, val) in labels.into_iter().flatten() {
        if !is_qualified_name(k) {
            v.invalid("metadata.labels", k, QUALIFIED_NAME_MSG);
        }
        if !is_label_value(val) {
            v.invalid(&format!("metadata.labels[{}]", quoted(k)), val, LABEL_VALUE_MSG);
        }
    }
}

fn validate_annotations(annotations: Option<&std::collections::BTreeMap<String, String>>, v: &mut Errors) {
    let mut total = 0;
    for (k, val) in annotations.into_iter().flatten() {
        // Kubernetes lowercases annotation keys before checking them as qualified names.
        if !is_qualified_name(&k.to_ascii_lowercase()) {
            v.invalid("metadata.annotations", k, QUALIFIED_NAME_MSG);
        }
        total += k.len() + val.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        v.push(
            "metadata.annotations",
            format!("Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes (found {total})"),
        );
    }
}

/// User and group IDs as Kubernetes validation bounds them (`IsValidUserID`/`IsValidGroupID`):
/// -1 would become uid 4294967295 at setuid.
fn validate_ids(path: &str, ids: &[(&str, Option<i64>)], v: &mut Errors) {
    for (field, id) in ids {
        if let Some(n) = *id
            && !(0..=MAX_ID).contains(&n)
        {
            v.invalid(&format!("{path}.{field}"), n, ID_MSG);
        }
    }
}

fn validate_probe(path: &str, probe: Option<&k8s_openapi::api::core::v1::Probe>, v: &mut Errors) {
    let Some(p) = probe else { return };
    for (field, val) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(n) = val
            && n < 0
        {
            v.invalid(&format!("{path}.{field}"), n, "must be greater than or equal to 0");
        }
    }
    if let Some(g) = p.termination_grace_period_seconds
        && g <= 0
    {
        v.invalid(
            &format!("{path}.terminationGracePeriodSeconds"),
            g,
            "must be greater than 0",
        );
    }
}

/// What a manifest's own `metadata.uid` may be: a path component, a cgroup name.
pub fn is_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `[prefix/]name`: prefix a DNS subdomain, name at most 63 of `[-A-Za-z0-9_.]`, alphanumeric
/// at both ends.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(|p| !p.is_empty() && is_subdomain(p)) && !name.is_empty() && is_label_value(name)
}

/// At most 63 of `[-A-Za-z0-9_.]`, alphanumeric at both ends (or empty).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn is_label(s: &str) -> bool {
    s.len() <= 63 && is_label_chars(s)
}

/// RFC 1123 label characters: lowercase alphanumerics and '-', alphanumeric at both ends.
fn is_label_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Kubernetes' IsDNS1123Subdomain: at most 253 characters in all, '.'-separated parts of
/// label characters; a part may be longer than a label's 63 (the pattern does not bound it).
pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label_chars)
}

/// An IP address as Kubernetes reads one (`ParseIPSloppy`, Go 1.16's parser): leading zeros
/// in IPv4 parts and IPv6 groups are allowed (and read as decimal and hex).
fn is_ip(s: &str) -> bool {
    let strip = |part: &str| match part.trim_start_matches('0') {
        "" if !part.is_empty() => "0".to_string(),
        t => t.to_string(),
    };
    s.parse::<std::net::IpAddr>().is_ok()
        || s.split(':')
            .map(|group| group.split('.').map(strip).collect::<Vec<_>>().join("."))
            .collect::<Vec<_>>()
            .join(":")
            .parse::<std::net::IpAddr>()
            .is_ok()
}

fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b"-._".contains(&b))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// IANA_SVC_NAME: at most 15 lowercase alphanumerics or '-', a letter somewhere, no leading,
/// trailing or double '-'.
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec_yaml: &str) -> Vec<String> {
        let pod: Pod = serde_yaml::from_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: default}}\nspec:\n{spec_yaml}"
        ))
        .unwrap();
        validate(&pod)
    }

    fn has(errs: &[String], needle: &str) -> bool {
        errs.iter().any(|e| e.contains(needle))
    }

    #[test]
    fn a_good_pod_has_no_errors() {
        let e = errors(
            "  volumes: [{name: data, emptyDir: {}}, {name: host, hostPath: {path: /srv, type: DirectoryOrCreate}}]\n  containers:\n  - name: app\n    image: nginx:1.25\n    ports: [{containerPort: 80, name: http}]\n    env: [{name: A_B.c-d, value: x}, {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n    resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: '1', memory: 1Gi}}\n    volumeMounts: [{name: data, mountPath: /data}]\n",
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn sysctls_must_be_namespaced_own_and_unique() {
        let ok = errors(
            "  securityContext: {sysctls: [{name: net.ipv4.tcp_syncookies, value: '1'}, {name: kernel/shm_rmid_forced, value: '1'}]}\n  containers: [{name: a, image: i}]\n",
        );
        assert!(ok.is_empty(), "{ok:?}");
        let e = errors(
            "  hostNetwork: true\n  securityContext: {sysctls: [{name: kernel.panic, value: '1'}, {name: net.ipv4.tcp_syncookies, value: '1'}, {name: kernel.sem, value: '1'}, {name: kernel/sem, value: '2'}]}\n  containers: [{name: a, image: i}]\n",
        );
        assert!(
            has(
                &e,
                "spec.securityContext.sysctls[0].name: Invalid value: \"kernel.panic\": not a namespaced sysctl"
            ),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                "spec.securityContext.sysctls[1].name: Invalid value: \"net.ipv4.tcp_syncookies\": belongs to the network namespace"
            ),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                "spec.securityContext.sysctls[3].name: Duplicate value: \"kernel/sem\""
            ),
            "{e:?}"
        );
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn device_grants_are_refused() {
        let e = errors(
            "  containers:\n  - name: a\n    image: i\n    volumeDevices: [{name: disk, devicePath: /dev/xvda}]\n    resources: {limits: {nvidia.com/gpu: '1', cpu: '1'}}\n",
        );
        assert!(
            has(
                &e,
                "spec.containers[0].volumeDevices[0].name: Invalid value: \"disk\": can only use volume source type of PersistentVolumeClaim"
            ),
            "{e:?}"
        );
        // Extended resources are admission's to refuse (OutOfnvidia.com/gpu), not the file's.
        assert!(!has(&e, "resources.limits"), "{e:?}");
    }

    #[test]
    fn names() {
        let pod: Pod = serde_yaml::from_str("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name, namespace: Prod}\nspec: {containers: [{name: a, image: i}]}").unwrap();
        let e = validate(&pod);
        assert!(
            e[0].starts_with("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
            "{e:?}"
        );
        assert!(e[1].starts_with("metadata.namespace: Invalid value: \"Prod\""), "{e:?}");
        let e = errors(
            "  initContainers: [{name: app, image: i}]\n  containers: [{name: app, image: i}, {name: Web, image: i}, {name: x}]\n",
        );
        assert!(has(&e, "spec.containers[0].name: Duplicate value: \"app\""), "{e:?}");
        assert!(has(&e, "spec.containers[1].name: Invalid value: \"Web\""), "{e:?}");
        assert!(has(&e, "spec.containers[2].image: Required value"), "{e:?}");
        assert!(has(&errors("  containers: []\n"), "spec.containers: Required value"));
    }

    #[test]
    fn ports_and_resources() {
        let e = errors(
            "  containers:\n  - name: a\n    image: i\n    ports: [{containerPort: 0}, {containerPort: 70000, protocol: HTTP}, {containerPort: 1, name: web}, {containerPort: 2, name: web}, {containerPort: 3, hostPort: 3, hostIP: localhost}, {containerPort: 4, hostPort: 8080}, {containerPort: 5, hostPort: 8080}, {containerPort: 6, hostPort: 8080, protocol: UDP}]\n    resources: {limits: {cpu: 1x, memory: 1Gi}, requests: {memory: 2Gi}}\n",
        );
        assert!(
            has(
                &e,
                "spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535"
            ),
            "{e:?}"
        );
        assert!(
            has(&e, "spec.containers[0].ports[1].containerPort: Invalid value: 70000"),
            "{e:?}"
        );
        assert!(
            has(&e, "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\""),
            "{e:?}"
        );
        assert!(
            has(&e, "spec.containers[0].ports[3].name: Duplicate value: \"web\""),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                "spec.containers[0].ports[4].hostIP: Invalid value: \"localhost\": must be a valid IP address"
            ),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                "spec.containers[0].ports[6].hostPort: Duplicate value: \"TCP//8080\""
            ),
            "{e:?}"
        );
        assert!(!has(&e, "ports[7].hostPort"), "another protocol is another port: {e:?}");
        assert!(
            has(
                &e,
                "spec.containers[0].resources.limits[cpu]: Invalid value: \"1x\": quantities must match"
            ),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                "spec.containers[0].resources.requests[memory]: Invalid value: \"2Gi\": must be less than or equal to memory limit of 1Gi"
            ),
            "{e:?}"
        );
        // The request defaulted from the bad limit is not reported a second time.
        assert!(!has(&e, "spec.containers[0].resources.requests[cpu]"), "{e:?}");
    }

    #[test]
    fn host_network_ports_are_published_as_themselves() {
        let e = errors(
            "  hostNetwork: true\n  containers:\n  - name: a\n    image: i\n    ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81, hostPort: 81}, {containerPort: 82}]\n",
        );
        assert!(
            has(
                &e,
                "spec.containers[0].ports[0].containerPort: Invalid value: 80: must match `hostPort` when `hostNetwork` is true"
            ),
            "{e:?}"
        );
        assert!(!has(&e, "ports[1]") && !has(&e, "ports[2]"), "{e:?}");
        // Without hostNetwork, publishing on another port is what hostPort is for.
        let e = errors("  containers:\n  - name: a\n    image: i\n    ports: [{containerPort: 80, hostPort: 8080}]\n");
        assert!(!has(&e, "ports[0]"), "{e:?}");
    }

    #[test]
    fn downward_api_and_projected_volumes() {
        let good = errors(
            "  volumes:\n  - name: d\n    downwardAPI:\n      defaultMode: 0o644\n      items:\n      - {path: labels, fieldRef: {fieldPath: metadata.labels}}\n      - {path: t, fieldRef: {fieldPath: \"metadata.labels['tier']\"}}\n      - {path: m, resourceFieldRef: {containerName: a, resource: limits.memory, divisor: 1Mi}}\n  - name: p\n    projected: {sources: [{downwardAPI: {items: [{path: n, fieldRef: {fieldPath: metadata.name}}]}}]}\n  containers: [{name: a, image: i}]\n",
        );
        assert!(good.is_empty(), "{good:?}");
        let e = errors(
            "  volumes:\n  - name: d\n    downwardAPI:\n      defaultMode: 4096\n      items:\n      - {path: ../x, fieldRef: {fieldPath: metadata.name}}\n      - {path: /abs, fieldRef: {fieldPath: metadata.name}}\n      - {path: ok, fieldRef: {fieldPath: spec.nodeName}}\n      - {path: ok, resourceFieldRef: {resource: limits.cpu}}\n      - {path: r, resourceFieldRef: {containerName: nope, resource: limits.gpu}}\n      - {path: both, fieldRef: {fieldPath: metadata.name}, resourceFieldRef: {containerName: a, resource: limits.cpu}}\n      - {path: mode, fieldRef: {fieldPath: metadata.name}, mode: -1}\n  - name: p\n    projected: {sources: [{secret: {name: s}}]}\n  containers: [{name: a, image: i}]\n",
        );
        for want in [
            "spec.volumes[0].downwardAPI.defaultMode: Invalid value: 4096: must be a number between 0 and 0777",
            "spec.volumes[0].downwardAPI.items[0].path: Invalid value: \"../x\": must not contain '..'",
            "spec.volumes[0].downwardAPI.items[1].path: Invalid value: \"/abs\": must be a relative path",
            "spec.volumes[0].downwardAPI.items[2].fieldRef.fieldPath: Unsupported value: \"spec.nodeName\"",
            "spec.volumes[0].downwardAPI.items[3].path: Invalid value: \"ok\": conflicting duplicate paths",
            "spec.volumes[0].downwardAPI.items[3].resourceFieldRef.containerName: Required value",
            "spec.volumes[0].downwardAPI.items[4].resourceFieldRef.containerName: Invalid value: \"nope\"",
            "spec.volumes[0].downwardAPI.items[4].resourceFieldRef.resource: Unsupported value: \"limits.gpu\"",
            "spec.volumes[0].downwardAPI.items[5]: Invalid value: \"resource\": fieldRef and resourceFieldRef can not be specified simultaneously",
            "spec.volumes[0].downwardAPI.items[6].mode: Invalid value: -1",
            "spec.volumes[1].projected.sources[0]: Unsupported value: minilet runs static pods without an API server",
        ] {
            assert!(has(&e, want), "{want}\nin {e:#?}");
        }
    }

    #[test]
    fn pod_level_resources() {
        let good = errors(
            "  resources: {requests: {cpu: '1', memory: 1Gi}, limits: {cpu: '2', memory: 2Gi}}\n  containers: [{name: a, image: i, resources: {requests: {cpu: 500m}, limits: {memory: 1Gi}}}]\n",
        );
        assert!(good.is_empty(), "{good:?}");
        let e = errors(
            "  resources: {requests: {cpu: '3', memory: 64Mi, ephemeral-storage: 1Gi}, limits: {cpu: '2', memory: 128Mi}}\n  containers: [{name: a, image: i, resources: {requests: {memory: 100Mi}, limits: {memory: 256Mi}}}]\n",
        );
        for want in [
            "spec.resources.requests[ephemeral-storage]: Unsupported value: \"ephemeral-storage\": supported values: \"cpu\", \"memory\"",
            "spec.resources.requests[cpu]: Invalid value: \"3\": must be less than or equal to cpu limit of 2",
            "spec.resources.requests[memory]: Invalid value: \"64Mi\": must be greater than or equal to aggregate container requests of 104857600",
            "spec.resources.limits[memory]: Invalid value: \"128Mi\": must be greater than or equal to the memory limit of container \"a\"",
        ] {
            assert!(has(&e, want), "{want}\nin {e:#?}");
        }
    }

    #[test]
    fn policies_env_volumes_mounts() {
        let e = errors(
            "  restartPolicy: Sometimes\n  volumes: [{name: cfg, configMap: {name: x}}, {name: data, emptyDir: {}}, {name: data, emptyDir: {}}]\n  containers:\n  - name: a\n    image: i\n    env: [{name: 1BAD, value: x}, {name: S, valueFrom: {secretKeyRef: {name: s, key: k}}}, {name: O, valueFrom: {secretKeyRef: {name: s, key: k, optional: true}}}]\n    volumeMounts: [{name: nope, mountPath: /x}, {name: data, mountPath: relative}]\n",
        );
        assert!(
            has(
                &e,
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                "spec.volumes[0].configMap: Unsupported value: minilet runs static pods without an API server"
            ),
            "{e:?}"
        );
        assert!(has(&e, "spec.volumes[2].name: Duplicate value: \"data\""), "{e:?}");
        assert!(
            has(&e, "spec.containers[0].env[0].name: Invalid value: \"1BAD\""),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                "spec.containers[0].env[1].valueFrom.secretKeyRef: Unsupported value"
            ),
            "{e:?}"
        );
        assert!(!has(&e, "env[2]"), "optional references are fine: {e:?}");
        assert!(
            has(&e, "spec.containers[0].volumeMounts[0].name: Not found: \"nope\""),
            "{e:?}"
        );
        assert!(
            has(
                &e,
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"relative\": must be an absolute path"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn dns_policy_none_needs_a_config_with_a_nameserver() {
        let c = "  containers: [{name: a, image: i}]\n";
        let none = errors(&format!("  dnsPolicy: None\n{c}"));
        assert!(
            has(
                &none,
                "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"
            ),
            "{none:?}"
        );
        let no_server = "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None";
        for empty in [
            "{}",
            "{nameservers: []}",
            "{searches: [a.example], options: [{name: ndots, value: '1'}]}",
        ] {
            let e = errors(&format!("  dnsPolicy: None\n  dnsConfig: {empty}\n{c}"));
            assert!(has(&e, no_server), "{empty}: {e:?}");
        }
        let e = errors(&format!(
            "  dnsPolicy: None\n  dnsConfig: {{nameservers: [10.0.0.2]}}\n{c}"
        ));
        assert!(e.is_empty(), "{e:?}");
        // Other policies add to the node's resolver: an empty config is fine.
        let e = errors(&format!("  dnsPolicy: Default\n  dnsConfig: {{}}\n{c}"));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn dns_policy_must_be_known() {
        let e = errors("  dnsPolicy: Cluster\n  containers: [{name: a, image: i}]\n");
        assert_eq!(
            e,
            [
                "spec.dnsPolicy: Unsupported value: \"Cluster\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""
            ]
        );
        for ok in ["ClusterFirstWithHostNet", "ClusterFirst", "Default"] {
            assert!(errors(&format!("  dnsPolicy: {ok}\n  containers: [{{name: a, image: i}}]\n")).is_empty());
        }
    }

    /// Each rule of Kubernetes' `validatePodDNSConfig`, at its limit and one past it.
    #[test]
    fn dns_config_is_bounded_as_kubernetes_does() {
        let dns = |config: &str| {
            errors(&format!(
                "  dnsConfig: {config}\n  containers: [{{name: a, image: i}}]\n"
            ))
        };
        assert!(
            dns("{nameservers: [10.0.0.2, '2001:db8::1', 192.0.2.1], options: [{name: ndots, value: '2'}, {name: rotate}]}")
                .is_empty()
        );
        assert_eq!(
            dns("{nameservers: [10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4]}"),
            [
                "spec.dnsConfig.nameservers: Invalid value: []string{\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\", \"10.0.0.4\"}: must not have more than 3 nameservers"
            ]
        );
        let e = dns("{nameservers: [dns.example, '', 10.0.0.256, '10.0.0.0/8', 'fe80::1%eth0']}");
        for (i, bad) in ["dns.example", "", "10.0.0.256", "10.0.0.0/8", "fe80::1%eth0"]
            .iter()
            .enumerate()
        {
            let want = format!(
                "spec.dnsConfig.nameservers[{i}]: Invalid value: {bad:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            );
            assert!(has(&e, &want), "{want}\nin {e:#?}");
        }
        // Kubernetes' parser takes leading zeros (and the mapped and embedded forms).
        assert!(dns("{nameservers: [010.000.0.1, '::ffff:10.0.0.1', '2001:0db8:00000::1']}").is_empty());

        let searches = |list: &[String]| dns(&format!("{{searches: [{}]}}", list.join(", ")));
        let short: Vec<String> = (0..33).map(|i| format!("s{i}.example.")).collect();
        assert!(searches(&short[..32]).is_empty());
        let e = searches(&short);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("spec.dnsConfig.searches: Invalid value: []string{\"s0.example.\", \"s1.example.\", ")
                && e[0].ends_with(": must not have more than 32 search paths"),
            "{e:?}"
        );
        // Eight names of 253 characters and one of 16, with the spaces: 2048.
        let long = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        let mut list = vec![long; 8];
        list.push("c".repeat(16));
        assert!(searches(&list).is_empty(), "{:?}", searches(&list));
        list[8].push('c');
        let e = searches(&list);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("spec.dnsConfig.searches: Invalid value: []string{\"aaa")
                && e[0].ends_with(": must not have more than 2048 characters (including spaces) in the search list")
                && e[0].len() < 1024,
            "{e:?}"
        );

        let e = dns(&format!(
            "{{searches: [ok.example., Bad.example, 'a..b', '.', a_b, -a, '', {}, {}]}}",
            "x".repeat(254),
            "y".repeat(64)
        ));
        for (i, bad) in [(1, "Bad.example"), (2, "a..b"), (3, ""), (4, "a_b"), (5, "-a"), (6, "")] {
            let want = format!("spec.dnsConfig.searches[{i}]: Invalid value: {bad:?}: {SUBDOMAIN_MSG}");
            assert!(has(&e, &want), "{want}\nin {e:#?}");
        }
        assert!(has(&e, "spec.dnsConfig.searches[7]: Invalid value: \"xxx"), "{e:?}");
        assert!(has(&e, ": must be no more than 253 characters"), "{e:?}");
        assert!(!has(&e, "searches[0]") && !has(&e, "searches[8]"), "{e:?}");
        assert_eq!(e.len(), 7, "{e:#?}");

        let e = dns("{options: [{name: ndots, value: '1'}, {value: '2'}, {name: ''}]}");
        assert_eq!(
            e,
            [
                "spec.dnsConfig.options[1]: Required value: must not be empty",
                "spec.dnsConfig.options[2]: Required value: must not be empty"
            ]
        );
        // None without a nameserver: that is all Kubernetes reports.
        let e = errors(
            "  dnsPolicy: None\n  dnsConfig: {searches: [Bad], options: [{}]}\n  containers: [{name: a, image: i}]\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        // Other policies: every rule still applies to what is there.
        let e = errors("  dnsPolicy: Default\n  dnsConfig: {nameservers: [x]}\n  containers: [{name: a, image: i}]\n");
        assert!(has(&e, "spec.dnsConfig.nameservers[0]: Invalid value: \"x\""), "{e:?}");
    }

    #[test]
    fn uid_ids_and_numeric_ranges() {
        let pod = |meta: &str, spec: &str| -> Vec<String> {
            let pod: Pod = serde_yaml::from_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: default, {meta}}}\nspec:\n{spec}"
            ))
            .unwrap();
            validate(&pod)
        };
        let app = "  containers: [{name: a, image: i}]\n";
        for bad in ["../x", "/etc", "a/b", ".", "..", "a b", &"a".repeat(65)] {
            let e = pod(&format!("uid: {bad:?}"), app);
            assert!(has(&e, "metadata.uid: Invalid value"), "{bad}: {e:?}");
        }
        assert!(pod("uid: 0b3c9e2a-5d6f-4c1e-9f3a-7e8d2c1b0a99", app).is_empty());
        let e = pod(
            "",
            "  activeDeadlineSeconds: 0\n  securityContext: {runAsUser: -1, runAsGroup: 2147483648, fsGroup: -5, supplementalGroups: [1, -1]}\n  containers:\n  - name: a\n    image: i\n    securityContext: {runAsUser: 4294967295, runAsGroup: -1}\n    livenessProbe: {periodSeconds: -1, exec: {command: [x]}}\n",
        );
        for needle in [
            "spec.securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
            "spec.securityContext.runAsGroup: Invalid value: 2147483648",
            "spec.securityContext.fsGroup: Invalid value: -5",
            "spec.securityContext.supplementalGroups[1]: Invalid value: -1",
            "spec.containers[0].securityContext.runAsUser: Invalid value: 4294967295",
            "spec.containers[0].securityContext.runAsGroup: Invalid value: -1",
            "spec.activeDeadlineSeconds: Invalid value: 0",
            "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1",
        ] {
            assert!(has(&e, needle), "{needle}: {e:?}");
        }
        assert!(!has(&e, "supplementalGroups[0]"), "{e:?}");
        let e = pod(
            "",
            "  volumes: [{name: t, emptyDir: {medium: Memory, sizeLimit: -1Mi}}]\n  containers: [{name: a, image: i}]\n",
        );
        assert!(
            has(
                &e,
                "spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"-1Mi\": must be greater than or equal to 0"
            ),
            "{e:?}"
        );
        assert!(
            pod(
                "",
                "  securityContext: {runAsUser: 0, runAsGroup: 2147483647}\n  containers: [{name: a, image: i}]\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn labels_and_annotations_are_bounded_as_kubernetes_does() {
        let meta = |m: &str| -> Vec<String> {
            let pod: Pod = serde_yaml::from_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, {m}}}\nspec: {{containers: [{{name: a, image: i}}]}}\n"
            ))
            .unwrap();
            validate(&pod)
        };
        assert!(meta("labels: {app: web, example.com/tier: Front_1}, annotations: {Example.com/Note: x}").is_empty());
        let e = meta(&format!("labels: {{'bad key': x, ok: '{}'}}", "v".repeat(64)));
        assert!(has(&e, "metadata.labels: Invalid value: \"bad key\""), "{e:?}");
        assert!(has(&e, "metadata.labels[\"ok\"]: Invalid value"), "{e:?}");
        let e = meta(&format!("annotations: {{a: '{}'}}", "x".repeat(MAX_ANNOTATIONS_BYTES)));
        assert!(
            has(&e, "metadata.annotations: Too long: must have at most 262144 bytes"),
            "{e:?}"
        );
        // A long value is quoted only in part: messages stay short.
        let e = meta(&format!("labels: {{ok: '{}'}}", "v".repeat(100_000)));
        assert!(e.iter().all(|m| m.len() < 1024), "{e:?}");
    }

    #[test]
    fn pull_and_container_restart_policies() {
        let e = errors("  containers: [{name: a, image: i, imagePullPolicy: Sometimes}]");
        assert!(
            has(
                &e,
                "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\""
            ),
            "{e:?}"
        );
        assert!(errors("  containers: [{name: a, image: i, imagePullPolicy: Never}]").is_empty());
        let e = errors(
            "  initContainers: [{name: s, image: i, restartPolicy: Never}]\n  containers: [{name: a, image: i, restartPolicy: Always}]",
        );
        assert!(
            has(
                &e,
                "spec.initContainers[0].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
            ),
            "{e:?}"
        );
        assert!(has(&e, "spec.containers[0].restartPolicy: Forbidden"), "{e:?}");
        let e = errors("  containers: [{name: a, image: i}]\n  ephemeralContainers: [{name: d, image: i}]");
        assert!(
            has(&e, "spec.ephemeralContainers: Forbidden: cannot be set on create"),
            "{e:?}"
        );
    }

    #[test]
    fn host_aliases_are_addresses_and_subdomains() {
        let c = "  containers: [{name: a, image: i}]";
        let ok = format!(
            "  hostAliases:\n  - {{ip: 10.1.1.1, hostnames: [db, db.example.com]}}\n  - {{ip: '2001:db8::1', hostnames: []}}\n  - {{ip: 010.001.0.1}}\n  - {{ip: 10.0.0.2, hostnames: ['{}']}}\n{c}",
            ["a".repeat(64), "b".repeat(100)].join(".")
        );
        assert_eq!(errors(&ok), Vec::<String>::new());
        let e = errors(&format!(
            "  hostAliases:\n  - {{ip: db.example, hostnames: [ok]}}\n  - {{ip: '', hostnames: [ok, Bad_Name, 'a..b', '{}']}}\n  - {{ip: '10.0.0.0/8'}}\n{c}",
            "a".repeat(254)
        ));
        let long = format!("{:?}", "a".repeat(254));
        let want = [
            format!("spec.hostAliases[0].ip: Invalid value: \"db.example\": {IP_MSG}"),
            format!("spec.hostAliases[1].ip: Invalid value: \"\": {IP_MSG}"),
            format!("spec.hostAliases[1].hostnames[1]: Invalid value: \"Bad_Name\": {SUBDOMAIN_MSG}"),
            format!("spec.hostAliases[1].hostnames[2]: Invalid value: \"a..b\": {SUBDOMAIN_MSG}"),
            format!("spec.hostAliases[1].hostnames[3]: Invalid value: {}", &long[..20]),
            format!("spec.hostAliases[2].ip: Invalid value: \"10.0.0.0/8\": {IP_MSG}"),
        ];
        for w in &want {
            assert!(has(&e, w), "{w}\n{e:?}");
        }
        assert!(
            has(&e, "hostnames[3]: Invalid value") && has(&e, "must be no more than 253 characters"),
            "{e:?}"
        );
        assert_eq!(e.len(), want.len(), "{e:?}");
    }

    #[test]
    fn field_refs_are_checked_as_kubernetes_does() {
        let env = |fp: &str, api: &str| {
            errors(&format!(
                "  containers:\n  - name: a\n    image: i\n    env: [{{name: X, valueFrom: {{fieldRef: {{apiVersion: {api}, fieldPath: \"{fp}\"}}}}}}]\n"
            ))
        };
        let at = "spec.containers[0].env[0].valueFrom.fieldRef";
        for fp in [
            "metadata.name",
            "status.podIPs",
            "spec.serviceAccountName",
            "metadata.labels['app']",
        ] {
            assert!(env(fp, "v1").is_empty(), "{fp}: {:?}", env(fp, "v1"));
        }
        assert_eq!(
            env("metadata.name", "v2"),
            [format!(
                "{at}.fieldPath: Invalid value: \"metadata.name\": error converting fieldPath: unsupported pod version: v2"
            )]
        );
        assert_eq!(
            env("spec.bogus", "v1"),
            [format!(
                "{at}.fieldPath: Invalid value: \"spec.bogus\": error converting fieldPath: field label not supported: spec.bogus"
            )]
        );
        // A whole map is a volume's, not a variable's; status.phase converts but is not offered.
        let e = env("metadata.labels", "v1");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(&format!(
                "{at}.fieldPath: Unsupported value: \"metadata.labels\": supported values: \"metadata.name\""
            )),
            "{e:?}"
        );
        assert!(has(&env("status.phase", "v1"), "Unsupported value: \"status.phase\""));
        assert_eq!(
            env("metadata.labels['-bad-']", "v1"),
            [format!("{at}: Invalid value: \"-bad-\": {QUALIFIED_NAME_MSG}")]
        );
        assert!(has(
            &env("metadata.name['x']", "v1"),
            "error converting fieldPath: field label not supported: metadata.name['x']"
        ));
        // A volume item: the same conversion, the volume's own list.
        let e = errors(
            "  volumes:\n  - name: d\n    downwardAPI:\n      items:\n      - {path: a, fieldRef: {apiVersion: v2, fieldPath: metadata.name}}\n      - {path: b, fieldRef: {fieldPath: status.podIP}}\n  containers: [{name: a, image: i}]\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            has(
                &e,
                "items[0].fieldRef.fieldPath: Invalid value: \"metadata.name\": error converting fieldPath: unsupported pod version: v2"
            ),
            "{e:?}"
        );
        assert!(
            has(&e, "items[1].fieldRef.fieldPath: Unsupported value: \"status.podIP\""),
            "{e:?}"
        );
    }

    #[test]
    fn scheduler_name_is_a_subdomain() {
        let c = "  containers: [{name: a, image: i}]";
        assert!(errors(&format!("  schedulerName: my-scheduler.example\n{c}")).is_empty());
        let e = errors(&format!("  schedulerName: My_Scheduler\n{c}"));
        assert_eq!(
            e,
            [format!(
                "spec.schedulerName: Invalid value: \"My_Scheduler\": {SUBDOMAIN_MSG}"
            )]
        );
    }

    #[test]
    fn subdomains_bound_the_whole_name_not_its_parts() {
        // Kubernetes' pattern bounds no part: a 64-character part is fine, a label is not.
        let part64 = "a".repeat(64);
        assert!(is_subdomain(&part64) && !is_label(&part64));
        assert!(is_subdomain(&format!("x.{}", "y".repeat(251))));
        assert!(!is_subdomain(&format!("x.{}", "y".repeat(252))), "254 characters");
        assert!(is_subdomain(&"a".repeat(253)) && !is_subdomain(&"a".repeat(254)));
        for bad in [
            "", ".", "a.", ".a", "a..b", "-a", "a-", "a.-b", "a.b-", "A", "a_b", "a b",
        ] {
            assert!(!is_subdomain(bad), "{bad:?}");
        }
        // metadata.name follows: one long part is a valid name; the namespace stays a label.
        let pod = |meta: &str| -> Pod {
            serde_yaml::from_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{{meta}}}\nspec: {{containers: [{{name: a, image: i}}]}}\n"
            ))
            .unwrap()
        };
        assert_eq!(
            validate(&pod(&format!("name: {part64}, namespace: default"))),
            Vec::<String>::new()
        );
        let e = validate(&pod(&format!("name: w, namespace: {part64}")));
        assert!(has(&e, "metadata.namespace: Invalid value"), "{e:?}");
        let e = validate(&pod(&format!("name: {}", "a".repeat(254))));
        assert!(has(&e, "metadata.name: Invalid value"), "{e:?}");
    }

    #[test]
    fn helpers() {
        assert!(is_label("a-1") && !is_label("-a") && !is_label("A") && !is_label(&"a".repeat(64)));
        assert!(is_subdomain("a.b-c.d") && !is_subdomain("a..b"));
        assert!(
            is_port_name("http") && !is_port_name("80") && !is_port_name("a--b") && !is_port_name("sixteen-chars-xx")
        );
        assert!(is_env_name("_X") && is_env_name("a.b-c") && !is_env_name("9a") && !is_env_name("a b"));
    }
}
