//! A pod's volumes as the kubelet sets them up for a static pod: emptyDirs, the files of
//! downwardAPI (and projected downwardAPI) volumes, and the pod's fsGroup over both. hostPath
//! volumes are the node's own directories and keep their ownership, as with the kubelet.
//!
//! As the kubelet's volume manager, the pod side sets them up under the pod's directory
//! before it asks for a sandbox ([`set_up`]) and hands them to containers as mounts; the
//! runtime only mounts the tmpfs of memory-backed emptyDirs inside the pod ([`memory_volumes`]).

pub mod disk;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, Pod, PodSpec, Volume};

use super::config::{field_value, resource_value};
use super::node::NodeInfo;
use crate::file_modes;
use crate::quantity::Quantity;
use crate::runtime::sandbox::MemoryVolume;
use disk::{
    DOWNWARD_API_PLUGIN, EMPTY_DIR_PLUGIN, EmptyDir, FileVolume, FsGroup, FsGroupChangePolicy, PROJECTED_PLUGIN,
    VolumeFile, volume_dir,
};

/// The kubelet's default mode for files of downwardAPI and projected volumes.
const DEFAULT_MODE: u32 = 0o644;

/// The pod's emptyDir volumes.
pub fn empty_dirs(spec: &PodSpec) -> Vec<EmptyDir> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            let e = v.empty_dir.as_ref()?;
            Some(EmptyDir {
                name: v.name.clone(),
                memory: e.medium.as_deref() == Some("Memory"),
                size_limit: e
                    .size_limit
                    .as_ref()
                    .and_then(|q| Quantity::parse(&q.0).ok())
                    .map(|q| q.value().max(0) as u64),
            })
        })
        .collect()
}

/// Set up the pod's own volumes in `pod_dir` (blocking): each emptyDir's directory (for a
/// memory-backed one, the mount point of its tmpfs), the files of downwardAPI and projected
/// volumes, and the pod's fsGroup over both. Done before each sandbox of the pod: an
/// emptyDir on disk keeps its content for the pod's lifetime, a file volume is rewritten.
pub fn set_up(pod_dir: &Path, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let group = fs_group(spec);
    for e in empty_dirs(spec) {
        let dir = volume_dir(pod_dir, EMPTY_DIR_PLUGIN, &e.name);
        if let Some(parent) = dir.parent() {
            file_modes::create_dir_all(parent, file_modes::STATE_DIR)
                .map_err(|err| format!("create {}: {err}", parent.display()))?;
        }
        if !dir.exists() {
            file_modes::create_dir_all(&dir, file_modes::EMPTY_DIR)
                .map_err(|err| format!("create emptyDir {}: {err}", dir.display()))?;
        }
        // A memory-backed one gets its group when its tmpfs is mounted.
        if let Some(group) = group.filter(|_| !e.memory) {
            disk::set_ownership(&dir, group, false)
                .map_err(|err| format!("set fsGroup {} on emptyDir {}: {err}", group.gid, dir.display()))?;
        }
    }
    for v in file_volumes(pod, node)? {
        let dir = volume_dir(pod_dir, v.plugin, &v.name);
        if let Some(parent) = dir.parent() {
            file_modes::create_dir_all(parent, file_modes::STATE_DIR)
                .map_err(|err| format!("create {}: {err}", parent.display()))?;
        }
        disk::write_files(&dir, &v.files, group)
            .map_err(|err| format!("write volume {:?} at {}: {err}", v.name, dir.display()))?;
    }
    Ok(())
}

/// The pod's memory-backed emptyDirs, at their mount points in `pod_dir`.
pub fn memory_volumes(pod_dir: &Path, spec: &PodSpec) -> Vec<MemoryVolume> {
    let gid = fs_group(spec).map(|g| g.gid);
    empty_dirs(spec)
        .into_iter()
        .filter(|e| e.memory)
        .map(|e| MemoryVolume {
            path: volume_dir(pod_dir, EMPTY_DIR_PLUGIN, &e.name),
            size_bytes: e.size_limit,
            gid,
        })
        .collect()
}

/// `securityContext.fsGroup` and its change policy.
pub fn fs_group(spec: &PodSpec) -> Option<FsGroup> {
    let sc = spec.security_context.as_ref()?;
    Some(FsGroup {
        gid: u32::try_from(sc.fs_group?).ok()?,
        policy: match sc.fs_group_change_policy.as_deref() {
            Some("OnRootMismatch") => FsGroupChangePolicy::OnRootMismatch,
            _ => FsGroupChangePolicy::Always,
        },
    })
}

/// The files of every downwardAPI and projected volume. Validation has checked the items;
/// an item that still cannot be resolved is an error naming the volume and the item.
pub fn file_volumes(pod: &Pod, node: &NodeInfo) -> Result<Vec<FileVolume>, String> {
    let spec = pod.spec.as_ref();
    let mut out = Vec::new();
    for v in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        if let Some(d) = &v.downward_api {
            let mode = mode_or_default(d.default_mode);
            let files = items(pod, node, &v.name, d.items.as_deref().unwrap_or_default(), mode)?;
            out.push(FileVolume {
                plugin: DOWNWARD_API_PLUGIN,
                name: v.name.clone(),
                files,
            });
        } else if let Some(p) = &v.projected {
            let mode = mode_or_default(p.default_mode);
            let mut files = Vec::new();
            for (i, source) in p.sources.iter().flatten().enumerate() {
                let Some(d) = &source.downward_api else {
                    return Err(format!(
                        "volume {:?}: projected source {i}: only downwardAPI sources can be served without an API server",
                        v.name
                    ));
                };
                files.extend(items(pod, node, &v.name, d.items.as_deref().unwrap_or_default(), mode)?);
            }
            out.push(FileVolume {
                plugin: PROJECTED_PLUGIN,
                name: v.name.clone(),
                files,
            });
        }
    }
    Ok(out)
}

fn mode_or_default(mode: Option<i32>) -> u32 {
    mode.map_or(DEFAULT_MODE, |m| (m as u32) & 0o777)
}

fn items(
    pod: &Pod,
    node: &NodeInfo,
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Vec<VolumeFile>, String> {
    let spec = pod.spec.as_ref();
    items
        .iter()
        .map(|item| {
            let content = if let Some(f) = &item.field_ref {
                field_value(pod, node, &[], &f.field_path)
            } else if let Some(r) = &item.resource_field_ref {
                let name = r.container_name.as_deref().unwrap_or_default();
                let c = spec
                    .into_iter()
                    .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
                    .find(|c| c.name == name)
                    .ok_or(format!("no container {name:?}"))?;
                resource_value(pod, c, node, r)
            } else {
                Err("no fieldRef or resourceFieldRef".into())
            }
            .map_err(|e| format!("volume {volume:?}: item {:?}: {e}", item.path))?;
            Ok(VolumeFile {
                path: item.path.clone(),
                content: content.into_bytes(),
                mode: item.mode.map_or(default_mode, |m| (m as u32) & 0o777),
            })
        })
        .collect()
}

/// Where a volume's content is on the node, for a volume the node writes; `None` for other
/// kinds. These volumes are always mounted read-only, as the kubelet mounts them.
pub fn written_volume_source(pod_dir: &std::path::Path, v: &Volume) -> Option<PathBuf> {
    if v.downward_api.is_some() {
        Some(volume_dir(pod_dir, DOWNWARD_API_PLUGIN, &v.name))
    } else if v.projected.is_some() {
        Some(volume_dir(pod_dir, PROJECTED_PLUGIN, &v.name))
    } else {
        None
    }
}
