//! Whole-file replacement that readers never see half-written.
//!
//! State files are written to a temporary sibling and renamed over the target: a reader (or a
//! restarted agent) sees the old content or the new, never a torn write. There is no fsync:
//! the promise is about the agent crashing, not the machine; after a power loss every pod is
//! gone anyway.

use std::io::Write;
use std::path::Path;

use crate::file_modes;

/// Replace `path` with `contents` atomically (rename within the same directory). The file is
/// readable by root only ([`file_modes::STATE_FILE`]): state files hold the pods' secrets.
pub fn write(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_mode(path, contents, file_modes::STATE_FILE)
}

/// [`write`] with the file's mode given (exactly, whatever the umask).
pub fn write_mode(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path, mode)?;
    tmp.1.write_all(contents)?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp.0);
    })
}

/// Serialize `value` as pretty JSON and [`write`] it.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write(path, &bytes)
}

/// Read and parse a JSON file written by [`write_json`]; `Ok(None)` if it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A uniquely named temporary file next to `target`, created exclusively with `mode`.
fn tempfile_in(dir: &Path, target: &Path, mode: u32) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let stem = target.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    for _ in 0..16 {
        let candidate = dir.join(format!(".{stem}.{:016x}.tmp", rand::random::<u64>()));
        match file_modes::create_new(&candidate, mode) {
            Ok(f) => return Ok((candidate, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("could not create a unique temporary file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        write_json(&p, &serde_json::json!({"a": 2})).unwrap();
        let v: serde_json::Value = read_json(&p).unwrap().unwrap();
        assert_eq!(v["a"], 2);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o600,
            "private"
        );
        write_mode(&p, b"{}", 0o644).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o644);
        assert!(
            read_json::<serde_json::Value>(&dir.path().join("absent"))
                .unwrap()
                .is_none()
        );
    }
}
