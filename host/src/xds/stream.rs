//! The async shell around a stream's protocol state: reads requests, watches the node's
//! group, ticks heartbeats, and yields what the state says to send.
//!
//! Responses are produced only when the transport polls for them, so a client that stops
//! reading stops its own stream and holds no queue: memory per stream stays bounded.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::service::discovery::v3::DiscoveryRequest;
use tokio::time::MissedTickBehavior;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status, Streaming};

use super::callbacks::{
    CallbackRequest, CallbackResponse, Callbacks, FetchInfo, StreamId, StreamInfo,
};
use super::context::{check_node, Scope, StreamContext, StreamProtocol};
use super::grouping::Transport;
use super::limits::{truncated, LOGGED_NODE_ID_BYTES};
use super::shared::Shared;
use super::tls::PeerIdentity;

/// The response stream handed to tonic.
pub(crate) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the transport knows of who made a call: its certificate names (for node
/// authorization), its address, and its headers (kept only when callbacks will read them).
pub(crate) struct Caller {
    pub(crate) identity: PeerIdentity,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) metadata: MetadataMap,
}

impl Caller {
    /// Splits a call into who made it and its message.
    pub(crate) fn of<T>(shared: &Shared, req: Request<T>) -> (Caller, T) {
        let identity = PeerIdentity::of(shared.tls.as_ref(), &req);
        let remote_addr = req.remote_addr();
        let (metadata, _, message) = req.into_parts();
        let metadata = if shared.callbacks.is_some() {
            metadata
        } else {
            MetadataMap::new()
        };
        let caller = Caller {
            identity,
            remote_addr,
            metadata,
        };
        (caller, message)
    }

    /// What the callbacks are told of a unary fetch by this caller.
    pub(crate) fn fetch<'a>(
        &'a self,
        request: &'a DiscoveryRequest,
        group: &'a str,
        type_url: &'a str,
    ) -> FetchInfo<'a> {
        FetchInfo {
            request,
            group,
            type_url,
            remote_addr: self.remote_addr,
            metadata: &self.metadata,
        }
    }
}

enum Event<R> {
    Request(R),
    Closed,
    Update,
    GroupGone,
    Heartbeat,
}

