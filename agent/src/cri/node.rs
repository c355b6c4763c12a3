//! minilet's own `minilet.v1.Node` service: pods as v1.Pod, events, interactive exec.

use minilet_proto::minilet::v1 as node;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{Cri, convert};
use crate::runtime::RuntimeError;
use crate::runtime::exec::{ExecInput, ExecOutput};

pub struct NodeSvc(pub std::sync::Arc<Cri>);

type R<T> = Result<Response<T>, Status>;

/// The cgroup settings of a container as the kernel has them (the files minilet writes).
fn applied_limits(dirs: &[std::path::PathBuf]) -> std::collections::HashMap<String, String> {
    const FILES: &[&str] = &[
        "cpu.shares",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "cpu.weight",
        "cpu.max",
        "memory.limit_in_bytes",
        "memory.max",
        "pids.max",
    ];
    let mut out = std::collections::HashMap::new();
    for d in dirs {
        for f in FILES {
            if let Ok(v) = std::fs::read_to_string(d.join(f)) {
                out.insert((*f).to_string(), v.trim().to_string());
            }
        }
    }
    out
}

fn paths(dirs: &[String]) -> Vec<std::path::PathBuf> {
    dirs.iter().map(std::path::PathBuf::from).collect()
}

/// PSI of a cgroup (v2 only: v1 directories have no pressure files). A file the agent cannot
/// read is logged and left out: describe still shows the rest.
fn pressure_lines(dirs: &[std::path::PathBuf]) -> Vec<String> {
    dirs.iter()
        .flat_map(|d| {
            crate::cgroups::pressure::describe_lines(d).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the cgroup's pressure files");
                Vec::new()
            })
        })
        .collect()
}

#[tonic::async_trait]
impl node::node_server::Node for NodeSvc {
    async fn list_pods(&self, req: Request<node::ListPodsRequest>) -> R<node::ListPodsResponse> {
        let req = req.into_inner();
        // Limits and pressure mean reading a dozen files per cgroup per hierarchy: only for
        // callers that show them (describe), not for every listing.
        let details = req.cgroup_details;
        let ctx = &*self.0;
        let mut pods = Vec::new();
        for e in ctx.registry.list() {
            let meta = &e.pod.metadata;
            if (!req.namespace.is_empty() && meta.namespace.as_deref() != Some(req.namespace.as_str()))
                || (!req.name.is_empty() && meta.name.as_deref() != Some(req.name.as_str()))
            {
                continue;
            }
            let pod = convert::v1_pod(&e, &ctx.node);
            let pod_json = serde_json::to_string(&pod).map_err(|e| Status::internal(e.to_string()))?;
            let containers = e
                .attempts
                .iter()
                .filter(|a| a.status.running())
                .map(|a| node::ContainerCgroup {
                    name: a.status.name.clone(),
                    container_id: a.status.id.clone(),
                    cgroup_dirs: a.status.cgroup_dirs.iter().map(|d| d.display().to_string()).collect(),
                    limits: Default::default(),
                    pressure: Vec::new(),
                })
                .collect();
            pods.push(node::PodInfo {
                pod_json,
                manifest: e.manifest.display().to_string(),
                cgroup_dirs: ctx
                    .runtime
                    .cgroups
                    .dirs(&e.sandbox.cgroup)
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect(),
                pressure: Vec::new(),
                containers,
                sandbox_id: if e.sandbox.pause.is_some() {
                    e.sandbox.id.clone()
                } else {
                    String::new()
                },
            });
        }
        // Pods a CRI client made: listed too, marked (no manifest, a created-by annotation). The
        // static pods' sandboxes are in the store too, and listed above from their pods.
        let clients = ctx
            .cri_pods
            .list(|sb| sb.manifest().is_none().then(|| sb.clone()))
            .await;
        for sb in &clients {
            let pod = convert::v1_pod_of_cri_sandbox(sb, &ctx.node);
            let meta = &pod.metadata;
            if (!req.namespace.is_empty() && meta.namespace.as_deref() != Some(req.namespace.as_str()))
                || (!req.name.is_empty() && meta.name.as_deref() != Some(req.name.as_str()))
            {
                continue;
            }
            let pod_json = serde_json::to_string(&pod).map_err(|e| Status::internal(e.to_string()))?;
            let containers = sb
                .containers
                .values()
                .filter(|c| c.files.exit.is_none())
                .map(|c| {
                    let dirs = ctx.runtime.cgroups.dirs(&c.files.record.cgroup);
                    node::ContainerCgroup {
                        name: c.files.record.name.clone(),
                        container_id: c.files.record.id.clone(),
                        cgroup_dirs: dirs.iter().map(|d| d.display().to_string()).collect(),
                        limits: Default::default(),
                        pressure: Vec::new(),
                    }
                })
                .collect();
            pods.push(node::PodInfo {
                pod_json,
                manifest: String::new(),
                cgroup_dirs: ctx
                    .runtime
                    .cgroups
                    .dirs(&sb.record.cgroup)
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect(),
                pressure: Vec::new(),
                containers,
                sandbox_id: if sb.ready() {
                    sb.record.id.clone()
                } else {
                    String::new()
                },
            });
        }
        if details {
            // A dozen small reads per cgroup and hierarchy: file I/O, off the async threads.
            pods = tokio::task::spawn_blocking(move || {
                for p in &mut pods {
                    p.pressure = pressure_lines(&paths(&p.cgroup_dirs));
                    for c in &mut p.containers {
                        let dirs = paths(&c.cgroup_dirs);
                        c.limits = applied_limits(&dirs);
                        c.pressure = pressure_lines(&dirs);
                    }
                }
                pods
            })
            .await
            .map_err(|e| Status::internal(format!("reading cgroup details: {e}")))?;
        }
        Ok(Response::new(node::ListPodsResponse { pods }))
    }

