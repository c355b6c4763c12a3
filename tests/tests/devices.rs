//! Device access from a container: with CAP_MKNOD a container can make a node for any host
//! device, so only the device allow-list (v1 devices cgroup, v2 device program) stands
//! between a default pod and the host's disks and kernel log. A default pod may create the
//! nodes but not open them; the standard /dev nodes work; a privileged pod may open them.

use std::collections::BTreeMap;
use std::time::Duration;

use minilet_e2e::*;

/// Each check prints `name=<exit status>:<error text>`, then the container stays up so its
/// cgroup can be read.
const SCRIPT: &str = r#"
cd /tmp
try() { name=$1; shift; "$@" >/dev/null 2>/tmp/err; echo "$name=$?:$(tr ' ' _ < /tmp/err)"; }
try mknod-loop mknod loop b 7 "$LOOP_MINOR"
try mknod-kmsg mknod kmsg c 1 11
try read-loop head -c 1 loop
if [ -z "$PRIVILEGED" ]; then
  try write-loop sh -c 'echo x > loop'
  try write-kmsg sh -c 'echo minilet-device-test > kmsg'
fi
try null sh -c 'echo x > /dev/null'
try zero sh -c 'test "$(head -c 4 /dev/zero | wc -c)" = 4'
try urandom sh -c 'test "$(head -c 4 /dev/urandom | wc -c)" = 4'
try full sh -c 'echo x > /dev/full'
try tty sh -c ': > /dev/tty'
echo checks=done
exec sleep 3600
"#;

/// `loop_minor`: an unbound loop device, so that a write getting through would hurt nothing.
fn pod(name: &str, privileged: bool, loop_minor: u32) -> String {
    let sc = if privileged {
        "\n    securityContext: {privileged: true}\n    env: [{name: PRIVILEGED, value: '1'}, {name: LOOP_MINOR, value: '@MINOR@'}]"
    } else {
        "\n    env: [{name: LOOP_MINOR, value: '@MINOR@'}]"
    }
    .replace("@MINOR@", &loop_minor.to_string());
    let script = SCRIPT.replace('\n', "\n      ");
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: localhost/busybox:latest\n    imagePullPolicy: IfNotPresent{sc}\n    command: [sh, -c]\n    args:\n    - |{script}\n"
    )
}

/// The container's `name=status:error` lines, once it printed them all.
fn checks(env: &Env, pod: &str) -> (BTreeMap<String, (i32, String)>, ContainerView) {
    let view = env.wait_running(pod, &["c"]);
    let c = view.containers["c"].clone();
    let log = wait_for(&format!("{pod}: checks done"), Duration::from_secs(30), || {
        std::fs::read_to_string(&c.log_path)
            .ok()
            .filter(|l| l.contains("checks=done"))
    });
    let mut out = BTreeMap::new();
    for content in log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)) {
        if let Some((name, rest)) = content.split_once('=')
            && let Some((status, err)) = rest.split_once(':')
            && let Ok(status) = status.parse()
        {
            out.insert(name.to_string(), (status, err.replace('_', " ")));
        }
    }
    (out, c)
}

fn devices_list(env: &Env, cgroup: &str) -> Option<String> {
    env.cgroup_dirs(cgroup)
        .into_iter()
        .find_map(|d| std::fs::read_to_string(d.join("devices.list")).ok())
}

#[test]
fn default_pods_cannot_open_host_devices_privileged_ones_can() {
    if !is_root() {
        return;
    }
    // A loop device with nothing attached (no `loop` directory in sysfs).
    let unbound = (0..8).find(|n| {
        std::path::Path::new(&format!("/sys/block/loop{n}")).is_dir()
            && !std::path::Path::new(&format!("/sys/block/loop{n}/loop")).exists()
    });
    let Some(loop_minor) = unbound else {
        skip("no unbound loop device (/sys/block/loop0-7) to aim at");
        return;
    };
    let env = Env::new("devices");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("plain.yaml", &pod("plain", false, loop_minor));
    env.write_manifest("priv.yaml", &pod("priv", true, loop_minor));

    let (plain, c) = checks(&env, &static_pod_name("plain"));
    let get = |m: &BTreeMap<String, (i32, String)>, k: &str| {
        m.get(k).cloned().unwrap_or_else(|| panic!("{k} missing: {m:?}"))
    };
    // Creating nodes is allowed (as runc allows it); opening them is not.
    assert_eq!(get(&plain, "mknod-loop").0, 0, "{plain:?}");
    assert_eq!(get(&plain, "mknod-kmsg").0, 0, "{plain:?}");
    for denied in ["read-loop", "write-loop", "write-kmsg"] {
        let (status, err) = get(&plain, denied);
        assert_ne!(status, 0, "{denied} must fail: {plain:?}");
        assert!(
            err.contains("Operation not permitted"),
            "{denied}: EPERM expected, got {err:?}"
        );
    }
    for allowed in ["null", "zero", "urandom"] {
        assert_eq!(get(&plain, allowed), (0, String::new()), "{allowed}: {plain:?}");
    }
    // /dev/full opens and refuses the write with ENOSPC; /dev/tty opens and, without a
    // controlling terminal, says ENXIO: the driver answered, the allow-list let it through.
    let (status, err) = get(&plain, "full");
    assert!(status != 0 && err.contains("No space left on device"), "{err:?}");
    let (_, err) = get(&plain, "tty");
    assert!(!err.contains("Operation not permitted"), "/dev/tty must open: {err:?}");

    // The kernel's view: the container's devices cgroup holds exactly the default list.
    if let Some(list) = devices_list(&env, &c.cgroup) {
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(
            lines,
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
                "c 10:200 rwm",
            ]
        );
    } else {
        eprintln!("no v1 devices hierarchy: the v2 device program is checked by the unit test");
    }
    // An exec'd process joins the same cgroup: it is held to the same list.
    let out = cli(
        &env,
        &["exec", &static_pod_name("plain"), "--", "head", "-c", "1", "/tmp/loop"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Operation not permitted") || stdout(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );

    let (privileged, pc) = checks(&env, &static_pod_name("priv"));
    assert_eq!(get(&privileged, "mknod-loop").0, 0, "{privileged:?}");
    // Reading an unbound loop device is harmless; the privileged pod writes to no device.
    assert_eq!(get(&privileged, "read-loop"), (0, String::new()), "{privileged:?}");
    if let Some(list) = devices_list(&env, &pc.cgroup) {
        assert_eq!(list.trim(), "a *:* rwm");
    }
}
