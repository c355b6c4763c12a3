//! `minilet describe pod`: kubectl's `describePod` layout, key for key, plus what only minilet
//! knows: the manifest a pod comes from and, per container, the cgroup settings applied.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::core::v1::{Container, ContainerState, ContainerStatus, EnvVar, Pod, Probe, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use minilet_proto::minilet::v1::PodInfo;

use super::errors::{Exit, ServerError};
use super::get::{Resource, check_names, no_resources, resource_and_names};
use super::pods::NodePod;
use super::printers::{bool_word, since};
use super::selector::Selector;
use super::tabwriter::TabWriter;
use super::{NamespaceArgs, SocketArgs, client, events, pods};
use crate::quantity::Quantity;

#[derive(Debug, Clone, clap::Args)]
pub struct DescribeArgs {
    /// Resource type: pods (pod, po); TYPE/NAME also works.
    pub resource: String,
    /// Pod names (default: every pod in the namespace).
    pub names: Vec<String>,
    #[command(flatten)]
    pub scope: NamespaceArgs,
    /// Label selector, e.g. -l app=web.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

pub async fn run(args: DescribeArgs) -> Result<ExitCode> {
    let (resource, names) = resource_and_names(&args.resource, &args.names)?;
    if resource != Resource::Pods {
        anyhow::bail!("minilet describe serves pods only");
    }
    let selector = Selector::from_flag(args.selector.as_deref())?;
    check_names(&names, args.scope.all_namespaces, &selector)?;
    let namespace = args.scope.namespace();
    let client = client::connect(&args.socket.socket).await?;
    let mut targets = Vec::new();
    let mut failed = false;
    if names.is_empty() {
        targets = pods::list(&client, namespace, client::Details::Cgroups).await?;
        targets.retain(|p| selector.matches(p.pod.metadata.labels.as_ref()));
        if targets.is_empty() {
            eprintln!("{}", no_resources(namespace));
            return Ok(ExitCode::SUCCESS);
        }
    } else {
        let ns = namespace.unwrap_or("default");
        for name in &names {
            match pods::get(&client, ns, name, client::Details::Cgroups).await {
                Ok(p) => targets.push(p),
                Err(e) if e.downcast_ref::<ServerError>().is_some_and(|s| s.reason == "NotFound") => {
                    eprintln!("{e}");
                    failed = true;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let now = Timestamp::now();
    let tz = TimeZone::system();
    let mut first = true;
    for p in &targets {
        let evs = events::about(
            &client,
            p.namespace(),
            p.name(),
            p.pod.metadata.uid.as_deref().unwrap_or_default(),
        )
        .await?;
        let text = describe_pod(p, &evs, now, &tz);
        if first {
            print!("{text}");
            first = false;
        } else {
            print!("\n\n{text}");
        }
    }
    if failed {
        Err(Exit(1).into())
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Go's `time.RFC1123Z` in the local zone, as kubectl prints times in describe.
fn rfc1123z(t: Option<&Time>, tz: &TimeZone) -> String {
    match t {
        Some(t) => {
            t.0.to_zoned(tz.clone())
                .strftime("%a, %d %b %Y %H:%M:%S %z")
                .to_string()
        }
        // Go's zero time.
        None => "Mon, 01 Jan 0001 00:00:00 +0000".into(),
    }
}

/// A `describe` document: lines with tab-separated cells, indented two spaces a level.
struct Doc {
    w: TabWriter,
}

impl Doc {
    fn line(&mut self, level: usize, text: &str) {
        let _ = writeln!(self.w, "{}{text}", "  ".repeat(level));
    }
}

fn labels_multiline(d: &mut Doc, title: &str, labels: Option<&BTreeMap<String, String>>) {
    let mut it = labels.into_iter().flatten();
    let Some((k, v)) = it.next() else {
        d.line(0, &format!("{title}:\t<none>"));
        return;
    };
    d.line(0, &format!("{title}:\t{k}={v}"));
    for (k, v) in it {
        d.line(0, &format!("\t{k}={v}"));
    }
}

const MAX_ANNOTATION_LEN: usize = 140;

fn annotations_multiline(d: &mut Doc, annotations: Option<&BTreeMap<String, String>>) {
    let shown: Vec<_> = annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "kubectl.kubernetes.io/last-applied-configuration")
        .collect();
    if shown.is_empty() {
        d.line(0, "Annotations:\t<none>");
        return;
    }
    let mut text = String::from("Annotations:\t");
    for (i, (k, v)) in shown.iter().enumerate() {
        if i != 0 {
            text.push('\t');
        }
        let v = v.strip_suffix('\n').unwrap_or(v);
        if v.len() + k.len() + 2 > MAX_ANNOTATION_LEN || v.contains('\n') {
            let _ = writeln!(text, "{k}:");
            for s in v.split('\n') {
                let short = if s.len() > MAX_ANNOTATION_LEN - 2 {
                    let mut cut = MAX_ANNOTATION_LEN - 2;
                    while !s.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    format!("{}...", &s[..cut])
                } else {
                    s.to_string()
                };
                let _ = writeln!(text, "\t  {short}");
            }
        } else {
            let _ = writeln!(text, "{k}: {v}");
        }
    }
    let _ = write!(d.w, "{text}");
}

fn quantity_str(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> String {
    q.0.clone()
}

fn describe_state(d: &mut Doc, title: &str, state: Option<&ContainerState>, tz: &TimeZone) {
    let state = state.cloned().unwrap_or_default();
    if let Some(r) = &state.running {
        d.line(2, &format!("{title}:\tRunning"));
        d.line(3, &format!("Started:\t{}", rfc1123z(r.started_at.as_ref(), tz)));
    } else if let Some(w) = &state.waiting {
        d.line(2, &format!("{title}:\tWaiting"));
        if let Some(r) = w.reason.as_deref().filter(|r| !r.is_empty()) {
            d.line(3, &format!("Reason:\t{r}"));
        }
    } else if let Some(t) = &state.terminated {
        d.line(2, &format!("{title}:\tTerminated"));
        if let Some(r) = t.reason.as_deref().filter(|r| !r.is_empty()) {
            d.line(3, &format!("Reason:\t{r}"));
        }
        if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
            d.line(3, &format!("Message:\t{m}"));
        }
        d.line(3, &format!("Exit Code:\t{}", t.exit_code));
        if let Some(s) = t.signal.filter(|&s| s > 0) {
            d.line(3, &format!("Signal:\t{s}"));
        }
        d.line(3, &format!("Started:\t{}", rfc1123z(t.started_at.as_ref(), tz)));
        d.line(3, &format!("Finished:\t{}", rfc1123z(t.finished_at.as_ref(), tz)));
    } else {
        d.line(2, &format!("{title}:\tWaiting"));
    }
}

fn int_or_string(v: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString) -> String {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// kubectl's DescribeProbe, with the API server's defaults filled in.
fn describe_probe(p: &Probe) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(1),
        p.period_seconds.unwrap_or(10),
        p.success_threshold.unwrap_or(1),
        p.failure_threshold.unwrap_or(3)
    );
    if let Some(e) = &p.exec {
        return format!("exec [{}] {attrs}", e.command.clone().unwrap_or_default().join(" "));
    }
    if let Some(h) = &p.http_get {
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
        let host = h.host.clone().unwrap_or_default();
        let port = int_or_string(&h.port);
        let host = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        return format!(
            "http-get {scheme}://{host}{} {attrs}",
            h.path.as_deref().unwrap_or_default()
        );
    }
    if let Some(t) = &p.tcp_socket {
        return format!(
            "tcp-socket {}:{} {attrs}",
            t.host.as_deref().unwrap_or_default(),
            int_or_string(&t.port)
        );
    }
    if let Some(g) = &p.grpc {
        return format!(
            "grpc <pod>:{} {} {attrs}",
            g.port,
            g.service.as_deref().unwrap_or_default()
        );
    }
    format!("unknown {attrs}")
}

/// What a `fieldRef` resolves to for this pod (kubectl's EnvValueRetriever), empty if unknown.
fn field_value(pod: &Pod, path: &str) -> String {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_prefix("['")?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIPs" => status.map(|s| {
            s.host_ips
                .iter()
                .flatten()
                .map(|i| i.ip.clone())
                .collect::<Vec<_>>()
                .join(",")
        }),
        "status.podIPs" => status.map(|s| {
            s.pod_ips
                .iter()
                .flatten()
                .map(|i| i.ip.clone())
                .collect::<Vec<_>>()
                .join(",")
        }),
        _ => keyed("metadata.labels", m.labels.as_ref())
            .or_else(|| keyed("metadata.annotations", m.annotations.as_ref())),
    }
    .unwrap_or_default()
}

/// A `resourceFieldRef` value as kubectl shows it (limits of 0 are "node allocatable").
fn resource_value(c: &Container, resource: &str, divisor: Option<&str>) -> String {
    let Some((list, name)) = resource.split_once('.') else {
        return String::new();
    };
    let res = c.resources.as_ref();
    let map = match list {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => None,
    };
    let q = map.and_then(|m| m.get(name)).and_then(|q| Quantity::parse(&q.0).ok());
    let div = divisor.and_then(|d| Quantity::parse(d).ok()).filter(|d| !d.is_zero());
    // CPU in (rounded-up) units of the divisor's millicores, the rest in its whole units.
    let (value, unit) = if name == "cpu" {
        (q.map_or(0, |q| q.milli_value()), div.map_or(1000, |d| d.milli_value()))
    } else {
        (q.map_or(0, |q| q.value()), div.map_or(1, |d| d.value()))
    };
    let (value, unit) = (i128::from(value), i128::from(unit).max(1));
    let value = (value + unit - 1).div_euclid(unit);
    if value == 0 && (resource == "limits.cpu" || resource == "limits.memory") {
        "node allocatable".into()
    } else {
        value.to_string()
    }
}

fn describe_env(d: &mut Doc, pod: &Pod, c: &Container) {
    let env: &[EnvVar] = c.env.as_deref().unwrap_or_default();
    if env.is_empty() {
        d.line(2, "Environment:\t<none>");
        return;
    }
    d.line(2, "Environment:");
    for e in env {
        let Some(from) = &e.value_from else {
            for (i, s) in e.value.as_deref().unwrap_or_default().split('\n').enumerate() {
                if i == 0 {
                    d.line(3, &format!("{}:\t{s}", e.name));
                } else {
                    d.line(3, &format!("\t{s}"));
                }
            }
            continue;
        };
        if let Some(f) = &from.field_ref {
            d.line(
                3,
                &format!(
                    "{}:\t{} ({}:{})",
                    e.name,
                    field_value(pod, &f.field_path),
                    f.api_version.as_deref().unwrap_or("v1"),
                    f.field_path
                ),
            );
        } else if let Some(r) = &from.resource_field_ref {
            let target = r
                .container_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .and_then(|n| {
                    pod.spec.as_ref().and_then(|s| {
                        s.containers
                            .iter()
                            .chain(s.init_containers.iter().flatten())
                            .find(|x| x.name == n)
                    })
                })
                .unwrap_or(c);
            let value = resource_value(target, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()));
            d.line(3, &format!("{}:\t{value} ({})", e.name, r.resource));
        } else if let Some(s) = &from.secret_key_ref {
            d.line(
                3,
                &format!(
                    "{}:\t<set to the key '{}' in secret '{}'>\tOptional: {}",
                    e.name,
                    s.key,
                    s.name,
                    s.optional.unwrap_or(false)
                ),
            );
        } else if let Some(s) = &from.config_map_key_ref {
            d.line(
                3,
                &format!(
                    "{}:\t<set to the key '{}' of config map '{}'>\tOptional: {}",
                    e.name,
                    s.key,
                    s.name,
                    s.optional.unwrap_or(false)
                ),
            );
        }
    }
}

fn describe_mounts(d: &mut Doc, c: &Container) {
    let mut mounts = c.volume_mounts.clone().unwrap_or_default();
    if mounts.is_empty() {
        d.line(2, "Mounts:\t<none>");
        return;
    }
    d.line(2, "Mounts:");
    mounts.sort_by(|a, b| a.mount_path.cmp(&b.mount_path));
    for m in mounts {
        let mut flags = vec![if m.read_only == Some(true) {
            "ro".to_string()
        } else {
            "rw".to_string()
        }];
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            flags.push(format!("path={sub:?}"));
        }
        d.line(3, &format!("{} from {} ({})", m.mount_path, m.name, flags.join(",")));
    }
}

