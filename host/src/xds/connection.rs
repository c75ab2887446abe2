//! The life of one admitted connection: served until it breaks a rule — no stream within the
//! first-request deadline, no open stream for the idle timeout, older than its max age —
//! then told to go away (HTTP/2 GOAWAY), given a grace for its open streams, and closed.
//!
//! tonic's `Server` has no handle on a single connection (its `max_connection_age` is one
//! fixed value for all), so each admitted connection is served by its own clone of one
//! configured `Server`, whose shutdown signal is that connection's GOAWAY. A middleware on
//! that connection's routes counts its open gRPC streams (`counted.rs`). The max age is drawn per connection within ±10 % of the configured one, so the proxies
//! that reconnected together after a restart do not all go away together again. A connection
//! still open at the end of its grace (xDS streams never end by themselves; a client may not
//! answer the GOAWAY's ping) is aborted under the transport: its reads and writes fail.

use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::transport::Server;

use super::admission::{AdmittedConn, CountedConn};
use super::counted::{CountStreams, StreamCount};
use super::router::XdsRoutes;

/// A connection that has opened no stream this long after it was accepted is closed.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection without an open stream for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// After a GOAWAY, open streams get this long before the connection is closed.
const GO_AWAY_GRACE: Duration = Duration::from_secs(10);
/// Each connection's max age is the configured one ± this fraction.
const MAX_AGE_JITTER: f64 = 0.1;
/// Streams a client may open and reset before the server accepts them (h2's own default),
/// before the connection is closed: the bound against "rapid reset" floods.
const MAX_PENDING_RESET_STREAMS: usize = 20;
/// Streams the server may reset for a client's protocol errors before it closes the
/// connection (hyper's own default).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// When the server closes a connection by itself, and how the transport bounds resets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionRules {
    pub(crate) first_request_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_age: Option<Duration>,
    pub(crate) go_away_grace: Duration,
    pub(crate) max_pending_reset_streams: usize,
    pub(crate) max_local_error_reset_streams: usize,
}

impl Default for ConnectionRules {
    fn default() -> Self {
        ConnectionRules {
            first_request_timeout: FIRST_REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_age: None,
            go_away_grace: GO_AWAY_GRACE,
            max_pending_reset_streams: MAX_PENDING_RESET_STREAMS,
            max_local_error_reset_streams: MAX_LOCAL_ERROR_RESET_STREAMS,
        }
    }
}

/// The rule a connection broke: the `reason` label of `xds_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseRule {
    FirstRequestTimeout,
    Idle,
    MaxAge,
}

impl CloseRule {
    const ALL: [CloseRule; 3] = [Self::FirstRequestTimeout, Self::Idle, Self::MaxAge];

    fn label(self) -> &'static str {
        match self {
            Self::FirstRequestTimeout => "first_request_timeout",
            Self::Idle => "idle",
            Self::MaxAge => "max_age",
        }
    }
}

/// What the server counts of its connections, for tests and operators without a recorder.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounters {
    /// Accepts the accept rate held back while a client was waiting.
    pub(crate) accepts_delayed: Arc<AtomicU64>,
    closed: [AtomicU64; 3],
}

impl ConnectionCounters {
    /// Connections closed by each rule, labelled as in `xds_connections_closed_total`.
    pub(crate) fn closed(&self) -> [(&'static str, u64); 3] {
        CloseRule::ALL.map(|r| (r.label(), self.closed[r as usize].load(Ordering::Relaxed)))
    }

    fn record(&self, rule: CloseRule) {
        self.closed[rule as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("xds_connections_closed_total", "reason" => rule.label()).increment(1);
    }
}

/// Serves every admitted connection with `routes` over a clone of `transport`, until
/// `shutdown` completes; then stops accepting, sends every connection a GOAWAY and waits for
/// them all to close.
pub(crate) async fn serve(
    incoming: impl Stream<Item = (CountedConn, AdmittedConn)>,
    transport: Server,
    routes: XdsRoutes,
    rules: ConnectionRules,
    counters: Arc<ConnectionCounters>,
    shutdown: impl Future<Output = ()>,
) {
    let (drain_tx, drain) = watch::channel(false);
    {
        // Scoped: dropping `incoming` closes the listener as soon as the drain starts.
        let mut incoming = pin!(incoming);
        let mut shutdown = pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                next = incoming.next() => {
                    let Some((conn, admitted)) = next else { break };
                    tokio::spawn(serve_connection(
                        conn,
                        admitted,
                        transport.clone(),
                        routes.clone(),
                        rules,
                        Arc::clone(&counters),
                        drain.clone(),
                    ));
                }
            }
        }
    }
    let _ = drain_tx.send(true);
    drop(drain);
    drain_tx.closed().await;
}

