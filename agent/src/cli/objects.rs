//! `-o json|yaml|name` output: Kubernetes objects printed as kubectl prints them (keys sorted,
//! JSON indented by four spaces with Go's HTML escaping, several objects wrapped in a `List`).

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};

/// The output formats `get` accepts besides the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Wide,
    Json,
    Yaml,
    Name,
}

/// An object as a JSON value; serde_json's map is ordered by key, which gives kubectl's key
/// order (kubectl prints through unstructured maps, which sort).
pub fn to_value<T: Serialize>(obj: &T) -> Result<Value> {
    serde_json::to_value(obj).context("encoding the object")
}

/// kubectl's `List` wrapper for zero or several objects.
pub fn list(items: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    })
}

/// JSON as Go's `json.MarshalIndent(obj, "", "    ")` writes it, with a final newline.
pub fn json(value: &Value) -> Result<String> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    value.serialize(&mut ser).context("encoding JSON")?;
    let text = String::from_utf8(buf).context("encoding JSON")?;
    // Go escapes these inside strings (they cannot occur outside one in JSON).
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    Ok(out)
}

/// YAML, keys sorted, sequences not indented under their key (as go-yaml writes them).
pub fn yaml(value: &Value) -> Result<String> {
    serde_yaml::to_string(value).context("encoding YAML")
}

/// Print one object (when exactly one name was asked for) or a `List`.
pub fn render(format: OutputFormat, mut items: Vec<Value>, single: bool) -> Result<String> {
    let value = if single && items.len() == 1 {
        items.remove(0)
    } else {
        list(items)
    };
    match format {
        OutputFormat::Json => json(&value),
        OutputFormat::Yaml => yaml(&value),
        OutputFormat::Wide | OutputFormat::Name => anyhow::bail!("not an object format: {format:?}"),
    }
}

/// Objects in the requested format: kubectl's table (`table(wide)`), or `-o name|json|yaml`.
pub fn render_objects<T>(
    objs: &[&T],
    format: Option<OutputFormat>,
    single: bool,
    table: impl Fn(bool) -> String,
) -> Result<String>
where
    T: Serialize
        + k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    match format {
        None => Ok(table(false)),
        Some(OutputFormat::Wide) => Ok(table(true)),
        Some(OutputFormat::Name) => Ok(objs
            .iter()
            .map(|o| {
                let name = o.metadata().name.as_deref().unwrap_or_default();
                format!("{}/{name}\n", T::KIND.to_lowercase())
            })
            .collect()),
        Some(f) => {
            let items = objs.iter().map(to_value).collect::<Result<Vec<_>>>()?;
            render(f, items, single)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_go_shaped() {
        let v = json!({"b": "<none> & more", "a": [1, {"z": 1, "y": []}]});
        assert_eq!(
            json(&v).unwrap(),
            "{\n    \"a\": [\n        1,\n        {\n            \"y\": [],\n            \"z\": 1\n        }\n    ],\n    \"b\": \"\\u003cnone\\u003e \\u0026 more\"\n}\n"
        );
        // The escapes are still the same string.
        let back: Value = serde_json::from_str(&json(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn empty_list_shape() {
        assert_eq!(
            render(OutputFormat::Yaml, vec![], false).unwrap(),
            "apiVersion: v1\nitems: []\nkind: List\nmetadata:\n  resourceVersion: ''\n"
        );
    }
}
