//! The agent process: wires the manifest source to the pod manager over the runtime, and
//! decides what happens to pods when it exits (by default: nothing; they keep running and
//! the next agent re-adopts them, as with the kubelet).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::cgroups::{self, CgroupParent};
use crate::cli::{AgentArgs, ResetArgs};
use crate::events::Events;
use crate::pod::backoff::BackoffConfig;
use crate::pod::manager::Manager;
use crate::pod::node::NodeInfo;
use crate::pod::status::Registry;
use crate::pod::{self, Context};
use crate::runtime::{self, Runtime, RuntimeConfig, reaper};
use crate::source::ManifestSource;

/// tokio's blocking pool, for the agent's file, cgroup and process work (tokio's default is
/// 512). A burst of pod starts otherwise runs on dozens of threads, which the 2 CPUs it was
/// measured on do not run faster and whose stacks and malloc caches stay resident
/// (docs/performance.md, "The agent at 100 pods"). Every blocking task either finishes on its
/// own or waits on another process, except an image sweep waiting for the store's lock while
/// a pull in this agent holds it: sweeps take turns (`ImageGc::sweep_turn`), so at most one
/// thread waits so and pulls always have the others.
const BLOCKING_THREADS: usize = 8;

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::malloc::limit_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("start the async runtime")?;
    rt.block_on(run_async(args))
}

async fn run_async(args: AgentArgs) -> anyhow::Result<()> {
    // Static pods are named <name>-<node name>: a node name that is no DNS subdomain would
    // make every pod name invalid.
    let node_name = crate::pod::node::node_name(args.node_name.as_deref());
    if !crate::source::validate::is_subdomain(&node_name) {
        anyhow::bail!(
            "node name {node_name:?} (--node-name, else the hostname): must be a lowercase RFC 1123 subdomain (e.g. 'node-1.example.com')"
        );
    }
    let _lock = lock_root(&args.root.root)?;
    // Bind before touching anything: a second agent on the same socket stops here.
    let (listener, _socket_file) = crate::cri::bind(&args.socket)?;
    reaper::become_subreaper().context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    let pause = runtime::find_pause(args.pause_binary.as_deref()).map_err(anyhow::Error::msg)?;
    let backoff = BackoffConfig {
        initial: args.backoff_initial,
        max: args.backoff_max,
    };
    let ctx = context(
        &args.root.root,
        &args.log_dir,
        &args.manifests,
        &args.cgroup_parent,
        pause,
        args.node_name.as_deref(),
        args.node_ip,
        &args.node_labels.0,
        args.max_pods as usize,
        args.allowed_unsafe_sysctls.clone(),
        backoff,
        args.housekeeping_interval,
        args.seccomp.clone(),
        args.log_rotation.policy(),
        args.network.config(),
        ImageSettings {
            registry: args.registry.options(),
            gc: crate::images::gc::GcPolicy {
                high_percent: args.image_gc_high_threshold,
                low_percent: args.image_gc_low_threshold.min(args.image_gc_high_threshold),
                min_age: args.minimum_image_ttl_duration,
            },
        },
    )?;
    tracing::info!(
        node = %ctx.node.name,
        manifests = %args.manifests.display(),
        root = %args.root.root.display(),
        cgroups = %ctx.runtime.cgroups.version(),
        "minilet agent starting"
    );

    let (source, desired, invalid, changes) =
        ManifestSource::start(&args.manifests, &ctx.node.name, args.relist_period)
            .with_context(|| format!("watch {}", args.manifests.display()))?;
    let mut manager = Manager::start(ctx.clone(), desired, invalid).await;
    if !args.streaming_address.ip().is_loopback() {
        anyhow::bail!(
            "--streaming-address {}: must be a loopback address (its URLs carry no other authentication)",
            args.streaming_address
        );
    }
    let (streaming, streaming_task) =
        crate::cri::streaming::Streaming::start(&ctx.cri, args.streaming_address, args.streaming_token_ttl)
            .await
            .with_context(|| format!("start the streaming server on {}", args.streaming_address))?;
    ctx.cri.set_streaming(streaming);
    let server = crate::cri::serve(ctx.cri.clone(), listener);
    let gc = tokio::spawn(image_gc_loop(ctx.clone(), args.image_gc_period));
    let shutdown = shutdown_signal();
    tracing::info!(socket = %args.socket.display(), "minilet agent ready");
    manager.run(changes, shutdown).await;
    gc.abort();
    drop(source);
    server.abort();
    streaming_task.abort();

    if args.cleanup_on_exit {
        tracing::info!("removing all pods (--cleanup-on-exit)");
        manager.remove_all().await;
        ctx.cri.cri_pods.remove_all().await;
        remove_cgroup_tree(&ctx.runtime);
    } else {
        tracing::info!("agent exiting; pods keep running and will be re-adopted by the next agent");
        manager.detach();
    }
    Ok(())
}

