//! The xDS protocol: State-of-the-World and Delta, over ADS and the per-type services, with
//! per-stream subscriptions, nonces, ACK/NACK records, ordering and TTL heartbeats.

mod admission;
#[doc(hidden)]
pub mod bench;
mod connection;
mod context;
mod csds;
mod delta;
mod limits;
#[cfg(test)]
mod proptests;
mod server;
mod services;
mod sotw;
mod status;
mod stream;
mod subscription;
mod tls;
mod types;

pub use admission::{DEFAULT_ACCEPT_BURST, DEFAULT_ACCEPT_RATE};
pub use context::StreamLimits;
pub use server::{
    ByCluster, CsdsAccess, ByIdentity, ByNodeId, NodeGrouping, NodeObserver, ServeError, XdsServer,
    XdsServerBuilder,
};
pub use server::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_BYTES,
};
pub(crate) use status::unix_now;
pub use status::{DeliveryState, Nack, NodeRegistry, NodeStatus, TypeStatus};
pub use tls::{TlsError, TlsSettings};
