//! What plugins read: input documents by kind and name, through a view that records every
//! read so that a change recomputes exactly the groups that depend on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// The key of an input document: its kind, then its name. Keys order by kind first, so the
/// documents of one kind are adjacent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    /// The kind, e.g. `Service`.
    pub kind: String,
    /// The name, unique within its kind.
    pub name: String,
}

impl DocKey {
    /// The key of document `kind`/`name`.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        DocKey {
            kind: kind.into(),
            name: name.into(),
        }
    }
}

/// `kind/name`, as operators see a key.
impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// One input document as a plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Its kind, e.g. `Service`.
    pub kind: String,
    /// Its name, unique within its kind.
    pub name: String,
    /// Its content as JSON text.
    pub json: Arc<str>,
}

impl Document {
    /// Its key.
    pub fn key(&self) -> DocKey {
        DocKey::new(self.kind.clone(), self.name.clone())
    }
}

/// Something plugins can read documents from.
pub trait InputView: Send + Sync {
    /// The document `kind`/`name`, if present.
    fn get(&self, kind: &str, name: &str) -> Option<Document>;
    /// Every document of `kind`, in name order.
    fn list(&self, kind: &str) -> Vec<Document>;
    /// An internal fault that makes reads unreliable (they may have found nothing where
    /// something is), if there is one now: a run that read during it is not used.
    fn fault(&self) -> Option<String> {
        None
    }
}

/// What a plugin run read: the dependency record of a node group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Documents read one by one (found or not).
    pub documents: BTreeSet<DocKey>,
    /// Kinds listed whole.
    pub kinds: BTreeSet<String>,
}

impl Reads {
    /// Whether a change of document `key` affects a run that read this.
    pub fn depends_on(&self, key: &DocKey) -> bool {
        self.kinds.contains(&key.kind) || self.documents.contains(key)
    }

    /// Adds another run's reads.
    pub fn extend(&mut self, other: Reads) {
        self.documents.extend(other.documents);
        self.kinds.extend(other.kinds);
    }
}

/// Documents held in memory: for tests, `plugin run`, and embedding without an input store.
#[derive(Debug, Clone, Default)]
pub struct StaticInputs {
    docs: BTreeMap<String, BTreeMap<String, Arc<str>>>,
}

impl StaticInputs {
    /// No documents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a document.
    pub fn insert(&mut self, kind: &str, name: &str, json: impl Into<Arc<str>>) {
        self.docs
            .entry(kind.to_owned())
            .or_default()
            .insert(name.to_owned(), json.into());
    }
}

impl InputView for StaticInputs {
    fn get(&self, kind: &str, name: &str) -> Option<Document> {
        let json = self.docs.get(kind)?.get(name)?.clone();
        Some(Document {
            kind: kind.to_owned(),
            name: name.to_owned(),
            json,
        })
    }

    fn list(&self, kind: &str) -> Vec<Document> {
        self.docs
            .get(kind)
            .map(|d| {
                d.iter()
                    .map(|(name, json)| Document {
                        kind: kind.to_owned(),
                        name: name.clone(),
                        json: json.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_orders_by_kind_then_name_and_reads_as_kind_slash_name() {
        let (a, b) = (DocKey::new("Route", "z"), DocKey::new("Service", "a"));
        assert!(a < b);
        assert_eq!(b.to_string(), "Service/a");
        let reads = Reads {
            documents: [b.clone()].into(),
            kinds: ["Route".to_owned()].into(),
        };
        assert!(reads.depends_on(&a) && reads.depends_on(&b));
        assert!(!reads.depends_on(&DocKey::new("Service", "b")));
    }
}
