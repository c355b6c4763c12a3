//! The state directory: what exists, kept on disk so a restarted agent can re-adopt it.
//!
//! ```text
//! <root>/pods/<uid>/pod.json                  PodRecord: the manifest the pod was made from,
//!                                             and the ID of its current sandbox
//! <root>/pods/<uid>/etc-hosts                 the kubelet's /etc/hosts, mounted in containers
//! <root>/pods/<uid>/volumes/<plugin>/<name>/  emptyDir, downwardAPI and projected volumes
//! <root>/pods/<uid>/termination/<name>/<n>    containers' termination-log files
//! <root>/sandboxes/<id>/                      the sandbox, the runtime's (see runtime::cri):
//!     cri-sandbox.json, cri-sandbox.pb, sandbox.json (the pause), etc/{hosts,hostname,
//!     resolv.conf}, shm/ (mount point of the pod's /dev/shm, pause's mount ns only)
//! <root>/sandboxes/<id>/containers/<cid>/     one directory per container attempt (older
//!                                             agents kept a static pod's in
//!                                             <root>/pods/<uid>/containers/<cid>/):
//!     container.json   ContainerRecord (written by the agent before the monitor starts)
//!     spec.json        ContainerSpec (the monitor's input)
//!     state.json       ContainerState (written by the monitor once the process exec'd)
//!     exit.json        ContainerExit  (written by the monitor when the process exited)
//!     monitor.log      the monitor's own diagnostics
//!     attach           the monitor's attach socket (0600) while the process runs
//!     upper/ work/ rootfs/   the writable layer, overlay's work dir, the mount point
//! ```
//!
//! Rule: whoever creates a process records it before reporting back, so nothing can be
//! running that the state directory does not know about.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{ContainerExit, ContainerState, SandboxState};
use crate::atomic_file;

/// A pod as the agent created it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// The manifest file this pod came from.
    pub manifest: PathBuf,
    /// The pod as parsed and defaulted from the manifest (shared with the manifest source
    /// and the pod's worker: one copy per pod in memory).
    #[serde(with = "shared_pod")]
    pub pod: std::sync::Arc<k8s_openapi::api::core::v1::Pod>,
    /// Cgroup of the pod, relative to the cgroup parent (e.g. `kubepods/burstable/pod<uid>`).
    pub cgroup: String,
    pub sandbox_id: String,
    /// Sandbox attempt, bumped when the pause died and had to be recreated.
    pub sandbox_attempt: u32,
    /// Earlier sandboxes of the pod, stopped, kept while they hold an attempt the pod still
    /// shows (a container's last state, `logs --previous`), as the kubelet keeps dead
    /// sandboxes until its garbage collection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub old_sandboxes: Vec<String>,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// Set when the pod failed as a whole (active deadline, eviction): it stays Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<PodFailure>,
}

/// A pod record's `pod` on disk: the Pod itself (serde's own `Arc` support is a feature
/// every crate of the build would be rebuilt for).
mod shared_pod {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Pod;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(pod: &Arc<Pod>, s: S) -> Result<S::Ok, S::Error> {
        Pod::serialize(pod, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Pod>, D::Error> {
        Pod::deserialize(d).map(Arc::new)
    }
}

/// Why a pod failed as a whole: its status reason and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFailure {
    pub reason: String,
    pub message: String,
}

/// One container attempt as the agent created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// Restart count: 0 for the first run.
    pub attempt: u32,
    pub image: String,
    pub image_id: String,
    pub log_path: PathBuf,
    /// Cgroup relative to the cgroup parent.
    pub cgroup: String,
    /// Unix nanoseconds.
    pub created_at: i64,
}

/// Paths inside the state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir().join(&*path_component(uid))
    }

    /// The kubelet-managed /etc/hosts of a static pod (the kubelet's `etc-hosts`): the pod
    /// side's, mounted into each container; the sandbox's own `etc/hosts` is the runtime's.
    pub fn etc_hosts(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("etc-hosts")
    }

    pub fn pod_record(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("pod.json")
    }

    /// Where agents before step C kept a static pod's pause (its sandbox lived in the pod's
    /// own directory); such a sandbox is replaced when found.
    pub fn sandbox_state(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join(super::sandbox::SANDBOX_STATE)
    }

    /// Sandboxes created by CRI clients: `<root>/sandboxes/<sandbox id>`, laid out as a pod
    /// directory (they are keyed by sandbox, as a CRI client may run several for one pod).
    pub fn cri_sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    pub fn cri_sandbox_dir(&self, id: &str) -> PathBuf {
        self.cri_sandboxes_dir().join(&*path_component(id))
    }

    pub fn containers_dir(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("containers")
    }

    pub fn container_dir(&self, uid: &str, id: &str) -> PathBuf {
        container_dir_in(&self.pod_dir(uid), id)
    }
}

/// A container attempt's directory inside a pod's (or CRI sandbox's) state directory.
pub fn container_dir_in(pod_dir: &Path, id: &str) -> PathBuf {
    pod_dir.join("containers").join(&*path_component(id))
}

