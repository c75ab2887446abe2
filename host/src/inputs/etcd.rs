//! The etcd input source: every key under a prefix holds YAML/JSON documents. The source lists
//! the prefix, watches it from the listed revision on, and mirrors each key into the store.

mod mirror;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, WatchOptions};

use super::store::ETCD_SOURCE;
use super::{DocKey, InputLimits, InputStore, SourceHealth};
use mirror::{decode_all, KeyMirror};

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
    max_value_bytes: usize,
    mirror: KeyMirror,
}

impl EtcdSource {
    /// A source for the keys under `prefix` on the etcd cluster at `endpoints` (`host:port` or
    /// `http://host:port`), with the default [`InputLimits`]. Nothing connects until
    /// [`run`](Self::run).
    pub fn new(endpoints: Vec<String>, prefix: String, store: Arc<InputStore>) -> Self {
        let limits = InputLimits::default();
        let mirror = KeyMirror::new(store, SourceHealth::new("etcd"), limits.max_documents);
        EtcdSource {
            endpoints,
            prefix,
            max_value_bytes: limits.max_value_bytes,
            mirror,
        }
    }

    /// The same source within `limits`: a value over `max_value_bytes` is refused unread, and
    /// the prefix holds at most `max_documents`; a refused key keeps its last documents.
    #[must_use]
    pub fn with_limits(self, limits: InputLimits) -> Self {
        let EtcdSource {
            endpoints,
            prefix,
            mirror,
            ..
        } = self;
        let (store, health) = mirror.into_parts();
        EtcdSource {
            endpoints,
            prefix,
            max_value_bytes: limits.max_value_bytes,
            mirror: KeyMirror::new(store, health, limits.max_documents),
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
        F: Fn(Vec<DocKey>) + Send + Sync + 'static,
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
        F: Fn(Vec<DocKey>),
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
    async fn list<F: Fn(Vec<DocKey>)>(
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
                    .map(|kv| (key_name(kv), Some(kv.value().to_vec()))),
            );
            if !page.more() {
                break;
            }
        }
        let decoded = decode_all(listing, self.max_value_bytes).await;
        notify(on_change, self.mirror.reconcile(decoded));
        Ok(revision)
    }

    /// Applies changes from `start` on until the watch ends: `Ok` if etcd compacted past it
    /// (list again), an error if etcd went away.
    async fn watch<F: Fn(Vec<DocKey>)>(
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
            // A deletion is a tombstone of version 0. (`Event::event_type` panics on a type
            // the crate does not know; a watch must not.)
            let events = response
                .events()
                .iter()
                .filter_map(|e| e.kv())
                .map(|kv| {
                    (
                        key_name(kv),
                        (kv.version() != 0).then(|| kv.value().to_vec()),
                    )
                })
                .collect();
            let mut changed = Vec::new();
            for (key, update) in decode_all(events, self.max_value_bytes).await {
                changed.extend(self.mirror.apply(&key, update));
            }
            changed.sort();
            changed.dedup();
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

fn notify<F: Fn(Vec<DocKey>)>(on_change: &F, changed: Vec<DocKey>) {
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

/// The store source of `key`.
fn source_name(key: &str) -> String {
    format!("{ETCD_SOURCE}{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
