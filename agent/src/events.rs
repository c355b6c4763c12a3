//! Events, as the kubelet records them: what happened to which object, and why.
//!
//! Kept in memory (a bounded ring, newest last; repeats of the same event are counted, as the
//! API server's aggregation does) and logged as they happen.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Most events kept; older ones are dropped first.
const CAPACITY: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an event is about (`involvedObject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// `Pod`, or `File` for a manifest that does not (yet) describe a pod.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// e.g. `spec.containers{nginx}`.
    pub field_path: Option<String>,
}

impl ObjectRef {
    pub fn pod(namespace: &str, name: &str, uid: &str) -> Self {
        ObjectRef {
            kind: "Pod",
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            field_path: None,
        }
    }

    pub fn file(path: &std::path::Path) -> Self {
        ObjectRef {
            kind: "File",
            namespace: String::new(),
            name: path.display().to_string(),
            uid: String::new(),
            field_path: None,
        }
    }

    /// The same pod, narrowed to one of its containers.
    pub fn container(&self, name: &str, init: bool) -> Self {
        let list = if init { "initContainers" } else { "containers" };
        ObjectRef {
            field_path: Some(format!("spec.{list}{{{name}}}")),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub object: ObjectRef,
    pub kind: EventType,
    pub reason: String,
    pub message: String,
    pub count: u32,
    /// Unix nanoseconds.
    pub first: i64,
    pub last: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Events {
    inner: Arc<Mutex<VecDeque<Event>>>,
}

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn normal(&self, object: &ObjectRef, reason: &str, message: impl Into<String>) {
        self.record(object, EventType::Normal, reason, message.into());
    }

    pub fn warning(&self, object: &ObjectRef, reason: &str, message: impl Into<String>) {
        self.record(object, EventType::Warning, reason, message.into());
    }

    pub fn record(&self, object: &ObjectRef, kind: EventType, reason: &str, message: String) {
        let target = format!(
            "{} {}{}",
            object.kind,
            qualified(object),
            object
                .field_path
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default()
        );
        match kind {
            EventType::Normal => tracing::info!(object = %target, reason, "{message}"),
            EventType::Warning => tracing::warn!(object = %target, reason, "{message}"),
        }
        let now = crate::runtime::spec::now_nanos();
        let mut events = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(same) = events
            .iter_mut()
            .rev()
            .find(|e| e.object == *object && e.reason == reason && e.message == message && e.kind == kind)
        {
            same.count += 1;
            same.last = now;
            return;
        }
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(Event {
            object: object.clone(),
            kind,
            reason: reason.into(),
            message,
            count: 1,
            first: now,
            last: now,
        });
    }

    /// All events, oldest first.
    pub fn list(&self) -> Vec<Event> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

fn qualified(o: &ObjectRef) -> String {
    if o.namespace.is_empty() {
        o.name.clone()
    } else {
        format!("{}/{}", o.namespace, o.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_not_duplicated() {
        let ev = Events::new();
        let pod = ObjectRef::pod("default", "web", "u1");
        ev.warning(
            &pod.container("app", false),
            "BackOff",
            "Back-off restarting failed container",
        );
        ev.warning(
            &pod.container("app", false),
            "BackOff",
            "Back-off restarting failed container",
        );
        ev.normal(&pod, "Started", "Started container app");
        let list = ev.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].count, 2);
        assert_eq!(list[0].object.field_path.as_deref(), Some("spec.containers{app}"));
    }
}
