//! Pod volumes and identity as the kubelet sets them up: downwardAPI and projected volumes
//! (files, modes, read-only), fsGroup on emptyDirs (disk and memory) and written volumes,
//! `fsGroupChangePolicy`, `supplementalGroupsPolicy: Strict`, and pod-level resources in the
//! pod cgroup. Checked from the kernel's side: stat inside the container, mountinfo, cgroup files.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use minilet_e2e::*;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {tier: test, app: vols}
  annotations: {note: "two words"}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsUser: 1000
    fsGroup: 3000
  volumes:
  - name: podinfo
    downwardAPI:
      defaultMode: 0440
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
      - {path: meta/name, fieldRef: {fieldPath: metadata.name}, mode: 0400}
      - {path: tier, fieldRef: {fieldPath: "metadata.labels['tier']"}}
      - {path: mem, resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}}
      - {path: cpu, resourceFieldRef: {containerName: app, resource: requests.cpu, divisor: 1m}}
  - name: all-in-one
    projected:
      sources:
      - downwardAPI:
          items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]
  - {name: disk, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 8Mi}}
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "cat /etc/podinfo/meta/name > /mem/read-by-app; touch /mem/made-by-app /disk/made-by-app && exec sleep 3600"]
    resources:
      requests: {cpu: 250m, memory: 32Mi}
      limits: {memory: 64Mi}
    volumeMounts:
    - {name: podinfo, mountPath: /etc/podinfo}
    - {name: all-in-one, mountPath: /projected}
    - {name: disk, mountPath: /disk}
    - {name: mem, mountPath: /mem}
"#;

fn run_in(pid: i32, script: &str) -> String {
    let o = in_container(pid, &["sh", "-c", script]);
    assert!(o.status.success(), "{script}: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

#[test]
fn downward_api_volumes_and_fs_group() {
    if !is_root() {
        return;
    }
    let env = Env::new("volumes");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("vols.yaml", POD);
    let pod = wait_for("app made its files", Duration::from_secs(30), || {
        let p = env.pod(&static_pod_name("vols"))?;
        let pid = p.containers.get("app")?.pid?;
        let dir = p.dir.join("volumes/kubernetes.io~empty-dir/disk/made-by-app");
        (dir.exists() && alive(pid)).then_some(p)
    });
    let pid = pod.pid("app");

    // The files, with the API server's formats.
    assert_eq!(run_in(pid, "cat /etc/podinfo/labels"), "app=\"vols\"\ntier=\"test\"");
    // A static pod's annotations include the kubelet's config.* ones, as with the kubelet.
    let annotations = run_in(pid, "cat /etc/podinfo/annotations");
    let lines: Vec<&str> = annotations.lines().collect();
    assert!(lines.contains(&"note=\"two words\""), "{annotations}");
    assert!(lines.contains(&"kubernetes.io/config.source=\"file\""), "{annotations}");
    assert_eq!(run_in(pid, "cat /etc/podinfo/tier"), "test");
    assert_eq!(run_in(pid, "cat /etc/podinfo/mem"), "64");
    assert_eq!(run_in(pid, "cat /etc/podinfo/cpu"), "250");
    assert_eq!(run_in(pid, "cat /projected/ns"), "default");

    // Modes (defaultMode, per-item mode) and the fsGroup, as the kernel reports them.
    let stat = |path: &str| run_in(pid, &format!("stat -L -c '%a %u %g' {path}"));
    assert_eq!(stat("/etc/podinfo/labels"), "440 0 3000");
    assert_eq!(
        stat("/etc/podinfo/meta/name"),
        "440 0 3000",
        "0400 plus the group's read"
    );
    // The running user (1000, in group 3000 through fsGroup, as the kernel shows) reads the
    // files through the group; nobody writes.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid_line.split_whitespace().nth(1), Some("1000"), "{uid_line}");
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert!(groups.split_whitespace().any(|g| g == "3000"), "{groups}");
    assert_eq!(run_in(pid, "cat /mem/read-by-app"), static_pod_name("vols"));
    let o = in_container(pid, &["sh", "-c", "echo x > /etc/podinfo/new"]);
    assert!(!o.status.success(), "downwardAPI volumes are read-only");
    let mountinfo = run_in(pid, "cat /proc/self/mountinfo");
    let line = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/etc/podinfo"))
        .unwrap_or_else(|| panic!("/etc/podinfo not mounted:\n{mountinfo}"));
    assert!(
        line.split_whitespace()
            .nth(5)
            .unwrap_or("")
            .split(',')
            .any(|o| o == "ro"),
        "{line}"
    );

    // emptyDirs: group 3000, setgid, group-writable; what the app made is the group's.
    for dir in ["/disk", "/mem"] {
        assert_eq!(stat(dir), "2777 0 3000", "{dir}");
        assert_eq!(stat(&format!("{dir}/made-by-app")), "644 1000 3000", "{dir}");
    }
    let host_disk = pod.dir.join("volumes/kubernetes.io~empty-dir/disk");
    let md = std::fs::metadata(&host_disk).unwrap();
    assert_eq!((md.gid(), md.mode() & 0o7777), (3000, 0o2777));
}

#[test]
fn supplemental_groups_policy_strict_leaves_out_the_image_groups() {
    if !is_root() {
        return;
    }
    let env = Env::new("strictgroups");
    env.import_image("busybox");
    // The container's /etc/group (a file bind-mounted over the image's) makes root a member
    // of group 777: Merge adds it, Strict must not.
    let group = env.dir.join("group");
    std::fs::write(&group, "root:x:0:\nextra:x:777:root\n").unwrap();
    let _agent = Agent::start(&env, &[]);
    for policy in ["Merge", "Strict"] {
        let name = format!("groups-{}", policy.to_lowercase());
        env.write_manifest(
            &format!("{name}.yaml"),
            &format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{supplementalGroups: [4000], supplementalGroupsPolicy: {policy}}}
  volumes: [{{name: group, hostPath: {{path: {group}, type: File}}}}]
  containers:
  - name: c
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    volumeMounts: [{{name: group, mountPath: /etc/group, readOnly: true}}]
"#,
                group = group.display()
            ),
        );
    }
    let groups = |name: &str| {
        let pod = wait_for(name, Duration::from_secs(30), || {
            env.pod(&static_pod_name(name))
                .filter(|p| p.containers.get("c").and_then(|c| c.pid).is_some_and(alive))
        });
        // The kernel's view of the process's supplementary groups.
        let status = std::fs::read_to_string(format!("/proc/{}/status", pod.pid("c"))).unwrap();
        let line = status.lines().find(|l| l.starts_with("Groups:")).unwrap().to_string();
        let mut g: Vec<u32> = line[7..].split_whitespace().map(|x| x.parse().unwrap()).collect();
        g.sort_unstable();
        g
    };
    assert_eq!(groups("groups-merge"), vec![777, 4000]);
    assert_eq!(groups("groups-strict"), vec![4000]);
}

