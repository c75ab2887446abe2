//! What a stream knows once its first request arrived: who the client is, what it may ask
//! for, and where its events are recorded.

use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds_proto::envoy::config::core::v3::Node;
use prost::Message;
use tonic::Status;

use crate::cache::ResourceSet;

use super::limits::{truncated, NameBytes, QUOTED_TYPE_URL_BYTES};
use super::status::{NodeRegistry, StreamRecord};
use super::types::is_known;

/// The client feature that announces support for resource TTLs and heartbeats.
pub(crate) const FEATURE_TTL: &str = "xds.config.supports-resource-ttl";
/// The client feature that announces `Resource` wrappers in SotW responses.
pub(crate) const FEATURE_RESOURCE_IN_SOTW: &str = "xds.config.resource-in-sotw";

/// Bounds on what one stream may make the server hold. A request over any of them ends the
/// stream with `RESOURCE_EXHAUSTED`, and the status message names the limit.
///
/// Start from [`Default`] and change what you need, so that limits added later get their
/// defaults:
///
/// ```
/// let limits = nebucloud_xds::StreamLimits::default()
///     .with_max_names_per_type(10_000)
///     .with_max_types(16);
/// assert_eq!(limits.max_names_per_type, 10_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamLimits {
    /// The most resource names one stream may subscribe to for one type (and the most
    /// `initial_resource_versions` it may announce).
    pub max_names_per_type: usize,
    /// The most resource types one aggregated stream may subscribe to.
    pub max_types: usize,
    /// The longest resource name (or type URL, or announced version) a request may carry, in
    /// bytes.
    pub max_name_bytes: usize,
    /// The most bytes of names one stream may make the server hold, over all its types, SotW
    /// and Delta alike, accumulated across requests: subscribed names, the type URLs
    /// subscribed to, and the names and versions of Delta `initial_resource_versions` until
    /// they are reconciled with the group's resources. Unsubscribing frees them.
    pub max_names_bytes: usize,
    /// The largest `Node` (id, metadata, locality, features, …, as encoded) a stream's first
    /// request or a unary fetch may carry, in bytes.
    pub max_node_bytes: usize,
    /// The most types an aggregated stream may have pending that the server does not serve:
    /// neither an Envoy v3 xDS type it knows nor a type the node's group has resources of.
    /// Such a subscription is remembered (and answered once the group has resources of that
    /// type) up to this many types; past it a request for another such type is not stored and
    /// not answered (the xDS spec lets a server leave a type it does not serve unanswered), and
    /// the stream goes on. Either way it is counted in `xds_unknown_type_requests_total`, and
    /// its type URL never becomes a metric label. `0` remembers none.
    pub max_unserved_types: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_names_per_type: 50_000,
            max_types: 64,
            max_name_bytes: 4096,
            max_names_bytes: 8 << 20,
            max_node_bytes: 64 << 10,
            max_unserved_types: 4,
        }
    }
}

impl StreamLimits {
    /// With [`max_names_per_type`](Self::max_names_per_type) set to `max`.
    #[must_use]
    pub const fn with_max_names_per_type(mut self, max: usize) -> Self {
        self.max_names_per_type = max;
        self
    }

    /// With [`max_types`](Self::max_types) set to `max`.
    #[must_use]
    pub const fn with_max_types(mut self, max: usize) -> Self {
        self.max_types = max;
        self
    }

    /// With [`max_name_bytes`](Self::max_name_bytes) set to `max`.
    #[must_use]
    pub const fn with_max_name_bytes(mut self, max: usize) -> Self {
        self.max_name_bytes = max;
        self
    }

    /// With [`max_names_bytes`](Self::max_names_bytes) set to `max`.
    #[must_use]
    pub const fn with_max_names_bytes(mut self, max: usize) -> Self {
        self.max_names_bytes = max;
        self
    }

    /// With [`max_node_bytes`](Self::max_node_bytes) set to `max`.
    #[must_use]
    pub const fn with_max_node_bytes(mut self, max: usize) -> Self {
        self.max_node_bytes = max;
        self
    }

    /// With [`max_unserved_types`](Self::max_unserved_types) set to `max`.
    #[must_use]
    pub const fn with_max_unserved_types(mut self, max: usize) -> Self {
        self.max_unserved_types = max;
        self
    }
}

/// Refuses a node larger than `max_node_bytes` when encoded, naming the limit. Called on the
/// first request of every stream and on every unary fetch, before the node is used.
pub(crate) fn check_node(limits: &StreamLimits, node: &Node) -> Result<(), Status> {
    let size = node.encoded_len();
    if size > limits.max_node_bytes {
        return Err(Status::resource_exhausted(format!(
            "the node is {size} bytes, over this server's max_node_bytes of {}",
            limits.max_node_bytes
        )));
    }
    Ok(())
}

