//! The probes of running attempts and what their verdicts do to the pod.

use super::Worker;
use crate::pod::probes::{self, ProbeKind};

impl Worker {
    /// A running attempt starts its probes; it is started (and ready) at once for what it
    /// has no probe of.
    pub(in crate::pod) fn start_probes(&mut self, i: usize) {
        let slot = &self.slots[i];
        let has = |k: ProbeKind| k.spec(&slot.spec).is_some();
        let (started, ready) = (!has(ProbeKind::Startup), !has(ProbeKind::Readiness));
        // Regular init containers have no probes (validation refuses them); sidecars do.
        let running = if slot.init && !slot.sidecar() {
            None
        } else {
            let Some(ctx) = self.handler_context(i) else { return };
            probes::Running::start(&slot.spec, ctx, &self.events_tx)
        };
        let slot = &mut self.slots[i];
        slot.started = started;
        slot.probe_ready = ready;
        slot.probes = running;
    }

    /// A probe's verdict changed: readiness is the container's `ready`; a startup pass
    /// releases the other probes; a liveness or startup failure kills the container, which
    /// the restart policy then restarts (with the usual back-off), as the kubelet does.
    pub(super) fn on_probe(&mut self, id: &str, kind: ProbeKind, success: bool) {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.running() && s.current.as_ref().is_some_and(|c| c.id == id))
        else {
            return; // a probe of an attempt that is gone
        };
        match (kind, success) {
            (ProbeKind::Readiness, ready) => self.slots[i].probe_ready = ready,
            (ProbeKind::Startup, true) => {
                self.slots[i].started = true;
                if let Some(p) = &self.slots[i].probes {
                    p.set_started();
                }
            }
            (ProbeKind::Liveness, true) => {}
            (ProbeKind::Liveness | ProbeKind::Startup, false) => self.kill_unhealthy(i, kind),
        }
    }

    /// Kill a container whose liveness or startup probe failed, with the probe's grace period
    /// (or the pod's). Its exit arrives through the container's watcher, as any other.
    fn kill_unhealthy(&mut self, i: usize, kind: ProbeKind) {
        let slot = &mut self.slots[i];
        let grace = probes::Probe::of(kind, &slot.spec).and_then(|p| p.termination_grace);
        slot.probes = None;
        slot.probe_ready = false;
        let name = slot.spec.name.clone();
        let what = if kind == ProbeKind::Liveness {
            "liveness"
        } else {
            "startup"
        };
        self.ctx.events.normal(
            &self.obj.container(&name, slot.init),
            "Killing",
            format!("Container {name} failed {what} probe, will be restarted"),
        );
        let grace = grace.unwrap_or_else(|| self.grace_period());
        tracing::info!(pod = %self.obj.name, container = %name, probe = what, "killing unhealthy container");
        // Its preStop hook runs first, as for any kill; the exit arrives through the watcher.
        if let Some(job) = self.stop_job(i, grace, true) {
            tokio::spawn(job.run());
        }
    }
}
