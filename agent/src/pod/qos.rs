//! Quality of service: a pod's QoS class, its cgroup, and the CPU, memory and OOM settings
//! the kubelet derives from requests and limits.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::cgroups::Resources;
use crate::quantity::Quantity;
use crate::runtime::KUBEPODS;

/// CFS period the kubelet uses for CPU limits, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const MIN_QUOTA_US: i64 = 1000;

/// The pause's oom_score_adj (the kubelet's PodInfraOOMAdj).
pub const PAUSE_OOM_SCORE_ADJ: i32 = -998;
const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

fn quantity(
    list: Option<&std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    name: &str,
) -> Option<Quantity> {
    list?.get(name).and_then(|q| Quantity::parse(&q.0).ok())
}

fn request(c: &Container, name: &str) -> Option<Quantity> {
    quantity(c.resources.as_ref().and_then(|r| r.requests.as_ref()), name)
}

fn limit(c: &Container, name: &str) -> Option<Quantity> {
    quantity(c.resources.as_ref().and_then(|r| r.limits.as_ref()), name)
}

/// Pod-level `spec.resources` for one resource (`list` is "requests" or "limits").
fn pod_level(spec: &PodSpec, list: &str, name: &str) -> Option<Quantity> {
    let r = spec.resources.as_ref()?;
    quantity(
        if list == "limits" {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        },
        name,
    )
}

/// Pod-level resources (KEP 2837) name cpu or memory: then they, not the containers', decide
/// the QoS class and the pod cgroup's limits.
pub fn pod_level_set(spec: &PodSpec) -> bool {
    ["requests", "limits"].iter().any(|list| {
        ["cpu", "memory"]
            .iter()
            .any(|name| pod_level(spec, list, name).is_some())
    })
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().flatten().chain(spec.containers.iter())
}

