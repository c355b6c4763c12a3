//! Pods as the agent serves them (Node.ListPods: a v1.Pod plus minilet's own facts), and the
//! container choices kubectl makes for `logs` and `exec`.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use minilet_proto::minilet::v1::PodInfo;

use super::client::{Client, Details};
use super::errors::ServerError;

/// kubectl's annotation naming the container `logs` and `exec` pick by default.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// One pod: the decoded v1.Pod and what else the agent knows (manifest, cgroups, sandbox).
#[derive(Debug, Clone)]
pub struct NodePod {
    pub pod: Pod,
    pub info: PodInfo,
}

impl NodePod {
    pub fn decode(info: PodInfo) -> Result<Self> {
        let pod: Pod = serde_json::from_str(&info.pod_json).with_context(|| {
            format!(
                "the agent sent a pod that is not a valid v1.Pod (manifest {})",
                info.manifest
            )
        })?;
        Ok(NodePod { pod, info })
    }

    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }
}

/// The pods of `namespace` (None: every namespace), sorted by namespace and name as the API
/// server lists them. The namespace is checked here too, so a server that ignores the filter
/// cannot widen the answer.
pub async fn list(client: &Client, namespace: Option<&str>, details: Details) -> Result<Vec<NodePod>> {
    let infos = client
        .list_pods(namespace.unwrap_or_default(), "", details)
        .await
        .context("listing pods")?;
    let mut pods = infos.into_iter().map(NodePod::decode).collect::<Result<Vec<_>>>()?;
    if let Some(ns) = namespace {
        pods.retain(|p| p.namespace() == ns);
    }
    pods.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    Ok(pods)
}

/// One pod by name, or kubectl's NotFound.
pub async fn get(client: &Client, namespace: &str, name: &str, details: Details) -> Result<NodePod> {
    let infos = client
        .list_pods(namespace, name, details)
        .await
        .context("getting the pod")?;
    for info in infos {
        let p = NodePod::decode(info)?;
        if p.name() == name && p.namespace() == namespace {
            return Ok(p);
        }
    }
    // Only on a miss: the namespace's pods, to hint at a static pod's full name.
    let others: Vec<Pod> = list(client, Some(namespace), Details::Dirs)
        .await
        .map(|ps| ps.into_iter().map(|p| p.pod).collect())
        .unwrap_or_default();
    Err(not_found(name, &others).into())
}

/// kubectl's NotFound for pod `name`; when `name` is the manifest name of a static pod among
/// `pods`, a hint at the name the kubelet gave it (`<name>-<node name>`).
pub fn not_found(name: &str, pods: &[Pod]) -> ServerError {
    with_static_name_hint(ServerError::pod_not_found(name), name, pods)
}

/// `e` (a NotFound for `name`), with a hint at `<name>-<node name>` when that is a static pod
/// among `pods`: users type the manifest's name, the kubelet named the pod after the node too.
pub fn with_static_name_hint(mut e: ServerError, name: &str, pods: &[Pod]) -> ServerError {
    let is_static = |p: &&Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/config.source"))
            .is_some_and(|s| s == "file")
    };
    let renamed = pods.iter().filter(is_static).find_map(|p| {
        let node = p.spec.as_ref()?.node_name.as_deref()?;
        let full = crate::source::static_pod_name(name, node);
        (p.metadata.name.as_deref() == Some(full.as_str())).then_some(full)
    });
    if let Some(full) = renamed {
        e.message = format!(
            "{}; static pods are named <name>-<node name>: did you mean {full:?}?",
            e.message
        );
    }
    e
}

fn app_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| c.name.clone())
        .collect()
}

fn init_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .map(|c| c.name.clone())
        .collect()
}

fn has_container(pod: &Pod, name: &str) -> bool {
    app_names(pod).iter().chain(init_names(pod).iter()).any(|n| n == name)
}

