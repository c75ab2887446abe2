//! Delta (incremental) protocol rules, pinned with a scripted client (PROTOCOL-PITFALLS.md).

use std::collections::HashMap;
use std::time::Duration;

use nebucloud_xds::xds::DeliveryState;
use nebucloud_xds_proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use nebucloud_xds_proto::google::rpc::Status as RpcStatus;

use crate::scripted::*;

#[tokio::test]
async fn delta_wildcard_first_request_is_answered_even_when_empty() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![]));
    let mut c = Delta::open(&s, node("n1")).await;
    c.subscribe(T_CLUSTER, &[], &[]).await;
    let r = c.recv().await;
    assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    c.ack(&r).await;
    c.expect_quiet().await;
}

#[tokio::test]
async fn delta_sends_only_what_changed() {
    let s = TestServer::start().await;
    s.cache.set(
        "n1",
        set(vec![res(T_CLUSTER, "a", "a"), res(T_CLUSTER, "b", "b")]),
    );
    let mut c = Delta::open(&s, node("n1")).await;
    c.subscribe(T_CLUSTER, &["*"], &[]).await;
    let r1 = c.recv().await;
    assert_eq!(delta_names(&r1), vec!["a", "b"]);
    c.ack(&r1).await;
    c.expect_quiet().await;
    s.cache.set(
        "n1",
        set(vec![
            res(T_CLUSTER, "a", "a"),
            res(T_CLUSTER, "b", "b2"),
            res(T_CLUSTER, "c", "c"),
        ]),
    );
    let r2 = c.recv().await;
    assert_eq!(delta_names(&r2), vec!["b", "c"]);
    assert!(r2.removed_resources.is_empty());
    c.ack(&r2).await;
    c.expect_quiet().await;
    s.cache.set(
        "n1",
        set(vec![res(T_CLUSTER, "a", "a"), res(T_CLUSTER, "c", "c")]),
    );
    let r3 = c.recv().await;
    assert!(r3.resources.is_empty());
    assert_eq!(r3.removed_resources, vec!["b"]);
}

#[tokio::test]
async fn delta_subscribed_name_that_does_not_exist_goes_in_removed_resources() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_ENDPOINT, "a", "a")]));
    let mut c = Delta::open(&s, node("n1")).await;
    c.subscribe(T_ENDPOINT, &["a", "missing"], &[]).await;
    let r1 = c.recv().await;
    assert_eq!(delta_names(&r1), vec!["a"]);
    assert_eq!(r1.removed_resources, vec!["missing"]);
    c.ack(&r1).await;
    c.expect_quiet().await;
    // Told once, then remembered: it is sent when it appears.
    s.cache.set(
        "n1",
        set(vec![
            res(T_ENDPOINT, "a", "a"),
            res(T_ENDPOINT, "missing", "m"),
        ]),
    );
    let r2 = c.recv().await;
    assert_eq!(delta_names(&r2), vec!["missing"]);
}

#[tokio::test]
async fn delta_reconnect_with_initial_versions_skips_unchanged_and_removes_missing() {
    let s = TestServer::start().await;
    s.cache.set(
        "n1",
        set(vec![res(T_CLUSTER, "a", "a"), res(T_CLUSTER, "b", "b")]),
    );
    let mut c = Delta::open(&s, node("n1")).await;
    c.subscribe(T_CLUSTER, &["*"], &[]).await;
    let r1 = c.recv().await;
    let held: HashMap<String, String> = r1
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop(c);
    s.cache.set(
        "n1",
        set(vec![res(T_CLUSTER, "a", "a"), res(T_CLUSTER, "c", "c")]),
    );
    let mut c = Delta::open(&s, node("n1")).await;
    c.send(DeltaDiscoveryRequest {
        type_url: T_CLUSTER.into(),
        resource_names_subscribe: names(&["*"]),
        initial_resource_versions: held,
        ..Default::default()
    })
    .await;
    let r2 = c.recv().await;
    assert_eq!(
        delta_names(&r2),
        vec!["c"],
        "a is unchanged and must not be re-sent"
    );
    assert_eq!(r2.removed_resources, vec!["b"]);
}

#[tokio::test]
async fn delta_stale_nonce_still_honours_subscription_changes() {
    let s = TestServer::start().await;
    s.cache.set(
        "n1",
        set(vec![res(T_ENDPOINT, "a", "a"), res(T_ENDPOINT, "b", "b")]),
    );
    let mut c = Delta::open(&s, node("n1")).await;
    c.subscribe(T_ENDPOINT, &["a"], &[]).await;
    let r1 = c.recv().await;
    c.send(DeltaDiscoveryRequest {
        type_url: T_ENDPOINT.into(),
        response_nonce: "stale-or-garbage".into(),
        resource_names_subscribe: names(&["b"]),
        ..Default::default()
    })
    .await;
    let r2 = c.recv().await;
    assert_eq!(delta_names(&r2), vec!["b"]);
    assert_eq!(
        s.server.nodes().get("n1").unwrap().types[T_ENDPOINT].acks,
        0,
        "a stale nonce ACKs nothing"
    );
    drop(r1);
}

