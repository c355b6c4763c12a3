//! Agent configuration (being written).
