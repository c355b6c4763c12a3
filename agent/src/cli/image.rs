//! `minilet image pull|import|ls|rm|inspect`. With an agent running, pull, ls, rm and inspect
//! go through its CRI ImageService, as crictl does, so they see and change the agent's store
//! with the agent's registry mirrors and credentials; with `--root` (or no agent on the
//! default socket) they work on a store directly (its locks make that safe beside an agent).
//! Output follows crictl (`images`, `pull`, `rmi`, `inspecti`) either way.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use minilet_proto::runtime::v1 as cri;

use super::client::{Client, connect};
use super::{DEFAULT_ROOT, DEFAULT_SOCKET, ImageCommand, ImageTargetArgs, RegistryArgs};
use crate::images::registry::Credentials;
use crate::images::{ImageRecord, ImageStore, Progress, Puller, split_name};
use crate::runtime::state::{Layout, images_in_use};

/// Where an image command does its work.
enum Target {
    /// The agent's ImageService.
    Agent(Box<Client>),
    /// The store under this root, in this process.
    Store(PathBuf),
}

/// `--root` means the store directly; `--socket` means that agent, which must answer;
/// neither: the agent on the default socket if one answers, else the default root.
async fn target(args: ImageTargetArgs) -> anyhow::Result<Target> {
    if let Some(root) = args.root {
        return Ok(Target::Store(root));
    }
    match args.socket {
        Some(socket) => Ok(Target::Agent(Box::new(connect(&socket).await.with_context(|| {
            format!(
                "no agent answers on {} (pass --root DIR to work on a store without an agent)",
                socket.display()
            )
        })?))),
        None => match connect(Path::new(DEFAULT_SOCKET)).await {
            Ok(client) => Ok(Target::Agent(Box::new(client))),
            Err(e) => {
                tracing::debug!(error = %e, "no agent on the default socket; using the store under {DEFAULT_ROOT}");
                Ok(Target::Store(PathBuf::from(DEFAULT_ROOT)))
            }
        },
    }
}

/// Run an image command to completion.
pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    if let ImageCommand::Import { path, name, root } = command {
        // No CRI call imports an image: always the store under --root.
        return import(&root.root, &path, name.as_deref());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        match command {
            ImageCommand::Import { .. } => Ok(()),
            ImageCommand::Pull {
                reference,
                creds,
                registry,
                target: t,
            } => pull(target(t).await?, &reference, &registry, creds.as_deref()).await,
            ImageCommand::Rm { references, target: t } => remove(target(t).await?, &references).await,
            ImageCommand::Inspect { reference, target: t } => inspect(target(t).await?, &reference).await,
            ImageCommand::Ls { quiet, target: t } => list(target(t).await?, quiet).await,
        }
    })
}

/// `--creds USER:PASS`.
fn parse_creds(creds: Option<&str>) -> anyhow::Result<Option<(String, String)>> {
    creds
        .map(|c| match c.split_once(':') {
            Some((username, password)) => Ok((username.to_owned(), password.to_owned())),
            None => Err(anyhow::anyhow!("--creds: expected USERNAME:PASSWORD")),
        })
        .transpose()
}

/// Pull `reference`; into a local store with per-layer progress on a terminal, or by the
/// agent (which reports no progress over the CRI).
async fn pull(target: Target, reference: &str, registry: &RegistryArgs, creds: Option<&str>) -> anyhow::Result<()> {
    let creds = parse_creds(creds)?;
    let id = match target {
        Target::Agent(client) => {
            let own = registry.own_settings();
            if !own.is_empty() {
                anyhow::bail!(
                    "{} apply to pulls into a store of this command's own; the agent pulls with its own settings (pass --root DIR to pull into a store directly)",
                    own.join(", ")
                );
            }
            let auth = creds.map(|(username, password)| cri::AuthConfig {
                username,
                password,
                ..Default::default()
            });
            client.pull_image(reference, auth).await?
        }
        Target::Store(root) => pull_into(&root, reference, registry, creds).await?,
    };
    println!("Image is up to date for {id}");
    Ok(())
}

