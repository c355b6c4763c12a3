//! Finding sandboxes and containers by ID (or a unique prefix of one, as crictl passes
//! truncated IDs) and matching CRI filters.

use std::collections::HashMap;

use crate::pod::status::{Attempt, PodEntry, Registry};
use crate::runtime::RuntimeError;

/// Exactly one match, or the error a CRI client expects.
fn unique<T>(mut found: Vec<T>, what: &'static str, id: &str) -> Result<T, RuntimeError> {
    match found.len() {
        0 => Err(RuntimeError::NotFound {
            kind: what,
            id: id.to_owned(),
        }),
        1 => Ok(found.remove(0)),
        n => Err(RuntimeError::InvalidArgument(format!(
            "{what} ID prefix \"{id}\" is ambiguous ({n} matches)"
        ))),
    }
}

fn nonempty<'a>(id: &'a str, what: &str) -> Result<&'a str, RuntimeError> {
    if id.is_empty() {
        Err(RuntimeError::InvalidArgument(format!("{what} ID must not be empty")))
    } else {
        Ok(id)
    }
}

/// The pod whose sandbox ID is `id` or starts with it.
pub fn sandbox(registry: &Registry, id: &str) -> Result<PodEntry, RuntimeError> {
    let id = nonempty(id, "sandbox")?;
    let exact: Vec<PodEntry> = registry.list().into_iter().filter(|e| e.sandbox.id == id).collect();
    if !exact.is_empty() {
        return unique(exact, "sandbox", id);
    }
    unique(
        registry
            .list()
            .into_iter()
            .filter(|e| e.sandbox.id.starts_with(id))
            .collect(),
        "sandbox",
        id,
    )
}

/// The container attempt whose ID is `id` or starts with it, and its pod.
pub fn container(registry: &Registry, id: &str) -> Result<(PodEntry, Attempt), RuntimeError> {
    let id = nonempty(id, "container")?;
    let mut found = Vec::new();
    for e in registry.list() {
        for a in &e.attempts {
            if a.files.record.id.starts_with(id) {
                found.push((e.clone(), a.clone()));
            }
        }
    }
    if let Some(exact) = found.iter().position(|(_, a)| a.files.record.id == id) {
        return Ok(found.swap_remove(exact));
    }
    unique(found, "container", id)
}

/// A CRI filter's ID: empty matches everything, otherwise a prefix.
pub fn id_matches(filter: &str, id: &str) -> bool {
    filter.is_empty() || id.starts_with(filter)
}

/// Every selector entry is present with the same value.
pub fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_prefixes() {
        let labels = HashMap::from([("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())]);
        assert!(labels_match(&labels, &HashMap::new()));
        assert!(labels_match(&labels, &HashMap::from([("a".into(), "1".into())])));
        assert!(!labels_match(&labels, &HashMap::from([("a".into(), "2".into())])));
        assert!(!labels_match(&labels, &HashMap::from([("c".into(), "1".into())])));
        assert!(id_matches("", "abc") && id_matches("ab", "abc") && !id_matches("b", "abc"));
        let e = unique(Vec::<u8>::new(), "container", "x").unwrap_err();
        assert!(matches!(e, RuntimeError::NotFound { kind: "container", .. }), "{e}");
        assert_eq!(e.to_string(), "container \"x\" not found");
        let e = unique(vec![1, 2], "container", "x").unwrap_err();
        assert!(matches!(e, RuntimeError::InvalidArgument(_)), "{e}");
    }
}
