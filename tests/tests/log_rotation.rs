//! Container log rotation (`--container-log-max-size`, `--container-log-max-files`): a fast
//! writer's log is rotated by its monitor with every line kept exactly once in the files that
//! survive (the newest rotation plain, older ones gzip), never more files than allowed, read
//! back in order by `minilet logs` (also `-f` across rotations, `--tail`, `--previous`), and
//! rotated on while no agent runs.

use std::collections::BTreeSet;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use minilet_e2e::*;

const FLAGS: &[&str] = &[
    "--container-log-max-size",
    "64Ki",
    "--container-log-max-files",
    "3",
    "--backoff-initial",
    "1s",
];
const MAX_FILES: usize = 3;

/// The rotations of the log at `log` on disk: stamp and whether it is compressed, oldest
/// first; a rotation caught while being compressed (plain and .gz at once) counts once.
fn rotations(log: &Path) -> Vec<(String, bool)> {
    let base = log.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let mut out: Vec<(String, bool)> = Vec::new();
    for e in std::fs::read_dir(log.parent().expect("log dir"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().into_string().unwrap_or_default();
        let Some(rest) = name.strip_prefix(&format!("{base}.")) else {
            continue;
        };
        if rest.ends_with(".tmp") {
            continue; // a compression in progress, not a log file yet
        }
        let (stamp, gz) = match rest.strip_suffix(".gz") {
            Some(s) => (s.to_string(), true),
            None => (rest.to_string(), false),
        };
        out.push((stamp, gz));
    }
    out.sort();
    out.dedup_by(|b, a| a.0 == b.0);
    out
}

/// Files making up the log now: the current one (if present) and each rotation.
fn file_count(log: &Path) -> usize {
    rotations(log).len() + usize::from(log.exists())
}

/// The content of every record of the log, rotations (decompressed) first.
fn contents(log: &Path) -> Vec<String> {
    let mut text = String::new();
    for (stamp, gz) in rotations(log) {
        let plain = PathBuf::from(format!("{}.{stamp}", log.display()));
        if gz {
            let f = std::fs::File::open(format!("{}.gz", plain.display())).expect("open rotated .gz");
            flate2::read::GzDecoder::new(f)
                .read_to_string(&mut text)
                .expect("a whole gzip file");
        } else {
            text.push_str(&std::fs::read_to_string(&plain).expect("read rotated file"));
        }
        assert!(text.ends_with('\n'), "rotated file {stamp} ends inside a record");
    }
    text.push_str(&std::fs::read_to_string(log).unwrap_or_default());
    text.lines()
        .map(|l| {
            let p: Vec<&str> = l.splitn(4, ' ').collect();
            assert!(
                p.len() == 4 && p[0].ends_with('Z') && p[1] == "stdout" && p[2] == "F",
                "not a whole CRI record: {l:?}"
            );
            p[3].to_string()
        })
        .collect()
}

/// Watches the log directory until stopped: the most files ever seen for one log.
struct Sampler {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(log: PathBuf) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let (s, m) = (stop.clone(), most.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(file_count(&log), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Sampler {
            stop,
            most,
            thread: Some(thread),
        }
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `minilet logs -f` running in the background, its lines collected.
struct Follower {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    fn start(env: &Env, args: &[&str]) -> Follower {
        let mut child = Command::new(minilet())
            .args(args)
            .env("MINILET_SOCKET", &env.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn minilet logs -f");
        let out = child.stdout.take().expect("stdout pipe");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l.lock().expect("lines").push(line);
            }
        });
        Follower {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn has(&self, line: &str) -> bool {
        self.lines.lock().expect("lines").iter().any(|l| l == line)
    }

    /// Wait for it to end by itself (the container exited); its lines.
    fn finish(mut self, timeout: Duration) -> Vec<String> {
        let status = wait_for("logs -f to end after the container exited", timeout, || {
            self.child.try_wait().ok().flatten()
        });
        assert!(status.success(), "logs -f failed: {status:?}");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        std::mem::take(&mut *self.lines.lock().expect("lines"))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn seq(from: u64, to: u64) -> Vec<String> {
    (from..=to).map(|i| i.to_string()).collect()
}

/// The first attempt writes 500 lines, waits for the test's go-ahead, writes 50 000 more in
/// paced bursts (about 40 rotations at 64Ki) and fails; the second attempt says so and stays.
const ROTATE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: rotate}
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 1
  volumes:
  - name: ctl
    hostPath: {path: CTL, type: Directory}
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: ctl, mountPath: /ctl}]
    command:
    - sh
    - -c
    - |
      if [ -e /ctl/second ]; then echo second attempt; exec sleep 3600; fi
      touch /ctl/second
      seq 1 500
      while [ ! -e /ctl/go ]; do usleep 20000; done
      i=0
      while [ $i -lt 100 ]; do seq $((i*500+501)) $((i*500+1000)); i=$((i+1)); usleep 20000; done
      echo done
      exit 3
"#;
const LAST: u64 = 50_500;

#[test]
fn a_fast_writer_is_rotated_losing_and_repeating_nothing() {
    if !is_root() {
        return;
    }
    let env = Env::new("logrot");
    env.import_image("busybox");
    let ctl = env.dir.join("ctl");
    std::fs::create_dir_all(&ctl).expect("create ctl dir");
    let _agent = Agent::start(&env, FLAGS);
    env.write_manifest("rotate.yaml", &ROTATE.replace("CTL", &ctl.display().to_string()));
    let pod = env.wait_running(&static_pod_name("rotate"), &["app"]);
    let log = pod.containers["app"].log_path.clone();
    wait_agent_ready(&env, &static_pod_name("rotate"));
    wait_for("the first 500 lines in the log", Duration::from_secs(30), || {
        contents(&log).last().is_some_and(|l| l == "500").then_some(())
    });
    assert!(rotations(&log).is_empty(), "no rotation below the limit");

    // A follower that has printed line 500 before the first rotation sees every line after.
    let follower = Follower::start(&env, &["logs", "-f", &static_pod_name("rotate")]);
    wait_for("logs -f printing line 500", Duration::from_secs(30), || {
        follower.has("500").then_some(())
    });
    let sampler = Sampler::start(log.clone());
    std::fs::write(ctl.join("go"), b"").expect("write the go-ahead");
    let followed = follower.finish(Duration::from_secs(120));
    let mut want = seq(1, LAST);
    want.push("done".into());
    if followed != want {
        let first_bad = followed.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "logs -f: {} lines, want {}; first difference at {first_bad:?}: {:?}",
            followed.len(),
            want.len(),
            first_bad.map(|i| (&followed[i], &want[i]))
        );
    }

    // The first attempt failed and the second runs: its log is complete on disk.
    wait_for("the second attempt", Duration::from_secs(60), || {
        let p = env.pod(&static_pod_name("rotate"))?;
        let c = p.containers.get("app")?;
        (c.attempt == 1 && c.pid.is_some()).then_some(())
    });
    let rotated = rotations(&log);
    let most = sampler.most();
    drop(sampler);
    assert!(most <= MAX_FILES, "{most} files of one log at once (max {MAX_FILES})");
    assert_eq!(rotated.len(), MAX_FILES - 1, "{rotated:?}");
    let (newest, older) = rotated.split_last().expect("rotations");
    assert!(!newest.1, "the newest rotation stays uncompressed: {rotated:?}");
    assert!(older.iter().all(|r| r.1), "older rotations are gzip: {rotated:?}");

    // Every surviving line exactly once, in order: a run of the sequence up to the end.
    let on_disk = contents(&log);
    assert_eq!(on_disk.last().map(String::as_str), Some("done"));
    let first: u64 = on_disk[0].parse().expect("a sequence number first");
    assert!(first > 1, "the oldest lines were deleted with the oldest file");
    let mut expect = seq(first, LAST);
    expect.push("done".into());
    assert_eq!(on_disk, expect, "lines lost or repeated on disk");

    // `logs --previous` reads the same across the rotations; --tail counts from the end.
    let printed = ok(&env, &["logs", "--previous", &static_pod_name("rotate")]);
    assert_eq!(printed.lines().collect::<Vec<_>>(), on_disk);
    let tail = ok(&env, &["logs", "--previous", "--tail", "3", &static_pod_name("rotate")]);
    assert_eq!(tail, format!("{}\n{LAST}\ndone\n", LAST - 1));
    let since = ok(
        &env,
        &[
            "logs",
            "--previous",
            "--since",
            "1h",
            "--tail",
            "1",
            &static_pod_name("rotate"),
        ],
    );
    assert_eq!(since, "done\n");
    wait_for("the second attempt's log", Duration::from_secs(30), || {
        (ok(&env, &["logs", &static_pod_name("rotate")]) == "second attempt\n").then_some(())
    });
}

/// An endless writer: bursts of numbered lines.
const ENDLESS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: endless}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'i=0; while true; do seq $((i*1000+1)) $((i*1000+1000)); i=$((i+1)); usleep 50000; done']
"#;

