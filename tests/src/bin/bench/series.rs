//! One start/teardown series, the same for every runtime: a pod whose container's first act
//! is a line into a FIFO, started (timed until that line arrives), then torn down (timed
//! until the runtime has reaped it), one pod at a time, with an optional idle gap before
//! each start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use minilet_e2e::bench::{mkfifo, wait_fifo};

use crate::procfs::Mem;

/// A runtime under test: prepares pod `i` (untimed), starts it, tears it down.
pub trait Runtime {
    type Pod;
    /// Untimed work before the start: write the manifest, bundle or YAML for pod `i`.
    fn prepare(&mut self, i: usize, fifo: &Path) -> Result<()>;
    /// The timed start: return once the start has been asked for (the series then waits
    /// for the FIFO line).
    fn start(&mut self, i: usize) -> Result<Self::Pod>;
    /// Untimed, after the FIFO line: let the start command finish (a CLI that is still
    /// tidying up must not overlap the teardown).
    fn settle(&mut self, _pod: &mut Self::Pod) -> Result<()> {
        Ok(())
    }
    /// Untimed: the memory of this pod's runtime processes, by role.
    fn memory(&mut self, _pod: &Self::Pod) -> Vec<(&'static str, Mem)> {
        Vec::new()
    }
    /// The timed teardown: return once the pod's processes are reaped.
    fn teardown(&mut self, pod: Self::Pod) -> Result<()>;
}

/// What one series measured.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Series {
    pub start: Vec<Duration>,
    pub teardown: Vec<Duration>,
    /// (role, memory) of each helper process of the pods of [`hold`].
    pub memory: Vec<(String, Mem)>,
}

/// Run `n` pods (numbered from `first`) through `rt`; `gap` of idle before each start.
pub fn run<R: Runtime>(rt: &mut R, dir: &Path, first: usize, n: usize, gap: Duration) -> Result<Series> {
    let mut out = Series::default();
    for i in first..first + n {
        let fifo: PathBuf = dir.join(format!("ready-{i}"));
        mkfifo(&fifo);
        rt.prepare(i, &fifo).with_context(|| format!("prepare pod {i}"))?;
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let t0 = Instant::now();
        let mut pod = rt.start(i).with_context(|| format!("start pod {i}"))?;
        wait_fifo(&fifo).with_context(|| format!("pod {i}: container did not report running"))?;
        out.start.push(t0.elapsed());
        rt.settle(&mut pod)?;
        let t1 = Instant::now();
        rt.teardown(pod).with_context(|| format!("tear down pod {i}"))?;
        out.teardown.push(t1.elapsed());
        let _ = std::fs::remove_file(&fifo);
    }
    Ok(out)
}

/// Start `n` pods one after another and keep them all running, then sample the memory of
/// each one's helper processes (with several pods up, a binary's text shared among them
/// counts as shared, as on a real node), then tear them all down.
pub fn hold<R: Runtime>(rt: &mut R, dir: &Path, first: usize, n: usize) -> Result<Series> {
    let mut out = Series::default();
    let mut pods = Vec::new();
    let mut failed = None;
    for i in first..first + n {
        let fifo: PathBuf = dir.join(format!("ready-{i}"));
        mkfifo(&fifo);
        let started = rt.prepare(i, &fifo).and_then(|()| {
            let t0 = Instant::now();
            let mut pod = rt.start(i)?;
            let up = wait_fifo(&fifo).context("container did not report running");
            let elapsed = t0.elapsed();
            // Settle even on failure: a started pod must be torn down below.
            let settled = rt.settle(&mut pod);
            pods.push(pod);
            up?;
            settled?;
            out.start.push(elapsed);
            Ok(())
        });
        let _ = std::fs::remove_file(&fifo);
        if let Err(e) = started {
            failed = Some(e.context(format!("pod {i}")));
            break;
        }
    }
    for pod in &pods {
        out.memory
            .extend(rt.memory(pod).into_iter().map(|(role, m)| (role.to_string(), m)));
    }
    for pod in pods {
        let t0 = Instant::now();
        rt.teardown(pod)?;
        out.teardown.push(t0.elapsed());
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Poll `done` every half millisecond (a measurement, not a verdict) up to `limit`.
pub fn poll_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let t0 = Instant::now();
    while !done() {
        if t0.elapsed() > limit {
            anyhow::bail!("{what}: not after {limit:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}
