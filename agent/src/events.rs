//! Events (being written).
