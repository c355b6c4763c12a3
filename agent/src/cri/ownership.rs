//! Who owns a sandbox or container, and what an external CRI client may therefore not do.
//!
//! A static pod is owned by its manifest: a client may stop its containers or sandbox (the
//! pod's worker then restarts them, so the manifest still wins), and removing them is
//! stopping them; creating containers in it, starting its containers or changing their
//! resources is refused with where to make the change instead. The refusal is the gRPC adapter's: an in-process caller (the static
//! pods' own side) calls [`super::service::RuntimeService`] directly and is not refused.

use std::path::Path;

use super::Cri;
use crate::runtime::RuntimeError;

/// Whose a sandbox or container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A static pod's: its manifest decides.
    Manifest,
    /// Made by a CRI client, or unknown (the call then answers as the CRI says).
    Client,
}

/// Answers who owns a sandbox or container, for the external boundary.
#[tonic::async_trait]
pub trait Owners: Send + Sync {
    async fn sandbox_owner(&self, id: &str) -> Owner;
    async fn container_owner(&self, id: &str) -> Owner;
    /// Where static pods are changed instead (named in refusals).
    fn manifests(&self) -> &Path;
}

#[tonic::async_trait]
impl Owners for Cri {
    /// From the sandbox's annotation ([`crate::runtime::cri::MANIFEST`]). An unknown one is
    /// the client's to stop or remove (both succeed).
    async fn sandbox_owner(&self, id: &str) -> Owner {
        if self.pods().sandbox_is_manifest(id) == Some(true) {
            Owner::Manifest
        } else {
            Owner::Client
        }
    }

    /// From the annotation of the container's sandbox.
    async fn container_owner(&self, id: &str) -> Owner {
        if self.pods().container_is_manifest(id).await == Some(true) {
            Owner::Manifest
        } else {
            Owner::Client
        }
    }

    fn manifests(&self) -> &Path {
        &self.manifests
    }
}

/// Refuse an external client's `change` of something a manifest owns.
pub fn client_may_change(owner: Owner, change: &str, manifests: &Path) -> Result<(), RuntimeError> {
    match owner {
        Owner::Client => Ok(()),
        Owner::Manifest => Err(RuntimeError::FailedPrecondition(format!(
            "{change}: minilet runs static pods from its manifests directory ({}); add, edit or remove a manifest there instead",
            manifests.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_manifests_objects_are_refused_and_the_refusal_names_the_directory() {
        let dir = Path::new("/tmp/manifests-x");
        assert!(client_may_change(Owner::Client, "CreateContainer", dir).is_ok());
        let err = client_may_change(Owner::Manifest, "CreateContainer in a static pod's sandbox", dir)
            .expect_err("a static pod's sandbox is refused");
        assert!(matches!(err, RuntimeError::FailedPrecondition(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("CreateContainer in a static pod's sandbox: "),
            "{text}"
        );
        assert!(text.contains("/tmp/manifests-x"), "{text}");
    }
}
