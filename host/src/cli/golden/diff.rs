//! What differs between an expected file and a run, one line per difference naming the
//! resource and the field path; bounded, so that a change touching thousands of resources
//! prints its first lines and a count.

use std::collections::BTreeSet;

use serde_json::Value;

use super::file::Golden;

/// The longest value a line quotes, in characters; a longer one is cut with `…`.
const MAX_VALUE_CHARS: usize = 100;

/// The differences between an expected [`Golden`] and an actual one, in resource order.
#[derive(Debug)]
pub(super) struct Diff {
    shown: Vec<String>,
    total: usize,
    max_shown: usize,
}

impl Diff {
    /// Every difference between `expected` and `got`, keeping the text of the first
    /// `max_shown`. Arrays whose elements all have distinct `name`s (virtual hosts, HTTP
    /// filters) are matched by name, so one inserted element is one difference.
    pub(super) fn between(expected: &Golden, got: &Golden, max_shown: usize) -> Self {
        let mut diff = Diff {
            shown: Vec::new(),
            total: 0,
            max_shown,
        };
        if expected.node != got.node {
            let (e, g) = (
                quote(&expected.node.as_str().into()),
                quote(&got.node.as_str().into()),
            );
            diff.push(|| format!("node: expected {e}, got {g}"));
        }
        let keys: BTreeSet<_> = expected
            .resources
            .keys()
            .chain(got.resources.keys())
            .collect();
        for key in keys {
            let at = format!("{} {:?}", short_type(&key.0), key.1);
            match (expected.resources.get(key), got.resources.get(key)) {
                (Some(e), Some(g)) => diff.values(&at, "", e, g),
                (Some(_), None) => {
                    diff.push(|| format!("{at}: removed (expected, not returned by the chain)"))
                }
                (None, Some(_)) => {
                    diff.push(|| format!("{at}: added (returned by the chain, not expected)"))
                }
                (None, None) => {}
            }
        }
        diff
    }

    /// How many differences there are.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// The first differences, one line each.
    pub(super) fn shown(&self) -> &[String] {
        &self.shown
    }

    /// How many differences are counted but not in [`Diff::shown`].
    pub(super) fn hidden(&self) -> usize {
        self.total - self.shown.len()
    }

    /// Counts a difference; formats it only while there is room to show it.
    fn push(&mut self, line: impl FnOnce() -> String) {
        self.total += 1;
        if self.shown.len() < self.max_shown {
            self.shown.push(line());
        }
    }

    /// The differences between two values at `path` inside the resource `at`.
    fn values(&mut self, at: &str, path: &str, expected: &Value, got: &Value) {
        match (expected, got) {
            _ if expected == got => {}
            (Value::Object(e), Value::Object(g)) => {
                for key in e.keys().chain(g.keys()).collect::<BTreeSet<_>>() {
                    let (e, g) = (e.get(key), g.get(key));
                    let (e, g) = (e.unwrap_or(&NOTHING), g.unwrap_or(&NOTHING));
                    self.values(at, &field(path, key), e, g);
                }
            }
            (Value::Array(e), Value::Array(g)) => match (names(e), names(g)) {
                (Some(en), Some(gn)) => self.named(at, path, (e, &en), (g, &gn)),
                _ => {
                    for i in 0..e.len().max(g.len()) {
                        let (e, g) = (e.get(i), g.get(i));
                        let (e, g) = (e.unwrap_or(&NOTHING), g.unwrap_or(&NOTHING));
                        self.values(at, &format!("{path}[{i}]"), e, g);
                    }
                }
            },
            _ => self.push(|| {
                let (e, g) = (quote(expected), quote(got));
                match path {
                    "" => format!("{at}: expected {e}, got {g}"),
                    _ => format!("{at}: {path}: expected {e}, got {g}"),
                }
            }),
        }
    }

    /// Arrays of named elements: each name compared with its namesake, then the order of the
    /// names both have (an HTTP filter moved after the router matters).
    fn named(&mut self, at: &str, path: &str, e: (&[Value], &[&str]), g: (&[Value], &[&str])) {
        let (e, en) = e;
        let (g, gn) = g;
        let find = |names: &[&str], name: &str| names.iter().position(|n| *n == name);
        for (i, name) in en.iter().enumerate() {
            let got = find(gn, name).map_or(&NOTHING, |j| &g[j]);
            self.values(at, &format!("{path}[name={name:?}]"), &e[i], got);
        }
        for (j, name) in gn.iter().enumerate() {
            if find(en, name).is_none() {
                self.values(at, &format!("{path}[name={name:?}]"), &NOTHING, &g[j]);
            }
        }
        let both = |of: &[&str], other: &[&str]| -> Vec<String> {
            of.iter()
                .filter(|n| other.contains(n))
                .map(|n| (*n).to_owned())
                .collect()
        };
        let (eo, go) = (both(en, gn), both(gn, en));
        if eo != go {
            let (eo, go) = (quote(&eo.into()), quote(&go.into()));
            self.push(|| format!("{at}: {path}: order: expected {eo}, got {go}"));
        }
    }
}

