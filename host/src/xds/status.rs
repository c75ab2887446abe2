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
use super::types::{metric_label, PUSH_ORDER};

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
///
/// One entry is held for every connected node, so it is kept compact and turned into a
/// [`NodeStatus`] only when read: the node id is one string shared by the map and every
/// stream of the node, a known type URL is not copied, a nonce the stream minted is kept as
/// its number, and an ACKed version equal to the one sent is not a second string. With four
/// types that is 1.0 KB a node, where `NodeStatus`'s own map and strings took 3.8 KB
/// (10,000 simulated Envoys, heap by call site: `benches/heap/heap_by_site.py`).
#[derive(Debug, Default)]
pub struct NodeRegistry {
    nodes: DashMap<Arc<str>, NodeRecord>,
}

impl NodeRegistry {
    /// The status of one node, if it is connected.
    pub fn get(&self, node_id: &str) -> Option<NodeStatus> {
        self.nodes.get(node_id).map(|n| n.status(n.key()))
    }

    /// The status of every connected node, sorted by id.
    pub fn list(&self) -> Vec<NodeStatus> {
        let mut v: Vec<NodeStatus> = self.nodes.iter().map(|n| n.status(n.key())).collect();
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
        let mut entry = match self.nodes.get_mut(node.id.as_str()) {
            Some(entry) => entry,
            None => self.nodes.entry(Arc::from(node.id.as_str())).or_default(),
        };
        entry.streams += 1;
        replace(&mut entry.group, group);
        replace(&mut entry.cluster, &node.cluster);
        replace(&mut entry.user_agent, &node.user_agent_name);
        StreamRecord {
            registry: Arc::clone(self),
            node_id: Arc::clone(entry.key()),
            nack_log: NackLog::default(),
            nack_hook: None,
        }
    }

    fn update(&self, node_id: &str, type_url: &str, f: impl FnOnce(&mut TypeRecord)) {
        if let Some(mut node) = self.nodes.get_mut(node_id) {
            f(node.type_mut(type_url));
        }
    }
}

/// `to` holds `value`, reallocated only if it changed.
fn replace(to: &mut Box<str>, value: &str) {
    if **to != *value {
        *to = value.into();
    }
}

/// What the registry keeps of one node (its id is the map's key): [`NodeStatus`], compact.
#[derive(Debug, Default)]
struct NodeRecord {
    group: Box<str>,
    cluster: Box<str>,
    user_agent: Box<str>,
    streams: usize,
    /// One per type, in the order first sent: a node has a handful, so a scan beats a map.
    types: Vec<TypeRecord>,
}

impl NodeRecord {
    fn type_mut(&mut self, type_url: &str) -> &mut TypeRecord {
        let at = match self
            .types
            .iter()
            .position(|t| t.type_url.as_str() == type_url)
        {
            Some(at) => at,
            None => {
                self.types.push(TypeRecord::new(type_url));
                self.types.len() - 1
            }
        };
        &mut self.types[at]
    }

    fn status(&self, node_id: &str) -> NodeStatus {
        NodeStatus {
            node_id: node_id.to_owned(),
            group: self.group.to_string(),
            cluster: self.cluster.to_string(),
            user_agent: self.user_agent.to_string(),
            streams: self.streams,
            types: self
                .types
                .iter()
                .map(|t| (t.type_url.as_str().to_owned(), t.status()))
                .collect(),
        }
    }
}

/// [`TypeStatus`], compact.
#[derive(Debug)]
struct TypeRecord {
    type_url: TypeName,
    sent_version: Option<Box<str>>,
    acked_version: AckedVersion,
    sent_nonce: Option<Nonce>,
    state: Option<DeliveryState>,
    responses: u64,
    acks: u64,
    nacks: u64,
    /// Boxed: most types are never NACKed, and a `Nack` is 112 bytes inline.
    last_nack: Option<Box<Nack>>,
}

impl TypeRecord {
    fn new(type_url: &str) -> Self {
        TypeRecord {
            type_url: TypeName::of(type_url),
            sent_version: None,
            acked_version: AckedVersion::None,
            sent_nonce: None,
            state: None,
            responses: 0,
            acks: 0,
            nacks: 0,
            last_nack: None,
        }
    }

