//! The pod's hostPorts without CNI: opened into a new sandbox before any container starts,
//! closed when the sandbox goes (see [`crate::runtime::host_ports`]).

use super::Worker;
use crate::pod::host_ports;
use crate::runtime::spec::SandboxState;

impl Worker {
    /// Open the pod's hostPorts into `sandbox`'s network. An error (a port already taken)
    /// leaves none of them open.
    pub(in crate::pod) async fn open_host_ports(&self, sandbox: &SandboxState) -> Result<(), String> {
        let ports = host_ports::forwarded(self.pod_spec());
        // With a pod network the CNI portmap plugin has the host ports.
        if ports.is_empty() || self.ctx.runtime.network.enabled() {
            return Ok(());
        }
        let dir = self.ctx.runtime.layout.pod_dir(&self.uid);
        let pod = format!("{}/{}", self.record.namespace, self.record.name);
        let forwarder = self
            .ctx
            .runtime
            .start_host_ports(&dir, &pod, sandbox.pause, &ports)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(pod = %self.obj.name, forwarder = forwarder.pid, ports = ports.len(), "host ports open");
        Ok(())
    }

    /// After an agent restart: the forwarder normally outlived the old agent; if it did not
    /// (killed meanwhile), open the ports again. The containers already run, so a port
    /// taken in between is reported, not a reason to stop them.
    pub(in crate::pod) async fn readopt_host_ports(&self, sandbox: &SandboxState) {
        if host_ports::forwarded(self.pod_spec()).is_empty() || self.ctx.runtime.network.enabled() {
            return;
        }
        let dir = self.ctx.runtime.layout.pod_dir(&self.uid);
        if self.ctx.runtime.host_ports_forwarder(&dir).await.is_some() {
            return;
        }
        if let Err(e) = self.open_host_ports(sandbox).await {
            self.ctx
                .events
                .warning(&self.obj, "FailedHostPort", format!("Failed to reopen host ports: {e}"));
        }
    }

    /// Close the pod's hostPorts and wait until they are free.
    pub(in crate::pod) async fn close_host_ports(&self) {
        let dir = self.ctx.runtime.layout.pod_dir(&self.uid);
        if let Err(e) = self.ctx.runtime.stop_host_ports(&dir).await {
            tracing::warn!(pod = %self.obj.name, error = %e, "close host ports");
        }
    }
}
