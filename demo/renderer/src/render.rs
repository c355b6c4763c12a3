//! Rendering a template from etcd keys, with minijinja and confd's vocabulary:
//! `gets("/prefix/")` is the key/value pairs under a prefix (sorted by key), `getvs` their
//! values, and the `base` filter a key's last path segment.
//!
//! ```jinja
//! {% for kv in gets("/demo/backends/") %}server {{ kv.value }};  # {{ kv.key | base }}
//! {% endfor %}
//! ```

use std::collections::BTreeMap;

use crate::resource::Resource;
use minijinja::{Environment, UndefinedBehavior, Value};

/// etcd's keys as the renderer last saw them, sorted (so a render depends on the set of
/// keys, never on the order events arrived in).
pub type Store = BTreeMap<String, String>;

/// Render `resource`'s template with the keys of `store` it may read.
pub fn render(resource: &Resource, store: &Store) -> Result<String, minijinja::Error> {
    let visible: Store = store
        .iter()
        .filter(|(k, _)| resource.wants(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut env = Environment::new();
    // A typo in a template is an error, not an empty string in nginx's configuration.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let pairs = visible.clone();
    env.add_function("gets", move |prefix: &str| {
        under(&pairs, prefix)
            .map(|(key, value)| Value::from(BTreeMap::from([("key", key.clone()), ("value", value.clone())])))
            .collect::<Vec<_>>()
    });
    let values = visible;
    env.add_function("getvs", move |prefix: &str| {
        under(&values, prefix).map(|(_, v)| v.clone()).collect::<Vec<_>>()
    });
    env.add_filter("base", |key: &str| key.rsplit('/').next().unwrap_or(key).to_string());
    env.render_str(&resource.template, ())
}

fn under<'a>(store: &'a Store, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a String)> {
    store
        .range(prefix.to_string()..)
        .take_while(move |(k, _)| k.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn resource(template: &str) -> Resource {
        Resource {
            origin: PathBuf::from("t.toml"),
            src: "t.tmpl".into(),
            template: template.into(),
            dest: PathBuf::from("/out"),
            keys: vec!["/demo/backends/".into()],
            check_cmd: None,
            reload_cmd: None,
            mode: 0o644,
        }
    }

    fn store(pairs: &[(&str, &str)]) -> Store {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn gets_getvs_and_base_in_key_order() {
        let r = resource(
            "{% for kv in gets(\"/demo/backends/\") %}{{ kv.key | base }}={{ kv.value }};{% endfor %}|{{ getvs(\"/demo/backends/\") | join(\",\") }}",
        );
        let s = store(&[("/demo/backends/b", "10.0.0.2:80"), ("/demo/backends/a", "10.0.0.1:80")]);
        assert_eq!(
            render(&r, &s).unwrap(),
            "a=10.0.0.1:80;b=10.0.0.2:80;|10.0.0.1:80,10.0.0.2:80"
        );
    }

    #[test]
    fn only_keys_under_the_resource_prefixes_are_visible() {
        let r = resource("{{ getvs(\"/demo/\") | length }} {{ getvs(\"/demo/backends/x\") | length }}");
        let s = store(&[
            ("/demo/backends/a", "1"),
            ("/demo/secret", "2"),
            ("/demo/backends/xy", "3"),
        ]);
        assert_eq!(render(&r, &s).unwrap(), "2 1");
    }

    #[test]
    fn empty_pool_and_errors() {
        let r = resource("{% if getvs(\"/demo/backends/\") %}pool{% else %}none{% endif %}");
        assert_eq!(render(&r, &Store::new()).unwrap(), "none");
        assert!(render(&resource("{{ nope }}"), &Store::new()).is_err());
        assert!(render(&resource("{% for %}"), &Store::new()).is_err());
    }
}
