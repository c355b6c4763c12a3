//! From the node's pods (the registry) and the store's sandboxes to Kubernetes objects, for
//! minilet's own Node service; the kubelet's label and annotation names.
//!
//! CRI messages are the store's ([`crate::runtime::cri`]): a static pod's sandbox and
//! containers carry the labels and annotations the kubelet gives them
//! ([`crate::pod::cri_config`]), so CRI clients find them as on any node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use minilet_proto::runtime::v1 as cri;

use crate::events::Event;
use crate::pod::node::NodeInfo;
use crate::pod::status::{ContainerState, ContainerStatus, Phase, PodEntry, Terminated, WaitingReason};

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const TERMINATION_PATH: &str = "io.kubernetes.container.terminationMessagePath";
pub const TERMINATION_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";

/// The ID in `v1.ContainerStatus.containerID`: `<runtime>://<id>`.
pub fn container_id_uri(id: &str) -> String {
    format!("minilet://{id}")
}

/// The kubelet's annotations on a pod from a file: where it came from, the hash its UID is
/// made of, and when it was first seen.
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";

fn kubelet_annotations(e: &PodEntry) -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = crate::pod::cri_config::pod_annotations(&e.pod, &e.uid)
        .into_iter()
        .collect();
    if let Ok(seen) = jiff::Timestamp::from_nanosecond(i128::from(e.status.start_time)) {
        a.insert(CONFIG_SEEN.into(), seen.to_string());
    }
    a
}

pub fn sandbox_state(e: &PodEntry) -> cri::PodSandboxState {
    match e.sandbox.pause {
        Some(p) if p.is_alive() => cri::PodSandboxState::SandboxReady,
        _ => cri::PodSandboxState::SandboxNotready,
    }
}

/// The pod's IPs: the node's with hostNetwork; else its network's (none with `--network=none`).
pub fn pod_ips(e: &PodEntry, node: &NodeInfo) -> Vec<String> {
    if e.sandbox.namespaces.network {
        e.sandbox.ips.iter().map(|ip| ip.to_string()).collect()
    } else {
        node.host_ip.clone().into_iter().collect()
    }
}

pub fn pod_ip(e: &PodEntry, node: &NodeInfo) -> String {
    pod_ips(e, node).into_iter().next().unwrap_or_default()
}

// ---- Kubernetes objects -----------------------------------------------------------------

fn time(nanos: i64) -> Option<Time> {
    if nanos <= 0 {
        return None;
    }
    jiff::Timestamp::from_second(nanos / 1_000_000_000).ok().map(Time)
}

fn k8s_terminated(t: &Terminated) -> k8s::ContainerStateTerminated {
    k8s::ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.as_str().to_string()),
        message: Some(t.message.clone()).filter(|m| !m.is_empty()),
        started_at: time(t.started_at),
        finished_at: time(t.finished_at),
        container_id: Some(container_id_uri(&t.container_id)),
    }
}

fn k8s_container_status(s: &ContainerStatus) -> k8s::ContainerStatus {
    let state = match &s.state {
        ContainerState::Waiting { reason, message } => k8s::ContainerState {
            waiting: Some(k8s::ContainerStateWaiting {
                reason: Some(reason.as_str().to_string()),
                message: Some(message.clone()).filter(|m| !m.is_empty()),
            }),
            ..Default::default()
        },
        ContainerState::Running { started_at } => k8s::ContainerState {
            running: Some(k8s::ContainerStateRunning {
                started_at: time(*started_at),
            }),
            ..Default::default()
        },
        ContainerState::Terminated(t) => k8s::ContainerState {
            terminated: Some(k8s_terminated(t)),
            ..Default::default()
        },
    };
    let running = matches!(s.state, ContainerState::Running { .. });
    k8s::ContainerStatus {
        name: s.name.clone(),
        image: s.image.clone(),
        image_id: s.image_id.clone(),
        container_id: s.container_id.as_deref().map(container_id_uri),
        state: Some(state),
        last_state: Some(
            s.last_state
                .as_ref()
                .map_or_else(Default::default, |t| k8s::ContainerState {
                    terminated: Some(k8s_terminated(t)),
                    ..Default::default()
                }),
        ),
        ready: s.ready,
        restart_count: s.restart_count as i32,
        started: Some(running && s.started),
        ..Default::default()
    }
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, since: i64) -> k8s::PodCondition {
    k8s::PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(str::to_string),
        last_transition_time: time(since),
        ..Default::default()
    }
}

