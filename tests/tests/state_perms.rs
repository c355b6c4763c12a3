//! The state and log directories against a local unprivileged user: image layers and
//! container writable layers keep their setuid binaries (containers need them), so the only
//! thing between a local user and root is that nobody but root can reach them. Secrets
//! (env values in spec.json and pod.json) and logs must not be readable either. And a
//! container running as a non-root user must still work with all of that closed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use minilet_e2e::oci::{LayerTar, Layout};
use minilet_e2e::*;

/// A throwaway system user, deleted when dropped (also when the test fails).
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TempUser {
    fn create() -> Option<TempUser> {
        let name = format!("mlt{:08x}", rand_suffix());
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
            ])
            .arg(&name)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("useradd failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").arg(flag).arg(&name).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        let mut user = TempUser {
            uid: 0,
            gid: 0,
            name: name.clone(),
        };
        let (Some(uid), Some(gid)) = (id("-u"), id("-g")) else {
            return None; // dropped: userdel
        };
        (user.uid, user.gid) = (uid, gid);
        Some(user)
    }

    /// Run `args` as this user, with no supplementary groups and no capabilities. setpriv
    /// keeps root's capabilities until its own exec, so it execs a shell that execs `args`:
    /// the lookup of `args[0]` is then the user's.
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .args(["--", "/bin/sh", "-c", "exec \"$@\"", "sh"])
            .args(args)
            .current_dir("/")
            .output()
            .expect("run setpriv")
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let ok = Command::new("userdel")
            .arg(&self.name)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("could not remove test user {}", self.name);
        }
    }
}

fn rand_suffix() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("random bytes");
    u32::from_ne_bytes(b)
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

fn find_file(dir: &Path, rel: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path().join(rel))
        .find(|p| p.is_file())
}

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: perms}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: localhost/suid:latest
    imagePullPolicy: IfNotPresent
    env: [{name: API_TOKEN, value: s3cret-token-value}]
    command: [sh, -c, "cp /bin/busybox /tmp/busybox-suid && chmod 4755 /tmp/busybox-suid && echo written-by-the-container && exec sleep 3600"]
"#;

