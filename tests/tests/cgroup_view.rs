//! A container and its cgroup: on cgroup v2 the process is born in it (clone3 with
//! CLONE_INTO_CGROUP), on v1 it is attached right after fork; either way it runs in a cgroup
//! namespace rooted at its own cgroup, which it sees read-only at /sys/fs/cgroup (writable
//! when privileged, as runc mounts it). `describe` shows the pressure stall figures of its
//! cgroup where the kernel has them (v2 with PSI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use minilet_e2e::*;

const LIMIT: u64 = 64 * 1024 * 1024;

/// Prints what the container sees, as `key=value` lines, then stays up.
const SCRIPT: &str = r#"
i=0; while read -r l; do echo "cg$i=$l"; i=$((i+1)); done < /proc/self/cgroup
echo "limit=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
mkdir /sys/fs/cgroup/probe 2>/tmp/err; echo "mkdir=$?:$(tr ' ' _ < /tmp/err)"
rmdir /sys/fs/cgroup/probe 2>/dev/null
echo checks=done
exec sleep 3600
"#;

fn pod(name: &str, privileged: bool) -> String {
    let sc = if privileged {
        "\n    securityContext: {privileged: true}"
    } else {
        ""
    };
    let script = SCRIPT.replace('\n', "\n      ");
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent{sc}\n    resources: {{limits: {{memory: {LIMIT}}}}}\n    command: [sh, -c]\n    args:\n    - |{script}\n"
    )
}

/// The container's `key=value` lines once it printed them all.
fn checks(env: &Env, pod: &str) -> (BTreeMap<String, String>, ContainerView) {
    let view = env.wait_running(pod, &["c"]);
    let c = view.containers["c"].clone();
    let log = wait_for(&format!("{pod}: checks done"), Duration::from_secs(60), || {
        std::fs::read_to_string(&c.log_path)
            .ok()
            .filter(|l| l.contains("checks=done"))
    });
    let out = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (out, c)
}

/// The options of the mount at `/sys/fs/cgroup` as the container process's mount namespace
/// has it (the kernel's view from outside), and of the mounts below it.
fn cgroup_mounts(pid: i32) -> Vec<(String, String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            let (point, opts, fstype) = (f.get(4)?, f.get(5)?, f.get(dash + 1)?);
            point
                .starts_with("/sys/fs/cgroup")
                .then(|| (point.to_string(), opts.to_string(), fstype.to_string()))
        })
        .collect()
}

fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

#[test]
fn containers_see_their_own_cgroup_read_only_privileged_ones_writable() {
    if !is_root() {
        return;
    }
    let env = Env::new("cgroup-view");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("plain.yaml", &pod("plain", false));
    env.write_manifest("priv.yaml", &pod("priv", true));
    let v2 = pure_v2();

    for (name, privileged) in [("plain", false), ("priv", true)] {
        let (seen, c) = checks(&env, &static_pod_name(name));
        let pid = c.pid.expect("container pid");
        // Its own cgroup namespace, rooted at its cgroup: every line says `/`.
        assert_ne!(ns(pid, "cgroup"), ns(std::process::id() as i32, "cgroup"), "{name}");
        let lines: Vec<&String> = seen
            .iter()
            .filter(|(k, _)| k.starts_with("cg"))
            .map(|(_, v)| v)
            .collect();
        assert!(!lines.is_empty(), "{name}: {seen:?}");
        for l in &lines {
            assert!(l.ends_with(":/"), "{name}: {l} ({seen:?})");
        }
        if v2 {
            assert_eq!(lines, [&"0::/".to_string()], "{name}");
        }
        // While the host sees the real path.
        let host_view = proc_cgroups(pid);
        assert!(
            host_view.iter().any(|(_, p)| p.ends_with(&c.cgroup)),
            "{name}: {host_view:?} lacks {}",
            c.cgroup
        );
        // Its own limit, read from inside.
        assert_eq!(seen.get("limit"), Some(&LIMIT.to_string()), "{name}: {seen:?}");

        // Read-only unless privileged: the kernel's mount table, and a write that tries.
        let mounts = cgroup_mounts(pid);
        let top = mounts
            .iter()
            .find(|(p, _, _)| p == "/sys/fs/cgroup")
            .unwrap_or_else(|| panic!("{name}: no /sys/fs/cgroup mount: {mounts:?}"));
        assert_eq!(top.2, if v2 { "cgroup2" } else { "tmpfs" }, "{name}: {mounts:?}");
        if !v2 {
            let memory = mounts
                .iter()
                .find(|(p, _, _)| p.ends_with("/memory") || p.contains("memory,"));
            assert!(memory.is_some(), "{name}: no memory hierarchy: {mounts:?}");
        }
        for (point, opts, _) in &mounts {
            let ro = opts.split(',').next() == Some("ro");
            assert_eq!(ro, !privileged, "{name}: {point} {opts}");
        }
        let mkdir = seen.get("mkdir").cloned().unwrap_or_default();
        if privileged {
            // v2: a child cgroup of its own; v1's tmpfs top is writable too.
            assert!(mkdir.starts_with("0:"), "{name}: {mkdir}");
        } else {
            assert!(mkdir.contains("Read-only_file_system"), "{name}: {mkdir}");
        }
    }
}

