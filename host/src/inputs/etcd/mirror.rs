//! What the etcd source has put in the store, key by key — the part of the source that does
//! not talk to etcd — and the decoding of values, within a size cap and off the runtime's
//! workers when large.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::source_name;
use crate::inputs::limits::DocumentBudget;
use crate::inputs::{parse_documents, DocKey, Document, InputStore, SourceHealth};

/// Values of at most this many bytes in all are decoded on the task itself: a thread hop
/// would cost more than the parse.
const INLINE_DECODE_BYTES: usize = 64 << 10;

/// A key's value decoded: its documents, or why it was refused.
pub(super) type Decoded = Result<Vec<Document>, String>;

/// One change to apply: a key's new value (decoded) or its deletion.
pub(super) enum Update {
    Put(Decoded),
    Delete,
}

/// Decodes `key`'s value: refused unread over `max_bytes`, then UTF-8 YAML/JSON documents.
pub(super) fn decode(key: &str, value: &[u8], max_bytes: usize) -> Decoded {
    if value.len() > max_bytes {
        return Err(format!(
            "value is {} bytes, over inputs.etcd.max_value_bytes = {max_bytes}",
            value.len()
        ));
    }
    let text = std::str::from_utf8(value).map_err(|e| format!("not UTF-8: {e}"))?;
    parse_documents(Path::new(key), text).map_err(|e| e.reason)
}

/// Decodes every value of `changes` (`None`: a deletion), in order; on a blocking thread when
/// together they are large, so a big listing never stalls the runtime's workers.
pub(super) async fn decode_all(
    changes: Vec<(String, Option<Vec<u8>>)>,
    max_bytes: usize,
) -> Vec<(String, Update)> {
    let bytes: usize = changes
        .iter()
        .filter_map(|(_, v)| v.as_ref())
        .map(Vec::len)
        .sum();
    if bytes <= INLINE_DECODE_BYTES {
        return decode_each(changes, max_bytes);
    }
    let shape: Vec<(String, bool)> = changes
        .iter()
        .map(|(k, v)| (k.clone(), v.is_some()))
        .collect();
    match tokio::task::spawn_blocking(move || decode_each(changes, max_bytes)).await {
        Ok(decoded) => decoded,
        // Decoding panicked: every value is refused (keeping its key's last documents).
        Err(e) => shape
            .into_iter()
            .map(|(key, put)| {
                let update = if put {
                    Update::Put(Err(format!("decoding the value failed: {e}")))
                } else {
                    Update::Delete
                };
                (key, update)
            })
            .collect(),
    }
}

fn decode_each(changes: Vec<(String, Option<Vec<u8>>)>, max_bytes: usize) -> Vec<(String, Update)> {
    changes
        .into_iter()
        .map(|(key, value)| {
            let update = match value {
                Some(v) => Update::Put(decode(&key, &v, max_bytes)),
                None => Update::Delete,
            };
            (key, update)
        })
        .collect()
}

/// The keys whose documents are in the store, and the source's document budget.
#[derive(Debug)]
pub(super) struct KeyMirror {
    store: Arc<InputStore>,
    pub(super) health: SourceHealth,
    /// Keys whose documents are in the store.
    pub(super) present: BTreeSet<String>,
    budget: DocumentBudget,
}

impl KeyMirror {
    pub(super) fn new(store: Arc<InputStore>, health: SourceHealth, max_documents: usize) -> Self {
        KeyMirror {
            store,
            health,
            present: BTreeSet::new(),
            budget: DocumentBudget::new(max_documents),
        }
    }

    /// The store and health, to build the mirror again with other limits.
    pub(super) fn into_parts(self) -> (Arc<InputStore>, SourceHealth) {
        (self.store, self.health)
    }

    /// Applies one change; returns the keys whose documents in effect changed.
    pub(super) fn apply(&mut self, key: &str, update: Update) -> Vec<DocKey> {
        match update {
            Update::Put(decoded) => self.put(key, decoded),
            Update::Delete => self.delete(key),
        }
    }

    /// `key` now holds `decoded`: its documents replace the key's last ones, unless it was
    /// refused, when the last ones stay and the health names the key and why.
    fn put(&mut self, key: &str, decoded: Decoded) -> Vec<DocKey> {
        let admitted = decoded.and_then(|docs| self.budget.admit(key, docs.len()).map(|()| docs));
        match admitted {
            Ok(docs) => {
                self.health.valid(key);
                self.present.insert(key.to_owned());
                self.store.replace_source(&source_name(key), docs)
            }
            Err(reason) => {
                self.health.invalid(key, &reason);
                Vec::new()
            }
        }
    }

    /// `key` was deleted: its documents go.
    fn delete(&mut self, key: &str) -> Vec<DocKey> {
        self.health.valid(key);
        self.budget.release(key);
        if self.present.remove(key) {
            self.store.replace_source(&source_name(key), Vec::new())
        } else {
            Vec::new()
        }
    }