/// Whether the group serves `type_url`: an Envoy v3 xDS type the server knows, or a type the
/// group's resources have.
pub(crate) fn serves(type_url: &str, set: Option<&ResourceSet>) -> bool {
    is_known(type_url) || set.is_some_and(|s| s.of_type(type_url).is_some())
}

/// Which types a stream may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// An aggregated (ADS) stream: every type, named in each request.
    Aggregated,
    /// A per-type service stream (CDS, LDS, …): this type only.
    Single(&'static str),
}

impl Scope {
    /// The type a request is about, or the status that ends the stream.
    pub(crate) fn resolve(self, type_url: &str) -> Result<String, Status> {
        match self {
            Scope::Single(t) if type_url.is_empty() || type_url == t => Ok(t.to_owned()),
            Scope::Single(t) => Err(Status::invalid_argument(format!(
                "this stream serves {t}; a request asked for type_url {:?}",
                truncated(type_url, QUOTED_TYPE_URL_BYTES)
            ))),
            Scope::Aggregated if type_url.is_empty() => Err(Status::invalid_argument(
                "type_url is required on an aggregated (ADS) stream",
            )),
            Scope::Aggregated if !crate::cache::is_valid_type_url(type_url) => {
                Err(Status::invalid_argument(format!(
                    "malformed type_url {:?}",
                    truncated(type_url, QUOTED_TYPE_URL_BYTES)
                )))
            }
            Scope::Aggregated => Ok(type_url.to_owned()),
        }
    }

    /// A label for metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Scope::Aggregated => "ads",
            Scope::Single(_) => "per_type",
        }
    }
}

/// Per-stream facts fixed by the first request.
#[derive(Debug)]
pub(crate) struct StreamContext {
    pub(crate) scope: Scope,
    pub(crate) limits: StreamLimits,
    pub(crate) ttl: bool,
    pub(crate) resource_in_sotw: bool,
    pub(crate) record: StreamRecord,
    next_nonce: u64,
    name_bytes: NameBytes,
}

impl StreamContext {
    pub(crate) fn new(
        node: &Node,
        scope: Scope,
        limits: StreamLimits,
        record: StreamRecord,
    ) -> Self {
        let has = |f: &str| node.client_features.iter().any(|x| x == f);
        StreamContext {
            scope,
            limits,
            ttl: has(FEATURE_TTL),
            resource_in_sotw: has(FEATURE_RESOURCE_IN_SOTW),
            record,
            next_nonce: 0,
            name_bytes: NameBytes::default(),
        }
    }

    /// A context whose events go to a registry of its own, for driving the protocol state
    /// without a server (benchmarks and tests).
    pub(crate) fn detached(scope: Scope, limits: StreamLimits) -> Self {
        let registry = Arc::new(NodeRegistry::default());
        let node = Node {
            id: "detached".to_owned(),
            ..Node::default()
        };
        let record = registry.open(&node, "detached");
        StreamContext::new(&node, scope, limits, record)
    }

    /// The type a request is about (see [`Scope::resolve`]), refusing a type URL longer than
    /// `max_name_bytes`.
    pub(crate) fn resolve(&self, type_url: &str) -> Result<String, Status> {
        if type_url.len() > self.limits.max_name_bytes {
            return Err(Status::resource_exhausted(format!(
                "a type_url of {} bytes is over this server's max_name_bytes of {}",
                type_url.len(),
                self.limits.max_name_bytes
            )));
        }
        self.scope.resolve(type_url)
    }

