//! Events (core/v1 Event objects from Node.ListEvents): the `get events` table and the
//! `Events:` section of `describe`, with kubectl's timestamps and counts.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;

use super::client::Client;
use super::objects::{self, OutputFormat};
use super::printers::{human_duration, since};
use super::tabwriter::TabWriter;

/// Who reports events when the event itself does not say.
pub const DEFAULT_SOURCE: &str = "minilet";

fn decode(json: &[String]) -> Result<Vec<Event>> {
    json.iter()
        .map(|j| serde_json::from_str(j).context("the agent sent an event that is not a valid core/v1 Event"))
        .collect()
}

/// Events of `namespace` (None: all), ordered by when they last happened.
pub async fn list(client: &Client, namespace: Option<&str>) -> Result<Vec<Event>> {
    let json = client
        .list_events(namespace.unwrap_or_default(), "", "")
        .await
        .context("listing events")?;
    let mut events = decode(&json)?;
    if let Some(ns) = namespace {
        events.retain(|e| {
            e.metadata
                .namespace
                .as_deref()
                .or(e.involved_object.namespace.as_deref())
                == Some(ns)
        });
    }
    events.sort_by_key(last_seen);
    Ok(events)
}

/// Events about one object (namespace, name and UID), for `describe`.
pub async fn about(client: &Client, namespace: &str, name: &str, uid: &str) -> Result<Vec<Event>> {
    let json = client
        .list_events(namespace, name, uid)
        .await
        .context("listing the pod's events")?;
    let mut events = decode(&json)?;
    events.retain(|e| {
        let o = &e.involved_object;
        o.name.as_deref() == Some(name)
            && o.namespace.as_deref().unwrap_or(namespace) == namespace
            && (uid.is_empty() || o.uid.as_deref().is_none_or(|u| u.is_empty() || u == uid))
    });
    events.sort_by_key(last_seen);
    Ok(events)
}

fn first_seen(e: &Event) -> Option<Timestamp> {
    e.first_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(e.event_time.as_ref().map(|t| t.0))
}

fn last_seen(e: &Event) -> Option<Timestamp> {
    if let Some(t) = e.series.as_ref().and_then(|s| s.last_observed_time.as_ref()) {
        return Some(t.0);
    }
    e.last_timestamp.as_ref().map(|t| t.0).or_else(|| first_seen(e))
}

fn ago(now: Timestamp, t: Option<Timestamp>) -> String {
    match t {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".into(),
    }
}

fn count(e: &Event) -> i32 {
    match &e.series {
        Some(s) => s.count.unwrap_or(1),
        None => e.count.filter(|&c| c != 0).unwrap_or(1),
    }
}

/// OBJECT: `kind/name` in lower case as kubectl prints it; a manifest file (kind File) is
/// shown as its path, which is what names it.
fn object(e: &Event) -> String {
    let o = &e.involved_object;
    let kind = o.kind.clone().unwrap_or_default();
    match o.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) if kind == "File" => name.to_string(),
        Some(name) => format!("{}/{name}", kind.to_lowercase()),
        None => kind.to_lowercase(),
    }
}

fn source(e: &Event) -> String {
    let first = |a: Option<&str>, b: Option<&str>| a.filter(|s| !s.is_empty()).or(b).unwrap_or_default().to_string();
    let src = e.source.as_ref();
    let component = first(
        src.and_then(|s| s.component.as_deref()),
        e.reporting_component.as_deref(),
    );
    let host = first(src.and_then(|s| s.host.as_deref()), e.reporting_instance.as_deref());
    if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    }
}

/// The `get events` table (kubectl's printEvent; `-o wide` adds SUBOBJECT, SOURCE,
/// FIRST SEEN, COUNT and NAME).
pub fn table(events: &[&Event], wide: bool, with_namespace: bool, now: Timestamp) -> String {
    let mut w = TabWriter::table();
    let mut header = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT"];
    if wide {
        header.extend(["SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT", "NAME"]);
    } else {
        header.push("MESSAGE");
    }
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    let _ = writeln!(w, "{}", header.join("\t"));
    for e in events {
        let first = ago(now, first_seen(e));
        let last = match (&e.series, &e.last_timestamp) {
            (None, None) => first.clone(),
            _ => ago(now, last_seen(e)),
        };
        let mut cells = vec![
            last,
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            object(e),
        ];
        let message = e.message.as_deref().unwrap_or_default().trim().to_string();
        if wide {
            cells.extend([
                e.involved_object.field_path.clone().unwrap_or_default(),
                source(e),
                message,
                first,
                count(e).to_string(),
                e.metadata.name.clone().unwrap_or_default(),
            ]);
        } else {
            cells.push(message);
        }
        if with_namespace {
            cells.insert(0, e.metadata.namespace.clone().unwrap_or_default());
        }
        let _ = writeln!(w, "{}", cells.join("\t"));
    }
    w.render()
}

/// Events in the requested format.
pub fn render(
    events: &[&Event],
    format: Option<OutputFormat>,
    with_namespace: bool,
    single: bool,
    now: Timestamp,
) -> Result<String> {
    objects::render_objects(events, format, single, |wide| table(events, wide, with_namespace, now))
}

