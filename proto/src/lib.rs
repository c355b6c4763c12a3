//! CRI runtime.v1 (being written).
