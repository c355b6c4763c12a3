//! The kubelet's evented PLEG (pod lifecycle event generator), for exits: one subscription
//! to the runtime's `GetContainerEvents` for the whole node, each CONTAINER_STOPPED handed to
//! the worker of the pod it names: a container's exit (its labels name the pod), or the
//! sandbox's (the event names the sandbox, as containerd's does when a pause dies). So a
//! worker learns of both from the CRI alone, as the kubelet does, and 500 pods cost one
//! stream, not 500.
//!
//! The stream ends when this subscriber fell behind and events were lost; then, as the
//! kubelet relists, every exited container and not-ready sandbox the runtime lists goes to
//! its pod's worker again. A worker handles each exit once and ignores what is not its
//! current sandbox's, so a repeat is harmless.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use minilet_proto::runtime::v1 as cri;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::worker::Event;
use crate::cri::convert::POD_UID;
use crate::cri::service::{ContainerEventStream, RuntimeService};
use crate::runtime::spec::{ContainerExit, ExitReason};

type Senders = HashMap<String, Vec<(u64, mpsc::UnboundedSender<Event>)>>;

/// Which worker hears of which pod's exits: pod UID to the workers' event channels. Two
/// workers may share a UID for a while (a pod replaced under the same UID): both hear, and
/// each ignores attempts that are not its own.
#[derive(Default)]
pub struct Pleg {
    workers: Arc<Mutex<Senders>>,
    next: std::sync::atomic::AtomicU64,
}

/// A worker's place in the table; dropping it takes the worker out.
#[must_use = "the worker hears of exits only while this is kept"]
pub struct Registration {
    workers: Arc<Mutex<Senders>>,
    uid: String,
    token: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = lock(&self.workers);
        if let Some(list) = map.get_mut(&self.uid) {
            list.retain(|(t, _)| *t != self.token);
            if list.is_empty() {
                map.remove(&self.uid);
            }
        }
    }
}

fn lock(m: &Mutex<Senders>) -> MutexGuard<'_, Senders> {
    // Every change is one insert or retain: a poisoned table is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pleg {
    /// Hand pod `uid`'s exits to `tx` from now on.
    pub(super) fn register(&self, uid: &str, tx: mpsc::UnboundedSender<Event>) -> Registration {
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.workers)
            .entry(uid.to_string())
            .or_default()
            .push((token, tx));
        Registration {
            workers: self.workers.clone(),
            uid: uid.to_string(),
            token,
        }
    }

    /// Subscribe to `rs`'s container events, then route them on a task of their own. Call
    /// before any worker reads the runtime's containers: the runtime records an exit before
    /// it sends the event, so a worker misses none (it reads the exit, or hears of it).
    pub async fn start(&self, rs: Arc<dyn RuntimeService>) {
        let stream = match subscribe(&*rs).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "subscribe to the runtime's container events: workers learn of no exits");
                return;
            }
        };
        let workers = self.workers.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            loop {
                while let Some(event) = stream.next().await {
                    route(&workers, &event);
                }
                // Events were lost: subscribe again first, then relist, so that none falls
                // between the two.
                tracing::warn!("container event stream ended (events lost): relisting");
                stream = match subscribe(&*rs).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "subscribe to the runtime's container events again");
                        return;
                    }
                };
                relist(&*rs, &workers).await;
            }
        });
    }
}

async fn subscribe(rs: &dyn RuntimeService) -> Result<ContainerEventStream, crate::runtime::RuntimeError> {
    rs.get_container_events(cri::GetEventsRequest {}).await
}

/// Every exited container and not-ready sandbox the runtime lists, to its pod's worker.
async fn relist(rs: &dyn RuntimeService, workers: &Mutex<Senders>) {
    let filter = cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxNotready as i32,
        }),
        ..Default::default()
    };
    match rs
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) })
        .await
    {
        Ok(r) => {
            for sb in r.items {
                if let Some(uid) = sb.metadata.map(|m| m.uid) {
                    send(workers, &uid, || Event::SandboxDied { sandbox: sb.id.clone() });
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "relist sandboxes"),
    }
    let filter = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerExited as i32,
        }),
        ..Default::default()
    };
    let listed = match rs
        .list_containers(cri::ListContainersRequest { filter: Some(filter) })
        .await
    {
        Ok(r) => r.containers,
        Err(e) => {
            tracing::error!(error = %e, "relist containers");
            return;
        }
    };
    for c in listed {
        let req = cri::ContainerStatusRequest {
            container_id: c.id.clone(),
            verbose: false,
        };
        if let Ok(resp) = rs.container_status(req).await
            && let Some(status) = resp.status
        {
            deliver(workers, &status);
        }
    }
}

