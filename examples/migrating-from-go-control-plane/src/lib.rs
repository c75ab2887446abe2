//! go-control-plane's example program, ported: a snapshot (one listener, route, cluster and
//! its endpoints) checked for consistency, a node hash, callbacks and server options.
//!
//! `docs/migrating-from-go-control-plane.md` shows the Go program beside this one, piece by
//! piece. `src/main.rs` is the `main` of both; this library is what it calls, so that the
//! repository's tests run the very same code against a real Envoy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds::cache::ConsistencyError;
use nebucloud_xds::xds::{
    ByCluster, Callbacks, FetchInfo, Nack, StreamId, StreamInfo, StreamRequest, XdsServer,
};
use nebucloud_xds::{Cache, Resource, ResourceSet, ResourceSetError};
use nebucloud_xds_guest::build::{
    envoy_http_listener, route_to_cluster, EdsCluster, LoadAssignment, RouteSource,
};
use nebucloud_xds_guest::proto::envoy::config::core::v3::Node;
use tonic::Status;

/// `node.cluster` of the Envoys this example configures (`envoy.yaml` says it): with the node
/// hash [`ByCluster`], the name of the group their snapshot is set for.
pub const SERVICE_CLUSTER: &str = "example";
/// The cluster Envoy forwards to.
pub const CLUSTER_NAME: &str = "example_proxy_cluster";
/// The route configuration the listener fetches by RDS.
pub const ROUTE_NAME: &str = "local_route";
/// The listener Envoy opens.
pub const LISTENER_NAME: &str = "listener_0";

/// Why the snapshot was not built: go-control-plane's `NewSnapshot` and `Consistent` errors.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Two resources of a type share a name (or one has none).
    #[error(transparent)]
    Invalid(#[from] ResourceSetError),
    /// A cluster or listener refers to a resource the snapshot lacks.
    #[error(transparent)]
    Inconsistent(#[from] ConsistencyError),
}

/// The snapshot: a listener on `127.0.0.1:listener_port` whose routes (RDS over ADS) send
/// every request to an EDS cluster whose one endpoint is `upstream`. Checked for consistency
/// before it is returned, as `snapshot.Consistent()` is in the Go program.
pub fn snapshot(listener_port: u16, upstream: SocketAddr) -> Result<ResourceSet, SnapshotError> {
    let cluster = EdsCluster::new(CLUSTER_NAME)
        .connect_timeout(Duration::from_secs(5))
        .build();
    let endpoint = LoadAssignment::new(CLUSTER_NAME)
        .endpoint(upstream.ip().to_string(), upstream.port())
        .build();
    let route = route_to_cluster(ROUTE_NAME, CLUSTER_NAME);
    let listener = envoy_http_listener(
        LISTENER_NAME,
        "127.0.0.1",
        listener_port,
        RouteSource::ads(ROUTE_NAME),
    );
    let snapshot = ResourceSet::new([
        Resource::from_message(CLUSTER_NAME, &cluster),
        Resource::from_message(CLUSTER_NAME, &endpoint),
        Resource::from_message(ROUTE_NAME, &route),
        Resource::from_message(LISTENER_NAME, &listener),
    ])?;
    snapshot.check_consistent()?;
    Ok(snapshot)
}

/// The xDS server over `cache`: nodes grouped by `node.cluster` (the Go program's `NodeHash`),
/// `callbacks` told of every stream, and the Go program's gRPC options: keepalive pings every
/// 30 s answered within 5 s, at most 1,000 concurrent streams per connection.
pub fn server(cache: Cache, callbacks: Logger) -> XdsServer {
    XdsServer::builder(cache)
        .grouping(ByCluster)
        .callbacks(callbacks)
        .keepalive(Duration::from_secs(30), Duration::from_secs(5))
        .max_streams_per_connection(1_000)
        .build()
}

/// The Go program's callbacks: logs streams, NACKs and fetches, and counts them.
#[derive(Debug, Clone, Default)]
pub struct Logger {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    streams: AtomicU64,
    requests: AtomicU64,
    nacks: AtomicU64,
    fetches: AtomicU64,
}

impl Logger {
    /// Streams opened so far.
    pub fn streams(&self) -> u64 {
        self.counts.streams.load(Ordering::Relaxed)
    }

    /// Stream requests received so far (ACKs and NACKs included).
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// NACKs received so far.
    pub fn nacks(&self) -> u64 {
        self.counts.nacks.load(Ordering::Relaxed)
    }

    /// Unary fetches so far.
    pub fn fetches(&self) -> u64 {
        self.counts.fetches.load(Ordering::Relaxed)
    }
}

impl Callbacks for Logger {
    fn on_stream_open(&self, stream: &StreamInfo<'_>) -> Result<(), Status> {
        self.counts.streams.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            stream = %stream.id, node = %stream.node.id, group = stream.group,
            protocol = ?stream.protocol, type_url = stream.type_url.unwrap_or("ADS"),
            "stream opened"
        );
        Ok(())
    }

    fn on_stream_closed(&self, stream: StreamId, node: &Node, _group: &str) {
        tracing::info!(%stream, node = %node.id, "stream closed");
    }

    fn on_stream_request(
        &self,
        _stream: StreamId,
        _request: StreamRequest<'_>,
    ) -> Result<(), Status> {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn on_stream_nack(&self, stream: StreamId, node_id: &str, type_url: &str, nack: &Nack) {
        self.counts.nacks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%stream, node = node_id, type_url, reason = %nack.message, "NACK");
    }

    fn on_fetch_request(&self, fetch: &FetchInfo<'_>) -> Result<(), Status> {
        self.counts.fetches.fetch_add(1, Ordering::Relaxed);
        tracing::info!(type_url = fetch.type_url, group = fetch.group, "fetch");
        Ok(())
    }
}
