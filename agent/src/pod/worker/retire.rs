//! What the pod no longer needs goes: dead container attempts (RemoveContainer, then their
//! log, as the kubelet's container garbage collection removes both) and the stopped
//! sandboxes that held them, once no attempt the pod still shows lives in one.

use std::collections::HashSet;

use minilet_proto::runtime::v1 as cri;

use super::Worker;
use crate::pod::attempt::AttemptStatus;

impl Worker {
    /// Remove a dead attempt: RemoveContainer (its directory and cgroup), then its log file.
    pub(in crate::pod) async fn remove_attempt(&self, attempt: &AttemptStatus) {
        let rt = &self.ctx.runtime;
        let removed = if attempt.is_legacy() {
            // An older agent's attempt, kept in the pod's own directory.
            rt.remove_legacy_attempt(&attempt.dir).await
        } else {
            let req = cri::RemoveContainerRequest {
                container_id: attempt.id.clone(),
            };
            self.ctx.runtime_service().remove_container(req).await.map(|_| ())
        };
        rt.remove_container_log(&attempt.log_path).await;
        if let Err(e) = removed {
            tracing::warn!(pod = %self.obj.name, container = %attempt.name, error = %e, "remove container attempt");
        }
    }

    /// RemovePodSandbox for each earlier sandbox of the pod that holds none of its slots'
    /// current or previous attempts any more.
    pub(in crate::pod) async fn remove_old_sandboxes(&mut self) {
        if self.record.old_sandboxes.is_empty() {
            return;
        }
        let in_use: HashSet<&str> = self
            .slots
            .iter()
            .flat_map(|s| s.current.iter().chain(s.previous.iter()))
            .map(|a| a.sandbox_id.as_str())
            .collect();
        let (keep, gone): (Vec<String>, Vec<String>) = std::mem::take(&mut self.record.old_sandboxes)
            .into_iter()
            .partition(|id| in_use.contains(id.as_str()));
        self.record.old_sandboxes = keep;
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            if let Err(e) = self.remove_pod_sandbox(id).await {
                tracing::warn!(pod = %self.obj.name, sandbox = %id, error = %e, "remove an earlier pod sandbox");
            }
        }
        self.save_record();
    }
}