fn route(workers: &Mutex<Senders>, event: &cri::ContainerEventResponse) {
    if event.container_event_type != cri::ContainerEventType::ContainerStoppedEvent as i32 {
        return;
    }
    if let Some(status) = event.containers_statuses.iter().find(|s| s.id == event.container_id) {
        deliver(workers, status);
    } else if let Some(sb) = event.pod_sandbox_status.as_ref().filter(|s| s.id == event.container_id)
        && let Some(uid) = sb.metadata.as_ref().map(|m| &m.uid)
    {
        send(workers, uid, || Event::SandboxDied { sandbox: sb.id.clone() });
    }
}

fn deliver(workers: &Mutex<Senders>, status: &cri::ContainerStatus) {
    // A client's pod has no worker; its containers carry no pod UID or no worker has it.
    let Some(uid) = status.labels.get(POD_UID) else { return };
    let Some(exit) = exit_of(status) else { return };
    send(workers, uid, || Event::Exited {
        id: status.id.clone(),
        exit: exit.clone(),
    });
}

/// `event()` to every worker of pod `uid`.
fn send(workers: &Mutex<Senders>, uid: &str, event: impl Fn() -> Event) {
    if let Some(list) = lock(workers).get(uid) {
        for (_, tx) in list {
            let _ = tx.send(event());
        }
    }
}