/// The QoS class, by Kubernetes' rules (GetPodQOS): only cpu and memory count; BestEffort
/// when nothing is requested or limited; Guaranteed when every container limits both and
/// requests equal limits; Burstable otherwise. With pod-level resources, the same rules over
/// the pod's own requests and limits.
pub fn class(spec: &PodSpec) -> QosClass {
    if pod_level_set(spec) {
        let get = |list: &str, name: &str| pod_level(spec, list, name).filter(|q| !q.is_zero());
        let requests: Vec<_> = ["cpu", "memory"].iter().map(|n| get("requests", n)).collect();
        let limits: Vec<_> = ["cpu", "memory"].iter().map(|n| get("limits", n)).collect();
        if requests.iter().chain(&limits).all(Option::is_none) {
            return QosClass::BestEffort;
        }
        let guaranteed =
            limits.iter().all(Option::is_some) && requests.iter().zip(&limits).all(|(r, l)| r.is_none() || r == l);
        return if guaranteed {
            QosClass::Guaranteed
        } else {
            QosClass::Burstable
        };
    }
    let mut requests: [i64; 2] = [0, 0];
    let mut limits: [i64; 2] = [0, 0];
    let (mut any_request, mut any_limit) = ([false; 2], [false; 2]);
    let mut guaranteed = true;
    for c in all_containers(spec) {
        for (i, name) in ["cpu", "memory"].iter().enumerate() {
            if let Some(q) = request(c, name).filter(|q| !q.is_zero()) {
                requests[i] += q.milli_value();
                any_request[i] = true;
            }
        }
        let mut found = [false; 2];
        for (i, name) in ["cpu", "memory"].iter().enumerate() {
            if let Some(q) = limit(c, name).filter(|q| !q.is_zero()) {
                limits[i] += q.milli_value();
                any_limit[i] = true;
                found[i] = true;
            }
        }
        if !(found[0] && found[1]) {
            guaranteed = false;
        }
    }
    if !any_request.iter().any(|&b| b) && !any_limit.iter().any(|&b| b) {
        return QosClass::BestEffort;
    }
    if guaranteed {
        for i in 0..2 {
            if any_request[i] && (!any_limit[i] || limits[i] != requests[i]) {
                guaranteed = false;
            }
        }
        if any_request != any_limit {
            guaranteed = false;
        }
    }
    if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// The pod's cgroup relative to the cgroup parent, as the kubelet names it.
pub fn pod_cgroup(class: QosClass, uid: &str) -> String {
    match class {
        QosClass::Guaranteed => format!("{KUBEPODS}/pod{uid}"),
        QosClass::Burstable => format!("{KUBEPODS}/burstable/pod{uid}"),
        QosClass::BestEffort => format!("{KUBEPODS}/besteffort/pod{uid}"),
    }
}

/// CPU shares for a request in millicores (the kubelet's MilliCPUToShares).
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    ((milli as u64) * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota for a limit in millicores over [`CPU_PERIOD_US`] (MilliCPUToQuota); None = no limit.
pub fn milli_cpu_to_quota(milli: i64) -> Option<i64> {
    if milli <= 0 {
        return None;
    }
    Some((milli * CPU_PERIOD_US as i64 / 1000).max(MIN_QUOTA_US))
}

/// A container's cgroup settings (the kubelet's calculateLinuxResources).
pub fn container_resources(c: &Container) -> Resources {
    let cpu_limit = limit(c, "cpu").map(|q| q.milli_value()).unwrap_or(0);
    let shares = match request(c, "cpu") {
        Some(req) => milli_cpu_to_shares(req.milli_value()),
        None => milli_cpu_to_shares(cpu_limit),
    };
    let quota = milli_cpu_to_quota(cpu_limit);
    Resources {
        cpu_shares: Some(shares),
        cpu_quota: quota,
        cpu_period: quota.map(|_| CPU_PERIOD_US),
        memory_limit: limit(c, "memory").map(|q| q.value()).filter(|&v| v > 0),
        pids_limit: None,
    }
}

/// Sum over app containers, or the largest init container if that is more: what a pod
/// needs at its peak (Kubernetes' PodRequests/PodLimits).
fn pod_total(spec: &PodSpec, get: impl Fn(&Container) -> i64) -> i64 {
    let apps: i64 = spec.containers.iter().map(&get).sum();
    let init = spec.init_containers.iter().flatten().map(&get).max().unwrap_or(0);
    apps.max(init)
}

/// The pod cgroup's settings (the kubelet's ResourceConfigForPod).
/// Pod-level requests and limits, where set, take the place of the containers' totals.
pub fn pod_resources(spec: &PodSpec, class: QosClass) -> Resources {
    let pod = |list: &str, name: &str| pod_level(spec, list, name);
    let cpu_requests = pod("requests", "cpu").map_or_else(
        || pod_total(spec, |c| request(c, "cpu").map(|q| q.milli_value()).unwrap_or(0)),
        |q| q.milli_value(),
    );
    let cpu_limits = pod("limits", "cpu").map_or_else(
        || pod_total(spec, |c| limit(c, "cpu").map(|q| q.milli_value()).unwrap_or(0)),
        |q| q.milli_value(),
    );
    let memory_limits = pod("limits", "memory").map_or_else(
        || pod_total(spec, |c| limit(c, "memory").map(|q| q.value()).unwrap_or(0)),
        |q| q.value(),
    );
    let all_cpu_limited = pod("limits", "cpu").is_some_and(|q| !q.is_zero())
        || all_containers(spec).all(|c| limit(c, "cpu").is_some_and(|q| !q.is_zero()));
    let all_memory_limited = pod("limits", "memory").is_some_and(|q| !q.is_zero())
        || all_containers(spec).all(|c| limit(c, "memory").is_some_and(|q| !q.is_zero()));
    let quota = milli_cpu_to_quota(cpu_limits);
    let shares = Some(milli_cpu_to_shares(cpu_requests));
    match class {
        QosClass::Guaranteed => Resources {
            cpu_shares: shares,
            cpu_quota: quota,
            cpu_period: quota.map(|_| CPU_PERIOD_US),
            memory_limit: Some(memory_limits).filter(|&m| m > 0),
            pids_limit: None,
        },
        QosClass::Burstable => {
            let quota = quota.filter(|_| all_cpu_limited);
            Resources {
                cpu_shares: shares,
                cpu_quota: quota,
                cpu_period: quota.map(|_| CPU_PERIOD_US),
                memory_limit: Some(memory_limits).filter(|&m| m > 0 && all_memory_limited),
                pids_limit: None,
            }
        }
        QosClass::BestEffort => Resources {
            cpu_shares: Some(MIN_SHARES),
            ..Default::default()
        },
    }
}

/// A container's oom_score_adj (the kubelet's GetContainerOOMScoreAdjust): node-critical
/// static pods and Guaranteed pods -997, BestEffort 1000, Burstable scaled by the share of
/// the node's memory the container requests, within [3, 999].
pub fn oom_score_adj(spec: &PodSpec, class: QosClass, c: &Container, memory_capacity: i64) -> i32 {
    if spec.priority_class_name.as_deref() == Some("system-node-critical") {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match class {
        QosClass::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {
            let mut req = request(c, "memory").map(|q| q.value()).unwrap_or(0) as i128;
            // With a pod-level memory request, the part of it no container requests is
            // shared out evenly (the kubelet's remainingPodMemReqPerContainer).
            if let Some(pod_req) = pod_level(spec, "requests", "memory") {
                let claimed: i64 = spec
                    .containers
                    .iter()
                    .map(|c| request(c, "memory").map(|q| q.value()).unwrap_or(0))
                    .sum();
                let remaining = (pod_req.value() - claimed).max(0) as i128;
                req += remaining / spec.containers.len().max(1) as i128;
            }
            let cap = memory_capacity.max(1) as i128;
            let adj = (1000 - (1000 * req) / cap) as i32;
            if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
                1000 + GUARANTEED_OOM_SCORE_ADJ
            } else if adj == BEST_EFFORT_OOM_SCORE_ADJ {
                adj - 1
            } else {
                adj
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const GUARANTEED: &str = r#"
containers:
- name: a
  resources: {limits: {cpu: 500m, memory: 64Mi}, requests: {cpu: 500m, memory: 64Mi}}
- name: b
  resources: {limits: {cpu: "1", memory: 1Gi}, requests: {cpu: "1", memory: 1Gi}}
"#;

    #[test]
    fn classes() {
        assert_eq!(class(&pod(GUARANTEED)), QosClass::Guaranteed);
        assert_eq!(class(&pod("containers: [{name: a}]")), QosClass::BestEffort);
        assert_eq!(
            class(&pod("containers: [{name: a, resources: {requests: {cpu: 100m}}}]")),
            QosClass::Burstable
        );
        // Requests below limits: Burstable.
        assert_eq!(
            class(&pod(
                "containers: [{name: a, resources: {limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 500m, memory: 1Gi}}}]"
            )),
            QosClass::Burstable
        );
        // One container without limits spoils Guaranteed.
        assert_eq!(class(&pod(&format!("{GUARANTEED}- name: c\n"))), QosClass::Burstable);
        assert_eq!(pod_cgroup(QosClass::Burstable, "u"), "kubepods/burstable/podu");
        assert_eq!(pod_cgroup(QosClass::Guaranteed, "u"), "kubepods/podu");
    }

    #[test]
    fn cpu_conversions() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_quota(0), None);
        assert_eq!(milli_cpu_to_quota(5), Some(1000));
        assert_eq!(milli_cpu_to_quota(250), Some(25_000));
        assert_eq!(milli_cpu_to_quota(2000), Some(200_000));
    }

    #[test]
    fn container_and_pod_resources() {
        let spec = pod(GUARANTEED);
        let a = container_resources(&spec.containers[0]);
        assert_eq!(
            a,
            Resources {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(64 << 20),
                pids_limit: None
            }
        );
        let p = pod_resources(&spec, QosClass::Guaranteed);
        assert_eq!(p.cpu_shares, Some(1536));
        assert_eq!(p.cpu_quota, Some(150_000));
        assert_eq!(p.memory_limit, Some((64 << 20) + (1 << 30)));
        // A limit without a request: shares from the limit (the API defaults requests to limits).
        let s = pod("containers: [{name: a, resources: {limits: {cpu: 200m}}}]");
        assert_eq!(container_resources(&s.containers[0]).cpu_shares, Some(204));
        // Burstable without limits everywhere: no pod-level limits.
        let s = pod(
            "containers: [{name: a, resources: {limits: {cpu: 200m, memory: 1Gi}}}, {name: b, resources: {requests: {cpu: 100m}}}]",
        );
        let p = pod_resources(&s, QosClass::Burstable);
        assert_eq!((p.cpu_shares, p.cpu_quota, p.memory_limit), (Some(102), None, None));
        assert_eq!(
            pod_resources(&pod("containers: [{name: a}]"), QosClass::BestEffort).cpu_shares,
            Some(2)
        );
    }

    #[test]
    fn pod_level_resources_decide_class_and_pod_cgroup() {
        // Containers without any resources: the pod's own figures make it Guaranteed.
        let s = pod(
            "resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: 500m, memory: 1Gi}}\ncontainers: [{name: a}, {name: b}]",
        );
        assert_eq!(class(&s), QosClass::Guaranteed);
        let p = pod_resources(&s, QosClass::Guaranteed);
        assert_eq!(
            (p.cpu_shares, p.cpu_quota, p.memory_limit),
            (Some(512), Some(50_000), Some(1 << 30))
        );
        // Only a memory limit at pod level: Burstable, the memory limit still applies to the pod.
        let s = pod(
            "resources: {requests: {memory: 256Mi}, limits: {memory: 1Gi}}\ncontainers: [{name: a, resources: {requests: {memory: 64Mi}}}, {name: b}]",
        );
        assert_eq!(class(&s), QosClass::Burstable);
        let p = pod_resources(&s, QosClass::Burstable);
        assert_eq!((p.cpu_quota, p.memory_limit), (None, Some(1 << 30)));
        // The unclaimed 192Mi of the pod's request is shared: b counts 96Mi, a 64Mi + 96Mi.
        let cap = 1 << 30;
        assert_eq!(oom_score_adj(&s, QosClass::Burstable, &s.containers[1], cap), 1000 - 93);
        assert_eq!(
            oom_score_adj(&s, QosClass::Burstable, &s.containers[0], cap),
            1000 - 156
        );
        // Pod-level resources naming neither cpu nor memory leave the containers' rules.
        let s = pod("resources: {}\ncontainers: [{name: a}]");
        assert_eq!(class(&s), QosClass::BestEffort);
    }

    #[test]
    fn oom_scores() {
        let g = pod(GUARANTEED);
        assert_eq!(oom_score_adj(&g, QosClass::Guaranteed, &g.containers[0], 1 << 34), -997);
        let s = pod("containers: [{name: a, resources: {requests: {memory: 4Gi}}}, {name: b}]");
        assert_eq!(oom_score_adj(&s, QosClass::Burstable, &s.containers[0], 16 << 30), 750);
        assert_eq!(oom_score_adj(&s, QosClass::Burstable, &s.containers[1], 16 << 30), 999);
        let big = pod("containers: [{name: a, resources: {requests: {memory: 16Gi}}}]");
        assert_eq!(
            oom_score_adj(&big, QosClass::Burstable, &big.containers[0], 16 << 30),
            3
        );
        let critical = pod("priorityClassName: system-node-critical\ncontainers: [{name: a}]");
        assert_eq!(
            oom_score_adj(&critical, QosClass::BestEffort, &critical.containers[0], 1),
            -997
        );
    }
}
