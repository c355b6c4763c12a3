//! One container attempt as the pod side knows it: what the runtime's ContainerStatus
//! reports (the kubelet's `kubecontainer.Status`), not the runtime's files. The worker keeps
//! the current and the previous attempt of each container this way; the registry shows them.

use std::path::PathBuf;

use minilet_proto::runtime::v1 as cri;

use crate::runtime::spec::ContainerExit;
use crate::runtime::state::ContainerFiles;

/// A container attempt, from its ContainerStatus (verbose).
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptStatus {
    pub id: String,
    /// The sandbox it was created in; empty for an attempt an agent from before step C2a
    /// kept in the pod's own directory (see [`AttemptStatus::is_legacy`]).
    pub sandbox_id: String,
    /// The container's name in the pod.
    pub name: String,
    /// The restart count it was created with (metadata.attempt): 0 for the first run.
    pub attempt: u32,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// Unix nanoseconds; `None` when it never started (it could not: StartError, or it was
    /// only created).
    pub started_at: Option<i64>,
    /// How it ended; `None` while it has not.
    pub exit: Option<ContainerExit>,
    /// The image it runs, by ID (`image_ref`).
    pub image_id: String,
    pub log_path: PathBuf,
    /// The runtime's directory of the attempt, where its monitor leaves log notices (the
    /// verbose info's `dir`).
    pub dir: PathBuf,
    /// Its cgroup's directories, one per hierarchy (the verbose info's `cgroupDirs`).
    pub cgroup_dirs: Vec<PathBuf>,
}

impl AttemptStatus {
    /// From a ContainerStatus response: the status and its verbose info.
    pub fn of(status: &cri::ContainerStatus, info: &std::collections::HashMap<String, String>) -> Self {
        let details = crate::cri::service::verbose_info(info).unwrap_or_default();
        let exit = crate::pod::pleg::exit_of(status);
        let running = status.state == cri::ContainerState::ContainerRunning as i32;
        let metadata = status.metadata.clone().unwrap_or_default();
        AttemptStatus {
            id: status.id.clone(),
            sandbox_id: details["sandboxId"].as_str().unwrap_or_default().to_string(),
            name: metadata.name,
            attempt: metadata.attempt,
            created_at: status.created_at,
            started_at: (running || (exit.is_some() && status.started_at > 0)).then_some(status.started_at),
            exit,
            image_id: status.image_ref.clone(),
            log_path: PathBuf::from(&status.log_path),
            dir: details["dir"].as_str().map(PathBuf::from).unwrap_or_default(),
            cgroup_dirs: details["cgroupDirs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(PathBuf::from))
                .collect(),
        }
    }

    /// An attempt an agent from before step C2a kept in the pod's own directory, outside the
    /// runtime's store (only ever exited once the worker has taken it over).
    pub fn legacy(files: &ContainerFiles) -> Self {
        AttemptStatus {
            id: files.record.id.clone(),
            sandbox_id: String::new(),
            name: files.record.name.clone(),
            attempt: files.record.attempt,
            created_at: files.record.created_at,
            started_at: files.state.map(|s| s.started_at),
            exit: files.exit.clone(),
            image_id: files.record.image_id.clone(),
            log_path: files.record.log_path.clone(),
            dir: files.dir.clone(),
            cgroup_dirs: Vec::new(),
        }
    }

    /// Kept in the pod's own directory by an older agent, not in a runtime sandbox.
    pub fn is_legacy(&self) -> bool {
        self.sandbox_id.is_empty()
    }

    /// Started and not ended.
    pub fn running(&self) -> bool {
        self.started_at.is_some() && self.exit.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::ExitReason;

    fn status(state: cri::ContainerState, started_at: i64) -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: "c1".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "main".into(),
                attempt: 3,
            }),
            state: state as i32,
            created_at: 10,
            started_at,
            finished_at: if state == cri::ContainerState::ContainerExited {
                30
            } else {
                0
            },
            exit_code: 137,
            reason: if state == cri::ContainerState::ContainerExited {
                "Error".into()
            } else {
                String::new()
            },
            image_ref: "sha256:abc".into(),
            log_path: "/logs/main/3.log".into(),
            ..Default::default()
        }
    }

    fn info() -> std::collections::HashMap<String, String> {
        let v = serde_json::json!({"sandboxId": "s1", "dir": "/state/c1", "cgroupDirs": ["/sys/fs/cgroup/x"]});
        [(crate::cri::service::VERBOSE_INFO.to_string(), v.to_string())].into()
    }

    #[test]
    fn a_running_attempt_is_read_from_its_verbose_status() {
        let a = AttemptStatus::of(&status(cri::ContainerState::ContainerRunning, 20), &info());
        assert_eq!(
            (a.id.as_str(), a.sandbox_id.as_str(), a.name.as_str(), a.attempt),
            ("c1", "s1", "main", 3)
        );
        assert_eq!((a.created_at, a.started_at, &a.exit), (10, Some(20), &None));
        assert_eq!(a.image_id, "sha256:abc");
        assert_eq!(a.log_path, PathBuf::from("/logs/main/3.log"));
        assert_eq!(a.dir, PathBuf::from("/state/c1"));
        assert_eq!(a.cgroup_dirs, vec![PathBuf::from("/sys/fs/cgroup/x")]);
        assert!(a.running() && !a.is_legacy());
    }

    #[test]
    fn an_exited_attempt_carries_its_exit_and_one_never_started_no_start_time() {
        let a = AttemptStatus::of(&status(cri::ContainerState::ContainerExited, 20), &info());
        let exit = a.exit.clone().expect("exited");
        assert_eq!(
            (exit.exit_code, exit.reason, exit.finished_at),
            (137, ExitReason::Error, 30)
        );
        assert_eq!(a.started_at, Some(20));
        assert!(!a.running());

        let never = AttemptStatus::of(&status(cri::ContainerState::ContainerExited, 0), &info());
        assert_eq!(never.started_at, None);
        let created = AttemptStatus::of(&status(cri::ContainerState::ContainerCreated, 0), &info());
        assert_eq!(
            (created.started_at, &created.exit, created.running()),
            (None, &None, false)
        );
    }
}