/// minilet's own per-container section: the cgroup settings the agent applied.
fn describe_cgroup(d: &mut Doc, info: &PodInfo, name: &str) {
    let limits: BTreeMap<&String, &String> = info
        .containers
        .iter()
        .filter(|c| c.name == name)
        .flat_map(|c| c.limits.iter())
        .collect();
    if limits.is_empty() {
        d.line(2, "Cgroup:\t<none>");
        return;
    }
    d.line(2, "Cgroup:");
    for (k, v) in limits {
        d.line(3, &format!("{k}:\t{v}"));
    }
}

/// The container's pressure stall figures (cgroup v2 with PSI), as the kernel reported them.
fn describe_pressure(d: &mut Doc, info: &PodInfo, name: &str) {
    let lines: Vec<&String> = info
        .containers
        .iter()
        .filter(|c| c.name == name)
        .flat_map(|c| c.pressure.iter())
        .collect();
    if lines.is_empty() {
        return;
    }
    d.line(2, "Pressure:");
    for l in lines {
        d.line(3, l);
    }
}

fn describe_containers(
    d: &mut Doc,
    title: &str,
    np: &NodePod,
    containers: &[Container],
    statuses: &[ContainerStatus],
    tz: &TimeZone,
) {
    if containers.is_empty() {
        d.line(0, &format!("{title}: <none>"));
        return;
    }
    d.line(0, &format!("{title}:"));
    for c in containers {
        let status = statuses.iter().find(|s| s.name == c.name);
        d.line(1, &format!("{}:", c.name));
        if let Some(s) = status {
            d.line(
                2,
                &format!("Container ID:\t{}", s.container_id.as_deref().unwrap_or_default()),
            );
        }
        d.line(2, &format!("Image:\t{}", c.image.as_deref().unwrap_or_default()));
        if let Some(s) = status {
            d.line(2, &format!("Image ID:\t{}", s.image_id));
        }
        let ports = c.ports.as_deref().unwrap_or_default();
        let proto = |p: &k8s_openapi::api::core::v1::ContainerPort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port_str = ports
            .iter()
            .map(|p| match p.name.as_deref().filter(|n| !n.is_empty()) {
                Some(n) => format!("{}/{} ({n})", p.container_port, proto(p)),
                None => format!("{}/{}", p.container_port, proto(p)),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let host_str = ports
            .iter()
            .map(|p| format!("{}/{}", p.host_port.unwrap_or(0), proto(p)))
            .collect::<Vec<_>>()
            .join(", ");
        let or_none = |s: &str| {
            if s.is_empty() {
                "<none>".to_string()
            } else {
                s.to_string()
            }
        };
        if ports.len() > 1 {
            d.line(2, &format!("Ports:\t{port_str}"));
            d.line(2, &format!("Host Ports:\t{host_str}"));
        } else {
            d.line(2, &format!("Port:\t{}", or_none(&port_str)));
            d.line(2, &format!("Host Port:\t{}", or_none(&host_str)));
        }
        for (title, list) in [("Command", &c.command), ("Args", &c.args)] {
            if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
                d.line(2, &format!("{title}:"));
                for s in list.iter().flat_map(|a| a.split('\n')) {
                    d.line(3, s);
                }
            }
        }
        if let Some(s) = status {
            describe_state(d, "State", s.state.as_ref(), tz);
            if let Some(last) = s.last_state.as_ref().filter(|l| l.terminated.is_some()) {
                describe_state(d, "Last State", Some(last), tz);
            }
            d.line(2, &format!("Ready:\t{}", bool_word(s.ready)));
            d.line(2, &format!("Restart Count:\t{}", s.restart_count));
        }
        if let Some(r) = &c.resources {
            for (title, list) in [("Limits", &r.limits), ("Requests", &r.requests)] {
                if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
                    d.line(2, &format!("{title}:"));
                    for (k, v) in list {
                        d.line(3, &format!("{k}:\t{}", quantity_str(v)));
                    }
                }
            }
        }
        for (title, probe) in [
            ("Liveness", &c.liveness_probe),
            ("Readiness", &c.readiness_probe),
            ("Startup", &c.startup_probe),
        ] {
            if let Some(p) = probe {
                d.line(2, &format!("{title}:\t{}", describe_probe(p)));
            }
        }
        describe_env(d, &np.pod, c);
        describe_mounts(d, c);
        describe_cgroup(d, &np.info, &c.name);
        describe_pressure(d, &np.info, &c.name);
    }
}

