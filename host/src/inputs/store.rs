//! The store of input documents: by kind and name, each from one source, with a revision.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::plugins::{Document, InputView};

#[derive(Debug, Clone)]
struct Stored {
    json: Arc<str>,
    source: Arc<str>,
}

/// Every input document, from every source. Reads and writes are short critical sections on a
/// plain lock, never held across an `.await`.
#[derive(Debug, Default)]
pub struct InputStore {
    docs: RwLock<BTreeMap<(String, String), Stored>>,
}

impl InputStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces everything `source` contributed by `docs` (a source's full snapshot, e.g. one
    /// file). Returns the keys whose content changed, appeared or disappeared.
    pub fn replace_source(&self, source: &str, docs: Vec<Document>) -> Vec<(String, String)> {
        let Ok(mut map) = self.docs.write() else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        let mut fresh: BTreeMap<(String, String), Arc<str>> = BTreeMap::new();
        for d in docs {
            fresh.insert((d.kind, d.name), d.json);
        }
        map.retain(|key, stored| {
            let keep = &*stored.source != source || fresh.contains_key(key);
            if !keep {
                changed.push(key.clone());
            }
            keep
        });
        let source: Arc<str> = source.into();
        for (key, json) in fresh {
            let same = map.get(&key).is_some_and(|s| s.json == json);
            if !same {
                changed.push(key.clone());
                map.insert(
                    key,
                    Stored {
                        json,
                        source: Arc::clone(&source),
                    },
                );
            }
        }
        metrics::gauge!("input_documents").set(map.len() as f64);
        changed.sort();
        changed.dedup();
        changed
    }

    /// How many documents the store holds.
    pub fn len(&self) -> usize {
        self.docs.read().map_or(0, |m| m.len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl InputView for InputStore {
    fn get(&self, kind: &str, name: &str) -> Option<Document> {
        let map = self.docs.read().ok()?;
        let s = map.get(&(kind.to_owned(), name.to_owned()))?;
        Some(Document {
            kind: kind.to_owned(),
            name: name.to_owned(),
            json: Arc::clone(&s.json),
        })
    }

    fn list(&self, kind: &str) -> Vec<Document> {
        let Ok(map) = self.docs.read() else {
            return Vec::new();
        };
        map.range((kind.to_owned(), String::new())..)
            .take_while(|((k, _), _)| k == kind)
            .map(|((k, n), s)| Document {
                kind: k.clone(),
                name: n.clone(),
                json: Arc::clone(&s.json),
            })
            .collect()
    }

    /// A thread panicked while writing the store: its reads answer nothing from now on, so
    /// every run fails and each group keeps its last good config.
    fn fault(&self) -> Option<String> {
        self.docs
            .is_poisoned()
            .then(|| "the input store was left inconsistent by a panic".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(kind: &str, name: &str, json: &str) -> Document {
        Document {
            kind: kind.into(),
            name: name.into(),
            json: json.into(),
        }
    }

    #[test]
    fn a_source_snapshot_reports_exactly_what_changed() {
        let s = InputStore::new();
        let c = s.replace_source(
            "a.yaml",
            vec![doc("Service", "x", "1"), doc("Service", "y", "1")],
        );
        assert_eq!(c.len(), 2);
        let c = s.replace_source(
            "a.yaml",
            vec![doc("Service", "x", "1"), doc("Service", "y", "2")],
        );
        assert_eq!(c, vec![("Service".to_owned(), "y".to_owned())]);
        let c = s.replace_source("a.yaml", vec![doc("Service", "x", "1")]);
        assert_eq!(c, vec![("Service".to_owned(), "y".to_owned())]);
        assert!(s.get("Service", "y").is_none());
        s.replace_source("b.yaml", vec![doc("Other", "z", "1")]);
        assert_eq!(s.list("Service").len(), 1);
        assert_eq!(s.list("Other").len(), 1);
        assert!(s
            .replace_source("a.yaml", vec![doc("Service", "x", "1")])
            .is_empty());
        assert!(s.fault().is_none());
    }

    #[test]
    fn a_store_poisoned_by_a_panic_reports_a_fault_instead_of_answering_nothing() {
        let s = Arc::new(InputStore::new());
        s.replace_source("a.yaml", vec![doc("Service", "x", "1")]);
        let poisoner = Arc::clone(&s);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.docs.write();
            panic!("a bug while the store is written");
        })
        .join();
        assert!(s.get("Service", "x").is_none(), "reads answer nothing");
        assert!(s.fault().is_some(), "and say so");
    }
}
