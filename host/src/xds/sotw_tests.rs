//! The State-of-the-World rules of `PROTOCOL-PITFALLS.md`, one table row each, played on a
//! `SotwStream` without a network; rows are named after the gRPC tests they mirror.

use nebucloud_xds_proto::envoy::service::discovery::v3::DiscoveryRequest;
use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE};
use tonic::Code::{InvalidArgument, ResourceExhausted};

use super::context::{FEATURE_RESOURCE_IN_SOTW, FEATURE_TTL};
use super::sotw::SotwStream;
use super::status::DeliveryState::{Acked, Nacked};
use super::test_support::Step::{Heartbeat, Reconnect, Record, Refused, Request, Update};
use super::test_support::{
    ads, error_detail, many, no_group, owned, rec, res, res_ttl, sotw_resources, table, Ref,
    Scripted, OTHER_THING, THING,
};
use super::types::short_name;
use super::wire::SotwResponse;
mod encoding;
mod warming;

/// A request as a row writes it.
#[derive(Default)]
pub(super) struct Ask {
    type_url: &'static str,
    names: Vec<String>,
    version: Ref,
    nonce: Ref,
    error: Option<&'static str>,
}

/// A first request: no version, no nonce.
fn ask(type_url: &'static str, names: &[&str]) -> Ask {
    let mut a = Ask::default();
    (a.type_url, a.names) = (type_url, owned(names));
    a
}

/// An ACK of response `k`, subscribing to `names`.
fn ack(k: usize, type_url: &'static str, names: &[&str]) -> Ask {
    ask(type_url, names).holding(k, Some(k))
}

/// A NACK of response `k`; the client keeps the version of response `kept`.
fn nack(k: usize, kept: usize, type_url: &'static str, error: &'static str) -> Ask {
    let mut a = ask(type_url, &[]).holding(kept, Some(k));
    a.error = Some(error);
    a
}

impl Ask {
    fn nonce(mut self, nonce: &'static str) -> Self {
        self.nonce = Ref::Literal(nonce);
        self
    }
    /// The version (and nonce) of an earlier response: as a reconnecting client sends them.
    fn holding(mut self, version_of: usize, nonce_of: Option<usize>) -> Self {
        (self.version, self.nonce) = (Ref::Of(version_of), nonce_of.map_or(Ref::Empty, Ref::Of));
        self
    }
    fn names(mut self, names: Vec<String>) -> Self {
        self.names = names;
        self
    }
}

/// What a version is expected to be, relative to an earlier response.
#[derive(Debug, Default)]
enum Version {
    #[default]
    Any,
    SameAs(usize),
    NewerThan(usize),
}

/// A response as a row expects it: its type and its resources, each shown as its body (a
/// `Resource` wrapper as `body (ttl Ns)`, or `name (ttl Ns, no body)` in a heartbeat).
#[derive(Debug, Default)]
pub(super) struct Seen {
    type_url: &'static str,
    resources: Vec<String>,
    version: Version,
}

fn sotw(type_url: &'static str, resources: &[&str]) -> Seen {
    let mut s = Seen::default();
    (s.type_url, s.resources) = (type_url, owned(resources));
    s
}

impl Seen {
    fn same_version_as(mut self, k: usize) -> Self {
        self.version = Version::SameAs(k);
        self
    }
    fn newer_than(mut self, k: usize) -> Self {
        self.version = Version::NewerThan(k);
        self
    }
}

const NOTHING: Vec<Seen> = Vec::new();

impl Scripted for SotwStream {
    type Ask = Ask;
    type Seen = Seen;

    fn request(ask: &Ask, earlier: &[SotwResponse]) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: ask.version.resolve(earlier, |r| &r.version_info),
            response_nonce: ask.nonce.resolve(earlier, |r| &r.nonce),
            resource_names: ask.names.clone(),
            type_url: ask.type_url.to_owned(),
            error_detail: error_detail(ask.error),
            ..DiscoveryRequest::default()
        }
    }

    fn mismatch(want: &Seen, got: &SotwResponse, earlier: &[SotwResponse]) -> Option<String> {
        let got = &got.checked_message();
        let resources = sotw_resources(got);
        let version = |k: usize| earlier[k - 1].version_info.as_str();
        if got.type_url != want.type_url || resources != want.resources {
            return Some("other type or resources".to_owned());
        }
        match want.version {
            Version::SameAs(k) if got.version_info != version(k) => {
                Some(format!("the version is not that of response {k}"))
            }
            Version::NewerThan(k) if got.version_info == version(k) => {
                Some(format!("the version is still that of response {k}"))
            }
            _ => None,
        }
    }

    fn show(got: &SotwResponse) -> String {
        let got = &got.checked_message();
        let resources = sotw_resources(got);
        let v = got.version_info.get(..8).unwrap_or(&got.version_info);
        format!(
            "{} v{v} nonce {} {resources:?}",
            short_name(&got.type_url),
            got.nonce
        )
    }

    fn nonce(r: &SotwResponse) -> &str {
        &r.nonce
    }

    fn version(r: &SotwResponse) -> &str {
        &r.version_info
    }
}

