//! `ListMetricDescriptors` and `ListPodSandboxMetrics`: cAdvisor-named, Prometheus-style
//! metrics per container, as a kubelet with `PodAndContainerStatsFromCRI` serves them on
//! `/metrics/cadvisor`.
//!
//! This is where the pressure stall figures (PSI) reach CRI clients: the contract's
//! `runtime.v1` (cri-api v0.32) has no PSI fields in the stats messages, but its metrics API
//! carries any counter, and cAdvisor already names these (`container_pressure_*`: "waiting"
//! is the kernel's `some` line, "stalled" its `full` line). The CRI's values are integers,
//! so seconds are whole seconds (as containerd reports them); the rest are bytes and counts.

use std::path::PathBuf;

use minilet_proto::runtime::v1 as cri;
use minilet_proto::runtime::v1::MetricType::{Counter, Gauge};

use crate::cgroups::CgroupStats;
use crate::cgroups::pressure::{self, Pressure, PsiResource};

/// Label keys of every metric, in the order of each metric's `label_values`.
pub const LABEL_KEYS: [&str; 4] = ["container", "pod", "namespace", "id"];

/// What one metric measures and how its value is taken from a cgroup's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    CpuSeconds,
    MemoryUsage,
    WorkingSet,
    Rss,
    OomKills,
    Processes,
    /// Seconds some (`full == false`) or all (`full == true`) tasks stalled on a resource.
    Pressure(PsiResource, bool),
}

struct Descriptor {
    name: &'static str,
    help: &'static str,
    kind: cri::MetricType,
    source: Source,
}

const fn d(name: &'static str, help: &'static str, kind: cri::MetricType, source: Source) -> Descriptor {
    Descriptor {
        name,
        help,
        kind,
        source,
    }
}

const DESCRIPTORS: [Descriptor; 12] = [
    d(
        "container_cpu_usage_seconds_total",
        "Cumulative CPU time consumed, in whole seconds.",
        Counter,
        Source::CpuSeconds,
    ),
    d(
        "container_memory_usage_bytes",
        "Current memory usage, including page cache.",
        Gauge,
        Source::MemoryUsage,
    ),
    d(
        "container_memory_working_set_bytes",
        "Memory usage minus inactive file pages (what the kubelet evicts on).",
        Gauge,
        Source::WorkingSet,
    ),
    d("container_memory_rss", "Anonymous memory.", Gauge, Source::Rss),
    d(
        "container_oom_events_total",
        "Processes the kernel's OOM killer killed in the container.",
        Counter,
        Source::OomKills,
    ),
    d(
        "container_processes",
        "Processes (tasks) in the container.",
        Gauge,
        Source::Processes,
    ),
    d(
        "container_pressure_cpu_waiting_seconds_total",
        "Whole seconds some tasks waited for CPU (PSI `some`; cgroup v2 only).",
        Counter,
        Source::Pressure(PsiResource::Cpu, false),
    ),
    d(
        "container_pressure_cpu_stalled_seconds_total",
        "Whole seconds all tasks stalled on CPU (PSI `full`; cgroup v2 only).",
        Counter,
        Source::Pressure(PsiResource::Cpu, true),
    ),
    d(
        "container_pressure_memory_waiting_seconds_total",
        "Whole seconds some tasks waited for memory (PSI `some`; cgroup v2 only).",
        Counter,
        Source::Pressure(PsiResource::Memory, false),
    ),
    d(
        "container_pressure_memory_stalled_seconds_total",
        "Whole seconds all tasks stalled on memory (PSI `full`; cgroup v2 only).",
        Counter,
        Source::Pressure(PsiResource::Memory, true),
    ),
    d(
        "container_pressure_io_waiting_seconds_total",
        "Whole seconds some tasks waited for IO (PSI `some`; cgroup v2 only).",
        Counter,
        Source::Pressure(PsiResource::Io, false),
    ),
    d(
        "container_pressure_io_stalled_seconds_total",
        "Whole seconds all tasks stalled on IO (PSI `full`; cgroup v2 only).",
        Counter,
        Source::Pressure(PsiResource::Io, true),
    ),
];

/// Every metric ListPodSandboxMetrics may return.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|m| cri::MetricDescriptor {
            name: m.name.into(),
            help: m.help.into(),
            label_keys: LABEL_KEYS.iter().map(|k| k.to_string()).collect(),
        })
        .collect()
}

/// One container's figures, read at one time.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub timestamp: i64,
    pub stats: CgroupStats,
    /// cpu, memory, io pressure; `None` where the kernel keeps none (v1, or PSI off).
    pub pressure: [Option<Pressure>; 3],
}

