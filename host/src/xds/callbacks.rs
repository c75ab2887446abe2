//! Hooks an embedder registers to see, and refuse, what streams and fetches do: the
//! equivalent of go-control-plane's `server.Callbacks`, for both protocol variants at once.

use std::fmt;
use std::net::SocketAddr;

use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::nack::Nack;

/// Told of every stream's life and every unary fetch, and may refuse either. Register one with
/// [`XdsServerBuilder::callbacks`](super::XdsServerBuilder::callbacks); every method has a
/// no-op default, so implement only what you need.
///
/// # Order
///
/// For one stream, calls never overlap and come in this order:
///
/// 1. [`on_stream_open`](Self::on_stream_open), once, when the first request has arrived
///    and passed the server's own checks (node present, node size, node authorization),
///    before anything is recorded or served for it. A stream the server refuses before that
///    point is never seen by the callbacks. If it refuses, the stream ends with its status and
///    no other method is called for that stream.
/// 2. Then, in the order things happen on the stream:
///    [`on_stream_request`](Self::on_stream_request) for each request as received (the first
///    one included), before the server acts on it, so before any response or NACK it causes;
///    [`on_stream_nack`](Self::on_stream_nack) for a request that rejects a response, after
///    its `on_stream_request`; [`on_stream_response`](Self::on_stream_response) for each
///    response, in the order they are handed to the transport (for a response caused by a
///    request, after that request's `on_stream_request`).
/// 3. [`on_stream_closed`](Self::on_stream_closed), exactly once for every stream whose open
///    was accepted, however it ends (client gone, refused request, limit, server shutdown),
///    after every other call for it.
///
/// Calls for different streams, and for fetches, may run concurrently on different threads.
/// A stream's calls run on that stream's task: they must not block, and a slow one delays
/// that stream only.
///
/// For a fetch: [`on_fetch_request`](Self::on_fetch_request) before the answer is looked up
/// (after the server's own checks), then [`on_fetch_response`](Self::on_fetch_response) when
/// the fetch is answered with resources.
pub trait Callbacks: Send + Sync + 'static {
    /// A stream opened. An `Err` ends it with that status before anything is served.
    fn on_stream_open(&self, stream: &StreamInfo<'_>) -> Result<(), Status> {
        let _ = stream;
        Ok(())
    }

    /// A stream whose open was accepted ended.
    fn on_stream_closed(&self, stream: StreamId, node: &Node, group: &str) {
        let _ = (stream, node, group);
    }

    /// A request arrived on a stream. An `Err` ends the stream with that status, and the
    /// request is not acted on.
    fn on_stream_request(
        &self,
        stream: StreamId,
        request: StreamRequest<'_>,
    ) -> Result<(), Status> {
        let _ = (stream, request);
        Ok(())
    }

    /// A response is handed to the transport.
    fn on_stream_response(&self, stream: StreamId, response: StreamResponse<'_>) {
        let _ = (stream, response);
    }

    /// A client rejected a response on a stream, as the server recorded it (strings cut to
    /// their bounds; see [`Nack`]). The server never resends the rejected payload.
    fn on_stream_nack(&self, stream: StreamId, node_id: &str, type_url: &str, nack: &Nack) {
        let _ = (stream, node_id, type_url, nack);
    }

    /// A unary fetch arrived. An `Err` refuses it with that status.
    fn on_fetch_request(&self, fetch: &FetchInfo<'_>) -> Result<(), Status> {
        let _ = fetch;
        Ok(())
    }

    /// A unary fetch is answered with `response`.
    fn on_fetch_response(&self, fetch: &FetchInfo<'_>, response: &DiscoveryResponse) {
        let _ = (fetch, response);
    }
}

/// A stream's id, unique among the streams of one server (for its lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub(crate) u64);

impl StreamId {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which protocol variant a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// State of the World: `DiscoveryRequest` / `DiscoveryResponse`.
    Sotw,
    /// Incremental: `DeltaDiscoveryRequest` / `DeltaDiscoveryResponse`.
    Delta,
}

