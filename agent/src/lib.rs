//! minilet: a small, fast, real Kubernetes node agent.
//!
//! Data flow (see README.md and the design notes):
//! manifests directory ([`source`]) → pod workers ([`pod`]) → runtime ([`runtime`]: pause
//! sandboxes, containers, [`cgroups`], [`images`]) → state directory, recoverable after an
//! agent restart.

pub mod agent;
pub mod atomic_file;
pub mod cgroups;
pub mod cli;
pub mod cri;
pub mod events;
pub mod file_modes;
pub mod images;
pub mod malloc;
pub mod pod;
pub mod quantity;
pub mod runtime;
pub mod source;
#[doc(hidden)]
pub mod test_skip;