    /// etcd holds exactly `listing`: every key in it is put, every other key is deleted.
    pub(super) fn reconcile(&mut self, listing: Vec<(String, Update)>) -> Vec<DocKey> {
        let listed: BTreeSet<&str> = listing.iter().map(|(k, _)| k.as_str()).collect();
        let gone: BTreeSet<String> = self
            .present
            .iter()
            .chain(self.health.status().invalid.keys())
            .filter(|k| !listed.contains(k.as_str()))
            .cloned()
            .collect();
        let mut changed = Vec::new();
        for key in gone {
            changed.extend(self.delete(&key));
        }
        for (key, update) in listing {
            changed.extend(self.apply(&key, update));
        }
        changed.sort();
        changed.dedup();
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::InputView;

    const MAX: usize = 1 << 20;

    fn mirror(max_documents: usize) -> KeyMirror {
        KeyMirror::new(
            Arc::new(InputStore::new()),
            SourceHealth::new("etcd"),
            max_documents,
        )
    }

    fn put(m: &mut KeyMirror, key: &str, value: &[u8]) -> Vec<DocKey> {
        m.apply(key, Update::Put(decode(key, value, MAX)))
    }

    fn svc(name: &str, port: u16) -> Vec<u8> {
        format!("kind: Service\nname: {name}\nport: {port}\n").into_bytes()
    }

    fn port(m: &KeyMirror, name: &str) -> String {
        m.store.get("Service", name).unwrap().json.to_string()
    }

    #[test]
    fn a_broken_value_keeps_the_keys_last_documents_and_names_the_key() {
        let mut m = mirror(10);
        assert_eq!(put(&mut m, "/nx/web", &svc("web", 1)).len(), 1);
        assert!(put(&mut m, "/nx/web", b"kind: Service\nname: [web\n").is_empty());
        let invalid = m.health.status().invalid;
        assert!(invalid["/nx/web"].contains("line"), "{invalid:?}");
        assert!(port(&m, "web").contains("\"port\":1"));
        assert!(put(&mut m, "/nx/bin", &[0xff, 0xfe]).is_empty());
        assert!(m.health.status().invalid["/nx/bin"].contains("UTF-8"));
        assert_eq!(put(&mut m, "/nx/web", &svc("web", 2)).len(), 1);
        assert!(!m.health.status().invalid.contains_key("/nx/web"));
    }

    #[test]
    fn values_over_the_caps_are_refused_naming_the_limit_and_keep_the_last_documents() {
        let mut m = mirror(2);
        put(&mut m, "/nx/web", &svc("web", 1));
        let big = [svc("web", 2), vec![b'#'; 100]].concat();
        assert!(m
            .apply("/nx/web", Update::Put(decode("/nx/web", &big, 64)))
            .is_empty());
        let reason = &m.health.status().invalid["/nx/web"];
        assert!(
            reason.contains("over inputs.etcd.max_value_bytes = 64"),
            "{reason}"
        );
        assert!(port(&m, "web").contains("\"port\":1"));
        let two = b"- {kind: Service, name: a}\n- {kind: Service, name: b}\n";
        assert!(put(&mut m, "/nx/two", two).is_empty());
        let reason = &m.health.status().invalid["/nx/two"];
        assert!(reason.contains("inputs.max_documents = 2"), "{reason}");
        m.apply("/nx/web", Update::Delete);
        assert_eq!(put(&mut m, "/nx/two", two).len(), 2, "room was made");
    }

    #[tokio::test]
    async fn a_batch_too_large_to_decode_inline_still_decodes_in_order() {
        let filler = format!("# {}\n", "x".repeat(INLINE_DECODE_BYTES));
        let changes = vec![
            (
                "/nx/a".to_owned(),
                Some([filler.into_bytes(), svc("a", 1)].concat()),
            ),
            ("/nx/a".to_owned(), None),
        ];
        let decoded = decode_all(changes, MAX).await;
        assert!(matches!(&decoded[0], (k, Update::Put(Ok(d))) if k == "/nx/a" && d.len() == 1));
        assert!(matches!(decoded[1].1, Update::Delete));
    }

    #[test]
    fn reconciling_removes_keys_deleted_meanwhile_and_reports_only_real_changes() {
        let mut m = mirror(10);
        put(&mut m, "/nx/a", &svc("a", 1));
        put(&mut m, "/nx/b", &svc("b", 1));
        put(&mut m, "/nx/c", b"kind: [");
        let listing = [("/nx/a", svc("a", 1)), ("/nx/d", svc("d", 1))]
            .map(|(k, v)| (k.to_owned(), Update::Put(decode(k, &v, MAX))));
        let changed = m.reconcile(listing.into());
        let names: Vec<&str> = changed.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, vec!["b", "d"]);
        assert!(m.store.get("Service", "b").is_none());
        assert!(
            m.health.status().invalid.is_empty(),
            "a deleted key is no longer invalid"
        );
        assert_eq!(m.present.iter().collect::<Vec<_>>(), vec!["/nx/a", "/nx/d"]);
    }
}
