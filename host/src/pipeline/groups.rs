//! What the pipeline remembers per node group: a node to compute for, what the last good run
//! read, and how the last run went.

use std::time::{Instant, SystemTime};

use std::sync::Arc;

use serde::Serialize;

use super::memo::Computed;
use crate::inputs::{DocKey, Reads};
use crate::plugins::{NodeView, PluginRunError};

/// A node group as the pipeline sees it.
#[derive(Debug, Clone)]
pub(crate) struct GroupRecord {
    /// The node the group is computed for: the first that connected, replaced by the same
    /// node id when it comes back with anything else changed.
    pub(crate) node: Arc<NodeView>,
    /// What the last run read, successful or not (a failed run records the reads it made
    /// before failing); `None` until one ran: such a group depends on everything.
    pub(crate) reads: Option<Reads>,
    /// Open streams (and fetches in progress) of the group's nodes.
    pub(crate) streams: usize,
    /// Since when the group has had no stream; `None` while one is open.
    pub(crate) idle_since: Option<Instant>,
    /// Bumped whenever `node` is replaced: a run started for an earlier node is not published.
    pub(crate) epoch: u64,
    /// Transient failures in a row (deadline, no instance, inputs unreadable): each is retried
    /// after a backoff that grows with this count; a success resets it.
    pub(crate) transient_failures: u32,
    /// Chain runs for this group.
    pub(crate) runs: u64,
    /// Results taken from a run for another node that agrees on what that run read.
    pub(crate) shared_results: u64,
    pub(crate) failures: u64,
    /// The last computation's result (shared with the groups that agree with this one's
    /// node on what its run read); holding it keeps it in the memo.
    pub(crate) last_error: Option<PluginRunError>,
    pub(crate) last_success: Option<SystemTime>,
    pub(crate) computed: Option<Arc<Computed>>,
}

impl GroupRecord {
    pub(crate) fn new(node: Arc<NodeView>) -> Self {
        GroupRecord {
            node,
            reads: None,
            streams: 0,
            idle_since: None,
            epoch: 0,
            transient_failures: 0,
            runs: 0,
            shared_results: 0,
            failures: 0,
            last_error: None,
            last_success: None,
            computed: None,
        }
    }

    /// Whether a change of document `key` makes this group's resources stale. A group that
    /// never ran depends on everything.
    pub(crate) fn affected_by(&self, key: &DocKey) -> bool {
        self.reads.as_ref().is_none_or(|r| r.depends_on(key))
    }
}

/// What operators see of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    /// The group.
    pub group: String,
    /// The node it is computed for.
    pub node_id: String,
    /// How its node connected.
    pub transport: String,
    /// Plugin chain runs for this group.
    pub runs: u64,
    /// Results it took from a run for another node that agreed on everything that run read.
    pub shared_results: u64,
    /// The node fields its last computation's run read (`*`: all of them, a plugin built
    /// against contract 0.1.0).
    pub node_reads: Vec<String>,
    /// How many groups hold its last result now, itself included.
    pub sharing: usize,
    /// Runs that failed (the group kept its last good resources).
    pub failures: u64,
    /// The last failure, if the last run failed: plugin, node and message.
    pub last_error: Option<String>,
    /// The input documents and kinds the last run read (a failed run: what it read before
    /// failing).
    pub reads: Vec<String>,
    /// Open streams of the group's nodes.
    pub streams: usize,
    /// How long the group has had no stream, in seconds (`None` while one is open): it is
    /// forgotten when this reaches the grace period.
    pub idle_secs: Option<u64>,
}

impl GroupStatus {
    pub(crate) fn of(group: &str, r: &GroupRecord) -> Self {
        let reads = r
            .reads
            .as_ref()
            .map(|reads| {
                reads
                    .kinds
                    .iter()
                    .map(|k| format!("{k}/*"))
                    .chain(reads.documents.iter().map(ToString::to_string))
                    .collect()
            })
            .unwrap_or_default();
        GroupStatus {
            group: group.to_owned(),
            node_id: r.node.id().to_owned(),
            transport: r.node.transport().to_string(),
            runs: r.runs,
            shared_results: r.shared_results,
            node_reads: r
                .computed
                .as_ref()
                .map(|c| c.node_reads.names())
                .unwrap_or_default(),
            // The memo holds weak references: the strong ones are the groups'.
            sharing: r.computed.as_ref().map_or(0, Arc::strong_count),
            failures: r.failures,
            last_error: r.last_error.as_ref().map(ToString::to_string),
            reads,
            streams: r.streams,
            idle_secs: r.idle_since.map(|t| t.elapsed().as_secs()),
        }
    }
}