/// What an absent field or element compares as; quoted as "nothing".
static NOTHING: Value = Value::Null;

/// The `name` of each element, when every element is an object with a name no other has.
fn names(array: &[Value]) -> Option<Vec<&str>> {
    let names: Vec<&str> = array
        .iter()
        .map(|v| v.get("name").and_then(Value::as_str))
        .collect::<Option<_>>()?;
    let distinct: BTreeSet<&str> = names.iter().copied().collect();
    (distinct.len() == names.len()).then_some(names)
}

/// `path.key`, or `path["key"]` for a key that is not an identifier (`@type`, an extension
/// name with dots).
fn field(path: &str, key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (plain, path.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{key:?}]"),
    }
}

/// A value as one line of JSON, cut to [`MAX_VALUE_CHARS`]; an absent one is `nothing`.
fn quote(value: &Value) -> String {
    if value.is_null() {
        return "nothing".into();
    }
    let text = value.to_string();
    match text.char_indices().nth(MAX_VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The message name of a type URL: `Cluster` for `type.googleapis.com/envoy.config.cluster.v3.Cluster`.
fn short_type(type_url: &str) -> &str {
    type_url.rsplit(['/', '.']).next().unwrap_or(type_url)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    fn golden(resources: &[(&str, Value)]) -> Golden {
        Golden {
            node: "n".into(),
            resources: resources
                .iter()
                .map(|(name, body)| ((CLUSTER.to_owned(), (*name).to_owned()), body.clone()))
                .collect(),
        }
    }

    fn lines(e: &Golden, g: &Golden) -> Vec<String> {
        Diff::between(e, g, 100).shown().to_vec()
    }

    #[test]
    fn a_changed_field_is_named_by_resource_and_path() {
        let e = golden(&[(
            "backend",
            json!({ "connectTimeout": "1s", "lb": { "a.b": [1, 2] } }),
        )]);
        let g = golden(&[(
            "backend",
            json!({ "connectTimeout": "2s", "lb": { "a.b": [1] } }),
        )]);
        assert_eq!(
            lines(&e, &g),
            [
                "Cluster \"backend\": connectTimeout: expected \"1s\", got \"2s\"",
                "Cluster \"backend\": lb[\"a.b\"][1]: expected 2, got nothing",
            ]
        );
    }

    #[test]
    fn added_and_removed_resources_are_named_as_such() {
        let e = golden(&[("old", json!({})), ("same", json!({}))]);
        let g = golden(&[("new", json!({})), ("same", json!({}))]);
        assert_eq!(
            lines(&e, &g),
            [
                "Cluster \"new\": added (returned by the chain, not expected)",
                "Cluster \"old\": removed (expected, not returned by the chain)",
            ]
        );
    }

    #[test]
    fn named_elements_are_matched_by_name_and_their_order_checked() {
        let hosts = |names: &[&str], port: u16| {
            let list: Vec<Value> = names
                .iter()
                .map(|n| json!({ "name": n, "port": port }))
                .collect();
            json!({ "virtualHosts": list })
        };
        let e = golden(&[("r", hosts(&["a", "b"], 1))]);
        let g = golden(&[("r", hosts(&["a", "new", "b"], 1))]);
        assert_eq!(
            lines(&e, &g),
            ["Cluster \"r\": virtualHosts[name=\"new\"]: expected nothing, got {\"name\":\"new\",\"port\":1}"]
        );
        let g = golden(&[("r", hosts(&["b", "a"], 1))]);
        assert_eq!(
            lines(&e, &g),
            ["Cluster \"r\": virtualHosts: order: expected [\"a\",\"b\"], got [\"b\",\"a\"]"]
        );
    }

    #[test]
    fn the_diff_is_bounded_and_counts_what_it_leaves_out() {
        let many = |port: u16| -> Vec<(String, Value)> {
            (0..1000)
                .map(|i| (format!("c{i}"), json!({ "port": port })))
                .collect()
        };
        let (e, g) = (many(1), many(2));
        let as_golden = |list: &[(String, Value)]| {
            golden(
                &list
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.clone()))
                    .collect::<Vec<_>>(),
            )
        };
        let diff = Diff::between(&as_golden(&e), &as_golden(&g), 10);
        assert_eq!(
            (diff.total(), diff.shown().len(), diff.hidden()),
            (1000, 10, 990)
        );

        let long = "x".repeat(500);
        let diff = lines(
            &golden(&[("c", json!({ "s": long }))]),
            &golden(&[("c", json!({}))]),
        );
        assert!(
            diff[0].ends_with("…, got nothing") && diff[0].len() < 200,
            "{diff:?}"
        );
    }
}