/// Read `dirs` (the container's cgroup directories) now. Blocking: call off the async threads.
/// A pressure file that cannot be read is logged and left out, as `describe` does.
pub fn read(stats: CgroupStats, dirs: &[PathBuf], timestamp: i64) -> Reading {
    let mut out = Reading {
        timestamp,
        stats,
        pressure: [None; 3],
    };
    for (slot, r) in out.pressure.iter_mut().zip(PsiResource::ALL) {
        *slot = dirs.iter().find_map(|d| match pressure::read(d, r) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cgroup's pressure file");
                None
            }
        });
    }
    out
}

fn value_of(source: Source, r: &Reading) -> Option<u64> {
    const NANOS: u64 = 1_000_000_000;
    const MICROS: u64 = 1_000_000;
    let s = &r.stats;
    Some(match source {
        Source::CpuSeconds => s.cpu_usage_nanos / NANOS,
        Source::MemoryUsage => s.memory_usage_bytes,
        Source::WorkingSet => s.memory_working_set_bytes,
        Source::Rss => s.memory_rss_bytes,
        Source::OomKills => s.oom_kills,
        Source::Processes => s.pids_current,
        Source::Pressure(res, full) => {
            let idx = PsiResource::ALL.iter().position(|x| *x == res)?;
            let p = r.pressure[idx]?;
            let line = if full { p.full? } else { p.some };
            line.total_us / MICROS
        }
    })
}

/// The metrics of one container; `labels` are the values of [`LABEL_KEYS`].
pub fn container(id: &str, labels: [&str; 4], r: &Reading) -> cri::ContainerMetrics {
    let label_values: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    cri::ContainerMetrics {
        container_id: id.into(),
        metrics: DESCRIPTORS
            .iter()
            .filter_map(|m| {
                Some(cri::Metric {
                    name: m.name.into(),
                    timestamp: r.timestamp,
                    metric_type: m.kind as i32,
                    label_values: label_values.clone(),
                    value: Some(cri::UInt64Value {
                        value: value_of(m.source, r)?,
                    }),
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::pressure::PsiLine;

    fn line(total_us: u64) -> PsiLine {
        PsiLine {
            total_us,
            ..Default::default()
        }
    }

    fn find<'a>(m: &'a cri::ContainerMetrics, name: &str) -> Option<&'a cri::Metric> {
        m.metrics.iter().find(|x| x.name == name)
    }

    #[test]
    fn descriptors_name_every_metric_once_with_the_label_keys() {
        let ds = descriptors();
        let mut names: Vec<_> = ds.iter().map(|d| d.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DESCRIPTORS.len());
        assert!(ds.iter().all(|d| d.label_keys == LABEL_KEYS));
    }

    #[test]
    fn values_are_whole_seconds_bytes_and_counts() {
        let r = Reading {
            timestamp: 7,
            stats: CgroupStats {
                cpu_usage_nanos: 2_999_999_999,
                memory_usage_bytes: 100,
                memory_working_set_bytes: 60,
                memory_rss_bytes: 40,
                oom_kills: 1,
                pids_current: 3,
            },
            pressure: [
                Some(Pressure {
                    some: line(5_500_000),
                    full: Some(line(2_000_000)),
                }),
                Some(Pressure {
                    some: line(3_000_000),
                    full: None,
                }),
                None,
            ],
        };
        let m = container("c1", ["app", "web", "default", "c1"], &r);
        let v = |n: &str| find(&m, n).map(|x| x.value.as_ref().map(|v| v.value));
        assert_eq!(v("container_cpu_usage_seconds_total"), Some(Some(2)));
        assert_eq!(v("container_memory_working_set_bytes"), Some(Some(60)));
        assert_eq!(v("container_processes"), Some(Some(3)));
        assert_eq!(v("container_pressure_cpu_waiting_seconds_total"), Some(Some(5)));
        assert_eq!(v("container_pressure_cpu_stalled_seconds_total"), Some(Some(2)));
        assert_eq!(v("container_pressure_memory_waiting_seconds_total"), Some(Some(3)));
        // A line or file the kernel does not have is no metric, not a zero.
        assert_eq!(v("container_pressure_memory_stalled_seconds_total"), None);
        assert_eq!(v("container_pressure_io_waiting_seconds_total"), None);
        let cpu = find(&m, "container_cpu_usage_seconds_total").unwrap();
        assert_eq!(cpu.metric_type, cri::MetricType::Counter as i32);
        assert_eq!(cpu.label_values, ["app", "web", "default", "c1"]);
        assert_eq!(cpu.timestamp, 7);
        let ws = find(&m, "container_memory_working_set_bytes").unwrap();
        assert_eq!(ws.metric_type, cri::MetricType::Gauge as i32);
    }
}
