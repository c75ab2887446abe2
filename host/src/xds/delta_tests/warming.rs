//! Warming on Delta: the endpoints of a replaced cluster go again (`warming.rs`).

use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT};

use super::super::delta::DeltaStream;
use super::super::test_support::Step::{Reconnect, Request, Update};
use super::super::test_support::{ads, res, table};
use super::super::warming::tests::eds_cluster;
use super::{ack, delta, nack, sub, Initial, NOTHING};

table! { DeltaStream;
    /// No gRPC test: Envoy warms a replaced EDS cluster and, already subscribed, asks for
    /// nothing; its endpoints must come all the same.
    delta_ads_sends_the_unchanged_endpoints_of_a_replaced_cluster_again:
    ads(vec![
        eds_cluster("web", "", "v1"),
        eds_cluster("db", "db-eps", "v1"),
        res(ENDPOINT, "web", "web-eps"),
        res(ENDPOINT, "db-eps", "db-eps"),
    ]) => [
        Request(sub(CLUSTER, &[], &[]), vec![delta(CLUSTER, &["db", "web"], &[])]),
        Request(ack(1, CLUSTER), NOTHING),
        Request(sub(ENDPOINT, &["web", "db-eps"], &[]), vec![delta(ENDPOINT, &["db-eps", "web"], &[])]),
        Request(ack(2, ENDPOINT), NOTHING),
        Update(vec![
            eds_cluster("web", "", "v2"),
            eds_cluster("db", "db-eps", "v1"),
            res(ENDPOINT, "web", "web-eps"),
            res(ENDPOINT, "db-eps", "db-eps"),
        ], vec![delta(CLUSTER, &["web"], &[]), delta(ENDPOINT, &["web"], &[]).versions_as(2)]),
        // A changed endpoint goes once; the other replaced cluster's unchanged one joins it.
        Update(vec![
            eds_cluster("web", "", "v3"),
            eds_cluster("db", "db-eps", "v2"),
            res(ENDPOINT, "web", "web-eps-2"),
            res(ENDPOINT, "db-eps", "db-eps"),
        ], vec![delta(CLUSTER, &["db", "web"], &[]), delta(ENDPOINT, &["db-eps", "web"], &[])]),
        // Endpoints alone change: no cluster warms, only they go.
        Update(vec![
            eds_cluster("web", "", "v3"),
            eds_cluster("db", "db-eps", "v2"),
            res(ENDPOINT, "web", "web-eps-3"),
            res(ENDPOINT, "db-eps", "db-eps"),
        ], vec![delta(ENDPOINT, &["web"], &[])]),
    ]

    /// No gRPC test: a new cluster subscribes to its endpoints itself.
    delta_ads_sends_no_endpoints_for_a_new_cluster:
    ads(vec![eds_cluster("web", "", "v1"), res(ENDPOINT, "web", "web-eps")]) => [
        Request(sub(CLUSTER, &[], &[]), vec![delta(CLUSTER, &["web"], &[])]),
        Request(sub(ENDPOINT, &["web"], &[]), vec![delta(ENDPOINT, &["web"], &[])]),
        Update(vec![
            eds_cluster("web", "", "v1"),
            eds_cluster("db", "", "v1"),
            res(ENDPOINT, "web", "web-eps"),
            res(ENDPOINT, "db", "db-eps"),
        ], vec![delta(CLUSTER, &["db"], &[])]),
    ]

    /// No gRPC test: clusters replaced while the client was away warm as well.
    delta_a_reconnecting_client_gets_the_endpoints_of_clusters_replaced_meanwhile:
    ads(vec![eds_cluster("web", "", "v1"), res(ENDPOINT, "web", "web-eps")]) => [
        Request(sub(CLUSTER, &[], &[]), vec![delta(CLUSTER, &["web"], &[])]),
        Request(sub(ENDPOINT, &["web"], &[]), vec![delta(ENDPOINT, &["web"], &[])]),
        Reconnect,
        Update(vec![eds_cluster("web", "", "v2"), res(ENDPOINT, "web", "web-eps")], NOTHING),
        Request(sub(CLUSTER, &[], &[]).initial(Initial::HeldFrom(1)),
            vec![delta(CLUSTER, &["web"], &[])]),
        Request(sub(ENDPOINT, &["web"], &[]).initial(Initial::HeldFrom(2)),
            vec![delta(ENDPOINT, &["web"], &[]).versions_as(2)]),
    ]

    /// No gRPC test: after a rejection the endpoints are not sent again.
    delta_endpoints_the_client_rejected_are_not_sent_again_for_a_replaced_cluster:
    ads(vec![eds_cluster("web", "", "v1"), res(ENDPOINT, "web", "web-eps")]) => [
        Request(sub(CLUSTER, &[], &[]), vec![delta(CLUSTER, &["web"], &[])]),
        Request(ack(1, CLUSTER), NOTHING),
        Request(sub(ENDPOINT, &["web"], &[]), vec![delta(ENDPOINT, &["web"], &[])]),
        Request(nack(2, ENDPOINT, "web: bad endpoint"), NOTHING),
        Update(vec![eds_cluster("web", "", "v2"), res(ENDPOINT, "web", "web-eps")],
            vec![delta(CLUSTER, &["web"], &[])]),
    ]
}