#[test]
fn pod_level_resources_set_the_pod_cgroup_and_qos() {
    if !is_root() {
        return;
    }
    let env = Env::new("podres");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest(
        "podres.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: podres}
spec:
  terminationGracePeriodSeconds: 1
  resources:
    requests: {cpu: 500m, memory: 96Mi}
    limits: {cpu: 500m, memory: 96Mi}
  containers:
  - {name: a, image: localhost/busybox:latest, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
  - {name: b, image: localhost/busybox:latest, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
"#,
    );
    let pod = wait_for("both containers running", Duration::from_secs(30), || {
        env.pod(&static_pod_name("podres")).filter(|p| {
            ["a", "b"]
                .iter()
                .all(|c| p.containers.get(*c).and_then(|c| c.pid).is_some())
        })
    });
    // Guaranteed from the pod-level figures alone: the pod cgroup sits right under kubepods.
    assert!(
        pod.cgroup.ends_with(&format!("kubepods/pod{}", pod.uid)),
        "{}",
        pod.cgroup
    );
    let memory = cgroup_file(&env, &pod.cgroup, "memory.limit_in_bytes")
        .or_else(|| cgroup_file(&env, &pod.cgroup, "memory.max"))
        .expect("pod memory limit file");
    assert_eq!(memory.trim(), (96 * 1024 * 1024).to_string());
    let quota = cgroup_file(&env, &pod.cgroup, "cpu.cfs_quota_us")
        .or_else(|| cgroup_file(&env, &pod.cgroup, "cpu.max").map(|m| m.split_whitespace().next().unwrap_or("").into()))
        .expect("pod cpu quota file");
    assert_eq!(quota.trim(), "50000");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&env, &["get", "pod", &static_pod_name("podres"), "-o", "json"])).unwrap();
    assert_eq!(json["status"]["qosClass"], "Guaranteed");
}
