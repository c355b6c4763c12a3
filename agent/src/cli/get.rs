//! `minilet get pods|events`: kubectl's table (plain, `-o wide`, `-A`) or the objects
//! themselves (`-o json|yaml|name`), with kubectl's messages for empty and missing results.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Result, bail};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use super::errors::{Exit, ServerError};
use super::objects::{self, OutputFormat};
use super::printers::pod_row;
use super::selector::Selector;
use super::tabwriter::TabWriter;
use super::{NamespaceArgs, SocketArgs, client, events, pods};

#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    /// Resource type: pods (pod, po) or events (event, ev); TYPE/NAME also works.
    pub resource: String,
    /// Names to get (default: all in the namespace).
    pub names: Vec<String>,
    #[command(flatten)]
    pub scope: NamespaceArgs,
    /// Output format: wide, json, yaml or name.
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
    /// Label selector, e.g. -l 'app=web,tier in (front,back)'.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Pods,
    Events,
}

impl Resource {
    /// kubectl's names and short names for the two resource types minilet serves.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "pods" | "pod" | "po" => Ok(Resource::Pods),
            "events" | "event" | "ev" => Ok(Resource::Events),
            _ => bail!("the server doesn't have a resource type \"{s}\""),
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Events => "events",
        }
    }
}

/// The resource type and names, from `TYPE NAME...` or `TYPE/NAME...`.
pub fn resource_and_names(resource: &str, names: &[String]) -> Result<(Resource, Vec<String>)> {
    let Some((kind, first)) = resource.split_once('/') else {
        return Ok((Resource::parse(resource)?, names.to_vec()));
    };
    let kind = Resource::parse(kind)?;
    let mut out = vec![first.to_string()];
    for n in names {
        match n.split_once('/') {
            Some((k, name)) if Resource::parse(k)? == kind => out.push(name.to_string()),
            Some(_) => bail!("minilet get serves one resource type at a time"),
            None => bail!(
                "there is no need to specify a resource type as a separate argument when passing arguments in \
                 resource/name form (e.g. 'minilet get resource/<resource_name>' instead of 'minilet get resource \
                 resource/<resource_name>'"
            ),
        }
    }
    Ok((kind, out))
}

/// kubectl's message when nothing matched (on stderr, exit 0).
pub fn no_resources(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("No resources found in {ns} namespace."),
        None => "No resources found".into(),
    }
}

/// Check the flag combinations kubectl refuses.
pub fn check_names(names: &[String], all_namespaces: bool, selector: &Selector) -> Result<()> {
    if !names.is_empty() && all_namespaces {
        bail!("a resource cannot be retrieved by name across all namespaces");
    }
    if !names.is_empty() && !selector.is_empty() {
        bail!("name cannot be provided when a selector is specified");
    }
    Ok(())
}

/// Items by name, in the order asked (all of them when no names were given), and the
/// NotFound lines (`not_found(name)`) for names that are missing.
pub fn pick<'a, T>(
    items: &'a [T],
    names: &[String],
    name_of: impl Fn(&T) -> &str,
    not_found: impl Fn(&str) -> ServerError,
) -> (Vec<&'a T>, Vec<String>) {
    if names.is_empty() {
        return (items.iter().collect(), vec![]);
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match items.iter().find(|i| name_of(i) == n) {
            Some(i) => found.push(i),
            None => missing.push(not_found(n).to_string()),
        }
    }
    (found, missing)
}

