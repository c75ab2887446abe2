//! What each connected node was sent, ACKed and NACKed, per type: the record that operators
//! (and tests) read, and the metrics that count it.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use serde::Serialize;

use super::callbacks::{Callbacks, StreamId};
use super::limits::{truncated, NackLog, LOGGED_NODE_ID_BYTES};
use super::nack::Nack;
use super::types::metric_label;

/// Where a type stands for a node: the last thing that happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// A response was sent and not yet answered.
    Sent,
    /// The client accepted the last response.
    Acked,
    /// The client rejected the last response. Not "configured".
    Nacked,
}

/// The delivery record of one type for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// The version of the last response sent.
    pub sent_version: Option<String>,
    /// The nonce of the last response sent.
    pub sent_nonce: Option<String>,
    /// The last version the client ACKed.
    pub acked_version: Option<String>,
    /// The state after the last event.
    pub state: Option<DeliveryState>,
    /// Responses sent.
    pub responses: u64,
    /// ACKs received.
    pub acks: u64,
    /// NACKs received.
    pub nacks: u64,
    /// The most recent NACK, kept after later ACKs for diagnosis.
    pub last_nack: Option<Nack>,
}

/// Everything the server records about one node id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// The node id.
    pub node_id: String,
    /// The node group it is served from.
    pub group: String,
    /// `node.cluster`.
    pub cluster: String,
    /// `node.user_agent_name`.
    pub user_agent: String,
    /// How many streams of this node are open.
    pub streams: usize,
    /// Per type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// The status of every connected node. An entry lives while the node has a stream open.
#[derive(Debug, Default)]
pub struct NodeRegistry {
    nodes: DashMap<String, NodeStatus>,
}

impl NodeRegistry {
    /// The status of one node, if it is connected.
    pub fn get(&self, node_id: &str) -> Option<NodeStatus> {
        self.nodes.get(node_id).map(|n| n.clone())
    }

    /// The status of every connected node, sorted by id.
    pub fn list(&self) -> Vec<NodeStatus> {
        let mut v: Vec<NodeStatus> = self.nodes.iter().map(|n| n.clone()).collect();
        v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        v
    }

    /// How many nodes are connected.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is connected.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Registers a stream of a node; the returned guard unregisters it when dropped.
    pub(crate) fn open(self: &Arc<Self>, node: &Node, group: &str) -> StreamRecord {
        let mut entry = self
            .nodes
            .entry(node.id.clone())
            .or_insert_with(|| NodeStatus {
                node_id: node.id.clone(),
                ..NodeStatus::default()
            });
        entry.streams += 1;
        entry.group = group.to_owned();
        entry.cluster = node.cluster.clone();
        entry.user_agent = node.user_agent_name.clone();
        StreamRecord {
            registry: Arc::clone(self),
            node_id: node.id.clone(),
            nack_log: NackLog::default(),
            nack_hook: None,
        }
    }

    fn update(&self, node_id: &str, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(mut node) = self.nodes.get_mut(node_id) {
            f(node.types.entry(type_url.to_owned()).or_default());
        }
    }
}

/// One open stream's handle on the registry: records its events, and unregisters on drop
/// (so everything about a node is freed when its last stream closes).
pub(crate) struct StreamRecord {
    registry: Arc<NodeRegistry>,
    node_id: String,
    nack_log: NackLog,
    /// The embedder's callbacks, told of every NACK as it is recorded.
    nack_hook: Option<(StreamId, Arc<dyn Callbacks>)>,
}

impl std::fmt::Debug for StreamRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRecord")
            .field("node_id", &self.node_id)
            .field("nack_log", &self.nack_log)
            .field("nack_hook", &self.nack_hook.as_ref().map(|(id, _)| id))
            .finish_non_exhaustive()
    }
}

impl StreamRecord {
    /// Tells `callbacks` of every NACK this stream records, as stream `id`.
    pub(crate) fn report_nacks_to(&mut self, id: StreamId, callbacks: Arc<dyn Callbacks>) {
        self.nack_hook = Some((id, callbacks));
    }