/// A stream as it opens.
#[derive(Debug)]
#[non_exhaustive]
pub struct StreamInfo<'a> {
    /// The stream's id, passed to every later call for it.
    pub id: StreamId,
    /// The node of the first request (its id is not empty).
    pub node: &'a Node,
    /// The group the node is served from.
    pub group: &'a str,
    /// SotW or Delta.
    pub protocol: Protocol,
    /// `None` on an aggregated (ADS) stream; the one type URL of a per-type service (CDS,
    /// LDS, …) otherwise.
    pub type_url: Option<&'static str>,
    /// The client's address, when the transport knows it.
    pub remote_addr: Option<SocketAddr>,
    /// The gRPC request headers (e.g. an authorization token).
    pub metadata: &'a MetadataMap,
}

/// A unary `Fetch*` call, after the server's own checks.
#[derive(Debug)]
#[non_exhaustive]
pub struct FetchInfo<'a> {
    /// The request; its `node` is present with a non-empty id.
    pub request: &'a DiscoveryRequest,
    /// The group the node is served from.
    pub group: &'a str,
    /// The type URL fetched (the service's own).
    pub type_url: &'a str,
    /// The client's address, when the transport knows it.
    pub remote_addr: Option<SocketAddr>,
    /// The gRPC request headers.
    pub metadata: &'a MetadataMap,
}

/// A request on a stream, in either variant.
#[derive(Debug, Clone, Copy)]
pub enum StreamRequest<'a> {
    /// A State-of-the-World request.
    Sotw(&'a DiscoveryRequest),
    /// A Delta request.
    Delta(&'a DeltaDiscoveryRequest),
}

impl StreamRequest<'_> {
    /// The type URL the request names (empty on a per-type stream that leaves it out).
    pub fn type_url(&self) -> &str {
        match self {
            StreamRequest::Sotw(r) => &r.type_url,
            StreamRequest::Delta(r) => &r.type_url,
        }
    }

    /// Whether the request rejects a response (carries `error_detail`).
    pub fn is_nack(&self) -> bool {
        match self {
            StreamRequest::Sotw(r) => r.error_detail.is_some(),
            StreamRequest::Delta(r) => r.error_detail.is_some(),
        }
    }
}

/// A response on a stream, in either variant.
#[derive(Debug, Clone, Copy)]
pub enum StreamResponse<'a> {
    /// A State-of-the-World response.
    Sotw(&'a DiscoveryResponse),
    /// A Delta response.
    Delta(&'a DeltaDiscoveryResponse),
}

impl StreamResponse<'_> {
    /// The type URL of the resources it carries.
    pub fn type_url(&self) -> &str {
        match self {
            StreamResponse::Sotw(r) => &r.type_url,
            StreamResponse::Delta(r) => &r.type_url,
        }
    }

    /// The response's nonce.
    pub fn nonce(&self) -> &str {
        match self {
            StreamResponse::Sotw(r) => &r.nonce,
            StreamResponse::Delta(r) => &r.nonce,
        }
    }
}

/// A stream's request message, as the callbacks see it.
pub(crate) trait CallbackRequest {
    /// The variant that sends this message.
    const PROTOCOL: Protocol;
    /// The borrowed view.
    fn view(&self) -> StreamRequest<'_>;
}

/// A stream's response message, as the callbacks see it.
pub(crate) trait CallbackResponse {
    /// Shows it to `callbacks` as sent on `stream`.
    fn report(&self, callbacks: &dyn Callbacks, stream: StreamId);
}

impl CallbackRequest for DiscoveryRequest {
    const PROTOCOL: Protocol = Protocol::Sotw;
    fn view(&self) -> StreamRequest<'_> {
        StreamRequest::Sotw(self)
    }
}

impl CallbackRequest for DeltaDiscoveryRequest {
    const PROTOCOL: Protocol = Protocol::Delta;
    fn view(&self) -> StreamRequest<'_> {
        StreamRequest::Delta(self)
    }
}

impl CallbackResponse for DeltaDiscoveryResponse {
    fn report(&self, callbacks: &dyn Callbacks, stream: StreamId) {
        callbacks.on_stream_response(stream, StreamResponse::Delta(self));
    }
}
