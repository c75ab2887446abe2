//! What every stream and service of one server shares: the cache, the grouping, the limits,
//! the node records. Built once by the server's builder, read by everything else in `xds`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cache;

use super::admission::AcceptRate;
use super::callbacks::{Callbacks, StreamId};
use super::connection::{ConnectionCounters, ConnectionRules};
use super::context::StreamLimits;
use super::grouping::{NodeGrouping, NodeObserver};
use super::status::NodeRegistry;
use super::tls::TlsSettings;

/// Who may call CSDS (`ClientStatusDiscoveryService`) on the xDS port. CSDS shows what each
/// node was sent, so it is a way to read other nodes' configuration: with mutual TLS and node
/// authorization a client sees only the nodes its certificate allows, whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CsdsAccess {
    /// Served where it cannot leak: on a loopback-only listener, or under mutual TLS with node
    /// authorization; refused (`PERMISSION_DENIED`) on any other port.
    #[default]
    Auto,
    /// Served to every client of the port.
    On,
    /// Never served on the xDS port (the admin port's `/debug/csds` still answers).
    Off,
}

/// What every stream of a server shares.
pub(crate) struct Shared {
    pub(crate) cache: Cache,
    pub(crate) grouping: Box<dyn NodeGrouping>,
    pub(crate) observer: Option<Box<dyn NodeObserver>>,
    pub(crate) nodes: Arc<NodeRegistry>,
    pub(crate) limits: StreamLimits,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) csds: CsdsAccess,
    pub(crate) csds_secrets: bool,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_streams_per_connection: Option<u32>,
    pub(crate) keepalive: (Duration, Duration),
    pub(crate) connection_rules: ConnectionRules,
    pub(crate) accept_rate: AcceptRate,
    pub(crate) connection_counters: Arc<ConnectionCounters>,
    /// The embedder's hooks, if any: `None` costs each stream one branch per event.
    pub(crate) callbacks: Option<Arc<dyn Callbacks>>,
    pub(crate) next_stream_id: AtomicU64,
}

impl Shared {
    /// A stream id not given before by this server.
    pub(crate) fn new_stream_id(&self) -> StreamId {
        StreamId(self.next_stream_id.fetch_add(1, Ordering::Relaxed) + 1)
    }
}