pub async fn run(args: GetArgs) -> Result<ExitCode> {
    let (resource, names) = resource_and_names(&args.resource, &args.names)?;
    let selector = Selector::from_flag(args.selector.as_deref())?;
    check_names(&names, args.scope.all_namespaces, &selector)?;
    let namespace = args.scope.namespace();
    let client = client::connect(&args.socket.socket).await?;
    let now = Timestamp::now();
    let (out, missing, empty) = match resource {
        Resource::Pods => {
            let all = pods::list(&client, namespace, client::Details::Dirs).await?;
            let all: Vec<Pod> = all
                .into_iter()
                .map(|p| p.pod)
                .filter(|p| selector.matches(p.metadata.labels.as_ref()))
                .collect();
            let (found, missing) = pick(
                &all,
                &names,
                |p| p.metadata.name.as_deref().unwrap_or_default(),
                |n| pods::not_found(n, &all),
            );
            let out = render_pods(&found, args.output, namespace.is_none(), names.len() == 1, now)?;
            (out, missing, found.is_empty())
        }
        Resource::Events => {
            let all = events::list(&client, namespace).await?;
            let all: Vec<_> = all
                .into_iter()
                .filter(|e| selector.matches(e.metadata.labels.as_ref()))
                .collect();
            let (found, missing) = pick(
                &all,
                &names,
                |e| e.metadata.name.as_deref().unwrap_or_default(),
                |n| ServerError::not_found(format!("events \"{n}\" not found")),
            );
            let out = events::render(&found, args.output, namespace.is_none(), names.len() == 1, now)?;
            (out, missing, found.is_empty())
        }
    };
    let table = matches!(args.output, None | Some(OutputFormat::Wide));
    if empty && names.is_empty() && table {
        eprintln!("{}", no_resources(namespace));
    } else if !(empty && (table || names.len() == 1)) {
        // Nothing found by name prints only the errors (no header, no empty object); an
        // empty List is still printed for -o json|yaml, as kubectl does.
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
    }
    for m in &missing {
        eprintln!("{m}");
    }
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Exit(1).into())
    }
}

/// The `get pods` table, as kubectl prints it.
pub fn pods_table(pods: &[&Pod], wide: bool, with_namespace: bool, now: Timestamp) -> String {
    let mut w = TabWriter::table();
    let mut header = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
    }
    let _ = writeln!(w, "{}", header.join("\t"));
    for p in pods {
        let r = pod_row(p, now);
        let mut cells = vec![r.name, r.ready, r.status, r.restarts, r.age];
        if with_namespace {
            cells.insert(0, r.namespace);
        }
        if wide {
            cells.extend([r.ip, r.node, r.nominated_node, r.readiness_gates]);
        }
        let _ = writeln!(w, "{}", cells.join("\t"));
    }
    w.render()
}

