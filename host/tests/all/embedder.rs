//! The embedder's API at go-control-plane's level: callbacks on streams and fetches (and their
//! refusals), a removed group set anew, and the go-control-plane example's port serving a
//! real Envoy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nebucloud_xds::xds::{
    Callbacks, FetchInfo, Nack, StreamId, StreamInfo, StreamRequest, StreamResponse,
};
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use nebucloud_xds_proto::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tonic::{Code, Status};

use crate::scripted::*;
use crate::support::backend::HttpBackend;
use crate::support::envoy::{Envoy, EnvoyOptions, XdsMode};
use crate::support::{free_port, wait_until};

/// The example crate's library, compiled into this test: the same snapshot and server code
/// `cargo run -p migrating-from-go-control-plane` serves. (A dev-dependency on the example
/// would be a cycle: it depends on this crate.)
#[path = "../../../examples/migrating-from-go-control-plane/src/lib.rs"]
mod port;

/// Records every call, one line each, and refuses what it is told to.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<String>>>,
    refuse_node: Option<&'static str>,
    require_header: Option<&'static str>,
    refuse_type: Option<&'static str>,
    refuse_fetch: bool,
}

impl Recorder {
    fn push(&self, event: String) {
        self.events.lock().unwrap().push(event);
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until an event starting with `prefix` is recorded.
    async fn wait_for(&self, prefix: &str) -> Vec<String> {
        let found = wait_until(
            Duration::from_secs(5),
            Duration::from_millis(10),
            async || {
                let events = self.events();
                Ok(events
                    .iter()
                    .any(|e| e.starts_with(prefix))
                    .then_some(events))
            },
        )
        .await;
        found.unwrap_or_else(|e| panic!("no {prefix:?} event: {e}; got {:?}", self.events()))
    }
}

impl Callbacks for Recorder {
    fn on_stream_open(&self, s: &StreamInfo<'_>) -> Result<(), Status> {
        assert!(s.remote_addr.is_some(), "the transport knows the client");
        self.push(format!(
            "open {} {} {} {:?} {:?}",
            s.id, s.node.id, s.group, s.protocol, s.type_url
        ));
        if let Some(header) = self.require_header {
            if s.metadata.get(header).is_none() {
                return Err(Status::unauthenticated(format!("{header} is missing")));
            }
        }
        match self.refuse_node {
            Some(id) if id == s.node.id => Err(Status::permission_denied("not this node")),
            _ => Ok(()),
        }
    }

    fn on_stream_closed(&self, stream: StreamId, node: &Node, group: &str) {
        self.push(format!("closed {stream} {} {group}", node.id));
    }

    fn on_stream_request(&self, stream: StreamId, r: StreamRequest<'_>) -> Result<(), Status> {
        let kind = if r.is_nack() {
            "nack-request"
        } else {
            "request"
        };
        self.push(format!("{kind} {stream} {}", r.type_url()));
        match self.refuse_type {
            Some(t) if t == r.type_url() => Err(Status::failed_precondition("not this type")),
            _ => Ok(()),
        }
    }

    fn on_stream_response(&self, stream: StreamId, r: StreamResponse<'_>) {
        self.push(format!("response {stream} {} {}", r.type_url(), r.nonce()));
    }

    fn on_stream_nack(&self, stream: StreamId, node_id: &str, type_url: &str, nack: &Nack) {
        self.push(format!(
            "nack {stream} {node_id} {type_url} {} {}",
            nack.nonce, nack.message
        ));
    }

    fn on_fetch_request(&self, f: &FetchInfo<'_>) -> Result<(), Status> {
        self.push(format!("fetch {} {}", f.group, f.type_url));
        if self.refuse_fetch {
            return Err(Status::unauthenticated("no fetches here"));
        }
        Ok(())
    }

