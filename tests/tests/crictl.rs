//! The stock crictl (cri-tools) against the agent's CRI socket, as a user following crictl's
//! documentation drives it: JSON pod and container configs in files, `runp`, `create`,
//! `start`, `ps`/`pods`/`inspect`/`inspectp` (their JSON parsed), `logs`, `update`, `exec`
//! with and without a terminal (a real pty), `attach -it`, `port-forward` with a TCP round
//! trip, `stop`, `rm`, `stopp`, `rmp`. Every claim is checked against the kernel's view
//! (namespace links, cgroup files, /proc).
//!
//! crictl is not packaged by Debian: it comes from `MINILET_CRICTL` (a path) or PATH, and
//! without it every test here is a counted skip saying how to provide it (docs/cri.md).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use minilet_e2e::pty::Pty;
use minilet_e2e::*;
use serde_json::{Value, json};

/// crictl, or a counted skip when this machine has none. Not [`skip`]: no setup step can
/// install it (cri-tools is not in Debian), so CI, which has none, skips these too.
fn crictl_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MINILET_CRICTL") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "MINILET_CRICTL={} is not a file: point it at a crictl binary",
            path.display()
        );
        return Some(path);
    }
    let found = which("crictl");
    if found.is_none() {
        minilet::test_skip::not_for_this_machine(
            "crictl not found: set MINILET_CRICTL=/path/to/crictl or put crictl on PATH \
             (cri-tools v1.32 built from its source, see docs/cri.md; Debian has no package)",
        );
    }
    found
}

/// One agent (loopback-only pods) and crictl pointed at its socket through a config file.
struct Node {
    // Dropped first: the agent stops (removing its pods) before the test's directories go.
    _agent: Agent,
    env: Env,
    crictl: PathBuf,
    config: PathBuf,
}

impl Node {
    fn start(name: &str) -> Option<Node> {
        if !is_root() {
            return None;
        }
        let crictl = crictl_binary()?;
        let env = Env::new(name);
        env.import_image("busybox");
        let agent = Agent::start(&env, &[]);
        let config = env.dir.join("crictl.yaml");
        let endpoint = format!("unix://{}", env.socket.display());
        std::fs::write(
            &config,
            format!("runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\ntimeout: 30\n"),
        )
        .expect("write crictl.yaml");
        Some(Node {
            _agent: agent,
            env,
            crictl,
            config,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.crictl);
        cmd.arg("--config").arg(&self.config).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.crictl.display()))
    }

    /// `crictl ARGS`, insisting on success (the failure names the flow); stdout.
    fn ok(&self, flow: &str, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "crictl {flow}: `crictl {}` failed ({}):\n{}{}",
            args.join(" "),
            o.status,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// `crictl ARGS` whose output is JSON.
    fn json(&self, flow: &str, args: &[&str]) -> Value {
        let out = self.ok(flow, args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("crictl {flow}: output is not JSON ({e}):\n{out}"))
    }

    /// Write a config file into the test's directory, as a user would.
    fn config_file(&self, name: &str, config: &Value) -> PathBuf {
        let path = self.env.dir.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(config).expect("config JSON")).expect("write a crictl config");
        path
    }

    /// `crictl runp pod.json`: the sandbox's ID and its config file.
    fn runp(&self, name: &str, hostname: &str) -> (String, PathBuf) {
        let pod = self.config_file(
            &format!("pod-{name}.json"),
            &json!({
                "metadata": {"name": name, "namespace": "crictl", "uid": format!("uid-{name}"), "attempt": 0},
                "hostname": hostname,
                "log_directory": self.env.dir.join("pod-logs").join(name),
                "linux": {}
            }),
        );
        let id = self.ok("runp", &["runp", path_str(&pod)]).trim().to_string();
        assert_eq!(id.len(), 64, "crictl runp: printed {id:?}, not a sandbox ID");
        (id, pod)
    }

    /// `crictl create POD ctr.json pod.json`: the container's ID.
    fn create(&self, pod: &str, pod_config: &Path, name: &str, config: Value) -> String {
        let mut config = config;
        config["metadata"] = json!({"name": name});
        config["image"] = json!({"image": "localhost/busybox:latest"});
        config["log_path"] = json!(format!("{name}.log"));
        let file = self.config_file(&format!("ctr-{name}.json"), &config);
        let id = self
            .ok("create", &["create", pod, path_str(&file), path_str(pod_config)])
            .trim()
            .to_string();
        assert_eq!(id.len(), 64, "crictl create: printed {id:?}, not a container ID");
        id
    }

    /// `crictl create` then `crictl start`: the container's ID and its PID (from `inspect`).
    fn run_container(&self, pod: &str, pod_config: &Path, name: &str, config: Value) -> (String, i32) {
        let id = self.create(pod, pod_config, name, config);
        self.ok("start", &["start", &id]);
        let c = self.inspect(&id);
        assert_eq!(c["status"]["state"], "CONTAINER_RUNNING", "crictl start: {c}");
        let pid = info_pid(&c, "inspect");
        assert!(alive(pid), "crictl start: container process {pid} is not alive");
        (id, pid)
    }

    fn inspect(&self, id: &str) -> Value {
        self.json("inspect", &["inspect", "-o", "json", id])
    }

    fn inspectp(&self, id: &str) -> Value {
        self.json("inspectp", &["inspectp", "-o", "json", id])
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("the test's paths are UTF-8")
}

