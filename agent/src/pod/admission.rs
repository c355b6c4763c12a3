//! Node admission as the kubelet does it for static pods (its predicate admit handler): the
//! pod's requests must fit in what the node has left, and its `nodeSelector` and required
//! node affinity must match the node's labels, and its hostPorts must be free of the other
//! pods' (the scheduler's NodePorts predicate, which the kubelet runs again). A pod that
//! fails is rejected with the kubelet's reason (`OutOfcpu`, `OutOfmemory`, `OutOfpods`,
//! `NodePorts`, `NodeAffinity`) and message.
//!
//! The ledger of admitted pods is the "pods already on the node" the kubelet counts: a pod
//! is recorded when admitted (or re-adopted after a restart) and released once it is
//! terminal or gone, and the check and the record happen under one lock, so two pods
//! arriving together cannot both take the last CPU.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Container, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use super::security::Rejection;
use crate::quantity::Quantity;
use crate::runtime::host_ports::HostPort;

/// The kubelet's default `--max-pods`.
pub const MAX_PODS: usize = 110;

/// What the pod asks of the node, as the scheduler sums it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    pub milli_cpu: i64,
    pub memory: i64,
    /// Extended resources (device plugins' `vendor.example/thing`), by name, as integers.
    pub extended: BTreeMap<String, i64>,
}

impl Requests {
    fn add(&mut self, o: &Requests) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        for (k, v) in &o.extended {
            *self.extended.entry(k.clone()).or_default() += v;
        }
    }
}

type List = BTreeMap<String, K8sQuantity>;

/// An extended resource as Kubernetes defines one: a qualified name outside the
/// `kubernetes.io/` namespace (and not a quota's `requests.` name).
pub fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.starts_with("kubernetes.io/") && !name.starts_with("requests.")
}

/// One resource's amount in `list` (else in `fallback`: a limit without a request is the
/// request), milli-units for cpu, integers for the rest.
fn amount(name: &str, list: Option<&List>, fallback: Option<&List>) -> i64 {
    let q = list
        .and_then(|l| l.get(name))
        .or_else(|| fallback.and_then(|l| l.get(name)))
        .and_then(|q| Quantity::parse(&q.0).ok());
    match q {
        Some(q) if name == "cpu" => q.milli_value(),
        Some(q) => q.value(),
        None => 0,
    }
}

/// One resource's effective request (the scheduler's `computePodResourceRequest`): app
/// containers and native sidecars summed, each ordinary init container with the sidecars
/// started before it, the larger of the two; pod-level `spec.resources` in its place when it
/// sets the resource; `spec.overhead` added.
fn effective(spec: &PodSpec, name: &str) -> i64 {
    let of = |c: &Container| {
        let r = c.resources.as_ref();
        amount(
            name,
            r.and_then(|r| r.requests.as_ref()),
            r.and_then(|r| r.limits.as_ref()),
        )
    };
    let mut total: i64 = spec.containers.iter().map(of).sum();
    let (mut sidecars, mut init) = (0, 0);
    for c in spec.init_containers.iter().flatten() {
        let own = of(c);
        let during = if c.restart_policy.as_deref() == Some("Always") {
            total += own;
            sidecars += own;
            sidecars
        } else {
            own + sidecars
        };
        init = init.max(during);
    }
    total = total.max(init);
    if let Some(pod_level) = spec.resources.as_ref() {
        let (requests, limits) = (pod_level.requests.as_ref(), pod_level.limits.as_ref());
        if requests.is_some_and(|l| l.contains_key(name)) || limits.is_some_and(|l| l.contains_key(name)) {
            total = amount(name, requests, limits);
        }
    }
    total + amount(name, spec.overhead.as_ref(), None)
}

/// The pod's effective requests for cpu, memory and every extended resource it names.
pub fn pod_requests(spec: &PodSpec) -> Requests {
    let lists = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter_map(|c| c.resources.as_ref())
        .flat_map(|r| r.requests.iter().chain(r.limits.iter()));
    let extended = lists
        .flat_map(|l| l.keys())
        .filter(|k| is_extended(k))
        .map(|k| (k.clone(), effective(spec, k)))
        .filter(|(_, v)| *v > 0)
        .collect();
    Requests {
        milli_cpu: effective(spec, "cpu"),
        memory: effective(spec, "memory"),
        extended,
    }
}