/// Pull into the store under `root`; on a terminal, show each layer's bytes as they arrive.
async fn pull_into(
    root: &Path,
    reference: &str,
    registry: &RegistryArgs,
    creds: Option<(String, String)>,
) -> anyhow::Result<String> {
    let credentials = creds.map(|(username, password)| Credentials::Basic { username, password });
    let store = ImageStore::open(root)?;
    let puller = Puller::new(store, registry.options());
    let display = std::io::stderr()
        .is_terminal()
        .then(|| Arc::new(Mutex::new(ProgressDisplay::default())));
    let progress = display.clone().map(|d| -> crate::images::ProgressFn {
        Arc::new(move |p| d.lock().unwrap_or_else(|e| e.into_inner()).update(p))
    });
    let image = puller.pull(reference, credentials, progress).await?;
    if let Some(d) = display {
        d.lock().unwrap_or_else(|e| e.into_inner()).finish();
    }
    Ok(image.id)
}

/// Per-layer progress redrawn in place: `<digest 12>: <state> <done>/<total>`.
#[derive(Default)]
struct ProgressDisplay {
    layers: BTreeMap<usize, (String, String)>,
    order: Vec<String>,
    drawn: usize,
}

impl ProgressDisplay {
    fn update(&mut self, p: Progress) {
        let short = |d: &str| d.trim_start_matches("sha256:").chars().take(12).collect::<String>();
        let line = |digest: &str, text: String| (short(digest), text);
        match p {
            Progress::Resolved { layers } => {
                self.order = layers.iter().map(|(d, _)| d.clone()).collect();
                for (i, (d, size)) in layers.iter().enumerate() {
                    self.layers
                        .insert(i, line(d, format!("waiting ({})", human_size(*size))));
                }
            }
            Progress::Bytes { digest, done, total } => {
                if let Some(i) = self.order.iter().position(|d| *d == digest) {
                    self.layers.insert(
                        i,
                        line(
                            &digest,
                            format!("downloading {}/{}", human_size(done), human_size(total)),
                        ),
                    );
                }
            }
            Progress::Done { digest, cached } => {
                if let Some(i) = self.order.iter().position(|d| *d == digest) {
                    let text = if cached { "already exists" } else { "download complete" };
                    self.layers.insert(i, line(&digest, text.into()));
                }
            }
            Progress::Unpacking => {
                for (i, d) in self.order.clone().iter().enumerate() {
                    self.layers.insert(i, line(d, "unpacking".into()));
                }
            }
        }
        self.draw();
    }

    fn draw(&mut self) {
        let mut err = std::io::stderr().lock();
        // Move up over what was drawn before and redraw every line.
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn);
        }
        for (digest, text) in self.layers.values() {
            let _ = writeln!(err, "\x1b[2K{digest}: {text}");
        }
        self.drawn = self.layers.len();
        let _ = err.flush();
    }

    fn finish(&mut self) {
        for (_, text) in self.layers.values_mut() {
            if text == "unpacking" {
                *text = "pull complete".into();
            }
        }
        self.draw();
    }
}

/// Remove images (by name, or by id with all its names) unless a container uses them, then
/// reclaim the space nothing needs any more. One `Deleted:` line per name removed.
async fn remove(target: Target, references: &[String]) -> anyhow::Result<()> {
    let mut failed = false;
    match target {
        Target::Agent(client) => {
            for reference in references {
                match remove_through(&client, reference).await {
                    Ok(names) if names.is_empty() => {
                        eprintln!("error: no such image {reference}");
                        failed = true;
                    }
                    Ok(names) => names.iter().for_each(|n| println!("Deleted: {n}")),
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        failed = true;
                    }
                }
            }
        }
        Target::Store(root) => {
            failed = tokio::task::spawn_blocking({
                let references = references.to_vec();
                move || remove_from(&root, &references)
            })
            .await
            .context("image removal task")??;
        }
    }
    if failed {
        anyhow::bail!("some images could not be removed");
    }
    Ok(())
}