/// Serves one connection until it closes, breaks a rule (GOAWAY, then closed after the
/// grace) or the server drains (GOAWAY, then as long as its streams take).
///
/// The transport's future is built and boxed here, outside the task's own future: an
/// `async fn` keeps its arguments (the `Server` among them) for its whole life beside what
/// it built from them, 488 of the 3,280 bytes its future took per connection.
fn serve_connection(
    conn: CountedConn,
    mut admitted: AdmittedConn,
    transport: Server,
    routes: XdsRoutes,
    rules: ConnectionRules,
    counters: Arc<ConnectionCounters>,
    mut drain: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    let streams = Arc::new(StreamCount::default());
    let counted = CountStreams {
        routes,
        streams: Arc::clone(&streams),
    };
    let (go_away, going_away) = oneshot::channel::<()>();
    // The stream stays open after its one connection: tonic drains when its incoming ends.
    let one = futures::stream::once(std::future::ready(Ok::<_, io::Error>(conn)))
        .chain(futures::stream::pending());
    let mut served = Box::pin(transport.serve_with_incoming_shutdown(counted, one, async {
        let _ = going_away.await;
    }));
    async move {
        let (accepted, peer) = (admitted.accepted, admitted.peer);
        let broken = tokio::select! {
            r = &mut served => return log_transport_error(r),
            () = admitted.closed() => return,
            rule = broken_rule(&streams, &rules, accepted, peer) => Some(rule),
            () = drained(&mut drain) => None,
        };
        let _ = go_away.send(());
        let Some(rule) = broken else {
            tokio::select! {
                r = &mut served => log_transport_error(r),
                () = admitted.closed() => {}
            }
            return;
        };
        counters.record(rule);
        tracing::info!(
            %peer,
            rule = rule.label(),
            grace = ?rules.go_away_grace,
            "closing the connection: GOAWAY sent, open streams have the grace to finish"
        );
        tokio::select! {
            r = &mut served => log_transport_error(r),
            () = admitted.closed() => {}
            () = tokio::time::sleep(rules.go_away_grace) => admitted.abort(),
        }
    }
}

fn log_transport_error(served: Result<(), tonic::transport::Error>) {
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended with a transport error");
    }
}

async fn drained(drain: &mut watch::Receiver<bool>) {
    // A dropped sender (the server's future was dropped) drains too.
    let _ = drain.wait_for(|d| *d).await;
}

/// The first rule the connection breaks; pending while it keeps them all.
async fn broken_rule(
    streams: &StreamCount,
    rules: &ConnectionRules,
    accepted: Instant,
    peer: SocketAddr,
) -> CloseRule {
    let mut seen = streams.0.subscribe();
    let activity = async move {
        let first = rules
            .first_request_timeout
            .saturating_sub(accepted.elapsed());
        if tokio::time::timeout(first, seen.wait_for(|s| s.opened > 0))
            .await
            .is_err()
        {
            return CloseRule::FirstRequestTimeout;
        }
        loop {
            let idle_since = seen.wait_for(|s| s.open == 0).await.map(|s| s.opened);
            let Ok(opened) = idle_since else {
                return std::future::pending().await;
            };
            let next = seen.wait_for(|s| s.opened != opened);
            if tokio::time::timeout(rules.idle_timeout, next)
                .await
                .is_err()
            {
                return CloseRule::Idle;
            }
        }
    };
    let age = async {
        match rules.max_age {
            None => std::future::pending().await,
            Some(age) => {
                let age = jittered(age, peer);
                tokio::time::sleep(age.saturating_sub(accepted.elapsed())).await;
                CloseRule::MaxAge
            }
        }
    };
    tokio::select! {
        rule = activity => rule,
        rule = age => rule,
    }
}

/// `age` ± [`MAX_AGE_JITTER`], drawn for this connection.
fn jittered(age: Duration, peer: SocketAddr) -> Duration {
    // Not cryptographic, and need not be: it only spreads connections made together. Each
    // `RandomState` has fresh keys, so equal peers still draw differently.
    let random = std::collections::hash_map::RandomState::new().hash_one(peer);
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    let factor = 1.0 + MAX_AGE_JITTER * (2.0 * unit - 1.0);
    Duration::try_from_secs_f64(age.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_spread_within_the_jitter() {
        let peer = SocketAddr::from(([127, 0, 0, 1], 4000));
        let age = Duration::from_secs(100);
        let ages: Vec<Duration> = (0..200).map(|_| jittered(age, peer)).collect();
        assert!(ages
            .iter()
            .all(|a| *a >= Duration::from_secs(90) && *a <= Duration::from_secs(110)));
        assert!(ages.iter().any(|a| *a < Duration::from_secs(97)));
        assert!(ages.iter().any(|a| *a > Duration::from_secs(103)));
        // No overflow for "for ever".
        assert!(jittered(Duration::MAX, peer) > Duration::from_secs(u64::MAX / 2));
    }

    #[tokio::test]
    async fn an_open_stream_keeps_a_connection_from_idling() {
        let rules = ConnectionRules {
            first_request_timeout: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(100),
            ..ConnectionRules::default()
        };
        let peer = SocketAddr::from(([127, 0, 0, 1], 4000));
        let accepted = Instant::now();
        let streams = Arc::new(StreamCount::default());

        let silent = broken_rule(&streams, &rules, accepted, peer).await;
        assert_eq!(silent, CloseRule::FirstRequestTimeout);

        let open = streams.open();
        let rule = tokio::time::timeout(
            Duration::from_millis(400),
            broken_rule(&streams, &rules, accepted, peer),
        );
        assert!(
            rule.await.is_err(),
            "a connection with an open stream idled"
        );
        drop(open);
        let start = std::time::Instant::now();
        let rule = broken_rule(&streams, &rules, accepted, peer).await;
        assert_eq!(rule, CloseRule::Idle);
        assert!(start.elapsed() >= rules.idle_timeout);
    }
}