/// Serves one xDS stream with protocol `P` until the client goes away or breaks a rule.
pub(crate) fn serve<P>(
    shared: Arc<Shared>,
    scope: Scope,
    caller: Caller,
    mut requests: Streaming<P::Request>,
) -> ResponseStream<P::Response>
where
    P: StreamProtocol,
    P::Request: prost::Message + Default + CallbackRequest,
    P::Response: CallbackResponse,
{
    Box::pin(async_stream::stream! {
        let first = match requests.message().await {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let node = match P::node(&first) {
            Some(n) if !n.id.is_empty() => n.clone(),
            Some(_) => {
                yield Err(Status::invalid_argument("node.id is empty in the first request"));
                return;
            }
            None => {
                yield Err(Status::invalid_argument("the first request of a stream must carry the node"));
                return;
            }
        };
        if let Err(status) = check_node(&shared.limits, &node) {
            metrics::counter!("xds_requests_refused_total", "code" => "ResourceExhausted").increment(1);
            yield Err(status);
            return;
        }
        if let Err(status) = caller.identity.authorize(&node.id) {
            tracing::warn!(node = %truncated(&node.id, LOGGED_NODE_ID_BYTES), error = status.message(), "node refused");
            yield Err(status);
            return;
        }
        let transport = Transport {
            aggregated: matches!(scope, Scope::Aggregated),
            incremental: P::INCREMENTAL,
        };
        let group = shared.grouping.group_of_stream(&node, transport);
        let id = shared.new_stream_id();
        // Declared first, so dropped last: `on_stream_closed` follows every other call.
        let hooks = match Hooks::open::<P::Request>(&shared, id, scope, &caller, &node, &group) {
            Ok(hooks) => hooks,
            Err(status) => {
                tracing::info!(%group, code = ?status.code(), message = status.message(), "callbacks refused a stream");
                yield Err(status);
                return;
            }
        };
        drop(caller);
        let _observed = match Observed::open(&shared, &group, &node, transport) {
            Ok(observed) => observed,
            Err(status) => {
                metrics::counter!("xds_requests_refused_total", "code" => format!("{:?}", status.code())).increment(1);
                tracing::info!(%group, code = ?status.code(), message = status.message(), "stream refused");
                yield Err(status);
                return;
            }
        };
        let mut record = shared.nodes.open(&node, &group);
        if let Some(h) = &hooks {
            record.report_nacks_to(id, Arc::clone(&h.callbacks));
        }
        let _gauge = StreamGauge::open(scope.label());
        tracing::debug!(node = %node.id, %group, mode = scope.label(), "stream opened");
        let mut watch = shared.cache.watch(&group);
        let current = watch.borrow_and_update().clone();
        let mut state = P::new(StreamContext::new(&node, scope, shared.limits, record), current);
        drop(node);
        let period = shared.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next = Some(first);
        loop {
            let out = if let Some(req) = next.take() {
                let accepted = match &hooks {
                    Some(h) => h.callbacks.on_stream_request(id, req.view()),
                    None => Ok(()),
                };
                match accepted.and_then(|()| state.on_request(req)) {
                    Ok(out) => out,
                    Err(status) => {
                        tracing::info!(%group, code = ?status.code(), message = status.message(), "stream refused a request");
                        metrics::counter!("xds_requests_refused_total", "code" => format!("{:?}", status.code())).increment(1);
                        yield Err(status);
                        return;
                    }
                }
            } else {
                let wants_heartbeat = state.needs_heartbeat();
                let event = tokio::select! {
                    r = requests.message() => match r {
                        Ok(Some(r)) => Event::Request(r),
                        Ok(None) | Err(_) => Event::Closed,
                    },
                    changed = watch.changed() => match changed {
                        Ok(()) => Event::Update,
                        Err(_) => Event::GroupGone,
                    },
                    _ = heartbeat.tick(), if wants_heartbeat => Event::Heartbeat,
                };
                match event {
                    Event::Request(r) => { next = Some(r); continue; }
                    Event::Closed => return,
                    Event::Update => {
                        let set = watch.borrow_and_update().clone();
                        state.on_update(set)
                    }
                    Event::GroupGone => {
                        // The group was removed from the cache (`Cache::remove`): the stream
                        // keeps what it was sent and watches the group's next slot, so a set
                        // of the group made later reaches it. Until then it has no resources.
                        watch = shared.cache.watch(&group);
                        let set = watch.borrow_and_update().clone();
                        state.on_update(set)
                    }
                    Event::Heartbeat => state.on_heartbeat(),
                }
            };
            for response in out {
                if let Some(h) = &hooks {
                    response.report(&*h.callbacks, id);
                }
                yield Ok(response);
            }
        }
    })
}

/// The embedder's callbacks for one stream whose open they accepted; tells them it closed
/// when dropped (however the stream ends).
struct Hooks {
    callbacks: Arc<dyn Callbacks>,
    id: StreamId,
    node: Node,
    group: String,
}

impl Hooks {
    /// Asks the callbacks, if any, whether the stream may open.
    fn open<R: CallbackRequest>(
        shared: &Shared,
        id: StreamId,
        scope: Scope,
        caller: &Caller,
        node: &Node,
        group: &str,
    ) -> Result<Option<Hooks>, Status> {
        let Some(callbacks) = &shared.callbacks else {
            return Ok(None);
        };
        callbacks.on_stream_open(&StreamInfo {
            id,
            node,
            group,
            protocol: R::PROTOCOL,
            type_url: match scope {
                Scope::Aggregated => None,
                Scope::Single(t) => Some(t),
            },
            remote_addr: caller.remote_addr,
            metadata: &caller.metadata,
        })?;
        Ok(Some(Hooks {
            callbacks: Arc::clone(callbacks),
            id,
            node: node.clone(),
            group: group.to_owned(),
        }))
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.callbacks
            .on_stream_closed(self.id, &self.node, &self.group);
    }
}

/// Tells the server's observer that a stream of a group is open, and that it closed when
/// dropped (however the stream ends).
struct Observed {
    shared: Arc<Shared>,
    group: String,
}

impl Observed {
    /// Announces the stream; the observer may refuse it.
    fn open(
        shared: &Arc<Shared>,
        group: &str,
        node: &Node,
        transport: Transport,
    ) -> Result<Option<Self>, Status> {
        let Some(observer) = shared.observer.as_ref() else {
            return Ok(None);
        };
        observer.node_connected(group, node, transport)?;
        Ok(Some(Observed {
            shared: Arc::clone(shared),
            group: group.to_owned(),
        }))
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(observer) = &self.shared.observer {
            observer.node_disconnected(&self.group);
        }
    }
}

/// Counts open streams by mode while alive.
struct StreamGauge(&'static str);

impl StreamGauge {
    fn open(mode: &'static str) -> Self {
        metrics::gauge!("xds_streams", "mode" => mode).increment(1.0);
        StreamGauge(mode)
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!("xds_streams", "mode" => self.0).decrement(1.0);
    }
}