fn describe_volumes(d: &mut Doc, volumes: &[Volume]) {
    if volumes.is_empty() {
        d.line(0, "Volumes:\t<none>");
        return;
    }
    d.line(0, "Volumes:");
    for v in volumes {
        d.line(1, &format!("{}:", v.name));
        if let Some(h) = &v.host_path {
            d.line(2, "Type:\tHostPath (bare host directory volume)");
            d.line(2, &format!("Path:\t{}", h.path));
            d.line(2, &format!("HostPathType:\t{}", h.type_.as_deref().unwrap_or("<none>")));
        } else if let Some(e) = &v.empty_dir {
            d.line(
                2,
                "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)",
            );
            d.line(2, &format!("Medium:\t{}", e.medium.as_deref().unwrap_or_default()));
            let size = e
                .size_limit
                .as_ref()
                .filter(|q| Quantity::parse(&q.0).is_ok_and(|q| !q.is_zero()))
                .map(quantity_str)
                .unwrap_or_else(|| "<unset>".into());
            d.line(2, &format!("SizeLimit:\t{size}"));
        } else if let Some(da) = &v.downward_api {
            d.line(
                2,
                "Type:\tDownwardAPI (a volume populated by information about the pod)",
            );
            d.line(2, "Items:");
            for item in da.items.iter().flatten() {
                let from = match (&item.field_ref, &item.resource_field_ref) {
                    (Some(f), _) => f.field_path.clone(),
                    (None, Some(r)) => r.resource.clone(),
                    (None, None) => String::new(),
                };
                d.line(3, &format!("{from} -> {}", item.path));
            }
        } else if v.projected.is_some() {
            d.line(
                2,
                "Type:\tProjected (a volume that contains injected data from multiple sources)",
            );
            d.line(2, "DownwardAPI:\ttrue");
        } else {
            d.line(1, "<unknown>");
        }
    }
}

