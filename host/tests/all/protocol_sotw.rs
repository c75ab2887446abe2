//! State-of-the-World protocol rules, pinned with a scripted client (PROTOCOL-PITFALLS.md).

use std::time::Duration;

use nebucloud_xds::xds::DeliveryState;

use crate::scripted::*;

#[tokio::test]
async fn nack_is_detected_by_error_detail_recorded_and_never_resent() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "c1", "c1")]));
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_CLUSTER, &[], "", "").await;
    let r1 = c.recv().await;
    c.ack(&r1, &[]).await;
    c.expect_quiet().await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "c1", "bad")]));
    let r2 = c.recv().await;
    // The NACK carries the last accepted version: it is recognised by error_detail alone.
    c.nack(&r2, &[], &r1.version_info, "unsupported lb_policy")
        .await;
    c.expect_quiet().await;
    // A second NACK of the same nonce (clients retry) is not answered either.
    c.nack(&r2, &[], &r1.version_info, "unsupported lb_policy")
        .await;
    c.expect_quiet().await;

    let status = s.server.nodes().get("n1").unwrap();
    let t = &status.types[T_CLUSTER];
    assert_eq!(t.state, Some(DeliveryState::Nacked));
    assert_eq!(t.acked_version.as_deref(), Some(r1.version_info.as_str()));
    let nack = t.last_nack.clone().unwrap();
    assert_eq!(nack.message, "unsupported lb_policy");
    assert_eq!(
        nack.rejected_version.as_deref(),
        Some(r2.version_info.as_str())
    );
    assert_eq!(nack.kept_version, r1.version_info);
    assert_eq!(t.responses, 2, "nothing may be re-sent after a NACK");

    // Only a change of config produces the next response.
    s.cache.set("n1", set(vec![res(T_CLUSTER, "c1", "fixed")]));
    let r3 = c.recv().await;
    assert_ne!(r3.version_info, r2.version_info);
    c.ack(&r3, &[]).await;
    c.expect_quiet().await;
    let t = s.server.nodes().get("n1").unwrap().types[T_CLUSTER].clone();
    assert_eq!(t.state, Some(DeliveryState::Acked));
    assert_eq!(t.acked_version, Some(r3.version_info));
}

#[tokio::test]
async fn nack_whose_version_equals_the_sent_version_is_still_a_nack() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_LISTENER, "l1", "l1")]));
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_LISTENER, &[], "", "").await;
    let r1 = c.recv().await;
    c.nack(&r1, &[], &r1.version_info, "bad listener").await;
    c.expect_quiet().await;
    let t = s.server.nodes().get("n1").unwrap().types[T_LISTENER].clone();
    assert_eq!(t.state, Some(DeliveryState::Nacked));
    assert_eq!(t.acks, 0);
    assert_eq!(t.nacks, 1);
}

#[tokio::test]
async fn stale_nonce_is_ignored_including_its_subscription() {
    let s = TestServer::start().await;
    s.cache.set(
        "n1",
        set(vec![res(T_ENDPOINT, "a", "a"), res(T_ENDPOINT, "b", "b")]),
    );
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_ENDPOINT, &["a"], "", "").await;
    let r1 = c.recv().await;
    assert_eq!(sotw_names(&r1), vec!["a"]);
    // A garbage nonce is stale: nothing it asks for happens.
    c.request(T_ENDPOINT, &["a", "b"], &r1.version_info, "garbage-nonce")
        .await;
    c.expect_quiet().await;
    assert_eq!(
        s.server.nodes().get("n1").unwrap().types[T_ENDPOINT].acks,
        0
    );
    // The current nonce is honoured.
    c.request(T_ENDPOINT, &["a", "b"], &r1.version_info, &r1.nonce)
        .await;
    let r2 = c.recv().await;
    assert_eq!(sotw_names(&r2), vec!["a", "b"]);
    // Now r1's nonce is an old one: stale, so its subscription change is ignored too.
    c.request(T_ENDPOINT, &["a"], &r1.version_info, &r1.nonce)
        .await;
    c.expect_quiet().await;
    s.cache.set(
        "n1",
        set(vec![res(T_ENDPOINT, "a", "a"), res(T_ENDPOINT, "b", "b2")]),
    );
    assert_eq!(
        sotw_names(&c.recv().await),
        vec!["a", "b2"],
        "b is still subscribed"
    );
    assert_eq!(
        s.server.nodes().get("n1").unwrap().types[T_ENDPOINT].acks,
        1
    );
}

