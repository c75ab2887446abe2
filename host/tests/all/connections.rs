//! Connections that do nothing are closed: the first-request deadline, the idle timeout and
//! the max age each send a GOAWAY and close the connection; a reconnect storm is accepted at
//! the accept rate, none refused.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::scripted::*;
use crate::support::wait_until;

/// The client's HTTP/2 connection preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// The HTTP/2 GOAWAY frame type.
const GOAWAY: u8 = 0x7;
/// Long enough for a close that is due to arrive, on a loaded machine.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Reads a raw connection until the server closes it; whether a GOAWAY came first.
async fn goaway_then_closed(mut conn: TcpStream) -> bool {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(CLOSE_WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the server closes the connection");
    // The server's frames: 9-byte headers (24-bit length, type, flags, stream id).
    let mut at = 0;
    while at + 9 <= bytes.len() {
        if bytes[at + 3] == GOAWAY {
            return true;
        }
        let len = (usize::from(bytes[at]) << 16)
            | (usize::from(bytes[at + 1]) << 8)
            | usize::from(bytes[at + 2]);
        at += 9 + len;
    }
    false
}

/// How many connections the server closed by `rule`.
fn closed_by(server: &TestServer, rule: &str) -> u64 {
    let closed = server.server.connections_closed();
    closed
        .iter()
        .find(|(r, _)| *r == rule)
        .map_or(0, |(_, n)| *n)
}

async fn wait_closed_by(server: &TestServer, rule: &str, n: u64) {
    wait_until(CLOSE_WAIT, Duration::from_millis(20), async || {
        Ok((closed_by(server, rule) >= n).then_some(()))
    })
    .await
    .unwrap();
}

/// An HTTP/2 connection made by hand; the task ends when the server closes it.
async fn h2_connect(addr: SocketAddr) -> (SendRequest<Full<Bytes>>, JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, conn)
}

/// A gRPC health call with an empty request (`service: ""`).
fn health(addr: SocketAddr, method: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("http://{addr}/grpc.health.v1.Health/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap()
}

/// With every slot held by connections that never send a byte, they are closed at the
/// first-request deadline and a real client is served.
#[tokio::test]
async fn silent_connections_are_closed_at_the_first_request_deadline_and_free_their_slots() {
    let server = TestServer::start_with(|b| {
        b.max_connections(10)
            .first_request_timeout(Duration::from_secs(1))
            .go_away_grace(Duration::from_millis(300))
    })
    .await;
    server.cache.set("n1", set(vec![res(T_CLUSTER, "c", "c")]));
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    for conn in silent {
        goaway_then_closed(conn).await;
    }
    wait_closed_by(&server, "first_request_timeout", 10).await;

    let mut client = Sotw::open(&server, node("n1")).await;
    client.request(T_CLUSTER, &[], "", "").await;
    assert_eq!(sotw_names(&client.recv().await), vec!["c"]);
}

/// The HTTP/2 preface and SETTINGS are not a request: the connection is told to go away.
#[tokio::test]
async fn a_connection_that_sends_only_the_preface_is_sent_goaway_and_closed() {
    let server = TestServer::start_with(|b| {
        b.first_request_timeout(Duration::from_millis(300))
            .go_away_grace(Duration::from_millis(300))
    })
    .await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(PREFACE).await.unwrap();
    assert!(goaway_then_closed(conn).await, "no GOAWAY before the close");
    wait_closed_by(&server, "first_request_timeout", 1).await;
    assert_eq!(closed_by(&server, "idle"), 0);
}

/// A connection whose one call has finished is closed after the idle timeout; one with an
/// open stream is not, however long it lasts.
#[tokio::test]
async fn an_idle_connection_is_closed_and_one_with_an_open_stream_is_not() {
    let idle_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(|b| {
        b.idle_timeout(idle_timeout)
            .go_away_grace(Duration::from_millis(300))
    })
    .await;

    let (mut idle, idle_conn) = h2_connect(server.addr).await;
    let check = idle
        .send_request(health(server.addr, "Check"))
        .await
        .unwrap();
    let answer = check.into_body().collect().await.unwrap();
    let trailers = answer.trailers().cloned().unwrap_or_default();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0", "{trailers:?}");

    let (mut busy, busy_conn) = h2_connect(server.addr).await;
    let watch = busy
        .send_request(health(server.addr, "Watch"))
        .await
        .unwrap();
    let mut watch = watch.into_body();
    let first = watch.frame().await.unwrap().unwrap();
    assert!(first.is_data(), "{first:?}");

    tokio::time::timeout(CLOSE_WAIT, idle_conn)
        .await
        .expect("the idle connection is closed")
        .unwrap();
    wait_closed_by(&server, "idle", 1).await;
    // Several idle timeouts later, the open stream still holds its connection.
    tokio::time::sleep(idle_timeout * 4).await;
    assert!(
        !busy_conn.is_finished(),
        "a connection with an open stream was closed"
    );
    assert_eq!(closed_by(&server, "idle"), 1);
    assert!(busy.is_ready());
    drop(watch);
}

/// Past its max age, a connection is sent a GOAWAY and closed; a new one is served.
#[tokio::test]
async fn a_connection_past_its_max_age_is_sent_goaway_and_a_new_one_is_served() {
    let server = TestServer::start_with(|b| {
        b.max_connection_age(Some(Duration::from_secs(1)))
            .go_away_grace(Duration::from_millis(300))
    })
    .await;
    server.cache.set("n1", set(vec![res(T_CLUSTER, "c", "c")]));
    let mut old = TcpStream::connect(server.addr).await.unwrap();
    old.write_all(PREFACE).await.unwrap();
    assert!(goaway_then_closed(old).await, "no GOAWAY before the close");
    wait_closed_by(&server, "max_age", 1).await;
    assert_eq!(closed_by(&server, "first_request_timeout"), 0);

    let mut client = Sotw::open(&server, node("n1")).await;
    client.request(T_CLUSTER, &[], "", "").await;
    assert_eq!(sotw_names(&client.recv().await), vec!["c"]);
}

/// 40 clients connecting at once to a server that accepts 20 a second after a burst of 5:
/// all are served, none refused, and the accepts past the burst were held back.
#[tokio::test]
async fn a_reconnect_storm_is_admitted_at_the_accept_rate_and_none_is_refused() {
    let server = TestServer::start_with(|b| b.accept_rate(20, 5)).await;
    let calls = (0..40).map(|_| async {
        let mut health = HealthClient::new(server.channel().await);
        health.check(HealthCheckRequest::default()).await
    });
    let answers = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(calls))
        .await
        .expect("every client is served");
    for answer in answers {
        answer.expect("no client is refused");
    }
    let delayed = server.server.accepts_delayed();
    assert!((20..=35).contains(&delayed), "{delayed} accepts delayed");
}
