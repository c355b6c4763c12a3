//! Tests that cannot run here say so, visibly and counted: a skipped test still passes for
//! the test harness, so each skip is also appended to the file named by `MINILET_SKIP_LOG`
//! (set by `hack/test` and the v2 lane, which print the list after their summaries). Used by
//! the real-kernel unit tests and the end-to-end harness; nothing in the agent calls it.

use std::io::Write;

/// The environment variable naming the file skips are appended to.
pub const SKIP_LOG_ENV: &str = "MINILET_SKIP_LOG";

/// A missing capability (root, a tool, a kernel feature): under CI (`CI=true`), where
/// `hack/setup` installed everything, that is a failure rather than a skip.
pub fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "cannot run under CI: {reason}"
    );
    record(reason);
}

/// A test for another kind of machine (a cgroup v1 test on a v2 kernel): counted, never a
/// failure, as no setup could make it run here.
pub fn not_for_this_machine(reason: &str) {
    record(reason);
}

fn record(reason: &str) {
    let line = format!("{}: {reason}\n", test_name());
    eprint!("skipped: {line}");
    let Some(path) = std::env::var_os(SKIP_LOG_ENV) else {
        return;
    };
    // One write with O_APPEND: tests in parallel processes do not interleave their lines.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!("cannot record the skip in {}: {e}", path.to_string_lossy());
    }
}

/// `binary test::path`: libtest runs each test on a thread named after it; the binary's name
/// (less cargo's hash suffix) tells which file or crate it belongs to.
fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| match n.rsplit_once('-') {
            Some((stem, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => stem.to_owned(),
            _ => n,
        })
        .unwrap_or_default();
    let thread = std::thread::current();
    match thread.name() {
        Some(test) if test != "main" => format!("{binary} {test}"),
        _ => binary,
    }
}