/// How the agent gets and keeps images.
#[derive(Debug, Default)]
struct ImageSettings {
    registry: crate::images::registry::RegistryOptions,
    gc: crate::images::gc::GcPolicy,
}

/// Build the shared context: the SIGCHLD reaper, cgroups, runtime (state directory, images),
/// events, and a watch on the image store so pods waiting for an image start when it arrives.
#[allow(clippy::too_many_arguments)] // one per group of agent flags
fn context(
    root: &std::path::Path,
    log_dir: &std::path::Path,
    manifests: &std::path::Path,
    cgroup_parent: &str,
    pause_path: std::path::PathBuf,
    node_name: Option<&str>,
    node_ip: Option<std::net::IpAddr>,
    node_labels: &[(String, String)],
    max_pods: usize,
    allowed_unsafe_sysctls: crate::pod::sysctls::AllowedSysctls,
    backoff: BackoffConfig,
    housekeeping_interval: std::time::Duration,
    seccomp: runtime::seccomp::SeccompArgs,
    log_rotation: runtime::log_rotation::Rotation,
    network: runtime::network::NetworkConfig,
    images: ImageSettings,
) -> anyhow::Result<Arc<Context>> {
    reaper::start().context("install the SIGCHLD handler")?;
    let node = NodeInfo::detect(node_name, node_ip);
    let cgroups = cgroups::detect(&CgroupParent::parse(cgroup_parent)).context("set up cgroups")?;
    let config = RuntimeConfig {
        root: root.to_path_buf(),
        log_dir: log_dir.to_path_buf(),
        pause_path,
        min_oom_score_adj: runtime::min_oom_score_adj(),
        seccomp,
        log_rotation,
        network,
    };
    let runtime = Arc::new(Runtime::new(config, cgroups).context("open the state directory")?);
    // Reference parsing builds its regex on first use: pay that now, not in the first pod's start.
    let _ = crate::images::normalize_reference("localhost/warm-up");
    let images_changed = watch_images(&runtime)?;
    let puller = Arc::new(crate::images::Puller::new(runtime.images.clone(), images.registry));
    let image_gc = Arc::new(crate::images::gc::ImageGc::new(runtime.images.clone(), images.gc));
    let cri_pods = Arc::new(crate::runtime::cri::CriPods::load(runtime.clone(), node.clone()));
    let (registry, events) = (Registry::default(), Events::new());
    let cri = Arc::new(crate::cri::Cri {
        runtime: runtime.clone(),
        cri_pods,
        node: node.clone(),
        registry: registry.clone(),
        events: events.clone(),
        puller,
        image_gc: image_gc.clone(),
        stats: Default::default(),
        manifests: manifests.to_path_buf(),
        streaming: Default::default(),
    });
    Ok(Arc::new(Context {
        cri,
        image_gc,
        runtime,
        admission: crate::pod::admission::Ledger::new(crate::pod::admission::NodeResources::new(
            &node,
            node_labels,
            max_pods,
            allowed_unsafe_sysctls,
        )),
        node,
        events,
        registry,
        backoff,
        housekeeping_interval,
        images_changed,
        pleg: Default::default(),
    }))
}

/// inotify on the image store's directory: every change of its index bumps the counter.
fn watch_images(runtime: &Runtime) -> anyhow::Result<watch::Receiver<u64>> {
    use notify::Watcher;
    let index = runtime.images.index_path();
    let dir = index.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let (tx, rx) = watch::channel(0u64);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && index_changed(&ev, &index)
        {
            tx.send_modify(|n| *n += 1);
        }
    })
    .context("create the image store watcher")?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watch {}", dir.display()))?;
    // The watcher lives as long as the agent.
    std::mem::forget(watcher);
    Ok(rx)
}

