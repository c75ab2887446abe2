//! The etcd input source: every key under a prefix holds YAML/JSON documents. The source lists
//! the prefix, watches it from the listed revision on, and mirrors each key into the store.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, WatchOptions};

use super::{parse_documents, InputStore, SourceHealth};

/// How long connecting, listing or starting a watch may take before etcd counts as away.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The first retry after an outage, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Keys per page when listing, so that a large prefix never hits the gRPC message limit.
const PAGE: i64 = 500;
/// The largest etcd response accepted (etcd's own request limit is 1.5 MiB per value).
const MAX_MESSAGE: usize = 64 << 20;

/// etcd could not be read: an ambient error. The store keeps what the source last delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("etcd at {endpoints}: {reason}")]
pub struct EtcdUnavailable {
    /// The endpoints tried, comma-separated.
    pub endpoints: String,
    /// What failed.
    pub reason: String,
}

/// The documents of every key under a prefix in etcd, kept in an [`InputStore`]. Each key is
/// its own store source (`etcd:<key>`), so deleting a key removes exactly its documents.
#[derive(Debug)]
pub struct EtcdSource {
    endpoints: Vec<String>,
    prefix: String,
    mirror: KeyMirror,
}

impl EtcdSource {
    /// A source for the keys under `prefix` on the etcd cluster at `endpoints` (`host:port` or
    /// `http://host:port`). Nothing connects until [`run`](Self::run).
    pub fn new(endpoints: Vec<String>, prefix: String, store: Arc<InputStore>) -> Self {
        let mirror = KeyMirror {
            store,
            health: SourceHealth::new("etcd"),
            present: BTreeSet::new(),
        };
        EtcdSource {
            endpoints,
            prefix,
            mirror,
        }
    }

    /// The source's health (connected, last error, keys that do not parse); stays valid after
    /// `run` takes the source.
    pub fn health(&self) -> SourceHealth {
        self.mirror.health.clone()
    }

    /// Lists the prefix into the store, then applies every change etcd reports, calling
    /// `on_change` with the keys that changed. Never returns: when etcd goes away it keeps the
    /// documents, marks the source down, retries with backoff (capped at 2 s), and on reconnect
    /// lists again, so keys deleted meanwhile are removed.
    pub async fn run<F>(mut self, on_change: F)
    where
        F: Fn(Vec<(String, String)>) + Send + Sync + 'static,
    {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let Err(error) = self.session(&on_change, &mut backoff).await;
            self.mirror.health.lost(&error);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: list, then watch until etcd goes away.
    async fn session<F>(
        &mut self,
        on_change: &F,
        backoff: &mut Duration,
    ) -> Result<Infallible, EtcdUnavailable>
    where
        F: Fn(Vec<(String, String)>),
    {
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            // HTTP/2 pings find a peer that vanished without closing the connection. etcd
            // refuses pings more often than every 5 s (its --grpc-keepalive-min-time).
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // A member cut off from its cluster's leader must not serve a stale watch.
            .with_require_leader(true);
        let client = self
            .timed(
                "connecting",
                Client::connect(&self.endpoints, Some(options)),
            )
            .await?;
        loop {
            let revision = self.list(&client, on_change).await?;
            *backoff = FIRST_BACKOFF;
            self.mirror.health.synced();
            tracing::info!(prefix = %self.prefix, revision, keys = self.mirror.present.len(), "etcd input source synced");
            self.watch(&client, revision + 1, on_change).await?;
            // The watch was compacted past: list again on the same connection.
        }
    }

    /// Reads every key under the prefix at one revision, reconciles the store with it, and
    /// returns that revision.
    async fn list<F: Fn(Vec<(String, String)>)>(
        &mut self,
        client: &Client,
        on_change: &F,
    ) -> Result<i64, EtcdUnavailable> {
        let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let (mut from, end) = prefix_range(&self.prefix);
        let mut listing = Vec::new();
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let page = self
                .timed("listing", kv.get(from.clone(), Some(options)))
                .await?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let Some(last) = page.kvs().last() else { break };
            from = [last.key(), b"\0"].concat();
            listing.extend(
                page.kvs()
                    .iter()
                    .map(|kv| (key_name(kv), kv.value().to_vec())),
            );
            if !page.more() {
                break;
            }
        }
        notify(on_change, self.mirror.reconcile(listing));
        Ok(revision)
    }

