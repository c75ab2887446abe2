//! The store of input documents by kind and name. It keeps every source's definition of a key
//! and serves the one of highest precedence, so replicas agree whatever order events came in.
//!
//! Precedence: first the source's class, in the order of the `[inputs]` section — the
//! directory, then etcd, then Kubernetes — a later class overriding an earlier one (a source
//! named otherwise, as tests and benches name theirs, ranks below the directory); then, within
//! a class, the source key — a file's path under the directory, an etcd key, a Kubernetes
//! object — the greatest one overriding the others, as in a `conf.d` directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use super::{DocKey, Document, InputView};

/// The prefix of a file's store source: `file:<path relative to the directory>`.
pub(crate) const FILE_SOURCE: &str = "file:";
/// The prefix of an etcd key's store source: `etcd:<key>`.
pub(crate) const ETCD_SOURCE: &str = "etcd:";
/// The prefix of a Kubernetes object's store source: `k8s:<Kind>:<namespace>/<name>`.
pub(crate) const KUBERNETES_SOURCE: &str = "k8s:";

/// Source classes in precedence order: a definition from a later class wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SourceClass {
    Other,
    Files,
    Etcd,
    Kubernetes,
}

/// A source's place in the precedence order: its class, then its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    class: SourceClass,
    source: Arc<str>,
}

impl Rank {
    fn of(source: &str) -> Self {
        let classes = [
            (FILE_SOURCE, SourceClass::Files),
            (ETCD_SOURCE, SourceClass::Etcd),
            (KUBERNETES_SOURCE, SourceClass::Kubernetes),
        ];
        let class = classes
            .into_iter()
            .find(|(prefix, _)| source.starts_with(prefix))
            .map_or(SourceClass::Other, |(_, class)| class);
        Rank {
            class,
            source: source.into(),
        }
    }
}

/// Every source's definition of one key, in precedence order: the last one is in effect.
type Definitions = BTreeMap<Rank, Arc<str>>;

/// A key that more than one source defines: precedence decides which one plugins read, and it
/// stays listed until only one source defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The documents' kind.
    pub kind: String,
    /// The documents' name.
    pub name: String,
    /// Every source defining it (`file:<path>`, `etcd:<key>`, `k8s:…`), the winner first.
    pub sources: Vec<String>,
    /// The source whose definition plugins read.
    pub winner: String,
    /// Whether every source defines the same content (a duplicate, harmless for now).
    pub identical: bool,
}

#[derive(Debug, Default)]
struct Inner {
    docs: BTreeMap<DocKey, Definitions>,
    /// The keys each source defines, so that replacing a source touches only its own keys.
    by_source: HashMap<Arc<str>, BTreeSet<DocKey>>,
    /// Keys with more than one definition.
    conflicts: BTreeSet<DocKey>,
}

/// Every input document, from every source. Reads and writes are short critical sections on a
/// plain lock, never held across an `.await`. Memory is bounded by the sources' own limits:
/// the store holds what they give, once per source.
#[derive(Debug, Default)]
pub struct InputStore {
    inner: RwLock<Inner>,
}