/// The node as admission sees it: allocatable cpu and memory (its capacity: no
/// reservations), and its labels.
#[derive(Debug, Clone)]
pub struct NodeResources {
    pub milli_cpu: i64,
    pub memory: i64,
    /// `--max-pods`.
    pub max_pods: usize,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `--allowed-unsafe-sysctls`, beside the kubelet's safe set.
    pub sysctls: super::sysctls::AllowedSysctls,
}

impl NodeResources {
    /// The node's labels: the kubelet's well-known ones, then `--node-labels` (which win,
    /// as they do in the kubelet).
    pub fn new(
        node: &super::node::NodeInfo,
        extra: &[(String, String)],
        max_pods: usize,
        sysctls: super::sysctls::AllowedSysctls,
    ) -> Self {
        let mut labels = BTreeMap::new();
        for (k, v) in [
            ("kubernetes.io/hostname", node.name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", go_arch()),
            ("beta.kubernetes.io/arch", go_arch()),
        ] {
            labels.insert(k.to_string(), v.to_string());
        }
        labels.extend(extra.iter().cloned());
        NodeResources {
            milli_cpu: node.cpus * 1000,
            memory: node.memory_bytes,
            max_pods,
            name: node.name.clone(),
            labels,
            sysctls,
        }
    }
}

/// The architecture as Go (and so the `kubernetes.io/arch` label) names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The `--node-labels` flag's pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLabels(pub Vec<(String, String)>);

/// Parse `--node-labels`: `key=value` pairs separated by commas, keys and values checked as
/// Kubernetes label keys and values.
pub fn parse_node_labels(s: &str) -> Result<NodeLabels, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("invalid label {pair:?}: expected key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            if !crate::source::validate::is_qualified_name(k) {
                return Err(format!("invalid label key {k:?}: must be [prefix/]name"));
            }
            if !crate::source::validate::is_label_value(v) {
                return Err(format!(
                    "invalid label value {v:?} for {k:?}: at most 63 of [-A-Za-z0-9_.], alphanumeric at both ends"
                ));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect::<Result<_, _>>()
        .map(NodeLabels)
}

/// What an admitted pod holds of the node.
#[derive(Debug, Clone)]
struct Held {
    /// `namespace/name`, to say whose port another pod wanted.
    pod: String,
    requests: Requests,
    ports: Vec<HostPort>,
}

impl Held {
    fn of(pod: &Pod) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        Held {
            pod: format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
            requests: pod_requests(&spec),
            ports: super::host_ports::of_pod(&spec),
        }
    }
}

/// The pods admitted and not yet terminal, and the node they are on.
#[derive(Debug)]
pub struct Ledger {
    node: NodeResources,
    admitted: Mutex<BTreeMap<String, Held>>,
}

impl Ledger {
    pub fn new(node: NodeResources) -> Self {
        Ledger {
            node,
            admitted: Mutex::default(),
        }
    }

    pub fn node(&self) -> &NodeResources {
        &self.node
    }

    /// Admit `pod` (uid `uid`) and record it, or say why the kubelet would not. A pod
    /// already recorded (its sandbox being recreated) stays admitted.
    pub fn admit(&self, uid: &str, pod: &Pod) -> Result<(), Rejection> {
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        if admitted.contains_key(uid) {
            return Ok(());
        }
        // The kubelet's sysctl handler runs before the resource predicates.
        self.node.sysctls.admit(pod)?;
        let spec = pod.spec.clone().unwrap_or_default();
        let wanted = Held::of(pod);
        let mut used = Requests::default();
        admitted.values().for_each(|h| used.add(&h.requests));
        check(&self.node, &spec, &wanted.requests, &used, admitted.len())?;
        if let Some(r) = port_conflict(&wanted.ports, admitted.values()) {
            return Err(r);
        }
        admitted.insert(uid.to_string(), wanted);
        Ok(())
    }

    /// Record a pod without checking it: one re-adopted after an agent restart, which
    /// already holds its share of the node.
    pub fn record(&self, uid: &str, pod: &Pod) {
        self.admitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_string(), Held::of(pod));
    }

    /// The pod is terminal or gone: its requests no longer count.
    pub fn release(&self, uid: &str) {
        self.admitted.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }
}

