//! A full log filesystem: the container's output is held back (never torn, never silently
//! dropped), the loss at exit is counted and reported, and the monitor's own diagnostics stay
//! small. The log directory is a small tmpfs mounted by the test, so "full" is real ENOSPC
//! from the kernel.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use minilet_e2e::*;

/// Bound on `monitor.log` after minutes of failing writes (it used to grow by a line per
/// failed write: megabytes in seconds).
const MONITOR_LOG_BOUND: u64 = 64 * 1024;

/// A tmpfs mounted on a directory of the test, unmounted when dropped (even on failure).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        use nix::mount::{MsFlags, mount};
        let opts = format!("size={size},mode=0755");
        match mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        ) {
            Ok(()) => Some(Tmpfs { dir: dir.to_path_buf() }),
            Err(e) => {
                skip(&format!("cannot mount a tmpfs on {}: {e}", dir.display()));
                None
            }
        }
    }

    fn resize(&self, size: &str) {
        use nix::mount::{MsFlags, mount};
        let opts = format!("size={size}");
        mount(
            None::<&str>,
            &self.dir,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .expect("remount tmpfs with a new size");
    }

    fn available(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs");
        st.blocks_available() as u64 * st.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every line of a log file is a whole CRI record: `(stream, tag, content)` of each.
fn records(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "log ends inside a record: ...{:?}",
        &text[text.len().saturating_sub(200)..]
    );
    text.lines()
        .map(|l| {
            let p: Vec<&str> = l.splitn(4, ' ').collect();
            assert!(
                p.len() == 4
                    && p[0].contains('T')
                    && p[0].ends_with('Z')
                    && ["stdout", "stderr"].contains(&p[1])
                    && ["F", "P"].contains(&p[2]),
                "not a CRI record: {l:?}"
            );
            (p[1].to_string(), p[2].to_string(), p[3].to_string())
        })
        .collect()
}

fn wait_event(env: &Env, pod: &str, reason: &str) -> (String, String, String, i64) {
    wait_for(&format!("a {reason} event on {pod}"), Duration::from_secs(30), || {
        pod_events(env, pod).into_iter().find(|e| e.1 == reason)
    })
}

/// Write syscalls a process has made (the kernel's count).
fn write_syscalls(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("syscw: ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// The first child of `pid` (the container's `seq` under its `sh`).
fn child_of(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn assert_small(monitor_log: &Path) {
    let len = std::fs::metadata(monitor_log).map(|m| m.len()).unwrap_or(0);
    let text = std::fs::read_to_string(monitor_log).unwrap_or_default();
    assert!(
        len < MONITOR_LOG_BOUND,
        "monitor.log is {len} bytes:\n{}",
        &text[..text.len().min(2000)]
    );
}

/// Fill the tmpfs with a file of the test's, leaving `leave` bytes (whole pages) free.
fn fill(tmpfs: &Tmpfs, leave: u64) {
    let path = tmpfs.dir.join("filler");
    let mut filler = std::fs::File::create(&path).expect("create filler");
    let page = [b'f'; 4096];
    while filler.write_all(&page).is_ok() {}
    let _ = filler.write_all(&[b'f'; 1]);
    assert_eq!(tmpfs.available(), 0, "the filler fills the tmpfs");
    let len = std::fs::metadata(&path).expect("filler").len();
    filler.set_len(len - leave).expect("shrink filler");
    assert_eq!(tmpfs.available(), leave);
}

#[test]
fn a_full_log_disk_blocks_the_container_and_loses_nothing() {
    if !is_root() {
        return;
    }
    let env = Env::new("logfull");
    let Some(tmpfs) = Tmpfs::mount(&env.logs, "1m") else {
        return;
    };
    env.import_image("busybox");
    let agent = Agent::start(&env, &[]);
    const N: usize = 60_000; // ~2.7 MB of records: well past the 1 MiB tmpfs
    env.write_manifest(
        "logfull.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: logfull}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "seq 1 {N}; echo done; exec sleep 3600"]
"#
        ),
    );
    let pod = env.wait_running(&static_pod_name("logfull"), &["app"]);
    let c = pod.containers["app"].clone();
    let monitor = c.monitor_pid.expect("monitor pid");

    // The disk fills, and then the container is held: `seq` sleeps in a pipe write (the
    // kernel's view) because the monitor stopped reading.
    let seq = wait_for("seq blocked on a full log disk", Duration::from_secs(30), || {
        let seq = child_of(c.pid?)?;
        let wchan = std::fs::read_to_string(format!("/proc/{seq}/wchan")).ok()?;
        (tmpfs.available() == 0 && wchan.contains("pipe_write")).then_some(seq)
    });
    let (kind, _, message, _) = wait_event(&env, &static_pod_name("logfull"), "LogWriteFailed");
    assert_eq!(kind, "Warning");
    assert!(message.contains("No space left on device"), "{message}");
    assert!(message.contains("container app"), "{message}");

    // The monitor keeps retrying (ten more write attempts, counted by the kernel) without a
    // diagnostic line per attempt, and the file never ends in a torn record.
    let before = write_syscalls(monitor);
    wait_for("ten retries by the monitor", Duration::from_secs(30), || {
        (write_syscalls(monitor) >= before + 10).then_some(())
    });
    let held = records(&c.log_path);
    assert!(!held.is_empty(), "nothing was written before the disk filled");
    for (i, (stream, tag, content)) in held.iter().enumerate() {
        assert_eq!((stream.as_str(), tag.as_str()), ("stdout", "F"));
        assert_eq!(content, &(i + 1).to_string(), "lines in order, none missing");
    }
    assert!(std::fs::read_to_string(format!("/proc/{seq}/wchan")).is_ok_and(|w| w.contains("pipe_write")));
    let monitor_log = c.dir.join("monitor.log");
    let diag = std::fs::read_to_string(&monitor_log).unwrap_or_default();
    assert!(
        diag.lines().count() <= 3,
        "one line for the failure, not one per write:\n{diag}"
    );
    assert_small(&monitor_log);

    // Space returns: everything the container wrote arrives, in order, once.
    tmpfs.resize("16m");
    wait_for("the rest of the output", Duration::from_secs(60), || {
        records(&c.log_path).last().is_some_and(|r| r.2 == "done").then_some(())
    });
    let all = records(&c.log_path);
    let contents: Vec<&str> = all.iter().map(|r| r.2.as_str()).collect();
    let expected: Vec<String> = (1..=N).map(|i| i.to_string()).chain(["done".to_string()]).collect();
    assert!(contents == expected, "{} records, not 1..={N} and done", contents.len());
    let (kind, _, message, _) = wait_event(&env, &static_pod_name("logfull"), "LogWriteResumed");
    assert_eq!(kind, "Normal");
    assert!(message.contains("no output was lost"), "{message}");
    let describe = ok(&env, &["describe", "pod", &static_pod_name("logfull")]);
    assert!(
        describe.contains("LogWriteFailed") && describe.contains("LogWriteResumed"),
        "{describe}"
    );
    assert_small(&monitor_log);
    drop(agent);
}

#[test]
fn output_left_when_the_container_exits_on_a_full_disk_is_counted_and_reported() {
    if !is_root() {
        return;
    }
    let env = Env::new("logloss");
    let Some(tmpfs) = Tmpfs::mount(&env.logs, "256k") else {
        return;
    };
    fill(&tmpfs, 0);
    env.import_image("busybox");
    let agent = Agent::start(&env, &[]);
    const N: usize = 5000; // ~24 KB: fits in the pipe, so the container exits at once
    env.write_manifest(
        "logloss.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: logloss}}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["seq", "1", "{N}"]
"#
        ),
    );
    let pod = wait_for("the container's exit recorded", Duration::from_secs(60), || {
        env.pod(&static_pod_name("logloss"))
            .filter(|p| p.containers.get("app").is_some_and(|c| c.exit.is_some()))
    });
    let c = &pod.containers["app"];
    let exit = c.exit.as_ref().unwrap();
    assert_eq!(
        (exit["exit_code"].as_i64(), exit["reason"].as_str()),
        (Some(0), Some("Completed"))
    );

    // What is in the log is whole, in order, a prefix of the output; the rest is reported
    // with its exact size.
    let logged = records(&c.log_path);
    let kept: Vec<&(String, String, String)> = logged.iter().filter(|r| !r.2.starts_with("[minilet]")).collect();
    for (i, r) in kept.iter().enumerate() {
        assert_eq!(r.2, (i + 1).to_string(), "lines in order");
    }
    let k = kept.len();
    let lost_lines = N - k;
    let lost_bytes: usize = (k + 1..=N).map(|i| i.to_string().len() + 1).sum();
    let (kind, _, message, _) = wait_event(&env, &static_pod_name("logloss"), "LogOutputLost");
    assert_eq!(kind, "Warning");
    let expect = format!("{lost_lines} lines ({lost_bytes} bytes) of output of container app");
    assert!(message.starts_with(&expect), "expected {expect:?} in {message}");
    assert!(message.contains("No space left on device"), "{message}");
    // A marker, if the full disk took one, says the same.
    if let Some(marker) = logged.iter().find(|r| r.2.starts_with("[minilet]")) {
        assert!(
            marker.2.contains(&format!("{lost_lines} lines ({lost_bytes} bytes)")),
            "{marker:?}"
        );
    }
    let failed = wait_event(&env, &static_pod_name("logloss"), "LogWriteFailed");
    assert_eq!(failed.0, "Warning");
    assert_small(&c.dir.join("monitor.log"));
    drop(agent);
}

#[test]
fn a_record_too_big_for_the_space_left_is_given_up_behind_a_marker() {
    if !is_root() {
        return;
    }
    let env = Env::new("logmark");
    let Some(tmpfs) = Tmpfs::mount(&env.logs, "256k") else {
        return;
    };
    // Room for short lines and a marker, not for a 16 KiB piece of a long line.
    fill(&tmpfs, 8192);
    env.import_image("busybox");
    let agent = Agent::start(&env, &[]);
    env.write_manifest(
        "logmark.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: logmark}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo before; head -c 20000 /dev/zero | tr '\\0' x; echo; echo after"]
"#,
    );
    let pod = wait_for("the container's exit recorded", Duration::from_secs(60), || {
        env.pod(&static_pod_name("logmark"))
            .filter(|p| p.containers.get("app").is_some_and(|c| c.exit.is_some()))
    });
    let c = &pod.containers["app"];
    // The long line (a 16 KiB piece and the rest) and `after` are gone; the log says so
    // right where they were, and ends on a whole record.
    let logged = records(&c.log_path);
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(logged[0], ("stdout".into(), "F".into(), "before".into()));
    let marker = &logged[1];
    assert_eq!((marker.0.as_str(), marker.1.as_str()), ("stderr", "F"));
    assert!(
        marker.2.starts_with("[minilet] 3 lines (20007 bytes) of output from ")
            && marker
                .2
                .contains("were lost: the log could not be written: No space left on device"),
        "{marker:?}"
    );
    let (kind, _, message, _) = wait_event(&env, &static_pod_name("logmark"), "LogOutputLost");
    assert_eq!(kind, "Warning");
    assert!(
        message.starts_with("3 lines (20007 bytes) of output of container app"),
        "{message}"
    );
    assert!(message.ends_with("a record in the log marks the gap"), "{message}");
    assert_small(&c.dir.join("monitor.log"));
    drop(agent);
}
