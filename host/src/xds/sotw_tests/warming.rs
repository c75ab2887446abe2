//! Warming on State of the World: the endpoints of a changed cluster go again (`warming.rs`).

use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT};

use super::super::sotw::SotwStream;
use super::super::test_support::Step::{Request, Update};
use super::super::test_support::{ads, res, table};
use super::super::warming::tests::eds_cluster;
use super::{ack, ask, sotw, NOTHING};

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
}