/// Whether an event of the image store's directory is a change of its index. Reads are not:
/// notify also reports opens, and every pod start reads the index; counting those woke every
/// pod's worker at each start (O(pods) per start).
fn index_changed(ev: &notify::Event, index: &std::path::Path) -> bool {
    !matches!(ev.kind, notify::EventKind::Access(_)) && ev.paths.iter().any(|p| p == index)
}

/// Resolves on SIGTERM or SIGINT, caught from this call on. It is made before the agent says
/// it is ready: a handler installed only when the future is first polled would leave a
/// moment after "ready" when SIGTERM still kills the agent outright, with no cleanup.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = signal(SignalKind::terminate()).and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    async move {
        let Ok((mut term, mut int)) = handlers else {
            tracing::error!("cannot install SIGTERM/SIGINT handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    }
}

/// One agent per state directory: a second one would fight the first over every pod.
fn lock_root(root: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    crate::file_modes::create_dir_all(root, crate::file_modes::STATE_DIR)
        .with_context(|| format!("create {}", root.display()))?;
    let path = root.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(crate::file_modes::STATE_FILE)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another minilet agent is using {} (lock {} is held)",
            root.display(),
            path.display()
        );
    }
    Ok(file)
}

/// Remove the cgroup parent and everything minilet created under it.
fn remove_cgroup_tree(runtime: &Runtime) {
    if let Err(e) = runtime.cgroups.remove("") {
        tracing::warn!(error = %e, "remove the cgroup parent");
    }
}

/// Look at the image filesystem every `period` and collect unused images when it is full.
async fn image_gc_loop(ctx: Arc<Context>, period: std::time::Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let turn = ctx.image_gc.sweep_turn().await;
        let ctx = ctx.clone();
        let done = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            ctx.image_gc
                .run_once(|| crate::runtime::state::images_in_use(&ctx.runtime.layout))
        })
        .await;
        match done {
            Ok(Ok(report)) if !report.removed.is_empty() => {
                tracing::info!(removed = ?report.removed, freed = report.freed, usage_percent = report.usage_percent, "image garbage collection");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "image garbage collection failed"),
            Err(e) => tracing::warn!(error = %e, "image garbage collection task failed"),
        }
    }
}

/// `minilet reset`: stop and remove every pod the state directory knows, then the cgroups.
pub fn reset(args: &ResetArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async {
        let _lock = lock_root(&args.root.root)?;
        let pause = runtime::find_pause(None).unwrap_or_default();
        let ctx = context(
            &args.root.root,
            &args.log_dir,
            // `reset` serves no CRI client: no refusal names the manifests directory.
            std::path::Path::new(""),
            &args.cgroup_parent,
            pause,
            None,
            None,
            &[],
            crate::pod::admission::MAX_PODS,
            Default::default(),
            BackoffConfig::default(),
            std::time::Duration::from_secs(10),
            Default::default(),
            Default::default(),
            // Removal needs no network settings: each pod's DEL comes from its own cache.
            Default::default(),
            ImageSettings::default(),
        )?;
        // Nothing is desired: every pod found is removed.
        let mut manager = Manager::start(ctx.clone(), Vec::new(), Vec::new()).await;
        manager.remove_all().await;
        ctx.cri.cri_pods.remove_all().await;
        remove_cgroup_tree(&ctx.runtime);
        let left = pod::status::Registry::list(&ctx.registry).len();
        println!(
            "removed all pods from {}{}",
            args.root.root.display(),
            if left > 0 {
                format!(" ({left} could not be removed)")
            } else {
                String::new()
            }
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};

    use super::index_changed;

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(path.into())
    }

    #[test]
    fn only_changes_of_the_index_count_not_reads() {
        let index = std::path::Path::new("/s/images/index.json");
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(index_changed(&event(renamed, "/s/images/index.json"), index));
        assert!(index_changed(
            &event(EventKind::Create(CreateKind::File), "/s/images/index.json"),
            index
        ));
        // A pod start reads the index: no worker may wake for that.
        let opened = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(!index_changed(&event(opened, "/s/images/index.json"), index));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert!(!index_changed(&event(read, "/s/images/index.json"), index));
        assert!(!index_changed(&event(renamed, "/s/images/gc.lock"), index));
    }
}
