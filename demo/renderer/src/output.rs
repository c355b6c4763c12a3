//! Putting a rendered file in place the way confd does: nothing happens if the content is
//! what the file already holds; otherwise the new content is staged next to the destination,
//! checked with `check_cmd`, renamed over the destination (readers see the old file or the
//! new one, never half of one), and only then `reload_cmd` runs. Blocking: call it from a
//! blocking thread.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::resource::Resource;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{dest}: {what}: {source}")]
    Io {
        dest: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("check_cmd refused the new {dest} (kept the old one): {detail}")]
    CheckFailed { dest: PathBuf, detail: String },
    #[error("reload_cmd failed after writing {dest}: {detail}")]
    ReloadFailed { dest: PathBuf, detail: String },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The destination already held exactly this content: nothing written, nothing reloaded.
    Unchanged,
    /// Written, and reload_cmd (if any) ran and printed these lines.
    Updated { reload_output: Vec<String> },
}

/// Whether writing `new` over a file holding `current` (None: no file) changes anything.
pub fn changed(current: Option<&[u8]>, new: &[u8]) -> bool {
    current != Some(new)
}

pub fn apply(resource: &Resource, content: &str) -> Result<Outcome, OutputError> {
    let dest = &resource.dest;
    let io = |what| {
        move |source| OutputError::Io {
            dest: dest.clone(),
            what,
            source,
        }
    };
    let current = match std::fs::read(dest) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("read the current file")(e)),
    };
    if !changed(current.as_deref(), content.as_bytes()) {
        return Ok(Outcome::Unchanged);
    }
    // Staged in the destination's own directory: a rename is only atomic within a filesystem.
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut staged = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .map_err(io("create a staging file"))?;
    staged
        .write_all(content.as_bytes())
        .map_err(io("write the staging file"))?;
    staged.as_file().sync_all().map_err(io("sync the staging file"))?;
    staged
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(resource.mode))
        .map_err(io("set the staging file's mode"))?;
    if let Some(check) = &resource.check_cmd {
        // confd's placeholder for the staged file; the staging file is removed if this fails.
        let cmd = check.replace("{{.src}}", &staged.path().to_string_lossy());
        run(&cmd).map_err(|detail| OutputError::CheckFailed {
            dest: dest.clone(),
            detail,
        })?;
    }
    staged
        .persist(dest)
        .map_err(|e| io("rename the staging file into place")(e.error))?;
    let reload_output = match &resource.reload_cmd {
        Some(reload) => run(reload).map_err(|detail| OutputError::ReloadFailed {
            dest: dest.clone(),
            detail,
        })?,
        None => Vec::new(),
    };
    Ok(Outcome::Updated { reload_output })
}

/// Run `cmd` with `sh -c`; its output lines on success, a description of the failure otherwise.
fn run(cmd: &str) -> Result<Vec<String>, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if out.status.success() {
        Ok(lines)
    } else {
        Err(format!("{} ({})", out.status, lines.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(dir: &Path, check: Option<&str>, reload: Option<&str>) -> Resource {
        Resource {
            origin: dir.join("t.toml"),
            src: "t.tmpl".into(),
            template: String::new(),
            dest: dir.join("out.conf"),
            keys: vec!["/k".into()],
            check_cmd: check.map(str::to_string),
            reload_cmd: reload.map(str::to_string),
            mode: 0o640,
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn changed_or_not() {
        assert!(changed(None, b""));
        assert!(changed(Some(b"a"), b"b"));
        assert!(!changed(Some(b"a"), b"a"));
    }

    #[test]
    fn writes_checks_and_reloads_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("reloads");
        let r = resource(
            dir.path(),
            Some("grep -q upstream {{.src}}"),
            Some(&format!("echo reloaded >> {}; echo signalled", log.display())),
        );
        let first = apply(&r, "upstream a\n").unwrap();
        assert_eq!(
            first,
            Outcome::Updated {
                reload_output: vec!["signalled".into()]
            }
        );
        assert_eq!(std::fs::read_to_string(&r.dest).unwrap(), "upstream a\n");
        let mode = std::fs::metadata(&r.dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(apply(&r, "upstream a\n").unwrap(), Outcome::Unchanged);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "reloaded\n");
        apply(&r, "upstream b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "reloaded\nreloaded\n");
        assert_eq!(entries(dir.path()), ["out.conf", "reloads"]);
    }

    #[test]
    fn a_failed_check_keeps_the_old_file_and_leaves_no_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = resource(dir.path(), Some("grep -q upstream {{.src}}"), Some("exit 0"));
        apply(&r, "upstream a\n").unwrap();
        let e = apply(&r, "garbage\n").unwrap_err();
        assert!(matches!(e, OutputError::CheckFailed { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&r.dest).unwrap(), "upstream a\n");
        assert_eq!(entries(dir.path()), ["out.conf"]);
    }

    #[test]
    fn a_failed_reload_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let r = resource(dir.path(), None, Some("echo no master; exit 3"));
        let e = apply(&r, "x").unwrap_err().to_string();
        assert!(e.contains("reload_cmd failed") && e.contains("no master"), "{e}");
    }
}

/// The template resource the demo image ships (demo/renderer/confd), rendered and checked
/// for real: a good pool passes its check_cmd, a value that is not IP:port is refused.
#[cfg(test)]
mod shipped {
    use super::*;
    use crate::render::{Store, render};

    #[test]
    fn the_nginx_resource_renders_and_checks() {
        let confd = Path::new(env!("CARGO_MANIFEST_DIR")).join("confd");
        let mut all = crate::resource::load_all(&confd).unwrap();
        assert_eq!(all.len(), 1);
        let mut r = all.remove(0);
        let dir = tempfile::tempdir().unwrap();
        r.dest = dir.path().join("default.conf");
        r.reload_cmd = None;
        let check = confd.join("check-upstreams").display().to_string();
        r.check_cmd = r.check_cmd.map(|c| c.replace("/etc/confd/check-upstreams", &check));

        let empty = render(&r, &Store::new()).unwrap();
        assert!(empty.contains("return 503") && !empty.contains("upstream"), "{empty}");
        apply(&r, &empty).unwrap();

        let mut store: Store = [
            ("/demo/backends/b", "10.244.0.3:80"),
            ("/demo/backends/a", "10.244.0.2:80"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let pool = render(&r, &store).unwrap();
        assert!(
            pool.contains("upstream backends {\n    server 10.244.0.2:80;\n    server 10.244.0.3:80;\n}\n"),
            "{pool}"
        );
        assert!(matches!(apply(&r, &pool).unwrap(), Outcome::Updated { .. }));

        for evil in ["1.2.3.4:80; include x", "1.2.3.4:80;\n}\n    include x;\n#"] {
            store.insert("/demo/backends/evil".into(), evil.into());
            let rendered = render(&r, &store).unwrap();
            assert!(
                matches!(apply(&r, &rendered), Err(OutputError::CheckFailed { .. })),
                "{rendered}"
            );
        }
        assert_eq!(std::fs::read_to_string(&r.dest).unwrap(), pool);
    }
}