/// A private trace buffer (a tracefs instance) recording cgroup migrations: every write to
/// `cgroup.procs` moves a task through `cgroup_migrate`, which emits `cgroup_attach_task`
/// with the destination's path; a task clone3 places with CLONE_INTO_CGROUP is never
/// migrated, so it emits none. Removed (and tracefs unmounted) on drop.
struct AttachTrace {
    mount: PathBuf,
    instance: PathBuf,
}

impl AttachTrace {
    fn start(dir: &Path) -> Result<AttachTrace, String> {
        let mount = dir.join("tracefs");
        std::fs::create_dir_all(&mount).map_err(|e| format!("mkdir {}: {e}", mount.display()))?;
        nix::mount::mount(
            Some("tracefs"),
            &mount,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("mount tracefs: {e}"))?;
        let instance = mount
            .join("instances")
            .join(format!("minilet-e2e-{}", std::process::id()));
        let trace = AttachTrace {
            mount: mount.clone(),
            instance: instance.clone(),
        };
        std::fs::create_dir(&instance).map_err(|e| format!("mkdir {}: {e}", instance.display()))?;
        let enable = instance.join("events/cgroup/cgroup_attach_task/enable");
        std::fs::write(&enable, "1").map_err(|e| format!("write {}: {e}", enable.display()))?;
        Ok(trace)
    }

