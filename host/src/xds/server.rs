//! The xDS server: which group a node is served from, the limits, and the tonic services on
//! one port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds_proto::envoy::service::status::v3::{ClientStatusRequest, ClientStatusResponse};
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::cache::Cache;

use super::admission::{self, AcceptRate};
use super::callbacks::Callbacks;
use super::connection::{self, ConnectionRules};
use super::context::StreamLimits;
use super::grouping::{ByNodeId, NodeGrouping, NodeObserver};
use super::router::XdsRoutes;
use super::services;
use super::shared::CsdsAccess;
use super::shared::Shared;
use super::status::NodeRegistry;
use super::tls::{PeerIdentity, TlsError, TlsSettings};

/// An xDS management server over a [`Cache`]: ADS and every per-type discovery service, each
/// in State-of-the-World and Delta form, on one gRPC port.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use nebucloud_xds::{Cache, ResourceSet, XdsServer};
/// let cache = Cache::new();
/// cache.set("node-1", ResourceSet::new([])?);
/// XdsServer::builder(cache.clone()).build().serve("127.0.0.1:18000".parse()?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct XdsServer {
    shared: Arc<Shared>,
    health: tonic_health::server::HealthReporter,
}

/// Configures an [`XdsServer`].
pub struct XdsServerBuilder {
    cache: Cache,
    grouping: Box<dyn NodeGrouping>,
    observer: Option<Box<dyn NodeObserver>>,
    limits: StreamLimits,
    heartbeat_interval: Duration,
    max_message_bytes: usize,
    tls: Option<TlsSettings>,
    csds: CsdsAccess,
    csds_secrets: bool,
    max_connections: Option<usize>,
    max_streams_per_connection: Option<u32>,
    keepalive: (Duration, Duration),
    connection_rules: ConnectionRules,
    accept_rate: AcceptRate,
    callbacks: Option<Arc<dyn Callbacks>>,
}

impl XdsServerBuilder {
    /// Hooks told of every stream's open, requests, responses, NACKs and close, and of every
    /// unary fetch, which may refuse a stream, a request or a fetch (see [`Callbacks`] for
    /// the order of calls). Without them (the default) nothing is called.
    #[must_use]
    pub fn callbacks(mut self, callbacks: impl Callbacks) -> Self {
        self.callbacks = Some(Arc::new(callbacks));
        self
    }

    /// Serve over TLS (and mutual TLS when a client CA is set).
    #[must_use]
    pub fn tls(mut self, tls: TlsSettings) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Who may call CSDS on the xDS port (default [`CsdsAccess::Auto`]).
    #[must_use]
    pub fn csds(mut self, access: CsdsAccess) -> Self {
        self.csds = access;
        self
    }

    /// Whether CSDS answers carry the bodies of `Secret` resources (default false: secrets are
    /// listed by name and version, never shown).
    #[must_use]
    pub fn csds_secrets(mut self, show: bool) -> Self {
        self.csds_secrets = show;
        self
    }