/// The kubelet's checks in its order (pod count, cpu, memory, extended resources, then node
/// affinity); the first failure is the reason. The node has no device plugins, so every
/// extended resource's capacity is 0: where the kubelet would drop a request for a resource
/// its node does not list and run the pod without the device (its own admission code calls
/// that a caveat for static pods), minilet refuses as if the node listed it at 0.
fn check(
    node: &NodeResources,
    spec: &PodSpec,
    wanted: &Requests,
    used: &Requests,
    pods: usize,
) -> Result<(), Rejection> {
    let short = |name: &str, requested: i64, used: i64, capacity: i64| Rejection {
        reason: format!("OutOf{name}"),
        message: format!(
            "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    };
    if pods + 1 > node.max_pods {
        return Err(short("pods", 1, pods as i64, node.max_pods as i64));
    }
    if wanted.milli_cpu > 0 && wanted.milli_cpu > node.milli_cpu - used.milli_cpu {
        return Err(short("cpu", wanted.milli_cpu, used.milli_cpu, node.milli_cpu));
    }
    if wanted.memory > 0 && wanted.memory > node.memory - used.memory {
        return Err(short("memory", wanted.memory, used.memory, node.memory));
    }
    for (name, &requested) in &wanted.extended {
        let (used, capacity) = (used.extended.get(name).copied().unwrap_or(0), 0);
        if requested > capacity - used {
            return Err(short(name, requested, used, capacity));
        }
    }
    if !affinity_matches(spec, &node.labels, &node.name) {
        return Err(Rejection {
            reason: "NodeAffinity".into(),
            message: "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector".into(),
        });
    }
    Ok(())
}

/// The NodePorts check (last, after resources and node affinity, in the order of the
/// scheduler's admission check the kubelet runs): a wanted hostPort that another admitted pod holds. The kubelet's message, and
/// which port and pod, since a node has no scheduler to say it.
fn port_conflict<'a>(wanted: &[HostPort], held: impl Iterator<Item = &'a Held>) -> Option<Rejection> {
    let held: Vec<&Held> = held.collect();
    wanted.iter().find_map(|w| {
        let owner = held.iter().find(|h| h.ports.iter().any(|p| p.conflicts(w)))?;
        Some(Rejection {
            reason: "NodePorts".into(),
            message: format!(
                "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports ({w} is taken by pod {})",
                owner.pod
            ),
        })
    })
}

/// `nodeSelector` (every pair present) and the required node affinity (any term matching).
pub fn affinity_matches(spec: &PodSpec, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|sel| {
        sel.node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels, node_name))
    });
    selector_ok && affinity_ok
}

