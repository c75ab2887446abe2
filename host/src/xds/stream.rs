//! The async shell around a stream's protocol state: reads requests, watches the node's
//! group, ticks heartbeats, and yields what the state says to send.
//!
//! Responses are produced only when the transport polls for them, so a client that stops
//! reading stops its own stream and holds no queue: memory per stream stays bounded.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use tokio::time::MissedTickBehavior;
use tonic::{Status, Streaming};

use super::context::{check_node, Scope, StreamContext, StreamProtocol};
use super::limits::{truncated, LOGGED_NODE_ID_BYTES};
use super::server::Shared;
use super::tls::PeerIdentity;

/// The response stream handed to tonic.
pub(crate) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

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
    peer: PeerIdentity,
    mut requests: Streaming<P::Request>,
) -> ResponseStream<P::Response>
where
    P: StreamProtocol,
    P::Request: prost::Message + Default,
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
        if let Err(status) = peer.authorize(&node.id) {
            tracing::warn!(node = %truncated(&node.id, LOGGED_NODE_ID_BYTES), error = status.message(), "node refused");
            yield Err(status);
            return;
        }
        let group = shared.grouping.group_of(&node);
        let _observed = Observed::open(&shared, &group, &node);
        let record = shared.nodes.open(&node, &group);
        let _gauge = StreamGauge::open(scope.label());
        tracing::debug!(node = %node.id, %group, mode = scope.label(), "stream opened");
        let mut watch = shared.cache.watch(&group);
        let current = watch.borrow_and_update().clone();
        let mut state = P::new(StreamContext::new(&node, scope, shared.limits, record), current);
        drop(node);
        let period = shared.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut watching = true;
        let mut next = Some(first);
        loop {
            let out = if let Some(req) = next.take() {
                match state.on_request(req) {
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
                    changed = watch.changed(), if watching => match changed {
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
                    Event::GroupGone => { watching = false; Vec::new() }
                    Event::Heartbeat => state.on_heartbeat(),
                }
            };
            for response in out {
                yield Ok(response);
            }
        }
    })
}

/// Tells the server's observer that a stream of a group is open, and that it closed when
/// dropped (however the stream ends).
struct Observed {
    shared: Arc<Shared>,
    group: String,
}

impl Observed {
    fn open(shared: &Arc<Shared>, group: &str, node: &Node) -> Option<Self> {
        let observer = shared.observer.as_ref()?;
        observer.node_connected(group, node);
        Some(Observed {
            shared: Arc::clone(shared),
            group: group.to_owned(),
        })
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
