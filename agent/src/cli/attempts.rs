//! A pod container's CRI containers: every (re)start is a separate CRI container, so `logs`
//! and `exec` find the pod's sandboxes by the kubelet's labels, list their containers of that
//! name, and order the attempts oldest first. The current attempt is the last, `--previous`
//! the one before it.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use minilet_proto::runtime::v1 as cri;

use super::client::Client;

pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
pub const RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";

/// One run of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: String,
    pub sandbox_id: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub restart_count: u32,
    pub state: cri::ContainerState,
}

/// Whether a sandbox belongs to this pod: its metadata (or, lacking that, its labels) name
/// the pod, and the UID matches when both sides know it (an edited manifest is a new pod).
pub fn sandbox_is_pod(sb: &cri::PodSandbox, namespace: &str, name: &str, uid: &str) -> bool {
    let label = |k: &str| sb.labels.get(k).map(String::as_str);
    let (sb_ns, sb_name, sb_uid) = match &sb.metadata {
        Some(m) => (Some(m.namespace.as_str()), Some(m.name.as_str()), Some(m.uid.as_str())),
        None => (label(POD_NAMESPACE_LABEL), label(POD_NAME_LABEL), label(POD_UID_LABEL)),
    };
    let uid_ok = match sb_uid {
        Some(u) if !u.is_empty() && !uid.is_empty() => u == uid,
        _ => true,
    };
    sb_ns == Some(namespace) && sb_name == Some(name) && uid_ok
}

/// The attempts of container `name` among `containers`, oldest first.
pub fn attempts_of(containers: Vec<cri::Container>, name: &str) -> Vec<Attempt> {
    let mut out: Vec<Attempt> = containers
        .into_iter()
        .filter(|c| {
            let by_meta = c.metadata.as_ref().map(|m| m.name.as_str());
            let by_label = c.labels.get(CONTAINER_NAME_LABEL).map(String::as_str);
            by_meta.or(by_label) == Some(name)
        })
        .map(|c| {
            let restart_count = c
                .annotations
                .get(RESTART_COUNT_ANNOTATION)
                .and_then(|v| v.parse().ok())
                .or(c.metadata.as_ref().map(|m| m.attempt))
                .unwrap_or(0);
            Attempt {
                state: c.state(),
                id: c.id,
                sandbox_id: c.pod_sandbox_id,
                created_at: c.created_at,
                restart_count,
            }
        })
        .collect();
    out.sort_by_key(|a| (a.created_at, a.restart_count));
    out
}

/// Every attempt of the pod's container `name`, across the pod's sandboxes, oldest first.
pub async fn find(client: &Client, pod: &Pod, name: &str) -> Result<Vec<Attempt>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let sandboxes = client
        .list_sandboxes(&[(POD_NAME_LABEL, pod_name), (POD_NAMESPACE_LABEL, ns)])
        .await
        .context("listing the pod's sandboxes")?;
    let mut containers = Vec::new();
    for sb in sandboxes.iter().filter(|sb| sandbox_is_pod(sb, ns, pod_name, uid)) {
        let found = client
            .list_containers(&sb.id, &[(CONTAINER_NAME_LABEL, name)])
            .await
            .context("listing the pod's containers")?;
        // A server that ignores the filter must not mix in other pods' containers.
        containers.extend(found.into_iter().filter(|c| c.pod_sandbox_id == sb.id));
    }
    Ok(attempts_of(containers, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str, created: i64, restart: Option<&str>) -> cri::Container {
        cri::Container {
            id: id.into(),
            pod_sandbox_id: "sb".into(),
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            created_at: created,
            annotations: restart
                .map(|r| [(RESTART_COUNT_ANNOTATION.to_string(), r.to_string())].into())
                .unwrap_or_default(),
            state: cri::ContainerState::ContainerExited as i32,
            ..Default::default()
        }
    }

    #[test]
    fn attempts_are_ordered_oldest_first_and_filtered_by_name() {
        let list = vec![
            container("c2", "app", 300, Some("2")),
            container("x", "other", 400, None),
            container("c0", "app", 100, Some("0")),
            container("c1", "app", 200, Some("1")),
        ];
        let a = attempts_of(list, "app");
        let ids: Vec<_> = a.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, vec!["c0", "c1", "c2"]);
        assert_eq!(a[2].restart_count, 2);
        assert_eq!(a[2].state, cri::ContainerState::ContainerExited);
    }

    #[test]
    fn sandboxes_match_by_metadata_or_labels() {
        let mut sb = cri::PodSandbox {
            id: "s".into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        assert!(sandbox_is_pod(&sb, "default", "web", "u1"));
        assert!(sandbox_is_pod(&sb, "default", "web", ""));
        assert!(!sandbox_is_pod(&sb, "default", "web", "u2"));
        assert!(!sandbox_is_pod(&sb, "prod", "web", "u1"));
        sb.metadata = None;
        sb.labels = [
            (POD_NAME_LABEL.to_string(), "web".to_string()),
            (POD_NAMESPACE_LABEL.to_string(), "default".to_string()),
        ]
        .into();
        assert!(sandbox_is_pod(&sb, "default", "web", "u1"));
    }
}