impl InputStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces everything `source` defines by `docs` (a source's full snapshot, e.g. one
    /// file; of two documents with one key in it, the last counts). Returns, sorted, exactly
    /// the keys whose content in effect changed, appeared or disappeared: a definition that
    /// is not the winner changes nothing, and removing the winner falls back to the next one.
    pub fn replace_source(&self, source: &str, docs: Vec<Document>) -> Vec<DocKey> {
        let (changed, new_conflicts) = {
            let Ok(mut inner) = self.inner.write() else {
                return Vec::new();
            };
            let rank = Rank::of(source);
            let mut fresh: BTreeMap<DocKey, Arc<str>> = docs
                .into_iter()
                .map(|d| (DocKey::new(d.kind, d.name), d.json))
                .collect();
            let old = inner.by_source.remove(source).unwrap_or_default();
            let keys: BTreeSet<DocKey> = fresh.keys().cloned().collect();
            let mut changed = Vec::new();
            let mut new_conflicts = Vec::new();
            for key in old.union(&keys) {
                let (effective_changed, joined) = inner.define(key, &rank, fresh.remove(key));
                if effective_changed {
                    changed.push(key.clone());
                }
                if joined {
                    new_conflicts.extend(inner.conflict(key));
                }
            }
            if !keys.is_empty() {
                inner.by_source.insert(Arc::clone(&rank.source), keys);
            }
            metrics::gauge!("input_documents").set(inner.docs.len() as f64);
            metrics::gauge!("input_conflicts").set(inner.conflicts.len() as f64);
            (changed, new_conflicts)
        };
        for c in new_conflicts {
            tracing::warn!(
                kind = %c.kind,
                name = %c.name,
                winner = %c.winner,
                sources = %c.sources.join(", "),
                identical = c.identical,
                "input document defined by several sources; the one of highest precedence wins"
            );
        }
        changed
    }

    /// Every key defined by more than one source, by kind and name.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let found = inner.conflicts.iter().filter_map(|key| inner.conflict(key));
        found.collect()
    }

    /// How many documents (distinct keys) the store holds.
    pub fn len(&self) -> usize {
        self.inner.read().map_or(0, |i| i.docs.len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Sets (or with `None` removes) `rank`'s definition of `key`. Returns whether the content
    /// in effect changed, and whether this made `rank` join other definitions of the key.
    fn define(&mut self, key: &DocKey, rank: &Rank, json: Option<Arc<str>>) -> (bool, bool) {
        let defs = self.docs.entry(key.clone()).or_default();
        let before = defs.last_key_value().map(|(_, j)| Arc::clone(j));
        let joined = match json {
            Some(json) => defs.insert(rank.clone(), json).is_none() && defs.len() > 1,
            None => {
                defs.remove(rank);
                false
            }
        };
        let after = defs.last_key_value().map(|(_, j)| Arc::clone(j));
        if defs.len() > 1 {
            self.conflicts.insert(key.clone());
        } else {
            self.conflicts.remove(key);
        }
        if defs.is_empty() {
            self.docs.remove(key);
        }
        (before != after, joined)
    }

    fn conflict(&self, key: &DocKey) -> Option<Conflict> {
        let defs = self.docs.get(key).filter(|d| d.len() > 1)?;
        let (winner, json) = defs.last_key_value()?;
        Some(Conflict {
            kind: key.kind.clone(),
            name: key.name.clone(),
            sources: defs.keys().rev().map(|r| r.source.to_string()).collect(),
            winner: winner.source.to_string(),
            identical: defs.values().all(|j| j == json),
        })
    }
}

fn document(key: &DocKey, defs: &Definitions) -> Option<Document> {
    let (_, json) = defs.last_key_value()?;
    Some(Document {
        kind: key.kind.clone(),
        name: key.name.clone(),
        json: Arc::clone(json),
    })
}

impl InputView for InputStore {
    fn get(&self, kind: &str, name: &str) -> Option<Document> {
        let inner = self.inner.read().ok()?;
        let key = DocKey::new(kind, name);
        document(&key, inner.docs.get(&key)?)
    }

    fn list(&self, kind: &str) -> Vec<Document> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        inner
            .docs
            .range(DocKey::new(kind, String::new())..)
            .take_while(|(key, _)| key.kind == kind)
            .filter_map(|(key, defs)| document(key, defs))
            .collect()
    }

    /// A thread panicked while writing the store: its reads answer nothing from now on, so
    /// every run fails and each group keeps its last good config.
    fn fault(&self) -> Option<String> {
        self.inner
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

    fn key(kind: &str, name: &str) -> Vec<DocKey> {
        vec![DocKey::new(kind, name)]
    }

    fn web(s: &InputStore) -> String {
        s.get("Service", "web").unwrap().json.to_string()
    }

    /// Everything a plugin can read, as (name, json) per kind.
    fn seen(s: &InputStore) -> Vec<(String, String)> {
        ["Service", "Other"]
            .into_iter()
            .flat_map(|k| s.list(k))
            .map(|d| (d.name, d.json.to_string()))
            .collect()
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
        assert_eq!(c, key("Service", "y"));
        let c = s.replace_source("a.yaml", vec![doc("Service", "x", "1")]);
        assert_eq!(c, key("Service", "y"));
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
    fn two_sources_applied_in_either_order_give_identical_documents() {
        let file = || {
            vec![
                doc("Service", "web", r#"{"port":1}"#),
                doc("Service", "a", "{}"),
            ]
        };
        let etcd = || {
            vec![
                doc("Service", "web", r#"{"port":2}"#),
                doc("Other", "b", "{}"),
            ]
        };
        let (one, two) = (InputStore::new(), InputStore::new());
        one.replace_source("file:web.yaml", file());
        let c = one.replace_source("etcd:/nx/web", etcd());
        assert_eq!(c, [key("Other", "b"), key("Service", "web")].concat());
        two.replace_source("etcd:/nx/web", etcd());
        let c = two.replace_source("file:web.yaml", file());
        assert_eq!(
            c,
            key("Service", "a"),
            "the losing definition changes nothing"
        );
        assert_eq!(seen(&one), seen(&two));
        assert_eq!(web(&one), r#"{"port":2}"#, "etcd overrides the directory");
        let conflicts = one.conflicts();
        assert_eq!(conflicts, two.conflicts());
        assert_eq!(
            conflicts,
            vec![Conflict {
                kind: "Service".into(),
                name: "web".into(),
                sources: vec!["etcd:/nx/web".into(), "file:web.yaml".into()],
                winner: "etcd:/nx/web".into(),
                identical: false,
            }]
        );
    }

    #[test]
    fn every_order_of_three_definitions_ends_with_the_same_winner() {
        let sources = ["k8s:mesh:default/web", "file:b.yaml", "file:a.yaml"];
        for order in [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ] {
            let s = InputStore::new();
            for i in order {
                s.replace_source(sources[i], vec![doc("Service", "web", sources[i])]);
            }
            assert_eq!(web(&s), "k8s:mesh:default/web", "{order:?}");
            s.replace_source("k8s:mesh:default/web", Vec::new());
            assert_eq!(
                web(&s),
                "file:b.yaml",
                "the later path wins in the directory"
            );
        }
    }

    #[test]
    fn deleting_the_winner_falls_back_to_the_other_definition() {
        let s = InputStore::new();
        s.replace_source("file:web.yaml", vec![doc("Service", "web", "file")]);
        s.replace_source("etcd:/nx/web", vec![doc("Service", "web", "etcd")]);
        assert_eq!(s.conflicts().len(), 1);
        let c = s.replace_source("etcd:/nx/web", Vec::new());
        assert_eq!(c, key("Service", "web"), "the fallback is a change");
        assert_eq!(web(&s), "file");
        assert!(s.conflicts().is_empty(), "one definition is no conflict");
        s.replace_source("etcd:/nx/web", vec![doc("Service", "web", "etcd")]);
        let c = s.replace_source("file:web.yaml", Vec::new());
        assert!(c.is_empty(), "deleting the loser is no change");
        assert_eq!(web(&s), "etcd");
        assert_eq!(s.len(), 1);
        // The same content twice is still a conflict; dropping one of them is no change.
        s.replace_source("file:web.yaml", vec![doc("Service", "web", "etcd")]);
        assert!(s.conflicts()[0].identical);
        assert!(s.replace_source("etcd:/nx/web", Vec::new()).is_empty());
        assert!(s.replace_source("file:web.yaml", Vec::new()) == key("Service", "web"));
        assert!(s.is_empty() && s.conflicts().is_empty());
    }

    #[test]
    fn a_store_poisoned_by_a_panic_reports_a_fault_instead_of_answering_nothing() {
        let s = Arc::new(InputStore::new());
        s.replace_source("a.yaml", vec![doc("Service", "x", "1")]);
        let poisoner = Arc::clone(&s);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.inner.write();
            panic!("a bug while the store is written");
        })
        .join();
        assert!(s.get("Service", "x").is_none(), "reads answer nothing");
        assert!(s.fault().is_some(), "and say so");
    }
}
