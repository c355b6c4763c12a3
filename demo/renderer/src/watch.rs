//! `renderer watch`: keep every template resource rendered from etcd. One read of the keys,
//! then a watch from the revision after it, so no change is missed between the two; each
//! change re-renders the resources that read that key. When the watch breaks (etcd
//! restarted, history compacted) it starts over with a fresh read.

use std::future::Future;
use std::pin::Pin;

use anyhow::Context;
use etcd_client::{EventType, GetOptions, WatchOptions};

use crate::etcd::{self, Backoff};
use crate::output::{self, Outcome};
use crate::render::{self, Store};
use crate::resource::Resource;

pub async fn run(
    endpoints: &[String],
    resources: Vec<Resource>,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<()> {
    let prefixes = prefixes(&resources);
    let mut backoff = Backoff::new();
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            result = session(endpoints, &resources, &prefixes, &mut backoff) => {
                if let Err(e) = result {
                    tracing::warn!("etcd at {}: {e:#}", endpoints.join(","));
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The prefixes to read and watch: each resource's keys, without those another one covers.
fn prefixes(resources: &[Resource]) -> Vec<String> {
    let mut all: Vec<String> = resources.iter().flat_map(|r| r.keys.iter().cloned()).collect();
    all.sort();
    all.dedup();
    let covered = |p: &String| all.iter().any(|q| q != p && p.starts_with(q.as_str()));
    all.iter().filter(|p| !covered(p)).cloned().collect()
}

async fn session(
    endpoints: &[String],
    resources: &[Resource],
    prefixes: &[String],
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let mut client = etcd::connect(endpoints).await.context("connect")?;
    let mut store = Store::new();
    let mut revision = 0;
    for prefix in prefixes {
        let mut options = GetOptions::new().with_prefix();
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let response = client.get(prefix.as_str(), Some(options)).await.context("read keys")?;
        revision = response.header().map_or(revision, |h| h.revision());
        for kv in response.kvs() {
            store.insert(kv.key_str()?.to_string(), kv.value_str()?.to_string());
        }
    }
    tracing::info!(
        "read {} keys under {} at etcd revision {revision}",
        store.len(),
        prefixes.join(" ")
    );
    backoff.reset();
    render_all(resources.iter().collect(), &store).await;

    let options = || Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1));
    let (first, rest) = prefixes.split_first().context("no key prefixes")?;
    let mut stream = client.watch(first.as_str(), options()).await.context("watch")?;
    for prefix in rest {
        stream.watch(prefix.as_str(), options()).await.context("watch")?;
    }
    tracing::info!("watching {} from revision {}", prefixes.join(" "), revision + 1);
    while let Some(response) = stream.message().await.context("watch")? {
        if response.canceled() {
            anyhow::bail!("etcd cancelled the watch: {}", response.cancel_reason());
        }
        let mut changed = Vec::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let key = kv.key_str()?.to_string();
            match event.event_type() {
                EventType::Put => {
                    tracing::info!("etcd revision {}: put {key} = {}", kv.mod_revision(), kv.value_str()?);
                    store.insert(key.clone(), kv.value_str()?.to_string());
                }
                EventType::Delete => {
                    tracing::info!("etcd revision {}: delete {key}", kv.mod_revision());
                    store.remove(&key);
                }
            }
            changed.push(key);
        }
        let affected = resources
            .iter()
            .filter(|r| changed.iter().any(|k| r.wants(k)))
            .collect();
        render_all(affected, &store).await;
    }
    anyhow::bail!("etcd closed the watch")
}

/// Render and apply each resource; a failure is logged and leaves that file as it was.
async fn render_all(resources: Vec<&Resource>, store: &Store) {
    for resource in resources {
        let (resource, store) = (resource.clone(), store.clone());
        let done = tokio::task::spawn_blocking(move || render_one(&resource, &store)).await;
        if let Err(e) = done {
            tracing::error!("rendering task failed: {e}");
        }
    }
}

fn render_one(resource: &Resource, store: &Store) {
    let keys: Vec<&str> = store.keys().filter(|k| resource.wants(k)).map(String::as_str).collect();
    let content = match render::render(resource, store) {
        Ok(content) => content,
        Err(e) => {
            tracing::error!("{}: template {}: {e:#}", resource.origin.display(), resource.src);
            return;
        }
    };
    match output::apply(resource, &content) {
        Ok(Outcome::Unchanged) => {
            tracing::info!(
                "{} unchanged ({} keys: {}); no reload",
                resource.dest.display(),
                keys.len(),
                keys.join(" ")
            );
        }
        Ok(Outcome::Updated { reload_output }) => {
            tracing::info!(
                "rendered {} from {} ({} keys: {})",
                resource.dest.display(),
                resource.src,
                keys.len(),
                keys.join(" ")
            );
            for line in reload_output {
                tracing::info!("reload_cmd: {line}");
            }
        }
        Err(e) => tracing::error!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_prefixes_are_watched_once() {
        let r = |keys: &[&str]| Resource {
            origin: "t.toml".into(),
            src: "t".into(),
            template: String::new(),
            dest: "/d".into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            check_cmd: None,
            reload_cmd: None,
            mode: 0o644,
        };
        let all = [r(&["/demo/backends/", "/other/"]), r(&["/demo/", "/other/"])];
        assert_eq!(prefixes(&all), ["/demo/", "/other/"]);
    }
}