    fn on_fetch_response(&self, f: &FetchInfo<'_>, r: &DiscoveryResponse) {
        self.push(format!("fetched {} {}", f.group, r.resources.len()));
    }
}

#[tokio::test]
async fn callbacks_see_open_request_response_nack_and_close_in_order() {
    let rec = Recorder::default();
    let s = TestServer::start_with(|b| b.callbacks(rec.clone())).await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "c1", "c1")]));
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_CLUSTER, &[], "", "").await;
    let sent = c.recv().await;
    c.nack(&sent, &[], "", "bad cluster").await;
    c.expect_quiet().await;
    drop(c);
    let events = rec.wait_for("closed").await;
    let id = events[0].split(' ').nth(1).unwrap().to_owned();
    assert_eq!(
        events,
        vec![
            format!("open {id} n1 n1 Sotw None"),
            format!("request {id} {T_CLUSTER}"),
            format!("response {id} {T_CLUSTER} {}", sent.nonce),
            format!("nack-request {id} {T_CLUSTER}"),
            format!("nack {id} n1 {T_CLUSTER} {} bad cluster", sent.nonce),
            format!("closed {id} n1 n1"),
        ]
    );

    // A second stream gets another id; a per-type Delta stream is named as such.
    let mut d = Delta::open(&s, node("n1")).await;
    d.subscribe(T_CLUSTER, &["c1"], &[]).await;
    d.recv().await;
    let events = rec.wait_for("open").await;
    let opens: Vec<&String> = events.iter().filter(|e| e.starts_with("open")).collect();
    assert_eq!(opens.len(), 2);
    assert!(opens[1].ends_with("n1 n1 Delta None"), "{opens:?}");
    assert_ne!(opens[0].split(' ').nth(1), opens[1].split(' ').nth(1));
}

#[tokio::test]
async fn a_refused_stream_open_ends_the_stream_with_its_status() {
    let rec = Recorder {
        refuse_node: Some("banned"),
        ..Recorder::default()
    };
    let s = TestServer::start_with(|b| b.callbacks(rec.clone())).await;
    s.cache.set("banned", set(vec![res(T_CLUSTER, "c1", "c1")]));
    let mut c = Sotw::open(&s, node("banned")).await;
    c.request(T_CLUSTER, &[], "", "").await;
    let status = c.status().await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "not this node");
    tokio::time::sleep(QUIET).await;
    let events = rec.events();
    assert_eq!(events.len(), 1, "nothing after a refused open: {events:?}");
    assert!(s.server.nodes().get("banned").is_none(), "never recorded");

    // Other nodes are served.
    s.cache.set("n1", set(vec![res(T_CLUSTER, "c1", "c1")]));
    let mut ok = Sotw::open(&s, node("n1")).await;
    ok.request(T_CLUSTER, &[], "", "").await;
    assert_eq!(sotw_names(&ok.recv().await), vec!["c1"]);
}

#[tokio::test]
async fn callbacks_read_the_stream_headers_and_may_refuse_by_them() {
    let rec = Recorder {
        require_header: Some("x-tenant"),
        ..Recorder::default()
    };
    let s = TestServer::start_with(|b| b.callbacks(rec.clone())).await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "c1", "c1")]));
    let mut without = Sotw::open(&s, node("n1")).await;
    without.request(T_CLUSTER, &[], "", "").await;
    let status = without.status().await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "x-tenant is missing");

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(node("n1")),
        type_url: T_CLUSTER.into(),
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut().insert("x-tenant", "a".parse().unwrap());
    let mut with = s
        .ads()
        .await
        .stream_aggregated_resources(req)
        .await
        .unwrap()
        .into_inner();
    let answer = tokio::time::timeout(Duration::from_secs(5), with.message()).await;
    assert_eq!(sotw_names(&answer.unwrap().unwrap().unwrap()), vec!["c1"]);
    drop(tx);
}

#[tokio::test]
async fn a_refused_request_ends_the_stream_with_its_status_and_closes_it() {
    let rec = Recorder {
        refuse_type: Some(T_LISTENER),
        ..Recorder::default()
    };
    let s = TestServer::start_with(|b| b.callbacks(rec.clone())).await;
    s.cache.set(
        "n1",
        set(vec![res(T_CLUSTER, "c1", "c1"), res(T_LISTENER, "l", "l")]),
    );
    let mut c = Delta::open(&s, node("n1")).await;
    c.subscribe(T_CLUSTER, &["c1"], &[]).await;
    assert_eq!(delta_names(&c.recv().await), vec!["c1"]);
    c.subscribe(T_LISTENER, &["l"], &[]).await;
    let status = c.status().await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    let events = rec.wait_for("closed").await;
    assert!(
        !events
            .iter()
            .any(|e| e.starts_with("response") && e.contains(T_LISTENER)),
        "the refused request is not acted on: {events:?}"
    );
}

