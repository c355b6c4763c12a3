//! The container runtime: pause sandboxes, containers, their processes and state on disk.

pub mod helper;
