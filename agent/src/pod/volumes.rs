//! A pod's volumes as the kubelet sets them up for a static pod: emptyDirs, the files of
//! downwardAPI (and projected downwardAPI) volumes, and the pod's fsGroup over both. hostPath
//! volumes are the node's own directories and keep their ownership, as with the kubelet.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, Pod, PodSpec, Volume};

use super::config::{field_value, resource_value};
use super::node::NodeInfo;
use crate::quantity::Quantity;
use crate::runtime::volumes::{
    DOWNWARD_API_PLUGIN, EmptyDir, FileVolume, FsGroup, FsGroupChangePolicy, PROJECTED_PLUGIN, VolumeFile, volume_dir,
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
