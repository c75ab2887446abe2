//! An expected file: one node's resources as JSON, deterministic (sorted by type URL, then
//! name; no versions, no timing) so that a change to it reads well in review.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A resource's place in an expected file: its type URL and name.
pub(super) type Key = (String, String);

/// One node's resources as an expected file holds them.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Golden {
    /// The node's id.
    pub(super) node: String,
    /// Each resource's body in Envoy's JSON form, by type URL and name.
    pub(super) resources: BTreeMap<Key, Value>,
}

impl Golden {
    /// From resources in the form `plugin run` prints (`type_url`, `name`, `resource`).
    pub(super) fn new(node: &str, resources: impl IntoIterator<Item = Map<String, Value>>) -> Self {
        let resources = resources
            .into_iter()
            .map(|mut r| {
                let text = |r: &Map<String, Value>, k: &str| {
                    r.get(k).and_then(Value::as_str).unwrap_or("").to_owned()
                };
                let key = (text(&r, "type_url"), text(&r, "name"));
                (key, r.remove("resource").unwrap_or(Value::Null))
            })
            .collect();
        Golden {
            node: node.to_owned(),
            resources,
        }
    }

    /// Reads an expected file's text; an error says what in it is not the format.
    pub(super) fn parse(text: &str) -> anyhow::Result<Self> {
        let json: Value = serde_json::from_str(text)?;
        let Value::Object(top) = json else {
            anyhow::bail!("not a JSON object with \"node\" and \"resources\"");
        };
        only_keys(&top, &["node", "resources"], "the file")?;
        let node = match top.get("node") {
            Some(Value::String(node)) => node.clone(),
            _ => anyhow::bail!("\"node\" is not a string (the node's id)"),
        };
        let Some(Value::Array(list)) = top.get("resources") else {
            anyhow::bail!("\"resources\" is not an array");
        };
        let mut resources = BTreeMap::new();
        for (i, r) in list.iter().enumerate() {
            let what = format!("resources[{i}]");
            let Value::Object(r) = r else {
                anyhow::bail!("{what} is not an object");
            };
            only_keys(r, &["type_url", "name", "resource"], &what)?;
            let text = |k: &str| match r.get(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(anyhow::anyhow!("{what} has no string {k:?}")),
            };
            let key = (text("type_url")?, text("name")?);
            let body = r
                .get("resource")
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("{what} has no \"resource\""))?;
            if resources.contains_key(&key) {
                anyhow::bail!("{} {:?} is listed twice", key.0, key.1);
            }
            resources.insert(key, body);
        }
        Ok(Golden { node, resources })
    }

    /// The file's text: pretty JSON, object keys sorted, one newline at the end.
    pub(super) fn render(&self) -> anyhow::Result<String> {
        let resources: Vec<Value> = self
            .resources
            .iter()
            .map(|((type_url, name), body)| {
                serde_json::json!({ "type_url": type_url, "name": name, "resource": body })
            })
            .collect();
        let doc = serde_json::json!({ "node": self.node, "resources": resources });
        Ok(serde_json::to_string_pretty(&doc)? + "\n")
    }
}

/// An error naming the first key of `object` not in `known`: a typo or a pasted `version`
/// would otherwise be ignored without a word.
fn only_keys(object: &Map<String, Value>, known: &[&str], what: &str) -> anyhow::Result<()> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => anyhow::bail!(
            "{what} has an unknown key {k:?} (known: {})",
            known.join(", ")
        ),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(type_url: &str, name: &str, body: Value) -> Map<String, Value> {
        let json = serde_json::json!({ "type_url": type_url, "name": name, "resource": body });
        json.as_object().unwrap().clone()
    }

    #[test]
    fn a_golden_renders_sorted_and_parses_back() {
        let golden = Golden::new(
            "envoy-1",
            [
                resource("t/b.Listener", "x", serde_json::json!({ "name": "x" })),
                resource("t/a.Cluster", "z", serde_json::json!({ "name": "z" })),
                resource("t/a.Cluster", "y", serde_json::json!({ "name": "y" })),
            ],
        );
        let text = golden.render().unwrap();
        let (y, z, x) = (
            text.find("\"y\"").unwrap(),
            text.find("\"z\"").unwrap(),
            text.find("\"x\"").unwrap(),
        );
        assert!(y < z && z < x, "{text}");
        assert!(text.ends_with("}\n"));
        assert_eq!(Golden::parse(&text).unwrap(), golden);
    }

    #[test]
    fn a_malformed_expected_file_says_what_is_wrong() {
        let e = |text: &str| Golden::parse(text).unwrap_err().to_string();
        assert!(e("[]").contains("not a JSON object"));
        assert!(e(
            r#"{"node":"n","resources":[{"type_url":"t","name":"a","resource":{},"version":"1"}]}"#
        )
        .contains("resources[0] has an unknown key \"version\""));
        assert!(
            e(r#"{"node":"n","resources":[{"name":"a","resource":{}}]}"#)
                .contains("resources[0] has no string \"type_url\"")
        );
        let twice = r#"{"node":"n","resources":[
            {"type_url":"t","name":"a","resource":{}},{"type_url":"t","name":"a","resource":{}}]}"#;
        assert_eq!(e(twice), "t \"a\" is listed twice");
    }
}