#[tokio::test]
async fn legacy_and_explicit_wildcard_get_every_resource() {
    let s = TestServer::start().await;
    s.cache.set(
        "n1",
        set(vec![res(T_CLUSTER, "a", "a"), res(T_CLUSTER, "b", "b")]),
    );
    let mut legacy = Sotw::open(&s, node("n1")).await;
    legacy.request(T_CLUSTER, &[], "", "").await;
    assert_eq!(sotw_names(&legacy.recv().await), vec!["a", "b"]);
    let mut explicit = Sotw::open(&s, node("n1")).await;
    explicit.request(T_CLUSTER, &["*"], "", "").await;
    assert_eq!(sotw_names(&explicit.recv().await), vec!["a", "b"]);
}

#[tokio::test]
async fn empty_list_after_names_unsubscribes_everything() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_LISTENER, "a", "a")]));
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_LISTENER, &["a"], "", "").await;
    let r1 = c.recv().await;
    c.request(T_LISTENER, &[], &r1.version_info, &r1.nonce)
        .await;
    c.expect_quiet().await;
    s.cache.set(
        "n1",
        set(vec![res(T_LISTENER, "a", "a2"), res(T_LISTENER, "z", "z")]),
    );
    c.expect_quiet().await;
}

#[tokio::test]
async fn wildcard_plus_name_then_name_unsubscribed_stays_covered() {
    let s = TestServer::start().await;
    s.cache.set(
        "n1",
        set(vec![res(T_CLUSTER, "a", "a"), res(T_CLUSTER, "b", "b")]),
    );
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_CLUSTER, &["*", "a"], "", "").await;
    let r1 = c.recv().await;
    c.request(T_CLUSTER, &["*"], &r1.version_info, &r1.nonce)
        .await;
    c.expect_quiet().await;
    s.cache.set(
        "n1",
        set(vec![res(T_CLUSTER, "a", "a2"), res(T_CLUSTER, "b", "b")]),
    );
    assert_eq!(sotw_names(&c.recv().await), vec!["a2", "b"]);
}

#[tokio::test]
async fn newly_requested_names_are_answered_even_if_unchanged() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_ROUTE, "r1", "r1")]));
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_ROUTE, &["r1"], "", "").await;
    let r1 = c.recv().await;
    // Unsubscribing a name never had is fine.
    c.request(T_ROUTE, &["r1", "never"], &r1.version_info, &r1.nonce)
        .await;
    c.expect_quiet().await;
    c.request(T_ROUTE, &[], &r1.version_info, &r1.nonce).await;
    c.expect_quiet().await;
    // The client forgot r1; asking again gets it again though nothing changed.
    c.request(T_ROUTE, &["r1"], &r1.version_info, &r1.nonce)
        .await;
    let r2 = c.recv().await;
    assert_eq!(sotw_names(&r2), vec!["r1"]);
    assert_eq!(r2.version_info, r1.version_info);
    assert_ne!(r2.nonce, r1.nonce);
}

#[tokio::test]
async fn names_that_do_not_exist_are_remembered_and_sent_when_they_appear() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![]));
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_ENDPOINT, &["later"], "", "").await;
    c.expect_quiet().await;
    s.cache.set("n1", set(vec![res(T_ENDPOINT, "other", "o")]));
    c.expect_quiet().await;
    s.cache
        .set("n1", set(vec![res(T_ENDPOINT, "later", "later")]));
    assert_eq!(sotw_names(&c.recv().await), vec!["later"]);
}

