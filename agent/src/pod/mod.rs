//! Pod workers (being written).