#[tokio::test]
async fn delta_nack_is_recorded_and_not_resent() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "a", "bad")]));
    let mut c = Delta::open(&s, node("n1")).await;
    c.subscribe(T_CLUSTER, &["*"], &[]).await;
    let r1 = c.recv().await;
    c.send(DeltaDiscoveryRequest {
        type_url: T_CLUSTER.into(),
        response_nonce: r1.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 13,
            message: "cluster a: bad".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    c.expect_quiet().await;
    let t = s.server.nodes().get("n1").unwrap().types[T_CLUSTER].clone();
    assert_eq!(t.state, Some(DeliveryState::Nacked));
    assert_eq!(t.last_nack.unwrap().message, "cluster a: bad");
    assert_eq!(t.responses, 1);
    s.cache.set("n1", set(vec![res(T_CLUSTER, "a", "good")]));
    assert_eq!(delta_names(&c.recv().await), vec!["a"]);
}

#[tokio::test]
async fn delta_unsubscribe_then_resubscribe_sends_again() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_ROUTE, "r", "r")]));
    let mut c = Delta::open(&s, node("n1")).await;
    c.subscribe(T_ROUTE, &["r"], &[]).await;
    let r1 = c.recv().await;
    c.ack(&r1).await;
    c.subscribe(T_ROUTE, &[], &["r", "never-had"]).await;
    c.expect_quiet().await;
    c.subscribe(T_ROUTE, &["r"], &[]).await;
    assert_eq!(delta_names(&c.recv().await), vec!["r"]);
}

#[tokio::test]
async fn delta_wildcard_plus_name_then_name_unsubscribed_stays() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "a", "a")]));
    let mut c = Delta::open(&s, node("n1")).await;
    c.subscribe(T_CLUSTER, &["*", "a"], &[]).await;
    let r1 = c.recv().await;
    c.ack(&r1).await;
    c.subscribe(T_CLUSTER, &[], &["a"]).await;
    c.expect_quiet().await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "a", "a2")]));
    assert_eq!(
        delta_names(&c.recv().await),
        vec!["a"],
        "still covered by the wildcard"
    );
}

#[tokio::test]
async fn delta_ads_removes_clusters_and_endpoints_after_listeners_and_routes() {
    let s = TestServer::start().await;
    s.cache.set(
        "n1",
        set(vec![
            res(T_CLUSTER, "old", "old"),
            res(T_ENDPOINT, "old", "old"),
            res(T_LISTENER, "l", "l1"),
            res(T_ROUTE, "r", "r1"),
        ]),
    );
    let mut c = Delta::open(&s, node("n1")).await;
    for (t, sub) in [
        (T_CLUSTER, vec![]),
        (T_ENDPOINT, vec!["old", "new"]),
        (T_LISTENER, vec![]),
        (T_ROUTE, vec!["r"]),
    ] {
        c.subscribe(t, &sub, &[]).await;
        let r = c.recv().await;
        c.ack(&r).await;
    }
    c.expect_quiet().await;
    s.cache.set(
        "n1",
        set(vec![
            res(T_CLUSTER, "new", "new"),
            res(T_ENDPOINT, "new", "new"),
            res(T_LISTENER, "l", "l2"),
            res(T_ROUTE, "r", "r2"),
        ]),
    );
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = c.recv().await;
        seen.push((
            r.type_url.clone(),
            delta_names(&r),
            r.removed_resources.clone(),
        ));
    }
    let expect = vec![
        (T_CLUSTER.to_owned(), names(&["new"]), vec![]),
        (T_ENDPOINT.to_owned(), names(&["new"]), vec![]),
        (T_LISTENER.to_owned(), names(&["l"]), vec![]),
        (T_ROUTE.to_owned(), names(&["r"]), vec![]),
        (T_CLUSTER.to_owned(), vec![], names(&["old"])),
        (T_ENDPOINT.to_owned(), vec![], names(&["old"])),
    ];
    assert_eq!(seen, expect);
}

#[tokio::test]
async fn delta_ttl_resources_carry_ttl_and_get_bodyless_heartbeats() {
    let s = TestServer::start_with(|b| b.heartbeat_interval(Duration::from_millis(200))).await;
    s.cache.set(
        "n1",
        set(vec![
            res(T_CLUSTER, "t", "t").with_ttl(Duration::from_secs(3)),
            res(T_CLUSTER, "p", "p"),
        ]),
    );
    let mut c = Delta::open(
        &s,
        node_with_features("n1", &["xds.config.supports-resource-ttl"]),
    )
    .await;
    c.subscribe(T_CLUSTER, &["*"], &[]).await;
    let r1 = c.recv().await;
    let t = r1.resources.iter().find(|r| r.name == "t").unwrap();
    assert_eq!(t.ttl.as_ref().map(|d| d.seconds), Some(3));
    c.ack(&r1).await;
    let hb = c.recv().await;
    assert_eq!(
        delta_names(&hb),
        vec!["t"],
        "only resources with a TTL get heartbeats"
    );
    assert!(hb.resources[0].resource.is_none());
    assert_eq!(hb.resources[0].version, t.version);
}