/// RemoveImage answers nothing, so the names removed are those the image had before and
/// not after.
async fn remove_through(client: &Client, reference: &str) -> anyhow::Result<Vec<String>> {
    let Some((before, _)) = client.image_status(reference, false).await? else {
        return Ok(Vec::new());
    };
    client.remove_image(reference).await?;
    let after = client.image_status(&before.id, false).await?.map(|(i, _)| i);
    let names = |i: &cri::Image| -> Vec<String> { i.repo_tags.iter().chain(&i.repo_digests).cloned().collect() };
    let left: HashSet<String> = after.as_ref().map(names).unwrap_or_default().into_iter().collect();
    let mut gone: Vec<String> = before
        .repo_tags
        .iter()
        .filter(|n| !left.contains(*n))
        .cloned()
        .collect();
    if gone.is_empty() && after.is_none() {
        // An image known only by digest.
        gone = names(&before);
    }
    Ok(gone)
}

/// Remove from the store under `root`; true if any reference failed (each said on stderr).
fn remove_from(root: &Path, references: &[String]) -> anyhow::Result<bool> {
    let store = ImageStore::open(root)?;
    let in_use = images_in_use(&Layout::new(root));
    let mut failed = false;
    for reference in references {
        match store.remove(reference, &in_use) {
            Ok(names) if names.is_empty() => {
                eprintln!("error: no such image {reference}");
                failed = true;
            }
            Ok(names) => names.iter().for_each(|n| println!("Deleted: {n}")),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    let keep: HashSet<String> = in_use.into_keys().collect();
    store.sweep(&keep)?;
    Ok(failed)
}

/// `crictl inspecti`: the image as CRI shows it, plus its config, layers and manifest digest.
async fn inspect(target: Target, reference: &str) -> anyhow::Result<()> {
    let no_such = || anyhow::anyhow!("no such image {reference}");
    let (record, info) = match target {
        Target::Agent(client) => {
            let (image, info) = client.image_status(reference, true).await?.ok_or_else(no_such)?;
            let info: serde_json::Value = match info {
                Some(text) => serde_json::from_str(&text).context("the agent's image info is not JSON")?,
                None => serde_json::Value::Null,
            };
            (record_of(image), info)
        }
        Target::Store(root) => {
            let reference = reference.to_owned();
            let found = tokio::task::spawn_blocking(move || ImageStore::open(&root)?.status(&reference))
                .await
                .context("image status task")??;
            let (image, record) = found.ok_or_else(no_such)?;
            (record, image.info())
        }
    };
    let out = serde_json::json!({
        "status": {
            "id": record.id,
            "repoTags": record.repo_tags,
            "repoDigests": record.repo_digests,
            "size": record.size.to_string(),
            "username": info["config"]["user"].as_str().unwrap_or(""),
            "pinned": false,
        },
        "info": info,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Import an OCI layout directory or OCI archive; one line per image imported.
pub fn import(root: &Path, path: &Path, name: Option<&str>) -> anyhow::Result<()> {
    let store = ImageStore::open(root)?;
    for image in store.import(path, name)? {
        println!("Imported {} ({})", image.name, image.id);
    }
    Ok(())
}

/// A CRI image as the record the table prints.
fn record_of(i: cri::Image) -> ImageRecord {
    ImageRecord {
        id: i.id,
        repo_tags: i.repo_tags,
        repo_digests: i.repo_digests,
        size: i.size,
        created: None,
    }
}

/// List images as `crictl images` does, or only their ids with `quiet`.
async fn list(target: Target, quiet: bool) -> anyhow::Result<()> {
    let records = match target {
        Target::Agent(client) => client.list_images().await?.into_iter().map(record_of).collect(),
        Target::Store(root) => tokio::task::spawn_blocking(move || ImageStore::open(&root)?.records())
            .await
            .context("image list task")??,
    };
    let out = if quiet {
        records.iter().map(|r| format!("{}\n", r.id)).collect()
    } else {
        table(&records)
    };
    print!("{out}");
    Ok(())
}

/// The `crictl images` table: IMAGE, TAG, IMAGE ID (13 hex digits), SIZE; columns padded like
/// Go's tabwriter with minwidth 20 and padding 3, as crictl sets it up.
/// One row per name, sorted by name; an image known only by digest shows its repository
/// with tag `<none>`.
fn table(images: &[ImageRecord]) -> String {
    let mut body = Vec::new();
    for image in images {
        let hex = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
        let short: String = hex.chars().take(13).collect();
        let names = if image.repo_tags.is_empty() {
            &image.repo_digests
        } else {
            &image.repo_tags
        };
        let mut seen = HashSet::new();
        for name in names {
            let (repo, tag) = split_tag(name);
            if seen.insert((repo, tag)) {
                body.push([repo.to_owned(), tag.to_owned(), short.clone(), human_size(image.size)]);
            }
        }
    }
    body.sort();
    let mut rows = vec![[
        "IMAGE".to_owned(),
        "TAG".to_owned(),
        "IMAGE ID".to_owned(),
        "SIZE".to_owned(),
    ]];
    rows.extend(body);
    let widths: Vec<usize> = (0..3)
        .map(|col| {
            rows.iter()
                .map(|r| r[col].chars().count())
                .max()
                .unwrap_or(0)
                .saturating_add(3)
                .max(20)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (col, width) in widths.iter().enumerate() {
            out.push_str(&format!("{:<width$}", row[col]));
        }
        out.push_str(&row[3]);
        out.push('\n');
    }
    out
}

/// "repo:tag" → ("repo", "tag"); a digest-only reference has no tag ("<none>").
fn split_tag(name: &str) -> (&str, &str) {
    let (repo, tag) = split_name(name);
    (repo, tag.unwrap_or("<none>"))
}

/// Decimal units with 3 significant digits, as crictl (go-units HumanSizeWithPrecision) prints.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    // %.3g: three significant digits, trailing zeros dropped.
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_crictl() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_200_000), "1.2MB");
        assert_eq!(human_size(2_224_000), "2.22MB");
        assert_eq!(human_size(745_300), "745kB");
        assert_eq!(human_size(12_340_000), "12.3MB");
    }

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            split_tag("docker.io/library/busybox:latest"),
            ("docker.io/library/busybox", "latest")
        );
        assert_eq!(split_tag("localhost:5000/a/b:v1"), ("localhost:5000/a/b", "v1"));
        assert_eq!(split_tag("localhost:5000/a/b"), ("localhost:5000/a/b", "<none>"));
        let digest = format!("localhost/x@sha256:{}", "a".repeat(64));
        assert_eq!(split_tag(&digest), ("localhost/x", "<none>"));
    }

    #[test]
    fn table_has_crictl_columns() {
        let images = [ImageRecord {
            id: format!("sha256:{}", "0123456789abcdef".repeat(4)),
            repo_tags: vec!["localhost/busybox:latest".into(), "localhost/busybox:1".into()],
            repo_digests: vec!["localhost/busybox@sha256:aa".into()],
            size: 1_234_567,
            created: None,
        }];
        let table = table(&images);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["localhost/busybox", "1", "0123456789abc", "1.23MB"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["localhost/busybox", "latest", "0123456789abc", "1.23MB"]
        );
        assert_eq!(lines.len(), 3, "one row per tag, none for the digest: {table}");
        assert_eq!(lines[0].find("TAG"), lines[2].find("latest"));
    }
}