    /// Applies changes from `start` on until the watch ends: `Ok` if etcd compacted past it
    /// (list again), an error if etcd went away.
    async fn watch<F: Fn(Vec<(String, String)>)>(
        &mut self,
        client: &Client,
        start: i64,
        on_change: &F,
    ) -> Result<(), EtcdUnavailable> {
        let mut watcher = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = self
            .timed(
                "starting a watch",
                watcher.watch(self.prefix.as_str(), Some(options)),
            )
            .await?;
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return Err(self.unavailable("the watch stream ended")),
                Err(e) => return Err(self.unavailable(format!("watching: {e}"))),
            };
            if response.canceled() {
                if response.compact_revision() > 0 {
                    tracing::info!(
                        compacted = response.compact_revision(),
                        "etcd watch fell behind a compaction; listing again"
                    );
                    return Ok(());
                }
                return Err(self.unavailable(format!(
                    "the watch was canceled: {}",
                    response.cancel_reason()
                )));
            }
            let mut changed = Vec::new();
            for kv in response.events().iter().filter_map(|e| e.kv()) {
                // A deletion is a tombstone of version 0. (`Event::event_type` panics on a type
                // the crate does not know; a watch must not.)
                changed.extend(if kv.version() == 0 {
                    self.mirror.delete(&key_name(kv))
                } else {
                    self.mirror.put(&key_name(kv), kv.value())
                });
            }
            notify(on_change, changed);
        }
    }

    async fn timed<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdUnavailable> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.unavailable(format!("{what}: {e}"))),
            Err(_) => Err(self.unavailable(format!("{what}: no answer within {CALL_TIMEOUT:?}"))),
        }
    }

    fn unavailable(&self, reason: impl Into<String>) -> EtcdUnavailable {
        EtcdUnavailable {
            endpoints: self.endpoints.join(","),
            reason: reason.into(),
        }
    }
}

fn notify<F: Fn(Vec<(String, String)>)>(on_change: &F, changed: Vec<(String, String)>) {
    if !changed.is_empty() {
        metrics::counter!("input_events_total", "source" => "etcd").increment(1);
        on_change(changed);
    }
}

/// Keys are bytes in etcd; ours are text, and a key that is not is still named readably.
fn key_name(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

/// The first key and the range end (exclusive) of every key that starts with `prefix`.
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.as_bytes().to_vec(), end);
        }
    }
    // An empty prefix (or all 0xff): every key from the first one on.
    (vec![0], vec![0])
}

/// What the source put in the store, key by key: the part of the source that does not talk
/// to etcd.
#[derive(Debug)]
struct KeyMirror {
    store: Arc<InputStore>,
    health: SourceHealth,
    /// Keys whose documents are in the store.
    present: BTreeSet<String>,
}

impl KeyMirror {
    /// `key` now holds `value`: its documents replace the key's last ones, unless it does not
    /// parse, when the last ones stay and the health names the key and why.
    fn put(&mut self, key: &str, value: &[u8]) -> Vec<(String, String)> {
        let parsed = std::str::from_utf8(value)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|text| parse_documents(Path::new(key), text).map_err(|e| e.reason));
        match parsed {
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
    fn delete(&mut self, key: &str) -> Vec<(String, String)> {
        self.health.valid(key);
        if self.present.remove(key) {
            self.store.replace_source(&source_name(key), Vec::new())
        } else {
            Vec::new()
        }
    }

    /// etcd holds exactly `listing`: every key in it is put, every other key is deleted.
    fn reconcile(&mut self, listing: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
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
        for (key, value) in &listing {
            changed.extend(self.put(key, value));
        }
        changed.sort();
        changed.dedup();
        changed
    }
}

fn source_name(key: &str) -> String {
    format!("etcd:{key}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::InputView;

    fn mirror() -> KeyMirror {
        KeyMirror {
            store: Arc::new(InputStore::new()),
            health: SourceHealth::new("etcd"),
            present: BTreeSet::new(),
        }
    }

    fn svc(name: &str, port: u16) -> Vec<u8> {
        format!("kind: Service\nname: {name}\nport: {port}\n").into_bytes()
    }

    #[test]
    fn a_broken_value_keeps_the_keys_last_documents_and_names_the_key() {
        let mut m = mirror();
        assert_eq!(m.put("/nx/web", &svc("web", 1)).len(), 1);
        assert!(m.put("/nx/web", b"kind: Service\nname: [web\n").is_empty());
        let invalid = m.health.status().invalid;
        assert!(invalid["/nx/web"].contains("line"), "{invalid:?}");
        assert!(m
            .store
            .get("Service", "web")
            .unwrap()
            .json
            .contains("\"port\":1"));
        assert!(m.put("/nx/bin", &[0xff, 0xfe]).is_empty());
        assert!(m.health.status().invalid["/nx/bin"].contains("UTF-8"));
        assert_eq!(m.put("/nx/web", &svc("web", 2)).len(), 1);
        assert!(!m.health.status().invalid.contains_key("/nx/web"));
    }

    #[test]
    fn reconciling_removes_keys_deleted_meanwhile_and_reports_only_real_changes() {
        let mut m = mirror();
        m.put("/nx/a", &svc("a", 1));
        m.put("/nx/b", &svc("b", 1));
        m.put("/nx/c", b"kind: [");
        let changed = m.reconcile(vec![
            ("/nx/a".into(), svc("a", 1)),
            ("/nx/d".into(), svc("d", 1)),
        ]);
        let names: Vec<&str> = changed.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, vec!["b", "d"]);
        assert!(m.store.get("Service", "b").is_none());
        assert!(
            m.health.status().invalid.is_empty(),
            "a deleted key is no longer invalid"
        );
        assert_eq!(m.present.iter().collect::<Vec<_>>(), vec!["/nx/a", "/nx/d"]);
    }

    #[test]
    fn prefix_ranges_cover_exactly_the_prefix() {
        assert_eq!(prefix_range("/nx/"), (b"/nx/".to_vec(), b"/nx0".to_vec()));
        assert_eq!(
            prefix_range("a\u{7f}"),
            (b"a\x7f".to_vec(), b"a\x80".to_vec())
        );
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
    }
}
