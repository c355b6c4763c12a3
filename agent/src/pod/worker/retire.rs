//! What the pod no longer needs goes: dead container attempts (RemoveContainer, then their
//! log, as the kubelet's container garbage collection removes both) and the stopped
//! sandboxes that held them, once no attempt the pod still shows lives in one.

use std::collections::HashSet;

use minilet_proto::runtime::v1 as cri;

use super::Worker;
use crate::runtime::state::ContainerFiles;

impl Worker {
    /// Remove a dead attempt: its directory, cgroup and log file.
    pub(in crate::pod) async fn remove_attempt(&self, files: &ContainerFiles) {
        let rt = &self.ctx.runtime;
        let removed = match rt.layout.sandbox_of_container(&files.dir) {
            Some(_) => {
                let req = cri::RemoveContainerRequest {
                    container_id: files.record.id.clone(),
                };
                let removed = self.ctx.runtime_service().remove_container(req).await.map(|_| ());
                rt.remove_container_log(files).await;
                removed
            }
            // An older agent's attempt, kept in the pod's own directory.
            None => rt.remove_container_with_log(files).await,
        };
        if let Err(e) = removed {
            tracing::warn!(pod = %self.obj.name, container = %files.record.name, error = %e, "remove container attempt");
        }
    }

    /// RemovePodSandbox for each earlier sandbox of the pod that holds none of its slots'
    /// current or previous attempts any more.
    pub(in crate::pod) async fn remove_old_sandboxes(&mut self) {
        if self.record.old_sandboxes.is_empty() {
            return;
        }
        let layout = &self.ctx.runtime.layout;
        let in_use: HashSet<String> = self
            .slots
            .iter()
            .flat_map(|s| s.current.iter().chain(s.previous.iter()))
            .filter_map(|f| layout.sandbox_of_container(&f.dir))
            .collect();
        let (keep, gone): (Vec<String>, Vec<String>) = std::mem::take(&mut self.record.old_sandboxes)
            .into_iter()
            .partition(|id| in_use.contains(id));
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