table! { SotwStream;
    nack_is_detected_by_error_detail_recorded_and_never_resent:
    ads(vec![res(CLUSTER, "c1", "c1")]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["c1"])]),
        Request(ack(1, CLUSTER, &[]), NOTHING),
        Update(vec![res(CLUSTER, "c1", "bad")], vec![sotw(CLUSTER, &["bad"]).newer_than(1)]),
        // The NACK carries the last accepted version: it is recognised by error_detail alone.
        Request(nack(2, 1, CLUSTER, "unsupported lb_policy"), NOTHING),
        // A second NACK of the same nonce (clients retry) is not answered either.
        Request(nack(2, 1, CLUSTER, "unsupported lb_policy"), NOTHING),
        Record(CLUSTER, rec().state(Nacked).acked(1).responses(2)
            .last_nack("unsupported lb_policy", 2, Some(1))),
        // A change elsewhere in the group does not bring the rejected payload back.
        Update(vec![res(CLUSTER, "c1", "bad"), res(LISTENER, "l", "l")], NOTHING),
        // Only a change of config produces the next response.
        Update(vec![res(CLUSTER, "c1", "fixed")], vec![sotw(CLUSTER, &["fixed"]).newer_than(2)]),
        Request(ack(3, CLUSTER, &[]), NOTHING),
        Record(CLUSTER, rec().state(Acked).acked(3)),
    ]

    nack_whose_version_equals_the_sent_version_is_still_a_nack:
    ads(vec![res(LISTENER, "l1", "l1")]) => [
        Request(ask(LISTENER, &[]), vec![sotw(LISTENER, &["l1"])]),
        Request(nack(1, 1, LISTENER, "bad listener"), NOTHING),
        Record(LISTENER, rec().state(Nacked).acks(0).nacks(1)),
    ]

    stale_nonce_is_ignored_including_its_subscription:
    ads(vec![res(ENDPOINT, "a", "a"), res(ENDPOINT, "b", "b")]) => [
        Request(ask(ENDPOINT, &["a"]), vec![sotw(ENDPOINT, &["a"])]),
        Request(ack(1, ENDPOINT, &["a", "b"]).nonce("garbage-nonce"), NOTHING),
        Record(ENDPOINT, rec().acks(0)),
        Request(ack(1, ENDPOINT, &["a", "b"]), vec![sotw(ENDPOINT, &["a", "b"])]),
        // Response 1's nonce is an old one now: its subscription change is ignored too.
        Request(ack(1, ENDPOINT, &["a"]), NOTHING),
        Update(vec![res(ENDPOINT, "a", "a"), res(ENDPOINT, "b", "b2")],
            vec![sotw(ENDPOINT, &["a", "b2"])]),
        Record(ENDPOINT, rec().acks(1)),
    ]

    legacy_and_explicit_wildcard_get_every_resource:
    ads(vec![res(CLUSTER, "a", "a"), res(CLUSTER, "b", "b")]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["a", "b"])]),
        Reconnect,
        Request(ask(CLUSTER, &["*"]), vec![sotw(CLUSTER, &["a", "b"])]),
    ]

    empty_list_after_names_unsubscribes_everything:
    ads(vec![res(LISTENER, "a", "a")]) => [
        Request(ask(LISTENER, &["a"]), vec![sotw(LISTENER, &["a"])]),
        Request(ack(1, LISTENER, &[]), NOTHING),
        Update(vec![res(LISTENER, "a", "a2"), res(LISTENER, "z", "z")], NOTHING),
    ]

    wildcard_plus_name_then_name_unsubscribed_stays_covered:
    ads(vec![res(CLUSTER, "a", "a"), res(CLUSTER, "b", "b")]) => [
        Request(ask(CLUSTER, &["*", "a"]), vec![sotw(CLUSTER, &["a", "b"])]),
        Request(ack(1, CLUSTER, &["*"]), NOTHING),
        Update(vec![res(CLUSTER, "a", "a2"), res(CLUSTER, "b", "b")],
            vec![sotw(CLUSTER, &["a2", "b"])]),
    ]

    newly_requested_names_are_answered_even_if_unchanged:
    ads(vec![res(ROUTE, "r1", "r1")]) => [
        Request(ask(ROUTE, &["r1"]), vec![sotw(ROUTE, &["r1"])]),
        // Asking for a name that does not exist is fine, and dropping it too.
        Request(ack(1, ROUTE, &["r1", "never"]), NOTHING),
        Request(ack(1, ROUTE, &[]), NOTHING),
        // The client forgot r1; asking again gets it again though nothing changed.
        Request(ack(1, ROUTE, &["r1"]), vec![sotw(ROUTE, &["r1"]).same_version_as(1)]),
    ]

    names_that_do_not_exist_are_remembered_and_sent_when_they_appear:
    ads(vec![]) => [
        Request(ask(ENDPOINT, &["later"]), NOTHING),
        Update(vec![res(ENDPOINT, "other", "o")], NOTHING),
        Update(vec![res(ENDPOINT, "later", "later")], vec![sotw(ENDPOINT, &["later"])]),
    ]

    full_state_types_delete_by_omission_and_empty_deletes_all:
    ads(vec![res(LISTENER, "l1", "l1"), res(LISTENER, "l2", "l2")]) => [
        Request(ask(LISTENER, &[]), vec![sotw(LISTENER, &["l1", "l2"])]),
        Request(ack(1, LISTENER, &[]), NOTHING),
        Update(vec![res(LISTENER, "l1", "l1")], vec![sotw(LISTENER, &["l1"])]),
        Request(ack(2, LISTENER, &[]), NOTHING),
        Update(vec![], vec![sotw(LISTENER, &[])]),
    ]

    /// No gRPC test: SRDS is full-state like LDS and CDS.
    scoped_routes_delete_by_omission_like_listeners:
    ads(vec![res(SCOPED_ROUTE, "s1", "s1"), res(SCOPED_ROUTE, "s2", "s2")]) => [
        Request(ask(SCOPED_ROUTE, &[]), vec![sotw(SCOPED_ROUTE, &["s1", "s2"])]),
        Update(vec![res(SCOPED_ROUTE, "s1", "s1")], vec![sotw(SCOPED_ROUTE, &["s1"])]),
        Update(vec![], vec![sotw(SCOPED_ROUTE, &[])]),
    ]

    per_name_types_are_not_deleted_by_omission:
    ads(vec![res(ENDPOINT, "a", "a")]) => [
        Request(ask(ENDPOINT, &["a"]), vec![sotw(ENDPOINT, &["a"])]),
        Request(ack(1, ENDPOINT, &["a"]), NOTHING),
        Update(vec![res(CLUSTER, "x", "x")], NOTHING),
    ]

    reconnect_with_the_current_version_gets_nothing_resent:
    ads(vec![res(CLUSTER, "a", "a")]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["a"])]),
        // Version and nonce are from another stream; the version shows it holds exactly this.
        Reconnect,
        Request(ask(CLUSTER, &[]).holding(1, Some(1)), NOTHING),
        Update(vec![res(CLUSTER, "a", "a2")], vec![sotw(CLUSTER, &["a2"])]),
        // A client with an older version gets the current one at once.
        Reconnect,
        Request(ask(CLUSTER, &[]).holding(1, None), vec![sotw(CLUSTER, &["a2"])]),
    ]

    types_interleave_on_one_stream_with_nonces_per_type:
    ads(vec![res(CLUSTER, "c", "c"), res(LISTENER, "l", "l")]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["c"])]),
        Request(ask(LISTENER, &[]), vec![sotw(LISTENER, &["l"])]),
        // Acking CDS after LDS was sent is not stale: nonces are per type.
        Request(ack(1, CLUSTER, &[]), NOTHING),
        Request(ack(2, LISTENER, &[]), NOTHING),
        Record(CLUSTER, rec().acks(1)),
        Record(LISTENER, rec().acks(1)),
    ]

    unknown_types_are_remembered_and_served_when_they_exist:
    ads(vec![]) => [
        Request(ask(THING, &["t"]), NOTHING),
        Update(vec![res(THING, "t", "t")], vec![sotw(THING, &["t"])]),
    ]

    /// Mirrors hostile.rs `made_up_type_urls_never_become_metric_labels`, in part.
    types_past_max_unserved_types_are_not_remembered_and_served_types_still_answered:
    ads(vec![]).limits(|l| l.max_unserved_types = 1) => [
        Request(ask(THING, &["t"]), NOTHING),
        Request(ask(OTHER_THING, &["t"]), NOTHING),
        // A wildcard on a known type is answered even when empty: the full state is "none".
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &[])]),
        Update(vec![res(THING, "t", "one"), res(OTHER_THING, "t", "two")],
            vec![sotw(THING, &["one"])]),
        // Once the group has it, it is a type the server serves.
        Request(ask(OTHER_THING, &["t"]), vec![sotw(OTHER_THING, &["two"])]),
    ]

    ads_pushes_clusters_endpoints_listeners_routes_and_removes_clusters_last:
    ads(vec![
        res(CLUSTER, "old", "old"),
        res(ENDPOINT, "old", "old-eps"),
        res(LISTENER, "l", "l-to-old"),
        res(ROUTE, "r", "r-to-old"),
    ]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["old"])]),
        Request(ack(1, CLUSTER, &[]), NOTHING),
        Request(ask(ENDPOINT, &["old", "new"]), vec![sotw(ENDPOINT, &["old-eps"])]),
        Request(ack(2, ENDPOINT, &["old", "new"]), NOTHING),
        Request(ask(LISTENER, &[]), vec![sotw(LISTENER, &["l-to-old"])]),
        Request(ack(3, LISTENER, &[]), NOTHING),
        Request(ask(ROUTE, &["r"]), vec![sotw(ROUTE, &["r-to-old"])]),
        Request(ack(4, ROUTE, &["r"]), NOTHING),
        Update(vec![
            res(CLUSTER, "new", "new"),
            res(ENDPOINT, "new", "new-eps"),
            res(LISTENER, "l", "l-to-new"),
            res(ROUTE, "r", "r-to-new"),
        ], vec![
            sotw(CLUSTER, &["new", "old"]),
            sotw(ENDPOINT, &["new-eps"]),
            sotw(LISTENER, &["l-to-new"]),
            sotw(ROUTE, &["r-to-new"]),
            sotw(CLUSTER, &["new"]),
        ]),
    ]

    ttl_resources_are_wrapped_and_refreshed_by_heartbeats_for_clients_that_support_them:
    ads(vec![res_ttl(CLUSTER, "t", "t", 2), res(CLUSTER, "p", "p")])
        .features(&[FEATURE_TTL, FEATURE_RESOURCE_IN_SOTW]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["p", "t (ttl 2s)"])]),
        Request(ack(1, CLUSTER, &[]), NOTHING),
        // Same version; the full state is kept, the TTL'd resource without a body.
        Heartbeat(vec![sotw(CLUSTER, &["p", "t (ttl 2s, no body)"]).same_version_as(1)]),
    ]

    /// The second half of the row above's gRPC test: a client without the features.
    ttl_resources_are_plain_and_never_refreshed_for_clients_that_do_not_announce_them:
    ads(vec![res_ttl(CLUSTER, "t", "t", 2)]) => [
        Request(ask(CLUSTER, &[]), vec![sotw(CLUSTER, &["t"])]),
        Request(ack(1, CLUSTER, &[]), NOTHING),
        Heartbeat(NOTHING),
    ]

    ads_request_without_or_with_malformed_type_url_is_invalid_argument:
    ads(vec![]) => [
        Refused(ask("", &[]), InvalidArgument, &["type_url is required"]),
        Reconnect,
        Refused(ask("Cluster", &[]), InvalidArgument, &["malformed type_url"]),
    ]

    subscription_over_the_name_limit_is_resource_exhausted:
    ads(vec![res(ENDPOINT, "a", "a")]) => [
        Refused(ask(ENDPOINT, &[]).names(many("cluster-", 100_000)), ResourceExhausted,
            &["100000 names", "50000", "max_names_per_type"]),
    ]

    per_type_service_refuses_other_types_and_serves_its_own:
    ads(vec![res(CLUSTER, "c", "c")]).per_type(CLUSTER) => [
        // Per-type clients may leave type_url empty: the service's own type is meant.
        Request(ask("", &[]), vec![sotw(CLUSTER, &["c"])]),
        Refused(ack(1, LISTENER, &[]), InvalidArgument, &["this stream serves"]),
    ]

    /// Mirrors hostile.rs `huge_resource_names_are_refused_naming_the_limit_and_hold_nothing`.
    huge_resource_names_are_refused_naming_the_limit:
    ads(vec![res(ENDPOINT, "a", "a")]) => [
        Refused(ask(ENDPOINT, &[]).names(vec!["n".repeat(4 << 20)]), ResourceExhausted,
            &["max_name_bytes"]),
    ]

    /// No gRPC test.
    a_stream_over_max_types_is_resource_exhausted:
    no_group().limits(|l| l.max_types = 2) => [
        Request(ask(CLUSTER, &[]), NOTHING),
        Request(ask(LISTENER, &[]), NOTHING),
        Request(ask(CLUSTER, &["c"]), NOTHING),
        Refused(ask(ENDPOINT, &["e"]), ResourceExhausted, &["at most 2", "max_types"]),
    ]

    /// No gRPC test.
    names_over_max_names_bytes_are_resource_exhausted_and_replaced_names_are_freed:
    no_group().limits(|l| l.max_names_bytes = CLUSTER.len() + 10) => [
        Request(ask(CLUSTER, &["0123456789"]), NOTHING),
        Request(ask(CLUSTER, &["abcdefghij"]), NOTHING),
        Refused(ask(CLUSTER, &["abcdefghij", "k"]), ResourceExhausted, &["max_names_bytes"]),
    ]
}
