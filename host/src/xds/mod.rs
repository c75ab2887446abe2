//! The xDS protocol: State-of-the-World and Delta, over ADS and the per-type services, with
//! per-stream subscriptions, nonces, ACK/NACK records, ordering and TTL heartbeats.

mod admission;
#[doc(hidden)]
pub mod bench;
mod callbacks;
mod connection;
mod context;
mod counted;
mod csds;
mod delta;
#[cfg(test)]
mod delta_tests;
mod grouping;
mod limits;
mod nack;
#[cfg(test)]
mod proptests;
mod router;
mod server;
mod services;
mod shared;
mod sotw;
#[cfg(test)]
mod sotw_tests;
mod status;
mod stream;
mod subscription;
#[cfg(test)]
mod test_support;
mod tls;
mod types;
mod warming;
mod wire;

pub use admission::{DEFAULT_ACCEPT_BURST, DEFAULT_ACCEPT_RATE};
pub use callbacks::{
    Callbacks, FetchInfo, Protocol, StreamId, StreamInfo, StreamRequest, StreamResponse,
};
pub use context::StreamLimits;
pub use grouping::{ByCluster, ByIdentity, ByNodeId, NodeGrouping, NodeObserver, Transport};
pub use nack::Nack;
pub use router::XdsRoutes;
pub use server::{
    ServeError, XdsServer, XdsServerBuilder, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES,
};
pub use shared::CsdsAccess;
pub use status::{DeliveryState, NodeRegistry, NodeStatus, TypeStatus};
pub use tls::{TlsError, TlsSettings};
