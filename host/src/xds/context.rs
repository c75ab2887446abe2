//! What a stream knows once its first request arrived: who the client is, what it may ask
//! for, and where its events are recorded.

use std::time::Duration;

use nebucloud_xds_proto::envoy::config::core::v3::Node;
use tonic::Status;

use crate::cache::ResourceSet;

use super::status::StreamRecord;

/// The client feature that announces support for resource TTLs and heartbeats.
pub(crate) const FEATURE_TTL: &str = "xds.config.supports-resource-ttl";
/// The client feature that announces `Resource` wrappers in SotW responses.
pub(crate) const FEATURE_RESOURCE_IN_SOTW: &str = "xds.config.resource-in-sotw";

/// Bounds on what one stream may make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// The most resource names one stream may subscribe to for one type (and the most
    /// `initial_resource_versions` it may announce). Above it the stream ends with
    /// `RESOURCE_EXHAUSTED`.
    pub max_names_per_type: usize,
    /// The most resource types one aggregated stream may subscribe to.
    pub max_types: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_names_per_type: 50_000,
            max_types: 64,
        }
    }
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
                "this stream serves {t}; a request asked for type_url {type_url:?}"
            ))),
            Scope::Aggregated if type_url.is_empty() => Err(Status::invalid_argument(
                "type_url is required on an aggregated (ADS) stream",
            )),
            Scope::Aggregated if !crate::cache::is_valid_type_url(type_url) => Err(
                Status::invalid_argument(format!("malformed type_url {type_url:?}")),
            ),
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
                "subscription of {count} names for {type_url} exceeds this server's limit of {} \
                 names per type per stream",
                self.limits.max_names_per_type
            )));
        }
        Ok(())
    }

    /// Refuses one type more than the limit on an aggregated stream.
    pub(crate) fn check_types(&self, count: usize) -> Result<(), Status> {
        if count > self.limits.max_types {
            return Err(Status::resource_exhausted(format!(
                "a stream may subscribe to at most {} resource types",
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

    /// The node of a request, if it carries one.
    fn node(request: &Self::Request) -> Option<&Node>;
    /// A new stream's state, starting from the group's current resources.
    fn new(ctx: StreamContext, set: Option<std::sync::Arc<ResourceSet>>) -> Self;
    /// Handles one request; an error ends the stream with that status.
    fn on_request(&mut self, request: Self::Request) -> Result<Vec<Self::Response>, Status>;
    /// Handles a new resource set of the group.
    fn on_update(&mut self, set: Option<std::sync::Arc<ResourceSet>>) -> Vec<Self::Response>;
    /// Whether any resource the client holds carries a TTL that heartbeats must refresh.
    fn needs_heartbeat(&self) -> bool;
    /// Builds the heartbeats due now.
    fn on_heartbeat(&mut self) -> Vec<Self::Response>;
}