/// `describe`'s `Events:` section (kubectl's DescribeEvents), lines ending in newlines and
/// cells separated by tabs, for the describe tab writer.
pub fn describe_section(events: &[Event], now: Timestamp) -> String {
    if events.is_empty() {
        return "Events:\t<none>\n".into();
    }
    let mut out = String::from("Events:\n  Type\tReason\tAge\tFrom\tMessage\n  ----\t------\t----\t----\t-------\n");
    for e in events {
        let first = match &e.event_time {
            Some(t) => human_duration(now.duration_since(t.0)),
            None => since(now, e.first_timestamp.as_ref()),
        };
        let interval = match (&e.series, e.count) {
            (Some(s), _) => format!(
                "{} (x{} over {first})",
                ago(now, s.last_observed_time.as_ref().map(|t| t.0)),
                s.count.unwrap_or(1)
            ),
            (None, Some(n)) if n > 1 => {
                format!("{} (x{n} over {first})", since(now, e.last_timestamp.as_ref()))
            }
            _ => first,
        };
        let from = e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .filter(|s| !s.is_empty())
            .or(e.reporting_component.clone().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_SOURCE.into());
        let _ = writeln!(
            out,
            "  {}\t{}\t{interval}\t{from}\t{}",
            e.type_.as_deref().unwrap_or_default(),
            e.reason.as_deref().unwrap_or_default(),
            e.message.as_deref().unwrap_or_default().trim()
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cli::printers::tests::now;

    pub(crate) fn event(yaml: &str) -> Event {
        serde_yaml::from_str(yaml).unwrap()
    }

    pub(crate) fn sample() -> Vec<Event> {
        vec![
            event(
                "metadata: {name: web.1, namespace: default}
involvedObject: {kind: Pod, name: web, namespace: default, uid: u1}
reason: Started
message: 'Started container nginx'
type: Normal
source: {component: minilet, host: node1}
count: 1
firstTimestamp: '2024-05-01T11:58:00Z'
lastTimestamp: '2024-05-01T11:58:00Z'",
            ),
            event(
                "metadata: {name: web.2, namespace: default}
involvedObject: {kind: Pod, name: web, namespace: default, uid: u1, fieldPath: 'spec.containers{app}'}
reason: BackOff
message: 'Back-off restarting failed container app'
type: Warning
source: {component: minilet}
count: 3
firstTimestamp: '2024-05-01T11:55:00Z'
lastTimestamp: '2024-05-01T11:59:00Z'",
            ),
            event(
                "metadata: {name: bad.1}
involvedObject: {kind: File, name: /etc/minilet/manifests/bad.yaml}
reason: Invalid
message: 'spec.containers: Required value'
type: Warning
firstTimestamp: '2024-05-01T11:59:30Z'",
            ),
        ]
    }

    #[test]
    fn get_events_table() {
        let events = sample();
        let refs: Vec<&Event> = events.iter().collect();
        assert_eq!(
            table(&refs, false, false, now()),
            "LAST SEEN   TYPE      REASON    OBJECT                            MESSAGE\n\
             2m          Normal    Started   pod/web                           Started container nginx\n\
             60s         Warning   BackOff   pod/web                           Back-off restarting failed container app\n\
             30s         Warning   Invalid   /etc/minilet/manifests/bad.yaml   spec.containers: Required value\n"
        );
        let wide = table(&refs, true, true, now());
        let header = wide.lines().next().unwrap();
        assert!(header.starts_with("NAMESPACE   LAST SEEN   TYPE"), "{header}");
        assert!(wide.contains("spec.containers{app}   minilet "), "{wide}");
        assert!(wide.contains("minilet, node1"), "{wide}");
        let line = wide.lines().nth(2).unwrap();
        assert!(line.ends_with("5m           3       web.2"), "{line}");
    }

    #[test]
    fn events_as_a_list() {
        let events = sample();
        let refs: Vec<&Event> = events.iter().collect();
        let yaml = render(&refs, Some(OutputFormat::Yaml), false, false, now()).unwrap();
        let list: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(list["kind"], "List");
        let items: Vec<Event> = serde_json::from_value(list["items"].clone()).unwrap();
        assert_eq!(items, events);
        assert_eq!(
            render(&refs[..1], Some(OutputFormat::Name), false, false, now()).unwrap(),
            "event/web.1\n"
        );
    }

    #[test]
    fn describe_events_section() {
        let events = sample();
        let mut w = TabWriter::describe();
        w.write_str(&describe_section(&events[..2], now())).unwrap();
        assert_eq!(
            w.render(),
            "Events:\n  Type     Reason   Age               From     Message\n  ----     ------   ----              ----     -------\n  Normal   Started  2m                minilet  Started container nginx\n  Warning  BackOff  60s (x3 over 5m)  minilet  Back-off restarting failed container app\n"
        );
        assert_eq!(describe_section(&[], now()), "Events:\t<none>\n");
    }
}
