//! Template resources: confd's unit of work, one TOML file per rendered file in
//! `<confdir>/conf.d/`, naming a template in `<confdir>/templates/`.
//!
//! ```toml
//! [template]
//! src = "nginx.tmpl"                         # in <confdir>/templates/
//! dest = "/etc/nginx/conf.d/default.conf"    # written atomically (tmp file + rename)
//! keys = ["/demo/backends/"]                 # etcd prefixes the template may read
//! check_cmd = "test -s {{.src}}"             # run on the staged file, before the rename
//! reload_cmd = "kill -HUP 1"                 # run after the rename, only if the file changed
//! mode = "0644"                              # optional, octal; 0644 by default
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: template.{field}: {problem}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
    #[error("{dir}: no template resources (*.toml)")]
    Empty { dir: PathBuf },
}

/// One template resource, validated, with its template's text loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The TOML file it came from, for logs.
    pub origin: PathBuf,
    pub src: String,
    pub template: String,
    pub dest: PathBuf,
    pub keys: Vec<String>,
    pub check_cmd: Option<String>,
    pub reload_cmd: Option<String>,
    pub mode: u32,
}

impl Resource {
    /// Whether the template may read `key` (it lies under one of the resource's prefixes).
    pub fn wants(&self, key: &str) -> bool {
        self.keys.iter().any(|prefix| key.starts_with(prefix.as_str()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    template: Raw,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    src: String,
    dest: PathBuf,
    keys: Vec<String>,
    check_cmd: Option<String>,
    reload_cmd: Option<String>,
    mode: Option<String>,
}

/// Every `conf.d/*.toml` under `confdir`, in file-name order, each with its template loaded.
pub fn load_all(confdir: &Path) -> Result<Vec<Resource>, ResourceError> {
    let dir = confdir.join("conf.d");
    let entries = std::fs::read_dir(&dir).map_err(|source| ResourceError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| ResourceError::Read {
                path: dir.clone(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ResourceError::Empty { dir });
    }
    files.iter().map(|path| load(confdir, path)).collect()
}

fn load(confdir: &Path, path: &Path) -> Result<Resource, ResourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ResourceError::Read {
        path: path.into(),
        source,
    })?;
    let mut resource = parse(path, &text)?;
    let template_path = confdir.join("templates").join(&resource.src);
    resource.template = std::fs::read_to_string(&template_path).map_err(|source| ResourceError::Read {
        path: template_path,
        source,
    })?;
    Ok(resource)
}

/// Parse and validate one resource file's text (its template is not loaded).
pub fn parse(path: &Path, text: &str) -> Result<Resource, ResourceError> {
    let invalid = |field, problem: &str| ResourceError::Invalid {
        path: path.into(),
        field,
        problem: problem.into(),
    };
    let raw = toml::from_str::<File>(text)
        .map_err(|e| ResourceError::Parse {
            path: path.into(),
            source: Box::new(e),
        })?
        .template;
    // The template must stay inside templates/: a resource names a file, not a path.
    if raw.src.is_empty() || raw.src.contains('/') || raw.src.starts_with('.') {
        return Err(invalid("src", "must be a file name in the templates directory"));
    }
    if !raw.dest.is_absolute() || raw.dest.file_name().is_none() {
        return Err(invalid("dest", "must be an absolute path to a file"));
    }
    if raw.keys.is_empty() {
        return Err(invalid("keys", "must list at least one key prefix"));
    }
    if let Some(key) = raw.keys.iter().find(|k| !k.starts_with('/')) {
        return Err(invalid("keys", &format!("{key:?} must start with '/'")));
    }
    let mode = match raw.mode.as_deref() {
        None => 0o644,
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| invalid("mode", &format!("{m:?} is not an octal file mode such as \"0644\"")))?,
    };
    let non_empty = |cmd: Option<String>| cmd.filter(|c| !c.trim().is_empty());
    Ok(Resource {
        origin: path.into(),
        src: raw.src,
        template: String::new(),
        dest: raw.dest,
        keys: raw.keys,
        check_cmd: non_empty(raw.check_cmd),
        reload_cmd: non_empty(raw.reload_cmd),
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Resource, ResourceError> {
        parse(Path::new("lb.toml"), text)
    }

    #[test]
    fn a_full_resource() {
        let r = parse_str(
            "[template]\nsrc = \"nginx.tmpl\"\ndest = \"/out/default.conf\"\nkeys = [\"/demo/backends/\"]\n\
             check_cmd = \"test -s {{.src}}\"\nreload_cmd = \"kill -HUP 1\"\nmode = \"0600\"\n",
        )
        .unwrap();
        assert_eq!(r.src, "nginx.tmpl");
        assert_eq!(r.dest, Path::new("/out/default.conf"));
        assert_eq!(r.keys, ["/demo/backends/"]);
        assert_eq!(r.check_cmd.as_deref(), Some("test -s {{.src}}"));
        assert_eq!(r.reload_cmd.as_deref(), Some("kill -HUP 1"));
        assert_eq!(r.mode, 0o600);
        assert!(r.wants("/demo/backends/a"));
        assert!(!r.wants("/demo/other"));
    }

    #[test]
    fn optional_fields_default() {
        let r = parse_str("[template]\nsrc = \"t\"\ndest = \"/d\"\nkeys = [\"/k\"]\nreload_cmd = \"  \"\n").unwrap();
        assert_eq!((r.mode, r.check_cmd, r.reload_cmd), (0o644, None, None));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "[template]\nsrc = \"../t\"\ndest = \"/d\"\nkeys = [\"/k\"]\n",
                "template.src",
            ),
            (
                "[template]\nsrc = \"t\"\ndest = \"d\"\nkeys = [\"/k\"]\n",
                "template.dest",
            ),
            ("[template]\nsrc = \"t\"\ndest = \"/d\"\nkeys = []\n", "template.keys"),
            (
                "[template]\nsrc = \"t\"\ndest = \"/d\"\nkeys = [\"k\"]\n",
                "template.keys",
            ),
            (
                "[template]\nsrc = \"t\"\ndest = \"/d\"\nkeys = [\"/k\"]\nmode = \"rw\"\n",
                "template.mode",
            ),
            (
                "[template]\nsrc = \"t\"\ndest = \"/d\"\nkeys = [\"/k\"]\nreload = \"x\"\n",
                "reload",
            ),
            ("[template]\nsrc = \"t\"\n", "dest"),
        ];
        for (text, field) in cases {
            let e = parse_str(text).unwrap_err().to_string();
            assert!(e.starts_with("lb.toml: ") && e.contains(field), "{text:?}: {e}");
        }
    }

    #[test]
    fn load_all_reads_templates_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        for name in ["b", "a"] {
            std::fs::write(
                dir.path().join(format!("conf.d/{name}.toml")),
                format!("[template]\nsrc = \"{name}.tmpl\"\ndest = \"/out/{name}\"\nkeys = [\"/k\"]\n"),
            )
            .unwrap();
            std::fs::write(dir.path().join(format!("templates/{name}.tmpl")), name).unwrap();
        }
        std::fs::write(dir.path().join("conf.d/README"), "not a resource").unwrap();
        let all = load_all(dir.path()).unwrap();
        assert_eq!(all.iter().map(|r| r.template.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        std::fs::remove_file(dir.path().join("templates/a.tmpl")).unwrap();
        assert!(load_all(dir.path()).unwrap_err().to_string().contains("a.tmpl"));
    }
}
