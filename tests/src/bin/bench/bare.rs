//! The floor: a bare `unshare` of the same namespaces running busybox's `sh` (no image, no
//! cgroup, no runtime). Teardown: SIGKILL to the namespace's init until `unshare` is reaped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::procfs;
use crate::series::{Runtime, poll_until};

pub struct Bare {
    busybox: String,
    fifo: String,
}

impl Bare {
    pub fn new() -> Result<Bare> {
        let busybox = which("busybox").context("busybox not on PATH")?;
        Ok(Bare {
            busybox,
            fifo: String::new(),
        })
    }
}

pub fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .map(|p| p.display().to_string())
}

impl Runtime for Bare {
    type Pod = Child;

    fn prepare(&mut self, _i: usize, fifo: &Path) -> Result<()> {
        self.fifo = fifo.display().to_string();
        Ok(())
    }

    fn start(&mut self, _i: usize) -> Result<Child> {
        Command::new("unshare")
            .args(["--fork", "--pid", "--net", "--ipc", "--uts", "--mount", "--"])
            .arg(&self.busybox)
            .args(["sh", "-c", &format!("echo up > {}; exec sleep 3600", self.fifo)])
            .stdin(Stdio::null())
            // util-linux 2.38's `--fork` warns "sigprocmask unblock failed" on every run here
            // and goes on; the FIFO line is what says the start worked.
            .stderr(Stdio::null())
            .spawn()
            .context("spawn unshare")
    }

    fn teardown(&mut self, mut child: Child) -> Result<()> {
        let pid = child.id() as i32;
        let inner = procfs::children(pid);
        if inner.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("unshare {pid} has no child");
        }
        for p in inner {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
        }
        child.wait().context("wait for unshare")?;
        Ok(())
    }

    fn settle(&mut self, child: &mut Child) -> Result<()> {
        // unshare --fork: the namespace's init appears as its child shortly after fork.
        let pid = child.id() as i32;
        poll_until("unshare's child", Duration::from_secs(10), || {
            !procfs::children(pid).is_empty()
        })
    }
}