/// The process ID in `crictl inspect`'s or `inspectp`'s verbose info.
fn info_pid(v: &Value, flow: &str) -> i32 {
    v["info"]["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_else(|| panic!("crictl {flow}: no pid in its info: {v}"))
}

/// A busybox shell script as a container's command.
fn script(s: &str) -> Value {
    json!({"command": ["sh", "-c", s], "linux": {}})
}

#[test]
fn runp_create_start_update_stop_rm_stopp_rmp() {
    let Some(n) = Node::start("crictl-life") else {
        return;
    };

    // runp: a pause in namespaces of its own, READY in pods and inspectp.
    let (pod, pod_config) = n.runp("life", "life-host");
    let sandbox = n.inspectp(&pod);
    assert_eq!(
        sandbox["status"]["state"], "SANDBOX_READY",
        "crictl inspectp: {sandbox}"
    );
    assert_eq!(sandbox["status"]["metadata"]["name"], "life");
    let pause = info_pid(&sandbox, "inspectp");
    assert!(alive(pause), "crictl runp: pause {pause} is not alive");
    let me = std::process::id() as i32;
    for kind in ["net", "ipc", "uts", "pid"] {
        assert_ne!(
            ns(pause, kind),
            ns(me, kind),
            "crictl runp: the pause has its own {kind} namespace"
        );
    }
    let listed = n.json("pods", &["pods", "--name", "life", "-o", "json"]);
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "crictl pods: {listed}");
    assert_eq!(
        (&items[0]["id"], &items[0]["state"]),
        (&json!(pod), &json!("SANDBOX_READY"))
    );
    let pod_cgroups = process_cgroup_dirs(pause);
    assert!(
        !pod_cgroups.is_empty(),
        "crictl runp: the pause is in no cgroup of the agent's"
    );
    let sandbox_dir = PathBuf::from(sandbox["info"]["dir"].as_str().expect("inspectp info.dir"));
    assert!(sandbox_dir.is_dir(), "{}", sandbox_dir.display());

    // create: CREATED, nothing running.
    let ctr = n.create(
        &pod,
        &pod_config,
        "main",
        script("trap '' TERM; echo hello from crictl; hostname; exec sleep 1000"),
    );
    let ps = n.json("ps", &["ps", "-a", "--id", &ctr, "-o", "json"]);
    assert_eq!(
        ps["containers"][0]["state"], "CONTAINER_CREATED",
        "crictl ps after create: {ps}"
    );
    assert!(
        n.inspect(&ctr)["info"]["pid"].is_null(),
        "crictl create: no process yet"
    );

    // start: RUNNING, in the pause's namespaces, in a cgroup of its own.
    n.ok("start", &["start", &ctr]);
    let c = n.inspect(&ctr);
    assert_eq!(
        c["status"]["state"], "CONTAINER_RUNNING",
        "crictl inspect after start: {c}"
    );
    let pid = info_pid(&c, "inspect");
    for kind in ["net", "ipc", "uts", "pid"] {
        assert_eq!(
            ns(pid, kind),
            ns(pause, kind),
            "crictl start: the container joins the pause's {kind} namespace"
        );
    }
    let ctr_cgroups = process_cgroup_dirs(pid);
    assert!(
        !ctr_cgroups.is_empty() && ctr_cgroups.iter().all(|d| d.ends_with(&ctr)),
        "crictl start: the container's own cgroup: {ctr_cgroups:?}"
    );
    let ps = n.json("ps", &["ps", "--pod", &pod, "-o", "json"]);
    assert_eq!(ps["containers"].as_array().map(Vec::len), Some(1), "crictl ps: {ps}");
    assert_eq!(ps["containers"][0]["id"], json!(ctr), "crictl ps: {ps}");

    // logs: what it printed, with the pod's hostname.
    wait_for(
        "crictl logs to show the container's output",
        Duration::from_secs(10),
        || {
            let out = stdout(&n.run(&["logs", &ctr]));
            (out == "hello from crictl\nlife-host\n").then_some(())
        },
    );

    // update: the kernel's memory limit for the container's cgroup, now (96 MiB, a whole
    // number of pages, so v1 keeps it as given).
    let limit = (96u64 << 20).to_string();
    n.ok("update", &["update", "--memory", &limit, &ctr]);
    let set = process_cgroup_file(pid, "memory.max").or_else(|| process_cgroup_file(pid, "memory.limit_in_bytes"));
    assert_eq!(
        set.as_ref(),
        Some(&limit),
        "crictl update --memory: the container's cgroup"
    );
    // And inspect reports it (protobuf's JSON writes an int64 as a string).
    let c = n.inspect(&ctr);
    let reported = &c["status"]["resources"]["linux"]["memoryLimitInBytes"];
    assert!(
        reported.as_str() == Some(limit.as_str()) || reported.as_u64() == Some(96 << 20),
        "crictl inspect after update: {c}"
    );

    // stop: it ignores SIGTERM, so the timeout ends in SIGKILL; EXITED with 137.
    n.ok("stop", &["stop", "--timeout", "1", &ctr]);
    let c = n.inspect(&ctr);
    assert_eq!(
        (&c["status"]["state"], &c["status"]["exitCode"]),
        (&json!("CONTAINER_EXITED"), &json!(137)),
        "crictl stop: {c}"
    );
    wait_for(
        "the stopped container's process to be gone",
        Duration::from_secs(10),
        || (!alive(pid)).then_some(()),
    );

    // rm: not listed, not inspectable, its cgroup gone.
    n.ok("rm", &["rm", &ctr]);
    let o = n.run(&["inspect", &ctr]);
    assert!(
        !o.status.success() && stderr(&o).contains("not found"),
        "crictl inspect after rm: {o:?}"
    );
    let ps = n.json("ps", &["ps", "-a", "-o", "json"]);
    assert_eq!(
        ps["containers"].as_array().map(Vec::len),
        Some(0),
        "crictl ps -a after rm: {ps}"
    );
    let left: Vec<_> = ctr_cgroups.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "crictl rm: the container's cgroups are left: {left:?}");

    // stopp: NOTREADY, the pause gone.
    n.ok("stopp", &["stopp", &pod]);
    let sandbox = n.inspectp(&pod);
    assert_eq!(
        sandbox["status"]["state"], "SANDBOX_NOTREADY",
        "crictl stopp: {sandbox}"
    );
    wait_for("the pause to be gone after stopp", Duration::from_secs(10), || {
        (!alive(pause)).then_some(())
    });

    // rmp: nothing of the pod is left: not listed, its directory and cgroups (the pod's
    // level included) gone.
    n.ok("rmp", &["rmp", &pod]);
    let listed = n.json("pods", &["pods", "-o", "json"]);
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "crictl pods after rmp: {listed}"
    );
    assert!(!sandbox_dir.exists(), "crictl rmp: {} is left", sandbox_dir.display());
    let left: Vec<_> = pod_cgroups
        .iter()
        .flat_map(|d| [d.as_path(), d.parent().unwrap_or(d)])
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "crictl rmp: the pod's cgroups are left: {left:?}");
}

