//! The agent's settings for glibc's allocator (the system allocator Rust uses here).

/// Malloc arenas for the whole agent: the main heap and one more that every other thread
/// shares. glibc's default is 8 per CPU: a burst of pod starts runs on many of tokio's
/// blocking threads at once, each then allocating in an arena of its own, and each arena
/// keeps its pages after those threads retire (docs/performance.md, "The agent at 100 pods").
const ARENAS: libc::c_int = 2;

/// Limit the number of malloc arenas. To be called before the agent starts any thread:
/// arenas already made stay.
pub fn limit_arenas() {
    // SAFETY: mallopt sets an allocator parameter from two integers; no memory is passed.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) } != 1 {
        tracing::warn!("mallopt(M_ARENA_MAX) refused: malloc arenas not limited");
    }
}
