//! How an input source is doing: connected or not, its last ambient error, and the entries
//! whose content it refused (their last good documents stay in the store).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

/// A snapshot of one source's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    /// The source's kind, as in the `source` label of `input_errors_total` (e.g. `etcd`).
    pub source: &'static str,
    /// Whether the source is connected and its documents are current. While it is not, the
    /// store keeps what the source last delivered.
    pub connected: bool,
    /// The last ambient error (the source is unreachable, a watch ended), until it reconnects.
    pub last_error: Option<String>,
    /// Entries (an etcd key, a file) whose content does not parse, with why; each keeps its
    /// last good documents until it is fixed or deleted.
    pub invalid: BTreeMap<String, String>,
    /// How many times the source has read its whole content (connects and reconnects).
    pub syncs: u64,
    /// When `connected` last changed.
    pub since: SystemTime,
}

/// A source's health, shared between the source (which writes it) and whoever reports it
/// (the admin API, tests). Cheap to clone; reads never wait on the source.
#[derive(Debug, Clone)]
pub struct SourceHealth {
    status: Arc<watch::Sender<SourceStatus>>,
}

impl SourceHealth {
    /// A source that has not connected yet.
    pub fn new(source: &'static str) -> Self {
        let status = SourceStatus {
            source,
            connected: false,
            last_error: None,
            invalid: BTreeMap::new(),
            syncs: 0,
            since: SystemTime::now(),
        };
        metrics::gauge!("input_source_up", "source" => source).set(0.0);
        SourceHealth {
            status: Arc::new(watch::Sender::new(status)),
        }
    }

    /// The current status.
    pub fn status(&self) -> SourceStatus {
        self.status.borrow().clone()
    }

    /// Whether the source is connected (its documents are current).
    pub fn is_connected(&self) -> bool {
        self.status.borrow().connected
    }

    /// A receiver that sees every change of status (to wait for a sync or an outage).
    pub fn subscribe(&self) -> watch::Receiver<SourceStatus> {
        self.status.subscribe()
    }

    /// The source read its whole content and is current.
    pub(crate) fn synced(&self) {
        self.status.send_modify(|s| {
            if !s.connected {
                s.since = SystemTime::now();
            }
            s.connected = true;
            s.last_error = None;
            s.syncs += 1;
            metrics::gauge!("input_source_up", "source" => s.source).set(1.0);
        });
    }

    /// The source lost its connection: an ambient error. Logged and counted; the store keeps
    /// the documents.
    #[cfg_attr(not(any(feature = "etcd", feature = "kubernetes")), allow(dead_code))]
    pub(crate) fn lost(&self, error: &dyn Display) {
        self.status.send_modify(|s| {
            let log = s.connected || s.last_error.is_none();
            if s.connected {
                s.since = SystemTime::now();
            }
            s.connected = false;
            s.last_error = Some(error.to_string());
            metrics::counter!("input_errors_total", "source" => s.source).increment(1);
            metrics::gauge!("input_source_up", "source" => s.source).set(0.0);
            // Warn once per outage; the retries that follow are debug noise.
            if log {
                tracing::warn!(source = s.source, %error, "input source unavailable; keeping its last documents");
            } else {
                tracing::debug!(source = s.source, %error, "input source still unavailable");
            }
        });
    }

    /// `entry`'s content was refused; it keeps its last documents. Counted and logged once
    /// per distinct reason, so an entry retried at every scan does not flood the log.
    pub(crate) fn invalid(&self, entry: &str, reason: &str) {
        self.status.send_if_modified(|s| {
            if s.invalid.get(entry).is_some_and(|r| r == reason) {
                return false;
            }
            metrics::counter!("input_errors_total", "source" => s.source).increment(1);
            tracing::warn!(
                source = s.source,
                entry,
                reason,
                "input entry keeps its last good documents"
            );
            s.invalid.insert(entry.to_owned(), reason.to_owned());
            true
        });
    }

    /// `entry` parsed (or is gone): it is no longer invalid.
    pub(crate) fn valid(&self, entry: &str) {
        self.status
            .send_if_modified(|s| s.invalid.remove(entry).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_keeps_its_error_until_the_next_sync_and_invalid_entries_clear_one_by_one() {
        let h = SourceHealth::new("test");
        assert!(!h.is_connected());
        h.synced();
        assert!(h.is_connected());
        h.lost(&"connection refused");
        h.lost(&"connection refused again");
        let s = h.status();
        assert!(!s.connected);
        assert_eq!(s.last_error.as_deref(), Some("connection refused again"));
        h.invalid("/a", "line 2: bad");
        h.invalid("/b", "no kind");
        h.synced();
        let s = h.status();
        assert!(s.connected && s.last_error.is_none());
        assert_eq!(s.syncs, 2);
        assert_eq!(s.invalid.keys().collect::<Vec<_>>(), vec!["/a", "/b"]);
        h.valid("/a");
        assert_eq!(h.status().invalid.keys().collect::<Vec<_>>(), vec!["/b"]);
    }
}