#[test]
fn exec_without_and_with_a_terminal() {
    let Some(n) = Node::start("crictl-exec") else {
        return;
    };
    let (pod, pod_config) = n.runp("shell", "exec-host");
    let (ctr, main) = n.run_container(&pod, &pod_config, "main", script("exec sleep 1000"));

    // Without a terminal: stdout and stderr apart, and a non-zero exit code reported.
    let o = n.run(&["exec", &ctr, "sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(stdout(&o), "out\n", "crictl exec: stdout {o:?}");
    assert!(
        !o.status.success() && stderr(&o).contains("err\n") && stderr(&o).contains("exit code 5"),
        "crictl exec: stderr and the exit code 5: {o:?}"
    );
    let hostname = n.ok("exec", &["exec", &ctr, "hostname"]);
    assert_eq!(hostname, "exec-host\n", "crictl exec hostname");

    // With a terminal: an interactive shell on a pty of the container's own.
    let mut term = Pty::spawn(n.command(&["exec", "-it", &ctr, "sh"]));
    term.type_text("tty; hostname; stty size; echo pid=$$\n");
    let (tty, shell_pid) = term.read_until(
        "the shell's tty, hostname, size and PID",
        Duration::from_secs(20),
        |t| {
            let lines: Vec<&str> = t.lines().map(str::trim).collect();
            let tty = lines.iter().find(|l| l.starts_with("/dev/pts/"))?;
            lines.contains(&"exec-host").then_some(())?;
            // The size of crictl's terminal (Pty's 80x24) is the container terminal's.
            lines.contains(&"24 80").then_some(())?;
            let pid: i32 = lines.iter().find_map(|l| l.strip_prefix("pid=")?.parse().ok())?;
            Some((tty.to_string(), pid))
        },
    );
    // The kernel's view: that shell (its PID in the pod's PID namespace) is in the
    // container's cgroup and namespaces, with that terminal as its stdin.
    let host_pid = process_cgroup_dirs(main)
        .iter()
        .flat_map(|d| file_lines(&d.join("cgroup.procs")))
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| ns_pids(*p).last() == Some(&shell_pid))
        .unwrap_or_else(|| panic!("crictl exec -it: no process with PID {shell_pid} in the container's cgroup"));
    for kind in ["pid", "mnt", "net", "uts"] {
        assert_eq!(
            ns(host_pid, kind),
            ns(main, kind),
            "crictl exec -it: the shell's {kind} namespace"
        );
    }
    let stdin = std::fs::read_link(format!("/proc/{host_pid}/fd/0")).expect("the shell's stdin");
    assert_eq!(
        stdin,
        Path::new(&tty),
        "crictl exec -it: the shell's stdin is the terminal `tty` named"
    );
    term.type_text("exit 3\n");
    let status = term.finish(Duration::from_secs(20));
    assert!(
        !status.success() && term.text().contains("exit code 3"),
        "crictl exec -it: exit 3 reported ({status}); the terminal showed:\n{}",
        term.text()
    );
    wait_for("the exec'd shell to be gone", Duration::from_secs(10), || {
        (!alive(host_pid)).then_some(())
    });
}

#[test]
fn attach_to_a_container_with_stdin_and_a_terminal() {
    let Some(n) = Node::start("crictl-attach") else {
        return;
    };
    let (pod, pod_config) = n.runp("att", "attach-host");
    let mut config = script("read line; echo got:$line");
    config["stdin"] = json!(true);
    config["stdin_once"] = json!(true);
    config["tty"] = json!(true);
    let (ctr, pid) = n.run_container(&pod, &pod_config, "reader", config);
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).expect("the container's stdin");
    assert!(
        stdin.starts_with("/dev/pts/"),
        "crictl create with tty: the container's stdin is {}",
        stdin.display()
    );

    let mut term = Pty::spawn(n.command(&["attach", "-i", "-t", &ctr]));
    term.type_text("hi-there\r");
    term.read_until("the container's answer", Duration::from_secs(20), |t| {
        t.contains("got:hi-there").then_some(())
    });
    let status = term.finish(Duration::from_secs(20));
    assert!(
        status.success(),
        "crictl attach: {status}; the terminal showed:\n{}",
        term.text()
    );
    let c = wait_for("the attached container to exit", Duration::from_secs(10), || {
        let c = n.inspect(&ctr);
        (c["status"]["state"] == "CONTAINER_EXITED").then_some(c)
    });
    assert_eq!(c["status"]["exitCode"], 0, "crictl attach: {c}");
    assert!(!alive(pid));
    let logs = n.ok("logs", &["logs", &ctr]);
    assert!(logs.contains("got:hi-there"), "crictl logs after attach: {logs:?}");
}