/// The pod as `kubectl get pod -o yaml` would show it: the manifest's spec and the status the
/// agent knows.
pub fn v1_pod(e: &PodEntry, node: &NodeInfo) -> k8s::Pod {
    let mut pod = (*e.pod).clone();
    pod.metadata.annotations = Some(kubelet_annotations(e));
    let st = &e.status;
    pod.metadata.creation_timestamp = time(st.start_time);
    if st.terminating {
        pod.metadata.deletion_timestamp = time(crate::runtime::spec::now_nanos());
        pod.metadata.deletion_grace_period_seconds =
            e.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds);
    }
    // A sidecar counts as initialized once started; its readiness counts with the app
    // containers' (the kubelet's Initialized and ContainersReady conditions). Once an app
    // container has run, the pod stays initialized (sidecars stopped at completion included).
    let app_ran = st
        .containers
        .iter()
        .any(|c| !matches!(c.state, ContainerState::Waiting { .. }) || c.last_state.is_some());
    let init_done = app_ran
        || st
            .init_containers
            .iter()
            .all(|c| matches!(&c.state, ContainerState::Terminated(t) if t.exit_code == 0) || (c.sidecar && c.started));
    let ready = !st.containers.is_empty()
        && st.containers.iter().all(|c| c.ready)
        && st.init_containers.iter().filter(|c| c.sidecar).all(|c| c.ready);
    let completed = matches!(st.phase, Phase::Succeeded | Phase::Failed);
    let reason = completed.then_some("PodCompleted");
    let ip = pod_ip(e, node);
    let all_ips = pod_ips(e, node);
    let ips = |ip: &str| (!ip.is_empty()).then(|| vec![k8s::PodIP { ip: ip.to_string() }]);
    let host_ip = node.host_ip.clone().unwrap_or_default();
    pod.status = Some(k8s::PodStatus {
        phase: Some(st.phase.as_str().into()),
        conditions: Some(vec![
            condition(
                "PodReadyToStartContainers",
                sandbox_state(e) == cri::PodSandboxState::SandboxReady,
                None,
                e.sandbox.created_at,
            ),
            condition("Initialized", init_done, reason.filter(|_| !init_done), st.start_time),
            condition(
                "Ready",
                ready,
                reason.filter(|_| !ready).or((!ready).then_some("ContainersNotReady")),
                st.start_time,
            ),
            condition(
                "ContainersReady",
                ready,
                reason.filter(|_| !ready).or((!ready).then_some("ContainersNotReady")),
                st.start_time,
            ),
            condition("PodScheduled", true, None, st.start_time),
        ]),
        host_ip: Some(host_ip.clone()).filter(|h| !h.is_empty()),
        host_ips: ips(&host_ip).map(|v| v.into_iter().map(|p| k8s::HostIP { ip: p.ip }).collect()),
        pod_ip: Some(ip.clone()).filter(|i| !i.is_empty()),
        pod_ips: (!all_ips.is_empty()).then(|| all_ips.into_iter().map(|ip| k8s::PodIP { ip }).collect()),
        start_time: time(st.start_time),
        qos_class: Some(st.qos.into()),
        // A rejected pod never had containers: the kubelet reports none (STATUS is the reason).
        init_container_statuses: (!st.init_containers.is_empty() && st.rejection.is_none())
            .then(|| st.init_containers.iter().map(k8s_container_status).collect()),
        container_statuses: (st.rejection.is_none()).then(|| st.containers.iter().map(k8s_container_status).collect()),
        // The kubelet's rejectPod: the admission reason, and its message behind a prefix.
        reason: st
            .rejection
            .as_ref()
            .map(|r| r.reason.clone())
            .or_else(|| st.failure.as_ref().map(|f| f.reason.clone())),
        message: st
            .rejection
            .as_ref()
            .map(|r| format!("Pod was rejected: {}", r.message))
            .or_else(|| st.failure.as_ref().map(|f| f.message.clone())),
        ..Default::default()
    });
    pod
}

