//! `minilet top pods`: CPU and memory from the CRI stats RPCs, printed as `kubectl top pod`
//! prints metrics-server's numbers.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use minilet_proto::runtime::v1::{ContainerStats, CpuUsage, MemoryUsage, PodSandboxStats};

use super::attempts::{POD_NAME_LABEL, POD_NAMESPACE_LABEL};
use super::client::Details;
use super::errors::ServerError;
use super::get::no_resources;
use super::printers::{cpu_millis, memory_mib};
use super::tabwriter::TabWriter;
use super::{NamespaceArgs, SocketArgs, client, pods};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TopCommand {
    /// CPU and memory of pods.
    #[command(visible_aliases = ["pods", "po"])]
    Pod(TopPodArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct TopPodArgs {
    /// Only this pod.
    pub name: Option<String>,
    /// One line per container.
    #[arg(long)]
    pub containers: bool,
    #[command(flatten)]
    pub scope: NamespaceArgs,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Usage of a pod or a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub namespace: String,
    pub pod: String,
    /// Empty for a pod line.
    pub container: String,
    pub nano_cores: u64,
    pub working_set_bytes: u64,
}

fn cpu(c: Option<&CpuUsage>) -> u64 {
    c.and_then(|c| c.usage_nano_cores.as_ref()).map_or(0, |v| v.value)
}

fn memory(m: Option<&MemoryUsage>) -> u64 {
    m.and_then(|m| m.working_set_bytes.as_ref()).map_or(0, |v| v.value)
}

/// Pod usage from sandbox stats: the sandbox's own numbers, or the sum of its containers'
/// when the runtime reports only those. Duplicates of a pod (an old sandbox) count once.
pub fn pod_usage(stats: &[PodSandboxStats]) -> Vec<Usage> {
    let mut out: Vec<Usage> = Vec::new();
    for s in stats {
        let meta = s.attributes.as_ref().and_then(|a| a.metadata.as_ref());
        let (namespace, pod) = match meta {
            Some(m) => (m.namespace.clone(), m.name.clone()),
            None => continue,
        };
        let linux = s.linux.as_ref();
        let containers = linux.map(|l| l.containers.as_slice()).unwrap_or_default();
        let nano_cores = match linux.and_then(|l| l.cpu.as_ref()) {
            Some(c) if c.usage_nano_cores.is_some() => cpu(Some(c)),
            _ => containers.iter().map(|c| cpu(c.cpu.as_ref())).sum(),
        };
        let working_set_bytes = match linux.and_then(|l| l.memory.as_ref()) {
            Some(m) if m.working_set_bytes.is_some() => memory(Some(m)),
            _ => containers.iter().map(|c| memory(c.memory.as_ref())).sum(),
        };
        if out.iter().any(|u| u.namespace == namespace && u.pod == pod) {
            continue;
        }
        out.push(Usage {
            namespace,
            pod,
            container: String::new(),
            nano_cores,
            working_set_bytes,
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    out
}

/// Container usage from container stats (pod from the kubelet's labels).
pub fn container_usage(stats: &[ContainerStats]) -> Vec<Usage> {
    let mut out: Vec<Usage> = Vec::new();
    for s in stats {
        let Some(attrs) = &s.attributes else { continue };
        let label = |k: &str| attrs.labels.get(k).cloned().unwrap_or_default();
        let container = attrs.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let u = Usage {
            namespace: label(POD_NAMESPACE_LABEL),
            pod: label(POD_NAME_LABEL),
            container,
            nano_cores: cpu(s.cpu.as_ref()),
            working_set_bytes: memory(s.memory.as_ref()),
        };
        if u.pod.is_empty()
            || out
                .iter()
                .any(|o| o.namespace == u.namespace && o.pod == u.pod && o.container == u.container)
        {
            continue;
        }
        out.push(u);
    }
    out.sort_by(|a, b| (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container)));
    out
}

/// kubectl top's table: every cell ends with a tab, so the last column is padded too.
pub fn table(rows: &[Usage], containers: bool, with_namespace: bool) -> String {
    let mut w = TabWriter::table();
    let mut header = String::new();
    if with_namespace {
        header.push_str("NAMESPACE\t");
    }
    if containers {
        header.push_str("POD\t");
    }
    header.push_str("NAME\tCPU(cores)\tMEMORY(bytes)\t");
    let _ = writeln!(w, "{header}");
    for r in rows {
        let mut line = String::new();
        if with_namespace {
            let _ = write!(line, "{}\t", r.namespace);
        }
        if containers {
            let _ = write!(line, "{}\t{}\t", r.pod, r.container);
        } else {
            let _ = write!(line, "{}\t", r.pod);
        }
        let _ = write!(
            line,
            "{}\t{}\t",
            cpu_millis(r.nano_cores),
            memory_mib(r.working_set_bytes)
        );
        let _ = writeln!(w, "{line}");
    }
    w.render()
}

pub async fn run(cmd: TopCommand) -> Result<ExitCode> {
    let TopCommand::Pod(args) = cmd;
    let namespace = args.scope.namespace();
    let client = client::connect(&args.socket.socket).await?;
    let mut rows = if args.containers {
        container_usage(&client.container_stats().await?)
    } else {
        pod_usage(&client.pod_stats().await?)
    };
    if let Some(ns) = namespace {
        rows.retain(|r| r.namespace == ns);
    }
    if let Some(name) = &args.name {
        rows.retain(|r| &r.pod == name);
        if rows.is_empty() {
            let ns = namespace.unwrap_or("default");
            let e = ServerError::not_found(format!("podmetrics.metrics.k8s.io \"{ns}/{name}\" not found"));
            // Only on a miss: the namespace's pods, to hint at a static pod's full name.
            let others: Vec<_> = pods::list(&client, Some(ns), Details::Dirs)
                .await
                .map(|ps| ps.into_iter().map(|p| p.pod).collect())
                .unwrap_or_default();
            return Err(pods::with_static_name_hint(e, name, &others).into());
        }
    }
    if rows.is_empty() {
        eprintln!("{}", no_resources(namespace));
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table(&rows, args.containers, namespace.is_none()));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use minilet_proto::runtime::v1::{
        ContainerAttributes, ContainerMetadata, LinuxPodSandboxStats, PodSandboxAttributes, PodSandboxMetadata,
        UInt64Value,
    };

    fn usage_cpu(n: u64) -> Option<CpuUsage> {
        Some(CpuUsage {
            usage_nano_cores: Some(UInt64Value { value: n }),
            ..Default::default()
        })
    }

    fn usage_mem(n: u64) -> Option<MemoryUsage> {
        Some(MemoryUsage {
            working_set_bytes: Some(UInt64Value { value: n }),
            ..Default::default()
        })
    }

    fn cstats(ns: &str, pod: &str, name: &str, nano: u64, bytes: u64) -> ContainerStats {
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: format!("{pod}-{name}"),
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                labels: [
                    (POD_NAME_LABEL.to_string(), pod.to_string()),
                    (POD_NAMESPACE_LABEL.to_string(), ns.to_string()),
                ]
                .into(),
                ..Default::default()
            }),
            cpu: usage_cpu(nano),
            memory: usage_mem(bytes),
            ..Default::default()
        }
    }

    fn pstats(
        ns: &str,
        name: &str,
        cpu: Option<CpuUsage>,
        mem: Option<MemoryUsage>,
        cs: Vec<ContainerStats>,
    ) -> PodSandboxStats {
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: format!("sb-{name}"),
                metadata: Some(PodSandboxMetadata {
                    name: name.into(),
                    namespace: ns.into(),
                    uid: "u".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu,
                memory: mem,
                containers: cs,
                ..Default::default()
            }),
            windows: None,
        }
    }

    #[test]
    fn pods_table() {
        let stats = vec![
            pstats(
                "default",
                "web",
                usage_cpu(12_300_000),
                usage_mem(5 * 1024 * 1024 + 77),
                vec![],
            ),
            // No pod-level numbers: the containers' are summed.
            pstats(
                "kube-system",
                "db",
                None,
                None,
                vec![
                    cstats("kube-system", "db", "a", 1_000_000, 1024 * 1024),
                    cstats("kube-system", "db", "b", 500, 2 * 1024 * 1024),
                ],
            ),
            pstats("default", "web", usage_cpu(1), usage_mem(1), vec![]),
        ];
        let rows = pod_usage(&stats);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            table(&rows, false, false),
            "NAME   CPU(cores)   MEMORY(bytes)   \nweb    13m          5Mi             \ndb     2m           3Mi             \n"
        );
        assert_eq!(
            table(&rows, false, true),
            "NAMESPACE     NAME   CPU(cores)   MEMORY(bytes)   \ndefault       web    13m          5Mi             \nkube-system   db     2m           3Mi             \n"
        );
    }

    #[test]
    fn containers_table() {
        let stats = vec![
            cstats("default", "web", "sidecar", 0, 0),
            cstats("default", "web", "nginx", 3_000_000, 10 * 1024 * 1024),
        ];
        let rows = container_usage(&stats);
        assert_eq!(
            table(&rows, true, false),
            "POD   NAME      CPU(cores)   MEMORY(bytes)   \nweb   nginx     3m           10Mi            \nweb   sidecar   0m           0Mi             \n"
        );
    }
}
