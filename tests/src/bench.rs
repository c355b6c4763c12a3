//! Shared by the benchmark binaries: pods that announce they run through a FIFO (so start-up
//! is observed without polling) and latency statistics.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A one-container pod whose container's first act is `echo up` into `fifo` (a hostPath).
pub fn fifo_pod(name: &str, image: &str, policy: &str, fifo: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 0
  volumes: [{{name: ready, hostPath: {{path: {}}}}}]
  containers:
  - name: c
    image: {image}
    imagePullPolicy: {policy}
    command: ["sh", "-c", "echo up > /ready; exec sleep 3600"]
    volumeMounts: [{{name: ready, mountPath: /ready}}]
"#,
        fifo.display()
    )
}

/// Block until one line arrives on the FIFO (opened before the writer exists).
pub fn wait_fifo(fifo: &Path) -> std::io::Result<()> {
    // Opening read-only blocks until a writer appears; O_NONBLOCK + poll keeps a timeout.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 16];
    loop {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&f),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        match f.read(&mut buf) {
            Ok(n) if n > 0 => return Ok(()),
            _ if Instant::now() > deadline => {
                return Err(std::io::Error::other(format!(
                    "nothing on {} after 60s",
                    fifo.display()
                )));
            }
            _ => {}
        }
    }
}

pub fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o666)).expect("mkfifo");
}

pub struct Stats(pub Vec<Duration>);

impl Stats {
    pub fn pct(&self, p: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[idx.min(v.len() - 1)]
    }
    pub fn line(&self, what: &str) -> String {
        let ms = |d: Duration| format!("{:.2}ms", d.as_secs_f64() * 1000.0);
        format!(
            "{what:<34} n={:<3} median {:>9}  p90 {:>9}  p99 {:>9}  max {:>9}",
            self.0.len(),
            ms(self.pct(0.5)),
            ms(self.pct(0.9)),
            ms(self.pct(0.99)),
            ms(self.pct(1.0))
        )
    }
}