    pub(crate) fn sent(&self, type_url: &str, version: &str, nonce: &str) {
        metrics::counter!("xds_responses_total", "type" => metric_label(type_url)).increment(1);
        self.registry.update(&self.node_id, type_url, |t| {
            t.sent_version = Some(version.to_owned());
            t.sent_nonce = Some(nonce.to_owned());
            t.state = Some(DeliveryState::Sent);
            t.responses += 1;
        });
    }

    pub(crate) fn acked(&self, type_url: &str, version: &str) {
        metrics::counter!("xds_acks_total", "type" => metric_label(type_url)).increment(1);
        self.registry.update(&self.node_id, type_url, |t| {
            t.acked_version = Some(version.to_owned());
            t.state = Some(DeliveryState::Acked);
            t.acks += 1;
        });
    }

    /// Records a NACK (whose strings the caller has already bounded) and logs it, at most
    /// as often as [`NackLog`] allows on this stream.
    pub(crate) fn nacked(&mut self, type_url: &str, nack: Nack) {
        metrics::counter!("xds_nacks_total", "type" => metric_label(type_url)).increment(1);
        if let Some(suppressed) = self.nack_log.admit(std::time::Instant::now()) {
            tracing::warn!(
                node = %truncated(&self.node_id, LOGGED_NODE_ID_BYTES), type_url,
                nonce = %nack.nonce, code = nack.code,
                error = %nack.message, suppressed,
                "client rejected a response (NACK); `suppressed` earlier NACK lines of this \
                 stream were not logged"
            );
        }
        if let Some((id, callbacks)) = &self.nack_hook {
            callbacks.on_stream_nack(*id, &self.node_id, type_url, &nack);
        }
        self.registry.update(&self.node_id, type_url, |t| {
            t.state = Some(DeliveryState::Nacked);
            t.nacks += 1;
            t.last_nack = Some(nack);
        });
    }
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        self.registry.nodes.remove_if_mut(&self.node_id, |_, n| {
            n.streams = n.streams.saturating_sub(1);
            n.streams == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::nack::unix_now;
    use super::*;

    #[test]
    fn a_node_lives_while_a_stream_is_open() {
        let reg = Arc::new(NodeRegistry::default());
        let a = reg.open(
            &Node {
                id: "n1".into(),
                ..Node::default()
            },
            "g",
        );
        let b = reg.open(
            &Node {
                id: "n1".into(),
                ..Node::default()
            },
            "g",
        );
        a.sent("t.Cluster", "v1", "1");
        assert_eq!(reg.get("n1").map(|n| n.streams), Some(2));
        drop(a);
        assert_eq!(
            reg.get("n1").map(|n| n.types["t.Cluster"].responses),
            Some(1)
        );
        drop(b);
        assert!(reg.get("n1").is_none());
        assert!(reg.is_empty());
    }

    #[test]
    fn nack_is_recorded_and_not_counted_as_configured() {
        let reg = Arc::new(NodeRegistry::default());
        let mut s = reg.open(
            &Node {
                id: "n1".into(),
                ..Node::default()
            },
            "g",
        );
        s.sent("t", "v1", "1");
        s.acked("t", "v1");
        s.sent("t", "v2", "2");
        s.nacked(
            "t",
            Nack {
                nonce: "2".into(),
                rejected_version: Some("v2".into()),
                kept_version: "v1".into(),
                code: 3,
                message: "bad cluster".into(),
                at_unix_secs: unix_now(),
            },
        );
        let t = reg
            .get("n1")
            .map(|n| n.types["t"].clone())
            .unwrap_or_default();
        assert_eq!(t.state, Some(DeliveryState::Nacked));
        assert_eq!(t.acked_version.as_deref(), Some("v1"));
        assert_eq!(
            t.last_nack.map(|n| n.message),
            Some("bad cluster".to_owned())
        );
    }
}