    /// Whether a request for `type_url` is for this stream to handle, given the group's
    /// resources and the types the stream has already: yes for a type the group serves
    /// ([`serves`]), or one the stream remembers; for another, yes while fewer than
    /// `max_unserved_types` of the stream's types are unserved. A request for an unserved type
    /// is counted (never labelled) and, on first sight, logged at debug with its URL cut.
    pub(crate) fn admit_type<'a>(
        &self,
        type_url: &str,
        set: Option<&ResourceSet>,
        first: bool,
        types: impl Iterator<Item = &'a String>,
    ) -> bool {
        if serves(type_url, set) {
            return true;
        }
        metrics::counter!("xds_unknown_type_requests_total").increment(1);
        if !first {
            return true;
        }
        let unserved = types.filter(|t| !serves(t, set)).count();
        let remembered = unserved < self.limits.max_unserved_types;
        tracing::debug!(
            type_url = %truncated(type_url, QUOTED_TYPE_URL_BYTES), remembered,
            "request for a type this node's group does not serve: not answered"
        );
        remembered
    }

    /// The bytes of names this stream makes the server hold (see
    /// [`StreamLimits::max_names_bytes`]).
    pub(crate) fn name_bytes(&self) -> usize {
        self.name_bytes.get()
    }

    /// Records that one type's share of [`Self::name_bytes`] went from `before` to `after`,
    /// refusing a stream that now holds more than `max_names_bytes`. A refusal ends the stream,
    /// so the state it leaves behind is never used.
    pub(crate) fn hold_bytes(&mut self, before: usize, after: usize) -> Result<(), Status> {
        self.name_bytes.change(before, after);
        let held = self.name_bytes();
        if after > before && held > self.limits.max_names_bytes {
            return Err(Status::resource_exhausted(format!(
                "this stream would hold {held} bytes of resource names, over this server's \
                 max_names_bytes of {}",
                self.limits.max_names_bytes
            )));
        }
        Ok(())
    }

    /// Records that `bytes` of [`Self::name_bytes`] are no longer held.
    pub(crate) fn release_bytes(&mut self, bytes: usize) {
        self.name_bytes.change(bytes, 0);
    }

    /// Refuses a name (or announced version) longer than `max_name_bytes`, naming the limit.
    pub(crate) fn check_name_bytes<'a>(
        &self,
        type_url: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Status> {
        let max = self.limits.max_name_bytes;
        match names.into_iter().map(str::len).find(|len| *len > max) {
            Some(len) => Err(Status::resource_exhausted(format!(
                "a resource name of {len} bytes for {} is over this server's max_name_bytes \
                 of {max}",
                truncated(type_url, QUOTED_TYPE_URL_BYTES)
            ))),
            None => Ok(()),
        }
    }

    /// A nonce unique on this stream.
    pub(crate) fn nonce(&mut self) -> String {
        self.next_nonce += 1;
        self.next_nonce.to_string()
    }

    /// Refuses a subscription larger than the limit, naming the limit.
    pub(crate) fn check_names(&self, type_url: &str, count: usize) -> Result<(), Status> {
        if count > self.limits.max_names_per_type {
            return Err(Status::resource_exhausted(format!(
                "subscription of {count} names for {} exceeds this server's limit of {} \
                 names per type per stream (max_names_per_type)",
                truncated(type_url, QUOTED_TYPE_URL_BYTES),
                self.limits.max_names_per_type
            )));
        }
        Ok(())
    }

    /// Refuses one type more than the limit on an aggregated stream.
    pub(crate) fn check_types(&self, count: usize) -> Result<(), Status> {
        if count > self.limits.max_types {
            return Err(Status::resource_exhausted(format!(
                "a stream may subscribe to at most {} resource types (max_types)",
                self.limits.max_types
            )));
        }
        Ok(())
    }
}

/// The protobuf form of a TTL.
pub(crate) fn pb_duration(d: Duration) -> nebucloud_xds_proto::google::protobuf::Duration {
    nebucloud_xds_proto::google::protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The one thing both protocol variants do on every event: react to a request, to a new
/// resource set, or to the heartbeat timer, returning what to send.
pub(crate) trait StreamProtocol: Send + 'static {
    /// The request message.
    type Request: Send + 'static;
    /// The response message.
    type Response: Send + 'static;

    /// Whether this is incremental (Delta) xDS.
    const INCREMENTAL: bool;
    /// The node of a request, if it carries one.
    fn node(request: &Self::Request) -> Option<&Node>;
    /// A new stream's state, starting from the group's current resources.
    fn new(ctx: StreamContext, set: Option<std::sync::Arc<ResourceSet>>) -> Self;
    /// Handles one request; an error ends the stream with that status.
    fn on_request(&mut self, request: Self::Request) -> Result<Vec<Self::Response>, Status>;
    /// Handles a new resource set of the group.
    fn on_update(&mut self, set: Option<std::sync::Arc<ResourceSet>>) -> Vec<Self::Response>;
    /// The bytes of names the stream makes the server hold, as
    /// [`StreamLimits::max_names_bytes`] counts them (the `xds_name_bytes_held` gauge sums
    /// them over all streams).
    #[cfg(test)]
    fn name_bytes(&self) -> usize;
    /// Whether any resource the client holds carries a TTL that heartbeats must refresh.
    fn needs_heartbeat(&self) -> bool;
    /// Builds the heartbeats due now.
    fn on_heartbeat(&mut self) -> Vec<Self::Response>;
}