/// How a container ended, as its CRI status says; `None` while it has not. The CRI has no
/// signal: the kubelet reports none either, only the exit code (128 + signal).
pub fn exit_of(status: &cri::ContainerStatus) -> Option<ContainerExit> {
    (status.state == cri::ContainerState::ContainerExited as i32).then(|| ContainerExit {
        exit_code: status.exit_code,
        signal: None,
        reason: ExitReason::from_word(&status.reason),
        message: status.message.clone(),
        finished_at: status.finished_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(uid: &str, id: &str, code: i32, reason: &str) -> cri::ContainerEventResponse {
        let status = cri::ContainerStatus {
            id: id.into(),
            state: cri::ContainerState::ContainerExited as i32,
            exit_code: code,
            reason: reason.into(),
            finished_at: 42,
            labels: [(POD_UID.to_string(), uid.to_string())].into(),
            ..Default::default()
        };
        cri::ContainerEventResponse {
            container_id: id.into(),
            container_event_type: cri::ContainerEventType::ContainerStoppedEvent as i32,
            containers_statuses: vec![status],
            ..Default::default()
        }
    }

    fn exits(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<(String, i32, ExitReason)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|e| match e {
                Event::Exited { id, exit } => Some((id, exit.exit_code, exit.reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_stop_reaches_the_workers_of_its_pod_only_while_they_are_registered() {
        let pleg = Pleg::default();
        let (a_tx, mut a) = mpsc::unbounded_channel();
        let (b_tx, mut b) = mpsc::unbounded_channel();
        let (c_tx, mut c) = mpsc::unbounded_channel();
        let reg_a = pleg.register("uid-1", a_tx);
        let _reg_b = pleg.register("uid-1", b_tx);
        let _reg_c = pleg.register("uid-2", c_tx);

        route(&pleg.workers, &stopped("uid-1", "c1", 137, "Error"));
        assert_eq!(exits(&mut a), [("c1".to_string(), 137, ExitReason::Error)]);
        assert_eq!(exits(&mut b), [("c1".to_string(), 137, ExitReason::Error)]);
        assert!(exits(&mut c).is_empty());

        // Other events, and pods without a worker (a CRI client's), go nowhere.
        let mut started = stopped("uid-2", "c2", 0, "Completed");
        started.container_event_type = cri::ContainerEventType::ContainerStartedEvent as i32;
        route(&pleg.workers, &started);
        route(&pleg.workers, &stopped("client-pod", "c3", 0, "Completed"));
        assert!(exits(&mut c).is_empty());

        drop(reg_a);
        route(&pleg.workers, &stopped("uid-1", "c4", 0, "Completed"));
        assert!(exits(&mut a).is_empty());
        assert_eq!(exits(&mut b), [("c4".to_string(), 0, ExitReason::Completed)]);
    }

    #[test]
    fn a_sandboxs_stop_reaches_the_workers_of_its_pod() {
        let pleg = Pleg::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _reg = pleg.register("uid-1", tx);
        let event = |uid: &str| cri::ContainerEventResponse {
            container_id: "sb1".into(),
            container_event_type: cri::ContainerEventType::ContainerStoppedEvent as i32,
            pod_sandbox_status: Some(cri::PodSandboxStatus {
                id: "sb1".into(),
                metadata: Some(cri::PodSandboxMetadata {
                    uid: uid.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        route(&pleg.workers, &event("uid-2"));
        route(&pleg.workers, &event("uid-1"));
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| match e {
                Event::SandboxDied { sandbox } => sandbox,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["sb1"]);
    }

    #[test]
    fn only_an_exited_status_is_an_exit() {
        let mut status = stopped("u", "c", 1, "SomethingNew").containers_statuses.remove(0);
        let exit = exit_of(&status).expect("exited");
        assert_eq!(
            (exit.exit_code, exit.reason, exit.finished_at),
            (1, ExitReason::Error, 42)
        );
        status.state = cri::ContainerState::ContainerRunning as i32;
        assert!(exit_of(&status).is_none());
    }

    /// A runtime whose first event stream carries one exit and then ends (events lost);
    /// its lists then show another exited container and a sandbox that died meanwhile.
    struct Lossy {
        subscriptions: std::sync::atomic::AtomicUsize,
    }

    fn no<T>() -> Result<T, crate::runtime::RuntimeError> {
        Err(crate::runtime::RuntimeError::Unimplemented("not in this fake".into()))
    }

    #[tonic::async_trait]
    impl RuntimeService for Lossy {
        async fn get_container_events(
            &self,
            _: cri::GetEventsRequest,
        ) -> Result<ContainerEventStream, crate::runtime::RuntimeError> {
            let n = self.subscriptions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(if n == 0 {
                Box::pin(tokio_stream::iter([stopped("uid-1", "c1", 1, "Error")]))
            } else {
                Box::pin(tokio_stream::pending())
            })
        }
        async fn list_containers(
            &self,
            r: cri::ListContainersRequest,
        ) -> Result<cri::ListContainersResponse, crate::runtime::RuntimeError> {
            let exited = cri::ContainerState::ContainerExited as i32;
            assert_eq!(r.filter.and_then(|f| f.state).map(|s| s.state), Some(exited));
            Ok(cri::ListContainersResponse {
                containers: vec![cri::Container {
                    id: "c2".into(),
                    state: exited,
                    ..Default::default()
                }],
            })
        }
        async fn container_status(
            &self,
            r: cri::ContainerStatusRequest,
        ) -> Result<cri::ContainerStatusResponse, crate::runtime::RuntimeError> {
            let status = stopped("uid-1", &r.container_id, 0, "Completed")
                .containers_statuses
                .remove(0);
            Ok(cri::ContainerStatusResponse {
                status: Some(status),
                ..Default::default()
            })
        }
        async fn list_pod_sandbox(
            &self,
            r: cri::ListPodSandboxRequest,
        ) -> Result<cri::ListPodSandboxResponse, crate::runtime::RuntimeError> {
            let notready = cri::PodSandboxState::SandboxNotready as i32;
            assert_eq!(r.filter.and_then(|f| f.state).map(|s| s.state), Some(notready));
            Ok(cri::ListPodSandboxResponse {
                items: vec![cri::PodSandbox {
                    id: "sb1".into(),
                    state: notready,
                    metadata: Some(cri::PodSandboxMetadata {
                        uid: "uid-1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            })
        }
        async fn version(&self, _: cri::VersionRequest) -> Result<cri::VersionResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn run_pod_sandbox(
            &self,
            _: cri::RunPodSandboxRequest,
        ) -> Result<cri::RunPodSandboxResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn stop_pod_sandbox(
            &self,
            _: cri::StopPodSandboxRequest,
        ) -> Result<cri::StopPodSandboxResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn remove_pod_sandbox(
            &self,
            _: cri::RemovePodSandboxRequest,
        ) -> Result<cri::RemovePodSandboxResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn pod_sandbox_status(
            &self,
            _: cri::PodSandboxStatusRequest,
        ) -> Result<cri::PodSandboxStatusResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn create_container(
            &self,
            _: cri::CreateContainerRequest,
        ) -> Result<cri::CreateContainerResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn start_container(
            &self,
            _: cri::StartContainerRequest,
        ) -> Result<cri::StartContainerResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn stop_container(
            &self,
            _: cri::StopContainerRequest,
        ) -> Result<cri::StopContainerResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn remove_container(
            &self,
            _: cri::RemoveContainerRequest,
        ) -> Result<cri::RemoveContainerResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn update_container_resources(
            &self,
            _: cri::UpdateContainerResourcesRequest,
        ) -> Result<cri::UpdateContainerResourcesResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn reopen_container_log(
            &self,
            _: cri::ReopenContainerLogRequest,
        ) -> Result<cri::ReopenContainerLogResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn exec_sync(
            &self,
            _: cri::ExecSyncRequest,
        ) -> Result<cri::ExecSyncResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn exec(&self, _: cri::ExecRequest) -> Result<cri::ExecResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn attach(&self, _: cri::AttachRequest) -> Result<cri::AttachResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn port_forward(
            &self,
            _: cri::PortForwardRequest,
        ) -> Result<cri::PortForwardResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn container_stats(
            &self,
            _: cri::ContainerStatsRequest,
        ) -> Result<cri::ContainerStatsResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn list_container_stats(
            &self,
            _: cri::ListContainerStatsRequest,
        ) -> Result<cri::ListContainerStatsResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn pod_sandbox_stats(
            &self,
            _: cri::PodSandboxStatsRequest,
        ) -> Result<cri::PodSandboxStatsResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn list_pod_sandbox_stats(
            &self,
            _: cri::ListPodSandboxStatsRequest,
        ) -> Result<cri::ListPodSandboxStatsResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn update_runtime_config(
            &self,
            _: cri::UpdateRuntimeConfigRequest,
        ) -> Result<cri::UpdateRuntimeConfigResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn status(&self, _: cri::StatusRequest) -> Result<cri::StatusResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn checkpoint_container(
            &self,
            _: cri::CheckpointContainerRequest,
        ) -> Result<cri::CheckpointContainerResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn list_metric_descriptors(
            &self,
            _: cri::ListMetricDescriptorsRequest,
        ) -> Result<cri::ListMetricDescriptorsResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn list_pod_sandbox_metrics(
            &self,
            _: cri::ListPodSandboxMetricsRequest,
        ) -> Result<cri::ListPodSandboxMetricsResponse, crate::runtime::RuntimeError> {
            no()
        }
        async fn runtime_config(
            &self,
            _: cri::RuntimeConfigRequest,
        ) -> Result<cri::RuntimeConfigResponse, crate::runtime::RuntimeError> {
            no()
        }
    }

    #[tokio::test]
    async fn when_the_stream_ends_it_subscribes_again_and_relists() {
        let pleg = Pleg::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _reg = pleg.register("uid-1", tx);
        let rs = Arc::new(Lossy {
            subscriptions: Default::default(),
        });
        pleg.start(rs.clone()).await;
        let mut got = Vec::new();
        while got.len() < 3 {
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("three events within 10 s")
                .expect("channel open");
            got.push(match event {
                Event::Exited { id, exit } => format!("exited {id} {}", exit.exit_code),
                Event::SandboxDied { sandbox } => format!("died {sandbox}"),
                other => format!("{other:?}"),
            });
        }
        // The streamed exit, then what the relist found: sandboxes first, then containers.
        assert_eq!(got, ["exited c1 1", "died sb1", "exited c2 0"]);
        assert_eq!(rs.subscriptions.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