/// An event as a core/v1 Event.
pub fn v1_event(ev: &Event, node: &NodeInfo, seq: usize) -> k8s::Event {
    let o = &ev.object;
    let ns = if o.namespace.is_empty() {
        "default".to_string()
    } else {
        o.namespace.clone()
    };
    let base = if o.kind == "File" {
        "manifest".to_string()
    } else {
        o.name.clone()
    };
    k8s::Event {
        metadata: ObjectMeta {
            name: Some(format!("{base}.{:x}{seq:04x}", ev.first)),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: k8s::ObjectReference {
            kind: Some(o.kind.into()),
            namespace: Some(ns),
            name: Some(o.name.clone()),
            uid: Some(o.uid.clone()).filter(|u| !u.is_empty()),
            field_path: o.field_path.clone(),
            api_version: Some("v1".into()),
            ..Default::default()
        },
        reason: Some(ev.reason.clone()),
        message: Some(ev.message.clone()),
        type_: Some(ev.kind.as_str().into()),
        count: Some(ev.count as i32),
        first_timestamp: time(ev.first),
        last_timestamp: time(ev.last),
        source: Some(k8s::EventSource {
            component: Some("minilet".into()),
            host: Some(node.name.clone()),
        }),
        reporting_component: Some("minilet".into()),
        reporting_instance: Some(node.name.clone()),
        ..Default::default()
    }
}

/// Annotation marking a pod a CRI client made (RunPodSandbox) rather than a manifest.
pub const CREATED_BY: &str = "minilet.dev/created-by";

/// A CRI-owned sandbox as a v1.Pod, so `minilet get pods` lists it beside the static pods:
/// its metadata, one container per CRI container name (the latest attempt), and a phase from
/// the sandbox's state.
pub fn v1_pod_of_cri_sandbox(sb: &crate::runtime::cri::Sandbox, node: &NodeInfo) -> k8s::Pod {
    let meta = sb.config.metadata.clone().unwrap_or_default();
    let mut latest: BTreeMap<String, &crate::runtime::cri::Container> = BTreeMap::new();
    for c in sb.containers.values() {
        let name = c.config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let newer = latest
            .get(&name)
            .is_none_or(|o| o.files.record.created_at < c.files.record.created_at);
        if newer {
            latest.insert(name, c);
        }
    }
    let statuses: Vec<ContainerStatus> = latest
        .iter()
        .map(|(name, c)| {
            let f = &c.files;
            let state = match (&f.state, &f.exit) {
                (_, Some(e)) => ContainerState::Terminated(Terminated {
                    exit_code: e.exit_code,
                    signal: e.signal,
                    reason: e.reason,
                    message: e.message.clone(),
                    started_at: f.state.map_or(0, |s| s.started_at),
                    finished_at: e.finished_at,
                    container_id: f.record.id.clone(),
                }),
                (Some(s), None) => ContainerState::Running {
                    started_at: s.started_at,
                },
                (None, None) => ContainerState::Waiting {
                    reason: WaitingReason::ContainerCreating,
                    message: String::new(),
                },
            };
            let running = matches!(state, ContainerState::Running { .. });
            ContainerStatus {
                name: name.clone(),
                init: false,
                image: c.config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
                image_id: f.record.image_id.clone(),
                container_id: Some(f.record.id.clone()),
                state,
                last_state: None,
                restart_count: c.config.metadata.as_ref().map_or(0, |m| m.attempt),
                started: running,
                ready: running,
                sidecar: false,
            }
        })
        .collect();
    let ready = sb.ready();
    let all_running = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let phase = if ready {
        "Running"
    } else if statuses
        .iter()
        .all(|s| matches!(&s.state, ContainerState::Terminated(t) if t.exit_code == 0))
        && !statuses.is_empty()
    {
        "Succeeded"
    } else {
        "Failed"
    };
    let mut annotations: BTreeMap<String, String> = sb.config.annotations.clone().into_iter().collect();
    annotations.insert(CREATED_BY.into(), "cri".into());
    let host_ip = node.host_ip.clone().unwrap_or_default();
    k8s::Pod {
        metadata: ObjectMeta {
            name: Some(meta.name),
            namespace: Some(meta.namespace),
            uid: Some(meta.uid),
            labels: Some(sb.config.labels.clone().into_iter().collect()),
            annotations: Some(annotations),
            creation_timestamp: time(sb.record.created_at),
            ..Default::default()
        },
        spec: Some(k8s::PodSpec {
            containers: latest
                .iter()
                .map(|(name, c)| k8s::Container {
                    name: name.clone(),
                    image: c.config.image.as_ref().map(|i| i.image.clone()),
                    ..Default::default()
                })
                .collect(),
            node_name: Some(node.name.clone()),
            host_network: (!sb.record.namespaces.network).then_some(true),
            ..Default::default()
        }),
        status: Some(k8s::PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![
                condition("PodReadyToStartContainers", ready, None, sb.record.created_at),
                condition(
                    "Ready",
                    all_running,
                    (!all_running).then_some("ContainersNotReady"),
                    sb.record.created_at,
                ),
                condition(
                    "ContainersReady",
                    all_running,
                    (!all_running).then_some("ContainersNotReady"),
                    sb.record.created_at,
                ),
            ]),
            host_ip: Some(host_ip).filter(|h| !h.is_empty()),
            start_time: time(sb.record.created_at),
            container_statuses: Some(statuses.iter().map(k8s_container_status).collect()),
            ..Default::default()
        }),
    }
}

/// The one runtime handler (`""`) and what it can do, for `Status`.
pub fn runtime_handlers() -> Vec<cri::RuntimeHandler> {
    vec![cri::RuntimeHandler {
        name: String::new(),
        features: Some(cri::RuntimeHandlerFeatures {
            recursive_read_only_mounts: true,
            user_namespaces: false,
        }),
    }]
}