#[test]
fn port_forward_round_trips_tcp_to_a_server_on_the_pods_loopback() {
    let Some(n) = Node::start("crictl-pf") else {
        return;
    };
    let (pod, pod_config) = n.runp("web", "web-host");
    // The server listens on the pod's loopback only: nothing outside the pod reaches it but
    // through the forward.
    let (_ctr, pid) = n.run_container(
        &pod,
        &pod_config,
        "httpd",
        script("mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www"),
    );
    wait_for("httpd in the pod", Duration::from_secs(20), || {
        let o = in_container(pid, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"]);
        stdout(&o).contains("hello-from-pod").then_some(())
    });

    let mut forward = n
        .command(&["port-forward", &pod, ":8080"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crictl port-forward");
    // Whatever happens below, the forwarder this test started goes with it.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = forward.stdout.take().expect("port-forward's stdout");
    let mut forward = Stop(forward);
    // Kept open while crictl runs: it writes a second line (for ::1), and a closed pipe
    // would kill it.
    let mut lines = BufReader::new(out);
    let port = forwarded_port(&mut lines, 8080);
    for _ in 0..3 {
        let resp = loopback_http_get(port);
        assert!(
            resp.starts_with("HTTP/1.") && resp.contains("hello-from-pod"),
            "crictl port-forward: GET through 127.0.0.1:{port} answered {resp:?}"
        );
    }
    // The kernel's view: a connection held open through the forward is one in the pod's
    // network namespace, to the server's port; it goes when crictl does.
    let _idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the forwarded port");
    wait_for("the forwarded connection in the pod", Duration::from_secs(10), || {
        (established_tcp(pid, 8080) > 0).then_some(())
    });
    let _ = forward.0.kill();
    let _ = forward.0.wait();
    wait_for(
        "no forwarded connection left in the pod",
        Duration::from_secs(10),
        || (established_tcp(pid, 8080) == 0).then_some(()),
    );
}