#[test]
fn other_users_reach_no_setuid_binary_secret_or_log() {
    if !is_root() {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip("setpriv (util-linux) is not installed");
        return;
    }
    let Some(user) = TempUser::create() else {
        skip("cannot create a throwaway user with useradd");
        return;
    };
    let env = Env::new("perms");
    env.import_image("busybox");

    // An image whose layer holds a setuid-root copy of a static busybox.
    let busybox = std::fs::read("/bin/busybox").ok().filter(|b| b.starts_with(b"\x7fELF"));
    let Some(busybox) = busybox else {
        skip("no /bin/busybox on the host to build the setuid image from");
        return;
    };
    let mut layout = Layout::from(&workspace().join("hack/.images/busybox"), &env.dir.join("layout"));
    let base = layout.base_manifest();
    let layer = LayerTar::new()
        .dir("opt/")
        .file_mode("opt/busybox-suid", &busybox, 0o4755)
        .finish();
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let desc = layout.image(Some(&base), vec![layer], arch);
    layout.tag(&desc, "suid");
    let out = Command::new(minilet())
        .args(["image", "import"])
        .arg(&layout.dir)
        .args(["--name", "localhost/suid:latest", "--root"])
        .arg(&env.root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Control: the user runs the same setuid binary where it can reach it (busybox drops
    // the privilege for `id` itself). What is refused below is refused because of where the
    // binary is, not because of the user or setpriv.
    let control_dir = env.dir.join("control");
    std::fs::create_dir_all(&control_dir).unwrap();
    for d in [&env.dir, &control_dir] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let control = control_dir.join("busybox-suid");
    std::fs::write(&control, &busybox).unwrap();
    std::fs::set_permissions(&control, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let out = user.run(&[control.to_str().unwrap(), "id", "-u"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), user.uid.to_string());
    std::fs::remove_file(&control).unwrap();

    let _agent = Agent::start(&env, &[]);
    env.write_manifest("perms.yaml", POD);
    let pod = env.wait_running(&static_pod_name("perms"), &["c"]);
    let c = pod.containers["c"].clone();
    wait_for(
        "the container to write its setuid binary",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&c.log_path)
                .ok()
                .filter(|l| l.contains("written-by-the-container"))
        },
    );

    // The targets exist, setuid root, as root sees them.
    let layer_suid = find_file(&env.root.join("images/layers"), "opt/busybox-suid").expect("setuid binary in a layer");
    let upper_suid = c.dir.join("upper/tmp/busybox-suid");
    for p in [&layer_suid, &upper_suid] {
        assert_eq!(mode(p), 0o4755, "{}", p.display());
        assert_eq!(std::fs::metadata(p).unwrap().uid(), 0);
    }
    let spec = c.dir.join("spec.json");
    let record = pod.dir.join("pod.json");
    assert!(std::fs::read_to_string(&spec).unwrap().contains("s3cret-token-value"));

    // The kernel's answer to the user: no way in.
    for target in [&layer_suid, &upper_suid] {
        let out = user.run(&[target.to_str().unwrap(), "id", "-u"]);
        assert!(!out.status.success(), "{} ran: {}", target.display(), stdout(&out));
        assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
        assert_ne!(stdout(&out).trim(), "0");
    }
    for secret in [&spec, &record, &c.log_path] {
        let out = user.run(&["cat", secret.to_str().unwrap()]);
        assert!(!out.status.success(), "{} readable: {}", secret.display(), stdout(&out));
        assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
    }

    // The modes, as the runtimes and the kubelet set them.
    assert_eq!(mode(&env.root), 0o700, "Env made the root 0755: the agent tightened it");
    for d in [
        env.root.join("pods"),
        env.root.join("images"),
        pod.dir.clone(),
        c.dir.clone(),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    assert_eq!(
        mode(&c.dir.join("upper")),
        0o755,
        "the container's / stays walkable inside"
    );
    assert_eq!(mode(&spec), 0o600);
    assert_eq!(mode(&record), 0o600);
    assert_eq!(mode(&c.dir.join("container.json")), 0o600);
    assert_eq!(mode(&c.log_path), 0o640);
    let log_dir = c.log_path.parent().unwrap();
    assert_eq!(mode(log_dir), 0o755);
    assert_eq!(mode(log_dir.parent().unwrap()), 0o755);
    assert_eq!(
        mode(&pod.dir.join("etc-hosts")),
        0o644,
        "bind-mounted into the container"
    );
}

const NON_ROOT_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  volumes:
  - {name: data, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory}}
  containers:
  - name: c
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: data, mountPath: /data}, {name: mem, mountPath: /mem}]
    command: [sh, -c]
    args:
    - |
      set -e
      echo "uid=$(id -u)"
      echo on-disk > /data/f && cat /data/f
      echo in-memory > /mem/f && cat /mem/f
      ls / > /dev/null && cat /etc/hosts /etc/resolv.conf /etc/hostname > /dev/null
      echo x > /tmp/t && cat /tmp/t > /dev/null
      echo nonroot=ok
"#;

#[test]
fn a_non_root_container_still_works_and_writes_its_empty_dir() {
    if !is_root() {
        return;
    }
    let env = Env::new("nonroot");
    env.import_image("busybox");
    let _agent = Agent::start(&env, &[]);
    env.write_manifest("nonroot.yaml", NON_ROOT_POD);
    let pod = wait_for("the container to finish", Duration::from_secs(30), || {
        env.pod(&static_pod_name("nonroot"))
            .filter(|p| p.containers.get("c").is_some_and(|c| c.exit.is_some()))
    });
    let c = &pod.containers["c"];
    let log = std::fs::read_to_string(&c.log_path).unwrap();
    assert_eq!(c.exit.as_ref().unwrap()["exit_code"], 0, "{log}");
    assert!(log.contains("uid=1000") && log.contains("nonroot=ok"), "{log}");
    // The kernel's view: the emptyDir file on the host belongs to uid 1000.
    let f = pod.dir.join("volumes/kubernetes.io~empty-dir/data/f");
    let md = std::fs::metadata(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    assert_eq!(md.uid(), 1000);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "on-disk\n");
    assert_eq!(mode(&pod.dir), 0o700);
}
