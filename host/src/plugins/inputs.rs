//! What plugins read: input documents by kind and name, through a view that records every
//! read so that a change recomputes exactly the groups that depend on it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
    pub documents: BTreeSet<(String, String)>,
    /// Kinds listed whole.
    pub kinds: BTreeSet<String>,
}

impl Reads {
    /// Whether a change of `kind`/`name` affects a run that read this.
    pub fn depends_on(&self, kind: &str, name: &str) -> bool {
        self.kinds.contains(kind) || self.documents.contains(&(kind.to_owned(), name.to_owned()))
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