/// Pods in the requested format; `single` when exactly one name was asked for (then
/// json/yaml print the object itself rather than a List).
pub fn render_pods(
    pods: &[&Pod],
    format: Option<OutputFormat>,
    with_namespace: bool,
    single: bool,
    now: Timestamp,
) -> Result<String> {
    objects::render_objects(pods, format, single, |wide| pods_table(pods, wide, with_namespace, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::printers::tests::{now, pod};

    fn sample() -> Vec<Pod> {
        vec![
            pod("apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: default, creationTimestamp: '2024-05-01T11:57:00Z', labels: {app: web}}
spec: {nodeName: node1, containers: [{name: nginx, image: nginx}]}
status: {phase: Running, podIP: 10.88.0.5, podIPs: [{ip: 10.88.0.5}], conditions: [{type: Ready, status: 'True'}],
  containerStatuses: [{name: nginx, ready: true, restartCount: 0, image: nginx, imageID: '', state: {running: {startedAt: '2024-05-01T11:57:01Z'}}}]}"),
            pod("apiVersion: v1\nkind: Pod\nmetadata: {name: crashy-long-name, namespace: kube-system, creationTimestamp: '2024-04-29T09:00:00Z'}
spec: {nodeName: node1, containers: [{name: app, image: busybox}]}
status: {phase: Running, containerStatuses: [{name: app, ready: false, restartCount: 12, image: busybox, imageID: '',
  state: {waiting: {reason: CrashLoopBackOff}}, lastState: {terminated: {exitCode: 1, finishedAt: '2024-05-01T11:58:30Z'}}}]}"),
        ]
    }

    #[test]
    fn default_table() {
        let pods = sample();
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            pods_table(&refs, false, false, now()),
            "NAME               READY   STATUS             RESTARTS       AGE\n\
             web                1/1     Running            0              3m\n\
             crashy-long-name   0/1     CrashLoopBackOff   12 (90s ago)   2d3h\n"
        );
    }

    #[test]
    fn wide_and_all_namespaces() {
        let pods = sample();
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            pods_table(&refs, true, true, now()),
            "NAMESPACE     NAME               READY   STATUS             RESTARTS       AGE    IP          NODE    NOMINATED NODE   READINESS GATES\n\
             default       web                1/1     Running            0              3m     10.88.0.5   node1   <none>           <none>\n\
             kube-system   crashy-long-name   0/1     CrashLoopBackOff   12 (90s ago)   2d3h   <none>      node1   <none>           <none>\n"
        );
    }

    #[test]
    fn names_and_objects() {
        let pods = sample();
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            render_pods(&refs, Some(OutputFormat::Name), false, false, now()).unwrap(),
            "pod/web\npod/crashy-long-name\n"
        );

        // One name: the Pod itself, which parses back.
        let yaml = render_pods(&refs[..1], Some(OutputFormat::Yaml), false, true, now()).unwrap();
        assert!(yaml.starts_with("apiVersion: v1\nkind: Pod\nmetadata:\n"), "{yaml}");
        let back: Pod = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, pods[0]);
        let json = render_pods(&refs[..1], Some(OutputFormat::Json), false, true, now()).unwrap();
        assert!(
            json.starts_with("{\n    \"apiVersion\": \"v1\",\n    \"kind\": \"Pod\",\n"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Pod>(&json).unwrap(), pods[0]);

        // Several: a List whose items are Pods.
        for format in [OutputFormat::Json, OutputFormat::Yaml] {
            let text = render_pods(&refs, Some(format), false, false, now()).unwrap();
            let list: serde_json::Value = match format {
                OutputFormat::Json => serde_json::from_str(&text).unwrap(),
                _ => serde_yaml::from_str(&text).unwrap(),
            };
            assert_eq!(list["kind"], "List");
            assert_eq!(list["apiVersion"], "v1");
            assert_eq!(list["metadata"]["resourceVersion"], "");
            let items: Vec<Pod> = serde_json::from_value(list["items"].clone()).unwrap();
            assert_eq!(items, pods);
        }
        let yaml = render_pods(&refs, Some(OutputFormat::Yaml), false, false, now()).unwrap();
        assert!(
            yaml.starts_with("apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Pod\n"),
            "{yaml}"
        );
        assert!(
            yaml.ends_with("kind: List\nmetadata:\n  resourceVersion: ''\n"),
            "{yaml}"
        );
    }

    #[test]
    fn names_messages_and_resource_words() {
        let pods = sample();
        let (found, missing) = pick(
            &pods,
            &["web".into(), "nope".into()],
            |p| p.metadata.name.as_deref().unwrap_or_default(),
            |n| pods::not_found(n, &pods),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(missing, vec!["Error from server (NotFound): pods \"nope\" not found"]);
        assert_eq!(
            no_resources(Some("default")),
            "No resources found in default namespace."
        );
        assert_eq!(no_resources(None), "No resources found");
        assert_eq!(Resource::parse("po").unwrap(), Resource::Pods);
        assert_eq!(Resource::parse("ev").unwrap(), Resource::Events);
        assert_eq!(
            Resource::parse("nodes").unwrap_err().to_string(),
            "the server doesn't have a resource type \"nodes\""
        );
        assert_eq!(
            resource_and_names("pod/web", &["pods/db".into()]).unwrap(),
            (Resource::Pods, vec!["web".to_string(), "db".to_string()])
        );
        let sel = Selector::parse("app=web").unwrap();
        assert!(check_names(&["web".into()], false, &sel).is_err());
        assert!(check_names(&["web".into()], true, &Selector::default()).is_err());
        assert!(check_names(&[], true, &sel).is_ok());
    }
}
