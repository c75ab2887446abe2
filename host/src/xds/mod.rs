//! The xDS protocol: State-of-the-World and Delta, over ADS and the per-type services, with
//! per-stream subscriptions, nonces, ACK/NACK records, ordering and TTL heartbeats.

mod admission;
mod context;
mod csds;
mod delta;
mod server;
mod services;
mod sotw;
mod status;
mod stream;
mod subscription;
mod tls;
mod types;

pub use context::StreamLimits;
pub use server::{
    ByCluster, ByIdentity, ByNodeId, NodeGrouping, NodeObserver, ServeError, XdsServer,
    XdsServerBuilder,
};
pub(crate) use status::unix_now;
pub use status::{DeliveryState, Nack, NodeRegistry, NodeStatus, TypeStatus};
pub use tls::{TlsError, TlsSettings};
