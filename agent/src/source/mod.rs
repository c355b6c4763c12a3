//! STUB (replaced by the source branch)
#![allow(dead_code, unused_variables)]
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[derive(Debug, Clone)]
pub struct ManifestPod { pub path: PathBuf, pub uid: String, pub pod: k8s_openapi::api::core::v1::Pod }
impl ManifestPod { pub fn name(&self) -> &str { todo!() } pub fn namespace(&self) -> &str { todo!() } pub fn full_name(&self) -> String { todo!() } }
#[derive(Debug, Clone)]
pub struct InvalidManifest { pub path: PathBuf, pub message: String }
#[derive(Debug, Clone)]
pub enum SourceEvent { Upsert(Arc<ManifestPod>), Removed { path: PathBuf }, Invalid(InvalidManifest) }
#[derive(Debug, thiserror::Error)]
pub enum SourceError { #[error("x")] X }
pub fn load_file(path: &Path, node_name: &str) -> Result<ManifestPod, InvalidManifest> { todo!() }
pub fn is_manifest_name(name: &std::ffi::OsStr) -> bool { todo!() }
pub struct ManifestSource;
impl ManifestSource {
    pub fn start(dir: &Path, node_name: &str, relist: std::time::Duration) -> Result<(Self, Vec<Arc<ManifestPod>>, Vec<InvalidManifest>, tokio::sync::mpsc::UnboundedReceiver<SourceEvent>), SourceError> { todo!() }
}