fn annotated_default(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(DEFAULT_CONTAINER_ANNOTATION)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

/// kubectl's list of a pod's containers in its "Defaulted container" notice: the app
/// containers, then the init containers marked `(init)`.
fn all_container_names(pod: &Pod) -> String {
    app_names(pod)
        .into_iter()
        .chain(init_names(pod).into_iter().map(|n| format!("{n} (init)")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The container kubectl picks when none is named: the one the default-container
/// annotation names, else the first app container, with the notice kubectl prints to stderr
/// when that choice was not obvious (`notice_if` is given the pod).
fn default_container(pod: &Pod, notice_if: impl Fn(&Pod) -> bool) -> Result<(String, Option<String>)> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    if let Some(name) = annotated_default(pod) {
        if has_container(pod, name) {
            return Ok((name.to_string(), None));
        }
        eprintln!("Default container name \"{name}\" not found in pod {pod_name}");
    }
    let first = app_names(pod).into_iter().next().with_context(|| {
        format!(
            "pod {}/{pod_name} does not have any containers",
            pod.metadata.namespace.as_deref().unwrap_or_default()
        )
    })?;
    let notice =
        notice_if(pod).then(|| format!("Defaulted container \"{first}\" out of: {}", all_container_names(pod)));
    Ok((first, notice))
}

/// The container `logs` reads, and kubectl's notice when it had to choose: the one asked
/// for; else the annotated default; else the first app container (current kubectl no longer
/// asks for `-c`; it says which one it took when the pod has any other container).
pub fn container_for_logs(pod: &Pod, requested: Option<&str>) -> Result<(String, Option<String>)> {
    if let Some(name) = requested {
        if !has_container(pod, name) {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            return Err(ServerError::bad_request(format!("container {name} is not valid for pod {pod_name}")).into());
        }
        return Ok((name.to_string(), None));
    }
    default_container(pod, |p| app_names(p).len() > 1 || !init_names(p).is_empty())
}

/// The container `exec` runs in, and the notice kubectl prints when it had to choose:
/// the one asked for; else the annotated default; else the first app container.
pub fn container_for_exec(pod: &Pod, requested: Option<&str>) -> Result<(String, Option<String>)> {
    if let Some(name) = requested {
        if !has_container(pod, name) {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            anyhow::bail!("container {name} not found in pod {pod_name}");
        }
        return Ok((name.to_string(), None));
    }
    default_container(pod, |p| app_names(p).len() > 1)
}

/// Why a container of the pod has no CRI container yet, from the pod's status (e.g.
/// `ContainerCreating`), for kubectl's "is waiting to start" message.
pub fn waiting_reason(pod: &Pod, container: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|s| s.name == container)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::printers::tests::pod;

    fn two() -> Pod {
        pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {initContainers: [{name: setup}], containers: [{name: a}, {name: b}]}",
        )
    }

    #[test]
    fn not_found_hints_at_a_static_pods_full_name() {
        let pods = [
            pod(
                "apiVersion: v1\nkind: Pod\nmetadata: {name: web-node1, annotations: {kubernetes.io/config.source: file}}\nspec: {nodeName: node1, containers: [{name: a}]}",
            ),
            // Not a static pod: no hint, though the name would match.
            pod(
                "apiVersion: v1\nkind: Pod\nmetadata: {name: db-node1}\nspec: {nodeName: node1, containers: [{name: a}]}",
            ),
        ];
        assert_eq!(
            not_found("web", &pods).to_string(),
            "Error from server (NotFound): pods \"web\" not found; static pods are named <name>-<node name>: did you mean \"web-node1\"?"
        );
        assert_eq!(
            not_found("db", &pods).to_string(),
            "Error from server (NotFound): pods \"db\" not found"
        );
        assert_eq!(not_found("web", &[]).reason, "NotFound");
    }

    #[test]
    fn logs_defaults_to_the_first_container_with_a_notice() {
        let p = two();
        assert_eq!(
            container_for_logs(&p, None).unwrap(),
            (
                "a".into(),
                Some("Defaulted container \"a\" out of: a, b, setup (init)".into())
            )
        );
        assert_eq!(container_for_logs(&p, Some("b")).unwrap(), ("b".into(), None));
        assert_eq!(container_for_logs(&p, Some("setup")).unwrap(), ("setup".into(), None));
        let bad = container_for_logs(&p, Some("x")).unwrap_err();
        assert_eq!(
            crate::cli::errors::line(&bad).unwrap(),
            "Error from server (BadRequest): container x is not valid for pod web"
        );
        let annotated = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, annotations: {kubectl.kubernetes.io/default-container: b}}\nspec: {containers: [{name: a}, {name: b}]}",
        );
        assert_eq!(container_for_logs(&annotated, None).unwrap(), ("b".into(), None));
        let single = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: one}\nspec: {initContainers: [{name: i}], containers: [{name: a}]}",
        );
        // One app container, but an init container too: kubectl still says which it took.
        assert_eq!(
            container_for_logs(&single, None).unwrap(),
            ("a".into(), Some("Defaulted container \"a\" out of: a, i (init)".into()))
        );
        let alone = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: one}\nspec: {containers: [{name: a}]}");
        assert_eq!(container_for_logs(&alone, None).unwrap(), ("a".into(), None));
    }

    #[test]
    fn exec_defaults_to_the_first_with_a_notice() {
        let (c, notice) = container_for_exec(&two(), None).unwrap();
        assert_eq!(c, "a");
        assert_eq!(
            notice.as_deref(),
            Some("Defaulted container \"a\" out of: a, b, setup (init)")
        );
        assert_eq!(container_for_exec(&two(), Some("b")).unwrap(), ("b".into(), None));
        assert_eq!(
            container_for_exec(&two(), Some("x")).unwrap_err().to_string(),
            "container x not found in pod web"
        );
    }
}