    /// At most this many connections at once; the next ones get `RESOURCE_EXHAUSTED`.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// HTTP/2 keepalive: ping every `interval`, close the connection when a ping goes
    /// unanswered for `timeout` (default 30 s / 10 s).
    #[must_use]
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive = (interval, timeout);
        self
    }

    /// A connection that has opened no stream `timeout` after it was accepted (TLS
    /// handshake and HTTP/2 preface included) is told to go away and closed (default 10 s):
    /// connections that say nothing cannot hold the connection limit.
    #[must_use]
    pub fn first_request_timeout(mut self, timeout: Duration) -> Self {
        self.connection_rules.first_request_timeout = timeout;
        self
    }

    /// A connection with no open stream for `timeout` is told to go away and closed
    /// (default 5 min). Keepalive pings are not activity: only gRPC calls are.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.connection_rules.idle_timeout = timeout;
        self
    }

    /// A connection older than `age` ± 10 % (drawn per connection) is told to go away, so
    /// that clients rebalance across replicas; `None` (the default) lets connections live.
    #[must_use]
    pub fn max_connection_age(mut self, age: Option<Duration>) -> Self {
        self.connection_rules.max_age = age;
        self
    }

    /// How long the open streams of a connection told to go away (first request, idle, max
    /// age) may go on before it is closed (default 10 s). xDS streams never end by
    /// themselves: at the end of the grace their clients reconnect.
    #[must_use]
    pub fn go_away_grace(mut self, grace: Duration) -> Self {
        self.connection_rules.go_away_grace = grace;
        self
    }

    /// How many streams a client may open and reset before the server has accepted them
    /// until its connection is closed (HTTP/2 "rapid reset"; default 20, h2's own).
    #[must_use]
    pub fn max_pending_reset_streams(mut self, max: usize) -> Self {
        self.connection_rules.max_pending_reset_streams = max;
        self
    }

    /// How many streams the server may reset for a client's errors until its connection
    /// is closed (default 1024, hyper's own).
    #[must_use]
    pub fn max_local_error_reset_streams(mut self, max: usize) -> Self {
        self.connection_rules.max_local_error_reset_streams = max;
        self
    }

    /// Accepts at most `burst` connections at once, then `per_second` (default 2,000 a second
    /// after a burst of 10,000; each at least 1). Connections beyond the rate wait in the
    /// kernel's backlog and are accepted later, never refused for it: after a restart, a
    /// reconnecting fleet is admitted at this pace.
    #[must_use]
    pub fn accept_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.accept_rate = AcceptRate {
            per_second: per_second.max(1),
            burst: burst.max(1),
        };
        self
    }

    /// At most this many concurrent streams per connection (HTTP/2 `MAX_CONCURRENT_STREAMS`;
    /// further streams are refused by the transport).
    #[must_use]
    pub fn max_streams_per_connection(mut self, max: u32) -> Self {
        self.max_streams_per_connection = Some(max);
        self
    }

    /// How nodes map to groups; the default is [`ByNodeId`].
    #[must_use]
    pub fn grouping(mut self, grouping: impl NodeGrouping) -> Self {
        self.grouping = Box::new(grouping);
        self
    }

    /// Who to tell when a node connects (the plugin pipeline, to compute its group).
    #[must_use]
    pub fn observer(mut self, observer: impl NodeObserver) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// Per-stream limits.
    #[must_use]
    pub fn limits(mut self, limits: StreamLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How often resources with a TTL are refreshed by heartbeats (default 10 s). Keep it well
    /// under the shortest TTL served.
    #[must_use]
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = every.max(Duration::from_millis(10));
        self
    }

    /// The largest request the server decodes and the largest response it encodes
    /// (default 16 MiB); larger requests end the stream with `RESOURCE_EXHAUSTED`.
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The server.
    pub fn build(self) -> XdsServer {
        XdsServer {
            health: tonic_health::server::HealthReporter::new(),
            shared: Arc::new(Shared {
                cache: self.cache,
                grouping: self.grouping,
                observer: self.observer,
                nodes: Arc::new(NodeRegistry::default()),
                limits: self.limits,
                heartbeat_interval: self.heartbeat_interval,
                max_message_bytes: self.max_message_bytes,
                tls: self.tls,
                csds: self.csds,
                csds_secrets: self.csds_secrets,
                max_connections: self.max_connections,
                max_streams_per_connection: self.max_streams_per_connection,
                keepalive: self.keepalive,
                connection_rules: self.connection_rules,
                accept_rate: self.accept_rate,
                connection_counters: Arc::default(),
                callbacks: self.callbacks,
                next_stream_id: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }
}

/// How often TTL'd resources are refreshed by heartbeats, by default.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// The largest request decoded and response encoded, by default.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;
/// HTTP/2 keepalive ping interval, by default.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered, by default.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

impl XdsServer {
    /// A builder over `cache`, with defaults: groups by node id, default limits.
    pub fn builder(cache: Cache) -> XdsServerBuilder {
        XdsServerBuilder {
            cache,
            grouping: Box::new(ByNodeId),
            observer: None,
            limits: StreamLimits::default(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tls: None,
            csds: CsdsAccess::default(),
            csds_secrets: false,
            max_connections: None,
            max_streams_per_connection: None,
            keepalive: (DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT),
            connection_rules: ConnectionRules::default(),
            accept_rate: AcceptRate::default(),
            callbacks: None,
        }
    }

    /// The cache this server serves from.
    pub fn cache(&self) -> &Cache {
        &self.shared.cache
    }

    /// What each connected node was sent, ACKed and NACKed.
    pub fn nodes(&self) -> &Arc<NodeRegistry> {
        &self.shared.nodes
    }

    /// How many accepts the accept rate has held back while a client was waiting
    /// (`xds_connections_accept_delayed_total`).
    pub fn accepts_delayed(&self) -> u64 {
        let delayed = &self.shared.connection_counters.accepts_delayed;
        delayed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many connections the server closed by each rule, labelled as in
    /// `xds_connections_closed_total`: `first_request_timeout`, `idle`, `max_age`.
    pub fn connections_closed(&self) -> [(&'static str, u64); 3] {
        self.shared.connection_counters.closed()
    }

    /// Every gRPC service of the server as one tower service, to serve with tonic's
    /// `Server::serve_with_incoming` or mount under another server. Not knowing where they are
    /// served, CSDS's `auto` treats the port as reachable from elsewhere.
    pub fn routes(&self) -> XdsRoutes {
        services::routes(&self.shared, self.health.clone(), false)
    }

    /// What CSDS answers `req`, for the operator (the admin port): every node, whoever asks;
    /// secret bodies only when [`XdsServerBuilder::csds_secrets`] allows them.
    pub fn client_status(&self, req: &ClientStatusRequest) -> ClientStatusResponse {
        super::csds::answer(&self.shared, req, &PeerIdentity::Unchecked)
    }

    /// Serves on `addr` until the task is dropped.
    pub async fn serve(self, addr: SocketAddr) -> Result<(), ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        self.serve_with_shutdown(listener, std::future::pending())
            .await
    }

    /// Serves on an already bound listener until `shutdown` completes, then sends every
    /// connection a GOAWAY and lets open streams finish.
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        // CSDS's `auto`: open on a port that only this machine can reach.
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        let routes = services::routes(&self.shared, self.health.clone(), loopback);
        for service in ["", "envoy.service.discovery.v3.AggregatedDiscoveryService"] {
            self.health
                .set_service_status(service, tonic_health::ServingStatus::Serving)
                .await;
        }
        let rules = self.shared.connection_rules;
        let mut builder = Server::builder()
            .http2_keepalive_interval(Some(self.shared.keepalive.0))
            .http2_keepalive_timeout(Some(self.shared.keepalive.1))
            .max_concurrent_streams(self.shared.max_streams_per_connection)
            .http2_max_pending_accept_reset_streams(Some(rules.max_pending_reset_streams))
            .http2_max_local_error_reset_streams(Some(rules.max_local_error_reset_streams));
        let mut refusal = None;
        if let Some(tls) = &self.shared.tls {
            let files = tls.read().map_err(ServeError::Tls)?;
            builder = builder
                .tls_config(files.server_config())
                .map_err(ServeError::Transport)?;
            if self.shared.max_connections.is_some() {
                refusal = Some(files.refusal_config().map_err(ServeError::Tls)?);
            }
        }
        let counters = Arc::clone(&self.shared.connection_counters);
        let incoming = admission::incoming(
            listener,
            self.shared.max_connections,
            refusal,
            self.shared.accept_rate,
            Arc::clone(&counters.accepts_delayed),
        );
        connection::serve(incoming, builder, routes, rules, counters, shutdown).await;
        Ok(())
    }
}

/// Why the server could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(TlsError),
    /// The gRPC transport failed.
    #[error("xDS transport: {0}")]
    Transport(#[source] tonic::transport::Error),
}