#[tokio::test]
async fn full_state_types_delete_by_omission_and_empty_deletes_all() {
    let s = TestServer::start().await;
    s.cache.set(
        "n1",
        set(vec![
            res(T_LISTENER, "l1", "l1"),
            res(T_LISTENER, "l2", "l2"),
        ]),
    );
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_LISTENER, &[], "", "").await;
    let r1 = c.recv().await;
    c.ack(&r1, &[]).await;
    s.cache.set("n1", set(vec![res(T_LISTENER, "l1", "l1")]));
    let r2 = c.recv().await;
    assert_eq!(sotw_names(&r2), vec!["l1"]);
    c.ack(&r2, &[]).await;
    s.cache.set("n1", set(vec![]));
    let r3 = c.recv().await;
    assert!(
        r3.resources.is_empty(),
        "an empty LDS response deletes every listener"
    );
}

#[tokio::test]
async fn per_name_types_are_not_deleted_by_omission() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_ENDPOINT, "a", "a")]));
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_ENDPOINT, &["a"], "", "").await;
    let r1 = c.recv().await;
    c.ack(&r1, &["a"]).await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "x", "x")]));
    c.expect_quiet().await;
}

#[tokio::test]
async fn reconnect_with_the_current_version_gets_nothing_resent() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "a", "a")]));
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_CLUSTER, &[], "", "").await;
    let r1 = c.recv().await;
    drop(c);
    // The client reconnects with its old version and an old nonce: both are from another
    // stream; the version shows it holds exactly what we would send.
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_CLUSTER, &[], &r1.version_info, &r1.nonce).await;
    c.expect_quiet().await;
    s.cache.set("n1", set(vec![res(T_CLUSTER, "a", "a2")]));
    assert_eq!(sotw_names(&c.recv().await), vec!["a2"]);
    // A client with an older version gets the current one at once.
    let mut old = Sotw::open(&s, node("n1")).await;
    old.request(T_CLUSTER, &[], &r1.version_info, "").await;
    assert_eq!(sotw_names(&old.recv().await), vec!["a2"]);
}

#[tokio::test]
async fn types_interleave_on_one_stream_with_nonces_per_type() {
    let s = TestServer::start().await;
    s.cache.set(
        "n1",
        set(vec![res(T_CLUSTER, "c", "c"), res(T_LISTENER, "l", "l")]),
    );
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(T_CLUSTER, &[], "", "").await;
    let cds = c.recv().await;
    c.request(T_LISTENER, &[], "", "").await;
    let lds = c.recv().await;
    // Acking CDS after LDS was sent is not stale: nonces are per type.
    c.ack(&cds, &[]).await;
    c.ack(&lds, &[]).await;
    c.expect_quiet().await;
    let n = s.server.nodes().get("n1").unwrap();
    assert_eq!(n.types[T_CLUSTER].acks, 1);
    assert_eq!(n.types[T_LISTENER].acks, 1);
}

#[tokio::test]
async fn unknown_types_are_remembered_and_served_when_they_exist() {
    let s = TestServer::start().await;
    let custom = "type.googleapis.com/example.v1.Thing";
    s.cache.set("n1", set(vec![]));
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(custom, &["t"], "", "").await;
    c.expect_quiet().await;
    s.cache.set("n1", set(vec![res(custom, "t", "t")]));
    let r = c.recv().await;
    assert_eq!(r.type_url, custom);
    assert_eq!(sotw_names(&r), vec!["t"]);
}