#[tokio::test]
async fn a_refusing_fetch_callback_refuses_the_fetch() {
    let refusing = Recorder {
        refuse_fetch: true,
        ..Recorder::default()
    };
    let s = TestServer::start_with(|b| b.callbacks(refusing.clone())).await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "c1", "c1")]));
    let fetch = DiscoveryRequest {
        node: Some(node("n1")),
        ..DiscoveryRequest::default()
    };
    let mut cds = ClusterDiscoveryServiceClient::new(s.channel().await);
    let status = cds.fetch_clusters(fetch.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "no fetches here");
    assert_eq!(refusing.events(), vec![format!("fetch n1 {T_CLUSTER}")]);

    let accepting = Recorder::default();
    let s = TestServer::start_with(|b| b.callbacks(accepting.clone())).await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "c1", "c1")]));
    let mut cds = ClusterDiscoveryServiceClient::new(s.channel().await);
    let answer = cds.fetch_clusters(fetch).await.unwrap().into_inner();
    assert_eq!(sotw_names(&answer), vec!["c1"]);
    assert_eq!(
        accepting.events(),
        vec![format!("fetch n1 {T_CLUSTER}"), "fetched n1 1".to_owned()]
    );
}

#[tokio::test]
async fn a_stream_of_a_removed_group_gets_the_group_when_it_is_set_again() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "c1", "c1")]));
    let mut c = Sotw::open(&s, node("n1")).await;
    let mut d = Delta::open(&s, node("n1")).await;
    c.request(T_CLUSTER, &[], "", "").await;
    d.subscribe(T_CLUSTER, &["*"], &[]).await;
    let first = c.recv().await;
    c.ack(&first, &[]).await;
    d.recv().await;

    s.cache.remove("n1");
    assert!(s.cache.get("n1").is_none());
    c.expect_quiet().await;
    d.expect_quiet().await;

    s.cache.set("n1", set(vec![res(T_CLUSTER, "c2", "c2")]));
    assert_eq!(sotw_names(&c.recv().await), vec!["c2"]);
    assert_eq!(delta_names(&d.recv().await), vec!["c2"]);
    // Make before break: the cluster's removal follows, on its own.
    assert_eq!(d.recv().await.removed_resources, vec!["c1".to_owned()]);
}

/// The go-control-plane example's port, as `cargo run -p migrating-from-go-control-plane`
/// serves it, configures a real Envoy whose listener then routes to the upstream.
async fn the_go_control_plane_port_serves_envoy(mode: XdsMode) {
    let upstream = HttpBackend::start("upstream").await.unwrap();
    let listener_port = free_port();
    let upstream_addr = ([127, 0, 0, 1], upstream.port()).into();
    let logger = port::Logger::default();
    let cache = nebucloud_xds::Cache::new();
    cache.set(
        port::SERVICE_CLUSTER,
        port::snapshot(listener_port, upstream_addr).unwrap(),
    );
    let server = port::server(cache, logger.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds_port = listener.local_addr().unwrap().port();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_with_shutdown(listener, async {
        let _ = stopped.await;
    }));
    let mut options = EnvoyOptions::new(xds_port, "envoy-1", mode);
    options.node_cluster = port::SERVICE_CLUSTER.to_owned();
    let envoy = Envoy::start_with(options).await.unwrap();
    let body = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || Envoy::ok_body(listener_port, "/").await.map(Some),
    )
    .await;
    assert_eq!(
        body.unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail())),
        "upstream"
    );
    assert_eq!(logger.nacks(), 0);
    assert!(logger.streams() >= 1 && logger.requests() >= 4);
}

#[tokio::test]
async fn the_go_control_plane_port_serves_envoy_over_sotw_ads() {
    the_go_control_plane_port_serves_envoy(XdsMode::SotwAds).await;
}

#[tokio::test]
async fn the_go_control_plane_port_serves_envoy_over_delta_ads() {
    the_go_control_plane_port_serves_envoy(XdsMode::DeltaAds).await;
}