#[test]
fn rotation_goes_on_while_the_agent_is_stopped() {
    if !is_root() {
        return;
    }
    let env = Env::new("logrot-away");
    env.import_image("busybox");
    let mut agent = Agent::start(&env, FLAGS);
    env.write_manifest("endless.yaml", ENDLESS);
    let pod = env.wait_running(&static_pod_name("endless"), &["app"]);
    let log = pod.containers["app"].log_path.clone();
    wait_for("a first rotation", Duration::from_secs(30), || {
        (!rotations(&log).is_empty()).then_some(())
    });

    agent.kill9();
    let sampler = Sampler::start(log.clone());
    let before: BTreeSet<String> = rotations(&log).into_iter().map(|r| r.0).collect();
    // With no agent: the monitor rotates on, compresses, and deletes the oldest.
    // (At most two rotations exist at a time: the new ones are collected as they come.)
    let mut new = BTreeSet::new();
    wait_for("three rotations without an agent", Duration::from_secs(60), || {
        let now = rotations(&log);
        new.extend(now.iter().map(|r| r.0.clone()).filter(|s| !before.contains(s)));
        (new.len() >= 3 && now.iter().any(|r| r.1)).then_some(())
    });
    assert!(alive(pod.pid("app")), "the writer still runs");
    let most = sampler.most();
    drop(sampler);
    assert!(most <= MAX_FILES, "{most} files of one log at once (max {MAX_FILES})");
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert!(size < 4 * 64 * 1024, "the current file is {size} bytes");

    // The next agent takes the same container back.
    let _agent = Agent::start(&env, FLAGS);
    let again = env.wait_running(&static_pod_name("endless"), &["app"]);
    assert_eq!(again.pid("app"), pod.pid("app"));
}

#[test]
fn bad_rotation_flags_are_refused_with_the_flag_named() {
    for (flag, value, says) in [
        ("--container-log-max-size", "1Ki", "at least 16Ki"),
        ("--container-log-max-size", "lots", "quantities must match"),
        ("--container-log-max-files", "1", "at least 2"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(minilet())
            .arg("agent")
            .arg("--manifests")
            .arg(dir.path().join("m"))
            .arg("--root")
            .arg(dir.path().join("r"))
            .arg("--log-dir")
            .arg(dir.path().join("l"))
            .args([flag, value])
            .output()
            .expect("run minilet agent");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} accepted");
        assert!(err.contains(flag) && err.contains(says), "{flag} {value}: {err}");
        assert!(
            std::fs::read_dir(dir.path()).expect("temp dir").next().is_none(),
            "nothing created before the flags are checked"
        );
    }
}