#[tokio::test]
async fn ads_pushes_clusters_endpoints_listeners_routes_and_removes_clusters_last() {
    let s = TestServer::start().await;
    let v1 = vec![
        res(T_CLUSTER, "old", "old"),
        res(T_ENDPOINT, "old", "old-eps"),
        res(T_LISTENER, "l", "l-to-old"),
        res(T_ROUTE, "r", "r-to-old"),
    ];
    s.cache.set("n1", set(v1));
    let mut c = Sotw::open(&s, node("n1")).await;
    for (t, names) in [
        (T_CLUSTER, vec![]),
        (T_ENDPOINT, vec!["old", "new"]),
        (T_LISTENER, vec![]),
        (T_ROUTE, vec!["r"]),
    ] {
        c.request(t, &names, "", "").await;
        let r = c.recv().await;
        c.ack(&r, &names).await;
    }
    c.expect_quiet().await;
    s.cache.set(
        "n1",
        set(vec![
            res(T_CLUSTER, "new", "new"),
            res(T_ENDPOINT, "new", "new-eps"),
            res(T_LISTENER, "l", "l-to-new"),
            res(T_ROUTE, "r", "r-to-new"),
        ]),
    );
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = c.recv().await;
        seen.push((r.type_url.clone(), sotw_names(&r)));
    }
    let expect = vec![
        (T_CLUSTER.to_owned(), names(&["new", "old"])),
        (T_ENDPOINT.to_owned(), names(&["new-eps"])),
        (T_LISTENER.to_owned(), names(&["l-to-new"])),
        (T_ROUTE.to_owned(), names(&["r-to-new"])),
        (T_CLUSTER.to_owned(), names(&["new"])),
    ];
    assert_eq!(seen, expect);
}

#[tokio::test]
async fn ttl_resources_are_wrapped_and_refreshed_by_heartbeats_for_clients_that_support_them() {
    use nebucloud_xds_proto::envoy::service::discovery::v3::Resource as Wrapped;
    use prost::Message;
    let s = TestServer::start_with(|b| b.heartbeat_interval(Duration::from_millis(200))).await;
    let ttl = Duration::from_secs(2);
    s.cache.set(
        "n1",
        set(vec![
            res(T_CLUSTER, "t", "t").with_ttl(ttl),
            res(T_CLUSTER, "p", "p"),
        ]),
    );
    let features = [
        "xds.config.supports-resource-ttl",
        "xds.config.resource-in-sotw",
    ];
    let mut c = Sotw::open(&s, node_with_features("n1", &features)).await;
    c.request(T_CLUSTER, &[], "", "").await;
    let r1 = c.recv().await;
    let wrapped: Vec<_> = r1
        .resources
        .iter()
        .filter(|a| a.type_url == nebucloud_xds_proto::type_url::RESOURCE_WRAPPER)
        .collect();
    assert_eq!(wrapped.len(), 1);
    let w = Wrapped::decode(wrapped[0].value.clone()).unwrap();
    assert_eq!((w.name.as_str(), w.ttl.map(|d| d.seconds)), ("t", Some(2)));
    assert!(w.resource.is_some());
    c.ack(&r1, &[]).await;
    // The heartbeat: same version, the TTL'd resource without a body.
    let hb = c.recv().await;
    assert_eq!(hb.version_info, r1.version_info);
    let w = hb
        .resources
        .iter()
        .find(|a| a.type_url == nebucloud_xds_proto::type_url::RESOURCE_WRAPPER)
        .unwrap();
    let w = Wrapped::decode(w.value.clone()).unwrap();
    assert!(w.resource.is_none(), "a heartbeat carries no body");
    assert_eq!(
        sotw_names(&hb),
        vec!["p", "t"],
        "a full-state heartbeat keeps every resource"
    );

    // A client that does not announce TTL support gets plain resources and no heartbeats.
    let mut plain = Sotw::open(&s, node("n2")).await;
    s.cache
        .set("n2", set(vec![res(T_CLUSTER, "t", "t").with_ttl(ttl)]));
    plain.request(T_CLUSTER, &[], "", "").await;
    let r = plain.recv().await;
    assert_eq!(r.resources[0].type_url, T_CLUSTER);
    plain.ack(&r, &[]).await;
    plain.expect_quiet().await;
}
