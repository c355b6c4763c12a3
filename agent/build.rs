//! Link the `minilet` binary position-dependent (non-PIE).
//!
//! Every container's monitor is this binary re-executed. As a PIE, the dynamic loader
//! relocates its ~0.7 MB of read-only data (vtables, string and slice pointers) at each
//! start, so each monitor held those pages as private copies; at a fixed address nothing
//! is relocated and the pages stay shared with the file (docs/performance.md has figures).
fn main() {
    println!("cargo:rustc-link-arg-bin=minilet=-no-pie");
}