    fn sent(&mut self, version: &str, nonce: &str) {
        if self.sent_version.as_deref() != Some(version) {
            // The ACKed version stays what it was: take it over before the sent one changes.
            if matches!(self.acked_version, AckedVersion::Sent) {
                self.acked_version = self
                    .sent_version
                    .take()
                    .map_or(AckedVersion::None, AckedVersion::Other);
            }
            self.sent_version = Some(version.into());
        }
        self.sent_nonce = Some(Nonce::of(nonce));
        self.state = Some(DeliveryState::Sent);
        self.responses += 1;
    }

    fn acked(&mut self, version: &str) {
        let same = |v: &str| v == version;
        if self.sent_version.as_deref().is_some_and(same) {
            self.acked_version = AckedVersion::Sent;
        } else if !matches!(&self.acked_version, AckedVersion::Other(v) if same(v)) {
            self.acked_version = AckedVersion::Other(version.into());
        }
        self.state = Some(DeliveryState::Acked);
        self.acks += 1;
    }

    fn status(&self) -> TypeStatus {
        TypeStatus {
            sent_version: self.sent_version.as_deref().map(str::to_owned),
            sent_nonce: self.sent_nonce.as_ref().map(Nonce::to_string),
            acked_version: match &self.acked_version {
                AckedVersion::None => None,
                AckedVersion::Sent => self.sent_version.as_deref().map(str::to_owned),
                AckedVersion::Other(v) => Some(v.to_string()),
            },
            state: self.state,
            responses: self.responses,
            acks: self.acks,
            nacks: self.nacks,
            last_nack: self.last_nack.as_deref().cloned(),
        }
    }
}

/// A type URL: one of the types the server knows, not copied, or any other, as sent.
#[derive(Debug)]
enum TypeName {
    Known(&'static str),
    Other(Box<str>),
}

impl TypeName {
    fn of(type_url: &str) -> Self {
        match PUSH_ORDER.iter().find(|t| **t == type_url) {
            Some(known) => TypeName::Known(known),
            None => TypeName::Other(type_url.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            TypeName::Known(t) => t,
            TypeName::Other(t) => t,
        }
    }
}

/// The last version a client ACKed for a type.
#[derive(Debug)]
enum AckedVersion {
    None,
    /// The version last sent.
    Sent,
    Other(Box<str>),
}

/// A response's nonce: the number the stream minted (`StreamContext::nonce` writes it in
/// decimal), kept as that number; anything else as text.
#[derive(Debug, PartialEq, Eq)]
enum Nonce {
    Minted(u64),
    Text(Box<str>),
}

impl Nonce {
    fn of(nonce: &str) -> Self {
        // Only the canonical decimal form, so that writing the number gives `nonce` back.
        let canonical = nonce.bytes().all(|b| b.is_ascii_digit())
            && (nonce.len() == 1 || !nonce.starts_with('0'));
        match nonce.parse() {
            Ok(n) if canonical => Nonce::Minted(n),
            _ => Nonce::Text(nonce.into()),
        }
    }
}

impl std::fmt::Display for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Nonce::Minted(n) => write!(f, "{n}"),
            Nonce::Text(t) => f.write_str(t),
        }
    }
}

/// One open stream's handle on the registry: records its events, and unregisters on drop
/// (so everything about a node is freed when its last stream closes).
pub(crate) struct StreamRecord {
    registry: Arc<NodeRegistry>,
    /// The registry's key: one string for the node, however many streams it has.
    node_id: Arc<str>,
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
        self.registry
            .update(&self.node_id, type_url, |t| t.sent(version, nonce));
    }

    pub(crate) fn acked(&self, type_url: &str, version: &str) {
        metrics::counter!("xds_acks_total", "type" => metric_label(type_url)).increment(1);
        self.registry
            .update(&self.node_id, type_url, |t| t.acked(version));
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
            t.last_nack = Some(Box::new(nack));
        });
    }
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        self.registry.nodes.remove_if_mut(&*self.node_id, |_, n| {
            n.streams = n.streams.saturating_sub(1);
            n.streams == 0
        });
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
