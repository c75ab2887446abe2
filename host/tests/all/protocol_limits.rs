//! Bad input on the xDS port: a clear status or, where the spec says so, silence — never a
//! panic, never an effect on other streams.

use nebucloud_xds::StreamLimits;
use nebucloud_xds_proto::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use nebucloud_xds_proto::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::scripted::*;

#[tokio::test]
async fn first_request_without_node_is_invalid_argument() {
    let s = TestServer::start().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = s
        .ads()
        .await
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(DiscoveryRequest {
        type_url: T_CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("node"), "{}", status.message());
}

#[tokio::test]
async fn ads_request_without_or_with_malformed_type_url_is_invalid_argument() {
    let s = TestServer::start().await;
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request("", &[], "", "").await;
    assert_eq!(c.status().await.code(), Code::InvalidArgument);
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request("Cluster", &[], "", "").await;
    let st = c.status().await;
    assert_eq!(st.code(), Code::InvalidArgument);
    assert!(
        st.message().contains("malformed type_url"),
        "{}",
        st.message()
    );
}

#[tokio::test]
async fn subscription_over_the_name_limit_is_resource_exhausted_and_other_streams_carry_on() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_ENDPOINT, "a", "a")]));
    let mut healthy = Sotw::open(&s, node("n1")).await;
    healthy.request(T_ENDPOINT, &["a"], "", "").await;
    let r = healthy.recv().await;
    healthy.ack(&r, &["a"]).await;

    let huge: Vec<String> = (0..100_000).map(|i| format!("cluster-{i}")).collect();
    let mut abusive = Sotw::open(&s, node("n2")).await;
    abusive
        .send(DiscoveryRequest {
            type_url: T_ENDPOINT.into(),
            resource_names: huge,
            ..Default::default()
        })
        .await;
    let st = abusive.status().await;
    assert_eq!(st.code(), Code::ResourceExhausted);
    assert!(
        st.message().contains("100000 names") && st.message().contains("50000"),
        "{}",
        st.message()
    );

    s.cache.set("n1", set(vec![res(T_ENDPOINT, "a", "a2")]));
    assert_eq!(sotw_names(&healthy.recv().await), vec!["a2"]);
}

#[tokio::test]
async fn the_name_limit_is_configurable() {
    let s =
        TestServer::start_with(|b| b.limits(StreamLimits::default().with_max_names_per_type(2)))
            .await;
    let mut c = Delta::open(&s, node("n1")).await;
    c.subscribe(T_ENDPOINT, &["a", "b"], &[]).await;
    c.subscribe(T_ENDPOINT, &["c"], &[]).await;
    assert_eq!(c.status().await.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn per_type_service_refuses_other_types_and_serves_its_own() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "c", "c")]));
    let mut cds = ClusterDiscoveryServiceClient::new(s.channel().await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = cds
        .stream_clusters(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Per-type clients may leave type_url empty: the service's own type is meant.
    tx.send(DiscoveryRequest {
        node: Some(node("n1")),
        ..Default::default()
    })
    .await
    .unwrap();
    let r: DiscoveryResponse = stream.message().await.unwrap().unwrap();
    assert_eq!(
        (r.type_url.as_str(), sotw_names(&r)),
        (T_CLUSTER, vec!["c".to_owned()])
    );
    tx.send(DiscoveryRequest {
        type_url: T_LISTENER.into(),
        response_nonce: r.nonce,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        stream.message().await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let fetched = cds
        .fetch_clusters(DiscoveryRequest {
            node: Some(node("n1")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sotw_names(&fetched), vec!["c"]);
    let missing = cds
        .fetch_clusters(DiscoveryRequest {
            node: Some(node("nobody")),
            ..Default::default()
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::Unavailable);
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_slow_the_others() {
    let s = TestServer::start().await;
    let big = |v: usize| {
        set(vec![res(
            T_CLUSTER,
            "big",
            &format!("{v}{}", "x".repeat(256 * 1024)),
        )])
    };
    s.cache.set("g", big(0));
    let grouped = |id: &str| node(id);
    let s = {
        drop(s);
        TestServer::start_with(|b| {
            b.grouping(|_n: &nebucloud_xds_proto::envoy::config::core::v3::Node| "g".to_owned())
        })
        .await
    };
    s.cache.set("g", big(0));
    let mut stuck = Sotw::open(&s, grouped("stuck")).await;
    stuck.request(T_CLUSTER, &[], "", "").await;
    let mut live = Sotw::open(&s, grouped("live")).await;
    live.request(T_CLUSTER, &[], "", "").await;
    let mut last = live.recv().await;
    // 200 updates of 256 KiB each: 50 MiB that the stuck client never reads.
    for v in 1..=200 {
        s.cache.set("g", big(v));
    }
    loop {
        live.ack(&last, &[]).await;
        let r = live.recv().await;
        let body = sotw_names(&r)[0].clone();
        if body.starts_with("200x") {
            break;
        }
        last = r;
    }
    // The stuck stream is alive, and when it reads it sees recent state, not a backlog of 200.
    let mut got = 0;
    while tokio::time::timeout(QUIET, stuck.recv_raw()).await.is_ok() {
        got += 1;
    }
    assert!(
        got < 10,
        "a slow client must not accumulate a queue ({got} responses were buffered)"
    );
}