    /// The `cgroup_attach_task` lines recorded so far.
    fn attaches(&self) -> Vec<String> {
        std::fs::read_to_string(self.instance.join("trace"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("cgroup_attach_task:"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for AttachTrace {
    fn drop(&mut self) {
        let _ = std::fs::write(self.instance.join("events/cgroup/cgroup_attach_task/enable"), "0");
        let _ = std::fs::remove_dir(&self.instance);
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn container_is_born_in_its_cgroup_on_v2_attached_on_v1() {
    if !is_root() {
        return;
    }
    let env = Env::new("cgroup-born");
    env.import_image("busybox");
    // Only in a pure v2 kernel (the VM lane's, which is ours alone): tracing is the kernel's,
    // global state this test must not touch on a shared host.
    let trace = if pure_v2() {
        match AttachTrace::start(&env.dir) {
            Ok(t) => Some(t),
            Err(e) => {
                skip(&format!("cannot trace cgroup migrations: {e}"));
                return;
            }
        }
    } else {
        None
    };
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("born.yaml", &pod("born", false));
    let (_, c) = checks(&env, &static_pod_name("born"));
    let pid = c.pid.expect("container pid");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.dir.join("state.json")).expect("state.json")).expect("parse state");

    // In its cgroup, in every hierarchy, by the kernel's account.
    let host_view = proc_cgroups(pid);
    let dirs = env.cgroup_dirs(&c.cgroup);
    assert!(!dirs.is_empty());
    for d in &dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        assert!(
            procs.split_whitespace().any(|p| p == pid.to_string()),
            "{pid} not in {} ({host_view:?})",
            d.display()
        );
    }

    match trace {
        Some(trace) => {
            assert_eq!(state["cgroup_entry"], "born", "{state}");
            let attaches = trace.attaches();
            // The tracer works: the pause's helper was attached to the pod cgroup (a write to
            // cgroup.procs), which shows.
            assert!(
                attaches.iter().any(|l| l.contains(&env.cgroup_parent)),
                "no attach into {} traced at all: {attaches:#?}",
                env.cgroup_parent
            );
            // Nothing ever migrated into the container's cgroup: its first process was born
            // there, and never ran in the monitor's or the pod's cgroup.
            let into_container: Vec<&String> = attaches.iter().filter(|l| l.contains(&c.id)).collect();
            assert!(into_container.is_empty(), "{into_container:#?}");
        }
        None => {
            // v1: attached after fork (CLONE_INTO_CGROUP is v2's).
            assert_eq!(state["cgroup_entry"], "attached", "{state}");
        }
    }
}

/// N of the first line of `text` starting with `prefix` and ending in `total=N`.
fn psi_total(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once("total="))
        .and_then(|(_, n)| n.trim().parse().ok())
}

/// The `some` stall total (µs) of the container's `cpu.pressure`; None where the kernel keeps
/// no pressure for the cgroup (v1, or PSI off).
fn cpu_some_total_us(dirs: &[PathBuf]) -> Option<u64> {
    dirs.iter()
        .find_map(|d| std::fs::read_to_string(d.join("cpu.pressure")).ok())
        .and_then(|t| psi_total(&t, "some "))
}

#[test]
fn describe_shows_pressure_where_the_kernel_has_it() {
    if !is_root() {
        return;
    }
    let env = Env::new("cgroup-psi");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("psi.yaml", &pod("psi", false));
    let (_, c) = checks(&env, &static_pod_name("psi"));
    let dirs = env.cgroup_dirs(&c.cgroup);
    let has_psi = cpu_some_total_us(&dirs).is_some();
    let text = ok(&env, &["describe", "pod", &static_pod_name("psi")]);
    if !has_psi {
        // v1 (or a kernel booted with psi=0): no pressure files, no section.
        assert!(!text.contains("Pressure:"), "{text}");
        if pure_v2() {
            skip("cgroup v2 without PSI (CONFIG_PSI, psi=1): pressure not shown");
        } else {
            minilet::test_skip::not_for_this_machine("PSI is per cgroup on v2 only");
        }
        return;
    }
    // Container and pod sections, every resource the kernel has, in its format.
    let container_part = &text[text
        .find("    Pressure:")
        .unwrap_or_else(|| panic!("no container pressure: {text}"))..];
    for r in ["cpu", "memory", "io"] {
        let line = container_part
            .lines()
            .find(|l| l.trim().starts_with(&format!("{r} some avg10=")))
            .unwrap_or_else(|| panic!("no {r} pressure: {text}"));
        assert!(
            line.contains(" avg60=") && line.contains(" avg300=") && line.contains(" total="),
            "{line}"
        );
    }
    assert!(container_part.contains("memory full avg10="), "{text}");
    assert!(text.contains("\nPressure:\n  cpu some avg10="), "pod section: {text}");
    // The figures are the kernel's: the cumulative stall total only grows, so what describe
    // shows lies between two reads of the container's file around it.
    let before = cpu_some_total_us(&dirs).expect("cpu.pressure total");
    let text = ok(&env, &["describe", "pod", &static_pod_name("psi")]);
    let after = cpu_some_total_us(&dirs).expect("cpu.pressure total");
    let shown = psi_total(&text[text.find("    Pressure:").unwrap_or(0)..], "cpu some ").expect("shown cpu total");
    assert!(before <= shown && shown <= after, "{before} <= {shown} <= {after}");
}

/// The container's cumulative CPU time in nanoseconds, from its cgroup (v1 `cpuacct.usage`,
/// v2 `cpu.stat` `usage_usec`).
fn cpu_nanos(dirs: &[PathBuf]) -> u64 {
    dirs.iter()
        .find_map(|d| {
            if let Ok(t) = std::fs::read_to_string(d.join("cpuacct.usage")) {
                return t.trim().parse().ok();
            }
            let stat = std::fs::read_to_string(d.join("cpu.stat")).ok()?;
            let us: u64 = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()?;
            Some(us * 1000)
        })
        .expect("the container's CPU usage file")
}

#[test]
fn cri_metrics_carry_the_kernels_figures_and_pressure_where_it_has_them() {
    use minilet_e2e::grpc::{connect, rt};
    use minilet_proto::runtime::v1 as cri;
    if !is_root() {
        return;
    }
    let env = Env::new("cgroup-metrics");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("m.yaml", &pod("m", false));
    let (_, c) = checks(&env, &static_pod_name("m"));
    let dirs = env.cgroup_dirs(&c.cgroup);
    let has_psi = cpu_some_total_us(&dirs).is_some();
    rt().block_on(async {
        let mut cl = connect(&env.socket).await;
        let descriptors = cl
            .runtime
            .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
            .await
            .expect("ListMetricDescriptors")
            .into_inner()
            .descriptors;
        let names: Vec<&str> = descriptors.iter().map(|d| d.name.as_str()).collect();
        for n in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_pressure_cpu_waiting_seconds_total",
            "container_pressure_memory_stalled_seconds_total",
            "container_pressure_io_waiting_seconds_total",
        ] {
            assert!(names.contains(&n), "{n} in {names:?}");
        }
        assert!(
            descriptors
                .iter()
                .all(|d| d.label_keys == ["container", "pod", "namespace", "id"]),
            "{descriptors:?}"
        );

        // The counters are the kernel's, in whole seconds: what the CRI reports lies between
        // two reads of the container's own files around the call.
        let cpu_before = cpu_nanos(&dirs);
        let psi_before = cpu_some_total_us(&dirs);
        let pods = cl
            .runtime
            .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .expect("ListPodSandboxMetrics")
            .into_inner()
            .pod_metrics;
        let cpu_after = cpu_nanos(&dirs);
        let psi_after = cpu_some_total_us(&dirs);
        assert_eq!(pods.len(), 1, "{pods:?}");
        let cm = pods[0]
            .container_metrics
            .iter()
            .find(|m| m.container_id == c.id)
            .unwrap_or_else(|| panic!("container {} in {pods:?}", c.id));
        let value = |name: &str| {
            cm.metrics
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.value.as_ref().map(|v| v.value).unwrap_or_default())
        };
        let cpu = cm
            .metrics
            .iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .expect("cpu metric");
        assert_eq!(cpu.label_values[0], "c");
        assert_eq!(cpu.label_values[1], static_pod_name("m"));
        assert_eq!(cpu.label_values[2], "default");
        assert_eq!(cpu.label_values[3], c.id);
        assert_eq!(cpu.metric_type, cri::MetricType::Counter as i32);
        let cpu = value("container_cpu_usage_seconds_total").unwrap_or_default();
        assert!(
            cpu_before / 1_000_000_000 <= cpu && cpu <= cpu_after / 1_000_000_000,
            "{cpu_before} ns <= {cpu} s <= {cpu_after} ns"
        );
        let ws = value("container_memory_working_set_bytes").expect("working set");
        assert!(ws > 0 && ws <= LIMIT, "working set {ws}");
        assert!(value("container_processes").is_some_and(|p| p >= 1));
        if has_psi {
            let (b, a) = (psi_before.expect("cpu.pressure"), psi_after.expect("cpu.pressure"));
            let shown = value("container_pressure_cpu_waiting_seconds_total").expect("cpu pressure metric");
            assert!(
                b / 1_000_000 <= shown && shown <= a / 1_000_000,
                "{b} us <= {shown} s <= {a} us"
            );
            assert!(value("container_pressure_memory_stalled_seconds_total").is_some());
            assert!(value("container_pressure_io_waiting_seconds_total").is_some());
        } else {
            // No pressure files (v1, or PSI off): no pressure metrics, rather than zeros.
            assert!(
                cm.metrics.iter().all(|m| !m.name.starts_with("container_pressure_")),
                "{cm:?}"
            );
        }
    });
}
