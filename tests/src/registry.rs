//! A real registry for tests: Debian's `docker-registry` (the CNCF distribution registry) on
//! a free loopback port, with its storage and log in the test's directory, optionally behind
//! htpasswd auth; filled with `skopeo copy` from OCI layouts and archives.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

pub struct Registry {
    pub port: u16,
    pub dir: PathBuf,
    pub auth: Option<(String, String)>,
    child: Child,
}

/// How skopeo compresses layers on the way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// As the source has them (gzip for hack/.images).
    AsIs,
    Zstd,
}

impl Registry {
    /// Start a registry storing under `dir` (created), with htpasswd auth if `auth` is given.
    pub fn start(dir: &Path, auth: Option<(&str, &str)>) -> Registry {
        std::fs::create_dir_all(dir).expect("registry dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        );
        if let Some((user, pass)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd: {out:?}");
            std::fs::write(dir.join("htpasswd"), &out.stdout).expect("htpasswd file");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: minilet-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).expect("config.yml");
        let log = std::fs::File::create(dir.join("registry.log")).expect("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry (hack/setup installs it)");
        let registry = Registry {
            port,
            dir: dir.to_path_buf(),
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            child,
        };
        wait_for("the registry to answer", Duration::from_secs(20), || {
            let status = registry.get_status("/v2/")?;
            (status == 200 || status == 401).then_some(())
        });
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// HTTP status of an anonymous GET.
    pub fn get_status(&self, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    /// Push `source` (a skopeo source such as `oci-archive:PATH` or `oci:DIR:TAG`) as
    /// `repo_tag`; returns the pushed manifest digest. `all`: every image of an index.
    pub fn push(&self, source: &str, repo_tag: &str, compression: Compression, all: bool) -> String {
        let digest_file = self.dir.join("digest");
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false", "--digestfile"])
            .arg(&digest_file);
        if let Some((u, p)) = &self.auth {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        if compression == Compression::Zstd {
            cmd.args(["--dest-compress-format", "zstd", "--format", "oci"]);
        }
        if all {
            cmd.arg("--all");
        }
        let out = cmd
            .arg(source)
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {source} → {repo_tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&digest_file)
            .expect("digest file")
            .trim()
            .to_owned()
    }

    /// Push an image hack/build-images made (`busybox`, `nginx`) as `repo_tag`.
    pub fn push_demo(&self, image: &str, repo_tag: &str, compression: Compression) -> String {
        let archive = crate::workspace().join("hack/.images").join(format!("{image}.tar"));
        self.push(
            &format!("oci-archive:{}", archive.display()),
            repo_tag,
            compression,
            false,
        )
    }

    /// The registry's stored copy of a blob.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The access log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// How many GETs of `path_part` (e.g. `/blobs/sha256:…`) the registry served.
    pub fn gets(&self, path_part: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(path_part))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