fn describe_tolerations(d: &mut Doc, pod: &Pod) {
    let mut tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    if tolerations.is_empty() {
        d.line(0, "Tolerations:\t<none>");
        return;
    }
    tolerations.sort_by(|a, b| a.key.cmp(&b.key));
    for (i, t) in tolerations.iter().enumerate() {
        let mut s = if i == 0 {
            "Tolerations:\t".to_string()
        } else {
            "\t".to_string()
        };
        let key = t.key.as_deref().unwrap_or_default();
        let value = t.value.as_deref().unwrap_or_default();
        let effect = t.effect.as_deref().unwrap_or_default();
        s.push_str(key);
        if !value.is_empty() {
            let _ = write!(s, "={value}");
        }
        if !effect.is_empty() {
            let _ = write!(s, ":{effect}");
        }
        if t.operator.as_deref() == Some("Exists") && value.is_empty() {
            s.push_str(if !key.is_empty() || !effect.is_empty() {
                " op=Exists"
            } else {
                "op=Exists"
            });
        }
        if let Some(secs) = t.toleration_seconds {
            let _ = write!(s, " for {secs}s");
        }
        d.line(0, &s);
    }
}

/// The whole `describe pod` text.
pub fn describe_pod(
    np: &NodePod,
    events: &[k8s_openapi::api::core::v1::Event],
    now: Timestamp,
    tz: &TimeZone,
) -> String {
    let pod = &np.pod;
    let m = &pod.metadata;
    let default_spec = Default::default();
    let default_status = Default::default();
    let spec: &k8s_openapi::api::core::v1::PodSpec = pod.spec.as_ref().unwrap_or(&default_spec);
    let status: &k8s_openapi::api::core::v1::PodStatus = pod.status.as_ref().unwrap_or(&default_status);
    let mut d = Doc {
        w: TabWriter::describe(),
    };

    d.line(0, &format!("Name:\t{}", m.name.as_deref().unwrap_or_default()));
    d.line(
        0,
        &format!("Namespace:\t{}", m.namespace.as_deref().unwrap_or_default()),
    );
    if let Some(p) = spec.priority {
        d.line(0, &format!("Priority:\t{p}"));
    }
    if let Some(p) = spec.priority_class_name.as_deref().filter(|p| !p.is_empty()) {
        d.line(0, &format!("Priority Class Name:\t{p}"));
    }
    if let Some(p) = spec.runtime_class_name.as_deref().filter(|p| !p.is_empty()) {
        d.line(0, &format!("Runtime Class Name:\t{p}"));
    }
    if let Some(sa) = spec.service_account_name.as_deref().filter(|s| !s.is_empty()) {
        d.line(0, &format!("Service Account:\t{sa}"));
    }
    match spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => d.line(
            0,
            &format!("Node:\t{n}/{}", status.host_ip.as_deref().unwrap_or_default()),
        ),
        None => d.line(0, "Node:\t<none>"),
    }
    if let Some(t) = &status.start_time {
        d.line(0, &format!("Start Time:\t{}", rfc1123z(Some(t), tz)));
    }
    labels_multiline(&mut d, "Labels", m.labels.as_ref());
    annotations_multiline(&mut d, m.annotations.as_ref());
    let phase = status.phase.as_deref().unwrap_or_default();
    match &m.deletion_timestamp {
        Some(t) if phase != "Failed" && phase != "Succeeded" => {
            d.line(0, &format!("Status:\tTerminating (lasts {})", since(now, Some(t))));
            d.line(
                0,
                &format!(
                    "Termination Grace Period:\t{}s",
                    m.deletion_grace_period_seconds.unwrap_or(0)
                ),
            );
        }
        _ => d.line(0, &format!("Status:\t{phase}")),
    }
    if let Some(r) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        d.line(0, &format!("Reason:\t{r}"));
    }
    if let Some(msg) = status.message.as_deref().filter(|r| !r.is_empty()) {
        d.line(0, &format!("Message:\t{msg}"));
    }
    d.line(0, &format!("IP:\t{}", status.pod_ip.as_deref().unwrap_or_default()));
    match status.pod_ips.as_deref().filter(|ips| !ips.is_empty()) {
        None => d.line(0, "IPs:\t<none>"),
        Some(ips) => {
            d.line(0, "IPs:");
            for ip in ips {
                d.line(1, &format!("IP:\t{}", ip.ip));
            }
        }
    }
    // Where "Controlled By" would be for an API pod: what the pod comes from.
    if np.info.manifest.is_empty() {
        d.line(0, "Created By:\tCRI client (RunPodSandbox), not a manifest");
    } else {
        d.line(0, &format!("Manifest:\t{}", np.info.manifest));
    }
    if let Some(n) = status.nominated_node_name.as_deref().filter(|n| !n.is_empty()) {
        d.line(0, &format!("NominatedNodeName:\t{n}"));
    }
    if let Some(init) = spec.init_containers.as_deref().filter(|i| !i.is_empty()) {
        describe_containers(
            &mut d,
            "Init Containers",
            np,
            init,
            status.init_container_statuses.as_deref().unwrap_or_default(),
            tz,
        );
    }
    describe_containers(
        &mut d,
        "Containers",
        np,
        &spec.containers,
        status.container_statuses.as_deref().unwrap_or_default(),
        tz,
    );
    if let Some(gates) = spec.readiness_gates.as_deref().filter(|g| !g.is_empty()) {
        d.line(0, "Readiness Gates:");
        d.line(1, "Type\tStatus");
        for g in gates {
            let s = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == g.condition_type)
                .map(|c| c.status.clone())
                .unwrap_or_else(|| "<none>".into());
            d.line(1, &format!("{} \t{s} ", g.condition_type));
        }
    }
    // The pod cgroup's pressure stall figures (cgroup v2 with PSI): minilet's own section.
    if !np.info.pressure.is_empty() {
        d.line(0, "Pressure:");
        for l in &np.info.pressure {
            d.line(1, l);
        }
    }
    if let Some(conditions) = status.conditions.as_deref().filter(|c| !c.is_empty()) {
        d.line(0, "Conditions:");
        d.line(1, "Type\tStatus");
        for c in conditions {
            d.line(1, &format!("{} \t{} ", c.type_, c.status));
        }
    }
    describe_volumes(&mut d, spec.volumes.as_deref().unwrap_or_default());
    let qos = status
        .qos_class
        .clone()
        .unwrap_or_else(|| crate::pod::qos::class(spec).as_str().to_string());
    d.line(0, &format!("QoS Class:\t{qos}"));
    labels_multiline(&mut d, "Node-Selectors", spec.node_selector.as_ref());
    describe_tolerations(&mut d, pod);
    // kubectl flushes its tab writer before an events table (which then aligns on its own),
    // but not before `Events:\t<none>`.
    let section = events::describe_section(events, now);
    if events.is_empty() {
        let _ = d.w.write_str(&section);
        return d.w.render();
    }
    let mut out = d.w.render();
    let mut ev = TabWriter::describe();
    let _ = ev.write_str(&section);
    out.push_str(&ev.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::printers::tests::{now, pod};
    use minilet_proto::minilet::v1::ContainerCgroup;

    fn sample() -> NodePod {
        let pod = pod(r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  uid: u1
  creationTimestamp: '2024-05-01T11:50:00Z'
  labels: {app: web, tier: front}
  annotations: {kubernetes.io/config.source: file}
spec:
  nodeName: node1
  priority: 0
  initContainers:
  - {name: setup, image: busybox, command: [sh, -c, 'echo hi']}
  containers:
  - name: nginx
    image: localhost/nginx:latest
    ports: [{containerPort: 80, name: http}]
    args: [-g, daemon off;]
    resources: {limits: {memory: 64Mi, cpu: 500m}, requests: {cpu: 100m}}
    env:
    - {name: MODE, value: prod}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    volumeMounts: [{name: data, mountPath: /data}, {name: cache, mountPath: /cache, readOnly: true}]
    livenessProbe: {httpGet: {path: /healthz, port: 80}}
  volumes:
  - {name: data, hostPath: {path: /srv/data, type: DirectoryOrCreate}}
  - {name: cache, emptyDir: {medium: Memory}}
  tolerations: [{operator: Exists, effect: NoExecute}]
status:
  phase: Running
  hostIP: 192.168.1.10
  podIP: 10.88.0.5
  podIPs: [{ip: 10.88.0.5}]
  startTime: '2024-05-01T11:50:01Z'
  qosClass: Burstable
  conditions:
  - {type: Initialized, status: 'True'}
  - {type: Ready, status: 'True'}
  initContainerStatuses:
  - name: setup
    ready: true
    restartCount: 0
    image: busybox
    imageID: sha256:aaa
    containerID: minilet://111
    state: {terminated: {exitCode: 0, reason: Completed, startedAt: '2024-05-01T11:50:02Z', finishedAt: '2024-05-01T11:50:03Z'}}
  containerStatuses:
  - name: nginx
    ready: true
    restartCount: 1
    image: localhost/nginx:latest
    imageID: sha256:bbb
    containerID: minilet://222
    state: {running: {startedAt: '2024-05-01T11:55:00Z'}}
    lastState: {terminated: {exitCode: 137, reason: OOMKilled, startedAt: '2024-05-01T11:50:04Z', finishedAt: '2024-05-01T11:54:50Z'}}
"#);
        NodePod {
            pod,
            info: PodInfo {
                manifest: "/etc/minilet/manifests/web.yaml".into(),
                containers: vec![ContainerCgroup {
                    name: "nginx".into(),
                    container_id: "222".into(),
                    cgroup_dirs: vec![],
                    limits: [
                        ("memory.max".to_string(), "67108864".to_string()),
                        ("cpu.max".to_string(), "50000 100000".to_string()),
                    ]
                    .into(),
                    pressure: vec![
                        "cpu some avg10=0.50 avg60=0.10 avg300=0.02 total=4200".into(),
                        "memory some avg10=0.00 avg60=0.00 avg300=0.00 total=0".into(),
                    ],
                }],
                pressure: vec!["io some avg10=1.00 avg60=0.20 avg300=0.04 total=900".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn key_lines_in_order() {
        let events = crate::cli::events::tests::sample();
        let text = describe_pod(&sample(), &events[..2], now(), &TimeZone::UTC);
        let expected_in_order = [
            "Name:         web\n",
            "Namespace:    default\n",
            "Priority:     0\n",
            "Node:         node1/192.168.1.10\n",
            "Start Time:   Wed, 01 May 2024 11:50:01 +0000\n",
            "Labels:       app=web\n",
            "              tier=front\n",
            "Annotations:  kubernetes.io/config.source: file\n",
            "Status:       Running\n",
            "IP:           10.88.0.5\n",
            "IPs:\n  IP:      10.88.0.5\n",
            "Manifest:  /etc/minilet/manifests/web.yaml\n",
            "Init Containers:\n  setup:\n",
            "    Container ID:  minilet://111\n",
            "    Command:\n      sh\n      -c\n      echo hi\n",
            "    State:          Terminated\n      Reason:       Completed\n      Exit Code:    0\n",
            "      Finished:     Wed, 01 May 2024 11:50:03 +0000\n",
            "Containers:\n  nginx:\n",
            "    Image:         localhost/nginx:latest\n",
            "    Image ID:      sha256:bbb\n",
            "    Port:          80/TCP (http)\n",
            "    Host Port:     0/TCP\n",
            "    Args:\n      -g\n      daemon off;\n",
            "    State:          Running\n      Started:      Wed, 01 May 2024 11:55:00 +0000\n",
            "    Last State:     Terminated\n      Reason:       OOMKilled\n      Exit Code:    137\n",
            "    Ready:          True\n    Restart Count:  1\n",
            "    Limits:\n      cpu:     500m\n      memory:  64Mi\n    Requests:\n      cpu:     100m\n",
            "    Liveness:  http-get http://:80/healthz delay=0s timeout=1s period=10s #success=1 #failure=3\n",
            "    Environment:\n      MODE:  prod\n      POD:   web (v1:metadata.name)\n      MEM:   64 (limits.memory)\n",
            "    Mounts:\n      /cache from cache (ro)\n      /data from data (rw)\n",
            "    Cgroup:\n      cpu.max:     50000 100000\n      memory.max:  67108864\n",
            "    Pressure:\n      cpu some avg10=0.50 avg60=0.10 avg300=0.02 total=4200\n",
            "      memory some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "Pressure:\n  io some avg10=1.00 avg60=0.20 avg300=0.04 total=900\n",
            "Conditions:\n  Type          Status\n  Initialized   True \n  Ready         True \n",
            "Volumes:\n  data:\n",
            "    Type:          HostPath (bare host directory volume)\n    Path:          /srv/data\n",
            "    HostPathType:  DirectoryOrCreate\n",
            "  cache:\n    Type:        EmptyDir (a temporary directory that shares a pod's lifetime)\n",
            "    Medium:      Memory\n    SizeLimit:   <unset>\n",
            "QoS Class:       Burstable\n",
            "Node-Selectors:  <none>\n",
            "Tolerations:     :NoExecute op=Exists\n",
            "Events:\n  Type     Reason",
            "  Warning  BackOff  60s (x3 over 5m)  minilet  Back-off restarting failed container app\n",
        ];
        let mut at = 0;
        for want in expected_in_order {
            match text[at..].find(want) {
                Some(i) => at += i + want.len(),
                None => panic!("missing (in order) {want:?} after byte {at} in:\n{text}"),
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn bare_pod_and_no_events() {
        let np = NodePod {
            pod: pod(
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {containers: [{name: a, image: busybox}]}",
            ),
            info: PodInfo::default(),
        };
        let text = describe_pod(&np, &[], now(), &TimeZone::UTC);
        for want in [
            "Node:         <none>\n",
            "Labels:       <none>\n",
            "Annotations:  <none>\n",
            "Status:       \n",
            "IPs:          <none>\n",
            "Containers:\n  a:\n    Image:        busybox\n    Port:         <none>\n",
            "    Environment:  <none>\n    Mounts:       <none>\n    Cgroup:       <none>\n",
            "Volumes:          <none>\n",
            "QoS Class:        BestEffort\n",
            "Events:           <none>\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("Manifest:"));
    }
}