/// `name` as exactly one path component, whatever it holds. Validation refuses UIDs and
/// names that are not safe tokens, but a path that is joined from input must not depend on
/// that alone: a UID of `/etc` joined as is *replaces* the state directory (and a removal
/// then runs on /etc), `../x` leaves it. Unsafe names are escaped, so the mapping stays
/// one-to-one and the same name always finds the same directory.
pub fn path_component(name: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| matches!(c, '/' | '\0' | '%');
    if !name.is_empty() && name != "." && name != ".." && !name.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 3);
    if name.is_empty() || name == "." || name == ".." {
        out.push('%');
    }
    for c in name.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '\0' => out.push_str("%00"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

const ATTACH_SOCKET: &str = "attach";

/// Everything known about one container attempt on disk.
#[derive(Debug, Clone)]
pub struct ContainerFiles {
    pub dir: PathBuf,
    pub record: ContainerRecord,
    pub state: Option<ContainerState>,
    pub exit: Option<ContainerExit>,
}

impl ContainerFiles {
    pub fn record_path(dir: &Path) -> PathBuf {
        dir.join("container.json")
    }
    pub fn spec_path(dir: &Path) -> PathBuf {
        dir.join("spec.json")
    }
    pub fn state_path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }
    pub fn exit_path(dir: &Path) -> PathBuf {
        dir.join("exit.json")
    }
    pub fn attach_path(dir: &Path) -> PathBuf {
        dir.join(ATTACH_SOCKET)
    }
    /// The attach socket's address through an open handle of its directory: short enough
    /// for a socket address (108 bytes) however long the directory's path is.
    pub fn attach_address(dir: &impl std::os::fd::AsRawFd) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{ATTACH_SOCKET}", dir.as_raw_fd()))
    }

    pub fn load(dir: &Path) -> io::Result<Option<Self>> {
        let Some(record) = atomic_file::read_json::<ContainerRecord>(&Self::record_path(dir))? else {
            return Ok(None);
        };
        Ok(Some(ContainerFiles {
            dir: dir.to_path_buf(),
            record,
            state: atomic_file::read_json(&Self::state_path(dir))?,
            exit: atomic_file::read_json(&Self::exit_path(dir))?,
        }))
    }
}

/// A pod found in the state directory, or the path that could not be read and why.
pub type FoundPod = Result<(PodRecord, Option<SandboxState>), (PathBuf, String)>;

/// All pods recorded in the state directory (records that fail to parse are reported, not fatal).
pub fn load_pods(layout: &Layout) -> Vec<FoundPod> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(layout.pods_dir()) else {
        return out;
    };
    for entry in entries.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        let path = layout.pod_record(&uid);
        match atomic_file::read_json::<PodRecord>(&path) {
            Ok(Some(rec)) => {
                let sandbox = atomic_file::read_json(&layout.sandbox_state(&uid)).unwrap_or(None);
                out.push(Ok((rec, sandbox)));
            }
            Ok(None) => out.push(Err((entry.path(), "pod directory without pod.json".into()))),
            Err(e) => out.push(Err((path, e.to_string()))),
        }
    }
    out
}

/// The container attempts an older agent kept in a static pod's own directory, oldest first.
pub fn load_containers(layout: &Layout, uid: &str) -> Vec<ContainerFiles> {
    load_container_dirs(&layout.containers_dir(uid))
}

/// Every container attempt under `dir` (one directory each), oldest first.
fn load_container_dirs(dir: &Path) -> Vec<ContainerFiles> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        match ContainerFiles::load(&entry.path()) {
            Ok(Some(files)) => out.push(files),
            Ok(None) => tracing::warn!(dir = %entry.path().display(), "container directory without container.json"),
            Err(e) => tracing::warn!(dir = %entry.path().display(), error = %e, "unreadable container state"),
        }
    }
    out.sort_by_key(|c| (c.record.created_at, c.record.attempt));
    out
}

/// Image ids used by the static pods' containers recorded in the state directory (any
/// attempt, running or not: a pod may restart them), each with one `pod/container` that uses
/// it.
pub fn images_in_use(layout: &Layout) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for (pod, _) in load_pods(layout).into_iter().flatten() {
        let sandboxes = pod.old_sandboxes.iter().chain(Some(&pod.sandbox_id));
        let in_sandboxes = sandboxes
            .filter(|id| !id.is_empty())
            .flat_map(|id| load_container_dirs(&layout.cri_sandbox_dir(id).join("containers")));
        for c in load_containers(layout, &pod.uid).into_iter().chain(in_sandboxes) {
            out.entry(c.record.image_id.clone())
                .or_insert_with(|| format!("{}/{} (pod {}/{})", c.record.name, c.record.id, pod.namespace, pod.name));
        }
    }
    out
}

/// A random 64-hex-digit ID, as containerd makes them for sandboxes and containers.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_input_stay_one_component_under_the_root() {
        let l = Layout::new(Path::new("/var/lib/minilet"));
        for (uid, dir) in [
            ("/etc", "/var/lib/minilet/pods/%2Fetc"),
            ("../x", "/var/lib/minilet/pods/..%2Fx"),
            ("..", "/var/lib/minilet/pods/%.."),
            ("", "/var/lib/minilet/pods/%"),
            ("a%2Fb", "/var/lib/minilet/pods/a%252Fb"),
            ("0b3c9e2a-5d6f", "/var/lib/minilet/pods/0b3c9e2a-5d6f"),
        ] {
            assert_eq!(l.pod_dir(uid), Path::new(dir), "{uid:?}");
            assert!(l.pod_dir(uid).starts_with(l.pods_dir()));
        }
        assert_eq!(
            l.container_dir("u", "../../etc"),
            Path::new("/var/lib/minilet/pods/u/containers/..%2F..%2Fetc")
        );
    }
}
