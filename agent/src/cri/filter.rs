//! Matching CRI filters (finding one sandbox or container by a unique ID prefix, as crictl
//! passes truncated IDs, is the store's: [`crate::runtime::cri::CriPods`]).

use std::collections::HashMap;

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
    }
}