/// A term matches when all its expressions and fields do; an empty term matches nothing.
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        // The only field a node selector may name is metadata.name.
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && matches!(r.operator.as_str(), "In" | "NotIn") && requirement_matches(r, Some(node_name)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let in_values = |v: &str| values.iter().any(|x| x == v);
    // Gt and Lt compare integers: one value in the requirement, an integer label.
    let compare = |ord: std::cmp::Ordering| {
        let (Some(v), [bound]) = (value, values) else {
            return false;
        };
        match (v.parse::<i64>(), bound.parse::<i64>()) {
            (Ok(v), Ok(b)) => v.cmp(&b) == ord,
            _ => false,
        }
    };
    match r.operator.as_str() {
        "In" => value.is_some_and(in_values),
        "NotIn" => !value.is_some_and(in_values),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(std::cmp::Ordering::Greater),
        "Lt" => compare(std::cmp::Ordering::Less),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn node() -> NodeResources {
        NodeResources {
            milli_cpu: 2000,
            memory: 4 << 30,
            max_pods: MAX_PODS,
            name: "node1".into(),
            labels: [("kubernetes.io/hostname", "node1"), ("zone", "a"), ("gen", "5")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sysctls: Default::default(),
        }
    }

    #[test]
    fn requests_sum_apps_and_take_the_largest_init() {
        let s = spec(
            "containers:\n- {name: a, resources: {requests: {cpu: 100m, memory: 10Mi}}}\n- {name: b, resources: {limits: {cpu: 200m}}}\ninitContainers:\n- {name: i, resources: {requests: {cpu: '1', memory: 1Mi}}}\n",
        );
        assert_eq!(
            pod_requests(&s),
            Requests {
                milli_cpu: 1000,
                memory: 10 << 20,
                extended: Default::default()
            }
        );
    }

    #[test]
    fn sidecars_add_to_apps_and_to_later_inits() {
        let s = spec(
            "containers:\n- {name: a, resources: {requests: {cpu: 100m}}}\ninitContainers:\n- {name: s, restartPolicy: Always, resources: {requests: {cpu: 300m}}}\n- {name: i, resources: {requests: {cpu: 500m}}}\n",
        );
        // apps 100 + sidecar 300 = 400; init 500 runs beside the sidecar: 800.
        assert_eq!(pod_requests(&s).milli_cpu, 800);
    }

    #[test]
    fn pod_level_resources_replace_and_overhead_adds() {
        let s = spec(
            "containers:\n- {name: a, resources: {requests: {cpu: 100m, memory: 1Gi}}}\nresources: {limits: {cpu: '2'}}\noverhead: {cpu: 50m, memory: 1Mi}\n",
        );
        assert_eq!(
            pod_requests(&s),
            Requests {
                milli_cpu: 2050,
                memory: (1 << 30) + (1 << 20),
                extended: Default::default()
            }
        );
    }

    #[test]
    fn too_much_cpu_or_memory_is_refused_with_the_kubelet_message() {
        let n = node();
        let s = spec("containers: [{name: a}]");
        let used = Requests {
            milli_cpu: 250,
            ..Default::default()
        };
        let r = check(
            &n,
            &s,
            &Requests {
                milli_cpu: 100_000,
                memory: 0,
                ..Default::default()
            },
            &used,
            1,
        )
        .unwrap_err();
        assert_eq!(r.reason, "OutOfcpu");
        assert_eq!(
            r.message,
            "Node didn't have enough resource: cpu, requested: 100000, used: 250, capacity: 2000"
        );
        let r = check(
            &n,
            &s,
            &Requests {
                milli_cpu: 0,
                memory: 5 << 30,
                ..Default::default()
            },
            &used,
            1,
        )
        .unwrap_err();
        assert_eq!(r.reason, "OutOfmemory");
        assert!(
            check(
                &n,
                &s,
                &Requests {
                    milli_cpu: 1750,
                    memory: 4 << 30,
                    ..Default::default()
                },
                &used,
                1
            )
            .is_ok()
        );
        assert_eq!(
            check(&n, &s, &Requests::default(), &used, MAX_PODS).unwrap_err().reason,
            "OutOfpods"
        );
        // --max-pods moves the limit either way.
        let big = NodeResources {
            max_pods: 500,
            ..n.clone()
        };
        assert!(check(&big, &s, &Requests::default(), &used, MAX_PODS).is_ok());
        assert!(check(&big, &s, &Requests::default(), &used, 499).is_ok());
        assert_eq!(
            check(&big, &s, &Requests::default(), &used, 500).unwrap_err().reason,
            "OutOfpods"
        );
        let small = NodeResources { max_pods: 1, ..n };
        assert!(check(&small, &s, &Requests::default(), &used, 0).is_ok());
        assert_eq!(
            check(&small, &s, &Requests::default(), &used, 1).unwrap_err().reason,
            "OutOfpods"
        );
    }

    #[test]
    fn extended_resources_the_node_lacks_are_refused() {
        let s = spec(
            "containers:\n- {name: a, resources: {limits: {example.com/gpu: '2'}}}\ninitContainers:\n- {name: i, resources: {limits: {example.com/gpu: '1', hugepages-2Mi: 2Mi}}}\n",
        );
        let wanted = pod_requests(&s);
        assert_eq!(
            wanted.extended,
            [("example.com/gpu".to_string(), 2)].into_iter().collect()
        );
        let r = check(&node(), &s, &wanted, &Requests::default(), 0).unwrap_err();
        assert_eq!(r.reason, "OutOfexample.com/gpu");
        assert_eq!(
            r.message,
            "Node didn't have enough resource: example.com/gpu, requested: 2, used: 0, capacity: 0"
        );
        assert!(!is_extended("kubernetes.io/foo") && !is_extended("hugepages-1Gi") && is_extended("a.b/c"));
    }

    #[test]
    fn ledger_counts_admitted_pods_until_released() {
        let ledger = Ledger::new(node());
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: p}\nspec: {containers: [{name: a, resources: {requests: {cpu: 1200m}}}]}",
        )
        .unwrap();
        assert!(ledger.admit("one", &pod).is_ok());
        assert!(ledger.admit("one", &pod).is_ok(), "an admitted pod stays admitted");
        assert_eq!(ledger.admit("two", &pod).unwrap_err().reason, "OutOfcpu");
        ledger.release("one");
        assert!(ledger.admit("two", &pod).is_ok());
    }

    #[test]
    fn a_host_port_held_by_an_admitted_pod_is_refused() {
        let ledger = Ledger::new(node());
        let pod = |name: &str, ports: &str| -> Pod {
            serde_yaml::from_str(&format!(
                "metadata: {{name: {name}}}\nspec: {{containers: [{{name: a, ports: [{ports}]}}]}}"
            ))
            .unwrap()
        };
        assert!(
            ledger
                .admit("one", &pod("web", "{containerPort: 80, hostPort: 8080}"))
                .is_ok()
        );
        let r = ledger
            .admit(
                "two",
                &pod("web2", "{containerPort: 80, hostPort: 8080, hostIP: 127.0.0.1}"),
            )
            .unwrap_err();
        assert_eq!(r.reason, "NodePorts");
        assert_eq!(
            r.message,
            "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports (127.0.0.1:8080/TCP is taken by pod default/web)"
        );
        // Another protocol, or another port, is free.
        assert!(
            ledger
                .admit(
                    "three",
                    &pod("dns", "{containerPort: 53, hostPort: 8080, protocol: UDP}")
                )
                .is_ok()
        );
        assert!(
            ledger
                .admit("four", &pod("other", "{containerPort: 80, hostPort: 8081}"))
                .is_ok()
        );
        ledger.release("one");
        assert!(
            ledger
                .admit(
                    "two",
                    &pod("web2", "{containerPort: 80, hostPort: 8080, hostIP: 127.0.0.1}")
                )
                .is_ok()
        );
    }

    #[test]
    fn node_selector_and_required_affinity_match_labels() {
        let n = node();
        let ok = |y: &str| affinity_matches(&spec(y), &n.labels, &n.name);
        assert!(ok("containers: []\nnodeSelector: {zone: a}"));
        assert!(!ok("containers: []\nnodeSelector: {zone: b}"));
        assert!(!ok("containers: []\nnodeSelector: {disk: ssd}"));
        let aff = |terms: &str| {
            format!(
                "containers: []\naffinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: {terms}}}}}}}"
            )
        };
        assert!(ok(&aff(
            "[{matchExpressions: [{key: zone, operator: In, values: [b, a]}]}]"
        )));
        assert!(!ok(&aff(
            "[{matchExpressions: [{key: zone, operator: NotIn, values: [a]}]}]"
        )));
        assert!(ok(&aff(
            "[{matchExpressions: [{key: disk, operator: NotIn, values: [a]}]}]"
        )));
        assert!(ok(&aff("[{matchExpressions: [{key: zone, operator: Exists}]}]")));
        assert!(!ok(&aff("[{matchExpressions: [{key: zone, operator: DoesNotExist}]}]")));
        assert!(ok(&aff(
            "[{matchExpressions: [{key: gen, operator: Gt, values: ['4']}]}]"
        )));
        assert!(!ok(&aff(
            "[{matchExpressions: [{key: gen, operator: Lt, values: ['5']}]}]"
        )));
        assert!(!ok(&aff(
            "[{matchExpressions: [{key: zone, operator: Gt, values: ['1']}]}]"
        )));
        // Terms are ORed, requirements in a term ANDed; an empty term matches nothing.
        assert!(ok(&aff(
            "[{matchExpressions: [{key: zone, operator: In, values: [b]}]}, {matchFields: [{key: metadata.name, operator: In, values: [node1]}]}]"
        )));
        assert!(!ok(&aff(
            "[{matchExpressions: [{key: zone, operator: In, values: [a]}, {key: gen, operator: In, values: ['6']}]}]"
        )));
        assert!(!ok(&aff("[{}]")));
        assert!(!ok(&aff("[]")));
        assert!(!ok(&aff(
            "[{matchFields: [{key: metadata.name, operator: NotIn, values: [node1]}]}]"
        )));
    }

    #[test]
    fn node_labels_flag_is_checked() {
        assert_eq!(
            parse_node_labels("disk=ssd, example.com/tier=web,").unwrap().0,
            vec![("disk".into(), "ssd".into()), ("example.com/tier".into(), "web".into())]
        );
        assert!(parse_node_labels("disk").is_err());
        assert!(parse_node_labels("bad key=x").is_err());
        assert!(parse_node_labels("k=-x").is_err());
    }
}