    async fn list_events(&self, req: Request<node::ListEventsRequest>) -> R<node::ListEventsResponse> {
        let req = req.into_inner();
        let ctx = &*self.0;
        let mut event_json = Vec::new();
        for (i, ev) in ctx.events.list().iter().enumerate() {
            let o = &ev.object;
            let ns = if o.namespace.is_empty() {
                "default"
            } else {
                o.namespace.as_str()
            };
            if (!req.namespace.is_empty() && ns != req.namespace)
                || (!req.name.is_empty() && o.name != req.name)
                || (!req.uid.is_empty() && o.uid != req.uid)
            {
                continue;
            }
            let e = convert::v1_event(ev, &ctx.node, i);
            event_json.push(serde_json::to_string(&e).map_err(|e| Status::internal(e.to_string()))?);
        }
        Ok(Response::new(node::ListEventsResponse { event_json }))
    }

    type ExecStream = ReceiverStream<Result<node::ExecResponse, Status>>;

    async fn exec(&self, req: Request<Streaming<node::ExecRequest>>) -> R<Self::ExecStream> {
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.and_then(|m| m.msg);
        let Some(node::exec_request::Msg::Start(start)) = first else {
            return Err(
                RuntimeError::InvalidArgument("the first message of an exec stream must be `start`".into()).into(),
            );
        };
        let files = self.0.cri_pods.container_files(&start.container_id).await?;
        let size = start.size.map(|s| (s.width as u16, s.height as u16));
        let session = self
            .0
            .runtime
            .exec(&files, start.cmd, start.tty, start.stdin, size)
            .await?;
        let crate::runtime::exec::ExecSession {
            mut stdin,
            mut outputs,
            guard,
        } = session;

        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let input = match msg.msg {
                    Some(node::exec_request::Msg::Stdin(b)) => ExecInput::Stdin(b),
                    Some(node::exec_request::Msg::Resize(s)) => ExecInput::Resize(s.width as u16, s.height as u16),
                    Some(node::exec_request::Msg::CloseStdin(true)) => ExecInput::CloseStdin,
                    _ => continue,
                };
                if stdin.send(input).await.is_err() {
                    break;
                }
            }
        });
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(async move {
            // Dropping the guard (client gone or process done) ends the helper and its child.
            let _guard = guard;
            while let Some(out) = outputs.next().await {
                let (msg, last) = match out {
                    ExecOutput::Stdout(b) => (node::exec_response::Msg::Stdout(b), false),
                    ExecOutput::Stderr(b) => (node::exec_response::Msg::Stderr(b), false),
                    ExecOutput::Exit(code) => (node::exec_response::Msg::ExitCode(code), true),
                };
                if tx.send(Ok(node::ExecResponse { msg: Some(msg) })).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
