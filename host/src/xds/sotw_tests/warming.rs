//! Warming on State of the World: the endpoints of a changed cluster go again (`warming.rs`).

use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT, LISTENER};

use super::super::context::{FEATURE_RESOURCE_IN_SOTW, FEATURE_TTL};
use super::super::sotw::SotwStream;
use super::super::test_support::Step::{Heartbeat, Reconnect, Request, Update};
use super::super::test_support::{ads, owned, res, res_ttl, table};
use super::super::warming::tests::eds_cluster;
use super::{ack, ask, nack, sotw, NOTHING};

table! { SotwStream;
    /// No gRPC test: Envoy warms a changed EDS cluster and waits for its endpoints again.
    ads_sends_the_unchanged_endpoints_of_a_changed_cluster_again:
    ads(vec![
        eds_cluster("web", "", "v1"),
        eds_cluster("db", "db-eps", "v1"),
        res(ENDPOINT, "web", "web-eps"),
        res(ENDPOINT, "db-eps", "db-eps"),
        res(ENDPOINT, "cache", "cache-eps"),
    ]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["eds:v1", "eds:v1"])]),
        Request(ack(1, CLUSTER, &[]), NOTHING),
        Request(ask(ENDPOINT, &["web", "db-eps", "cache"]),
            vec![sotw(ENDPOINT, &["cache-eps", "db-eps", "web-eps"])]),
        Request(ack(2, ENDPOINT, &["web", "db-eps", "cache"]), NOTHING),
        // web changes, its endpoints do not: they go again, at the version the client holds.
        Update(vec![
            eds_cluster("web", "", "v2"),
            eds_cluster("db", "db-eps", "v1"),
            res(ENDPOINT, "web", "web-eps"),
            res(ENDPOINT, "db-eps", "db-eps"),
            res(ENDPOINT, "cache", "cache-eps"),
        ], vec![sotw(CLUSTER, &["eds:v1", "eds:v2"]), sotw(ENDPOINT, &["web-eps"]).same_version_as(2)]),
        Request(ack(3, CLUSTER, &[]), NOTHING),
        Request(ack(4, ENDPOINT, &["web", "db-eps", "cache"]), NOTHING),
        // db's endpoints are named by its service name.
        Update(vec![
            eds_cluster("web", "", "v2"),
            eds_cluster("db", "db-eps", "v2"),
            res(ENDPOINT, "web", "web-eps"),
            res(ENDPOINT, "db-eps", "db-eps"),
            res(ENDPOINT, "cache", "cache-eps"),
        ], vec![sotw(CLUSTER, &["eds:v2", "eds:v2"]), sotw(ENDPOINT, &["db-eps"]).same_version_as(2)]),
        // Endpoints that changed too go once, in the full answer.
        Update(vec![
            eds_cluster("web", "", "v3"),
            eds_cluster("db", "db-eps", "v2"),
            res(ENDPOINT, "web", "web-eps-2"),
            res(ENDPOINT, "db-eps", "db-eps"),
            res(ENDPOINT, "cache", "cache-eps"),
        ], vec![
            sotw(CLUSTER, &["eds:v2", "eds:v3"]),
            sotw(ENDPOINT, &["cache-eps", "db-eps", "web-eps-2"]).newer_than(2),
        ]),
        // A new cluster is not warming again: its endpoints come when the client asks.
        Update(vec![
            eds_cluster("web", "", "v3"),
            eds_cluster("db", "db-eps", "v2"),
            eds_cluster("cache", "", "v1"),
            res(ENDPOINT, "web", "web-eps-2"),
            res(ENDPOINT, "db-eps", "db-eps"),
            res(ENDPOINT, "cache", "cache-eps"),
        ], vec![sotw(CLUSTER, &["eds:v1", "eds:v2", "eds:v3"])]),
    ]

    /// No gRPC test: on a per-type stream the new cluster subscribes to its endpoints anew.
    per_type_streams_send_no_endpoints_with_clusters:
    ads(vec![eds_cluster("web", "", "v1"), res(ENDPOINT, "web", "web-eps")]).per_type(CLUSTER) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["eds:v1"])]),
        Update(vec![eds_cluster("web", "", "v2"), res(ENDPOINT, "web", "web-eps")],
            vec![sotw(CLUSTER, &["eds:v2"])]),
    ]

    /// No gRPC test: clusters that changed while the client was away warm as well.
    a_reconnecting_client_gets_the_endpoints_of_clusters_that_changed_meanwhile:
    ads(vec![eds_cluster("web", "", "v1"), res(ENDPOINT, "web", "web-eps")]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["eds:v1"])]),
        Request(ask(ENDPOINT, &["web"]), vec![sotw(ENDPOINT, &["web-eps"])]),
        Reconnect,
        Update(vec![eds_cluster("web", "", "v2"), res(ENDPOINT, "web", "web-eps")], NOTHING),
        // Clusters first: the endpoints it holds go again once it says which it holds.
        Request(ask(CLUSTER, &[]).holding(1, Some(1)), vec![sotw(CLUSTER, &["eds:v2"])]),
        Request(ask(ENDPOINT, &["web"]).holding(2, Some(2)),
            vec![sotw(ENDPOINT, &["web-eps"]).same_version_as(2)]),
        Reconnect,
        Update(vec![eds_cluster("web", "", "v3"), res(ENDPOINT, "web", "web-eps")], NOTHING),
        // Endpoints first: they go again right after the clusters.
        Request(ask(ENDPOINT, &["web"]).holding(2, Some(2)), NOTHING),
        Request(ask(CLUSTER, &[]).holding(3, Some(3)), vec![
            sotw(CLUSTER, &["eds:v3"]),
            sotw(ENDPOINT, &["web-eps"]).same_version_as(2),
        ]),
        // Nothing changed while away: nothing goes again.
        Reconnect,
        Request(ask(CLUSTER, &[]).holding(5, Some(5)), NOTHING),
        Request(ask(ENDPOINT, &["web"]).holding(2, Some(2)), NOTHING),
    ]

    /// No gRPC test: rejected endpoints are not sent again under a version the client refused.
    endpoints_the_client_rejected_are_not_sent_again_for_a_warming_cluster:
    ads(vec![
        eds_cluster("db", "", "v1"),
        eds_cluster("web", "", "v1"),
        res(ENDPOINT, "db", "db-eps"),
        res(ENDPOINT, "web", "web-eps"),
    ]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["eds:v1", "eds:v1"])]),
        Request(ack(1, CLUSTER, &[]), NOTHING),
        Request(ask(ENDPOINT, &["db", "web"]), vec![sotw(ENDPOINT, &["db-eps", "web-eps"])]),
        Request(ack(2, ENDPOINT, &["db", "web"]), NOTHING),
        Update(vec![
            eds_cluster("db", "", "v1"),
            eds_cluster("web", "", "v1"),
            res(ENDPOINT, "db", "db-bad"),
            res(ENDPOINT, "web", "web-eps"),
        ], vec![sotw(ENDPOINT, &["db-bad", "web-eps"]).newer_than(2)]),
        Request(nack(3, 2, ENDPOINT, "db: bad endpoint").names(owned(&["db", "web"])), NOTHING),
        Update(vec![
            eds_cluster("db", "", "v1"),
            eds_cluster("web", "", "v2"),
            res(ENDPOINT, "db", "db-bad"),
            res(ENDPOINT, "web", "web-eps"),
        ], vec![sotw(CLUSTER, &["eds:v1", "eds:v2"])]),
    ]

    /// No gRPC test: endpoints sent again in part keep the others' heartbeats.
    endpoints_sent_again_in_part_keep_the_heartbeats_of_the_others:
    ads(vec![
        eds_cluster("web", "", "v1"),
        res(ENDPOINT, "web", "web-eps"),
        res_ttl(ENDPOINT, "db", "db-eps", 2),
    ]).features(&[FEATURE_TTL, FEATURE_RESOURCE_IN_SOTW]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["eds:v1"])]),
        Request(ack(1, CLUSTER, &[]), NOTHING),
        Request(ask(ENDPOINT, &["web", "db"]),
            vec![sotw(ENDPOINT, &["db-eps (ttl 2s)", "web-eps"])]),
        Request(ack(2, ENDPOINT, &["web", "db"]), NOTHING),
        Update(vec![
            eds_cluster("web", "", "v2"),
            res(ENDPOINT, "web", "web-eps"),
            res_ttl(ENDPOINT, "db", "db-eps", 2),
        ], vec![sotw(CLUSTER, &["eds:v2"]), sotw(ENDPOINT, &["web-eps"]).same_version_as(2)]),
        Request(ack(4, ENDPOINT, &["web", "db"]), NOTHING),
        Heartbeat(vec![sotw(ENDPOINT, &["db (ttl 2s, no body)", "web-eps"]).same_version_as(2)]),
    ]

    /// No gRPC test: when clusters are also removed (make before break), the endpoints go
    /// once, after the first clusters; the final clusters owe nothing more.
    endpoints_go_once_when_clusters_are_also_removed:
    ads(vec![
        eds_cluster("old", "", "v1"),
        eds_cluster("web", "", "v1"),
        res(ENDPOINT, "old", "old-eps"),
        res(ENDPOINT, "web", "web-eps"),
        res(LISTENER, "l", "l1"),
    ]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["eds:v1", "eds:v1"])]),
        Request(ack(1, CLUSTER, &[]), NOTHING),
        Request(ask(ENDPOINT, &["old", "web"]), vec![sotw(ENDPOINT, &["old-eps", "web-eps"])]),
        Request(ack(2, ENDPOINT, &["old", "web"]), NOTHING),
        Request(ask(LISTENER, &[]), vec![sotw(LISTENER, &["l1"])]),
        Request(ack(3, LISTENER, &[]), NOTHING),
        Update(vec![
            eds_cluster("web", "", "v2"),
            res(ENDPOINT, "web", "web-eps"),
            res(LISTENER, "l", "l2"),
        ], vec![
            sotw(CLUSTER, &["eds:v1", "eds:v2"]),
            sotw(ENDPOINT, &["web-eps"]).newer_than(2),
            sotw(LISTENER, &["l2"]),
            sotw(CLUSTER, &["eds:v2"]),
        ]),
        Request(ack(7, CLUSTER, &[]), NOTHING),
        Request(ack(5, ENDPOINT, &["old", "web"]), NOTHING),
    ]

    /// No gRPC test: a heartbeat neither resends rejected endpoints nor clears the rejection.
    rejected_endpoints_get_no_heartbeat_and_are_not_sent_again:
    ads(vec![eds_cluster("web", "", "v1"), res_ttl(ENDPOINT, "web", "web-eps", 2)])
        .features(&[FEATURE_TTL, FEATURE_RESOURCE_IN_SOTW]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["eds:v1"])]),
        Request(ack(1, CLUSTER, &[]), NOTHING),
        Request(ask(ENDPOINT, &["web"]), vec![sotw(ENDPOINT, &["web-eps (ttl 2s)"])]),
        Request(nack(2, 2, ENDPOINT, "web: bad endpoint").names(owned(&["web"])), NOTHING),
        Heartbeat(NOTHING),
        Update(vec![eds_cluster("web", "", "v2"), res_ttl(ENDPOINT, "web", "web-eps", 2)],
            vec![sotw(CLUSTER, &["eds:v2"])]),
    ]
}
