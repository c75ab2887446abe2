//! The Delta rules of `PROTOCOL-PITFALLS.md`, one table row each, played on a `DeltaStream`
//! without a network; rows are named after the gRPC tests they mirror.

use std::collections::{BTreeSet, HashMap};

use nebucloud_xds_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use tonic::Code::{InvalidArgument, ResourceExhausted};

use super::context::FEATURE_TTL;
use super::delta::DeltaStream;
use super::status::DeliveryState::Nacked;
use super::test_support::Step::{Heartbeat, Reconnect, Record, Refused, Request, Update};
use super::test_support::{
    ads, error_detail, no_group, owned, rec, res, res_ttl, table, Ref, Scripted, THING,
};
use super::types::short_name;
mod warming;

/// What a first request announces in `initial_resource_versions`.
enum Initial {
    Nothing,
    /// The names and versions of response `k`'s resources.
    HeldFrom(usize),
    Literal(&'static [(&'static str, &'static str)]),
}

/// A request as a row writes it.
pub(super) struct Ask {
    type_url: &'static str,
    subscribe: Vec<String>,
    unsubscribe: Vec<String>,
    nonce: Ref,
    error: Option<&'static str>,
    initial: Initial,
}

/// A request that subscribes and unsubscribes, answering nothing.
fn sub(type_url: &'static str, subscribe: &[&str], unsubscribe: &[&str]) -> Ask {
    Ask {
        type_url,
        subscribe: owned(subscribe),
        unsubscribe: owned(unsubscribe),
        nonce: Ref::Empty,
        error: None,
        initial: Initial::Nothing,
    }
}

/// An ACK of response `k` that changes no subscription.
fn ack(k: usize, type_url: &'static str) -> Ask {
    sub(type_url, &[], &[]).acking(k)
}

/// A NACK of response `k`.
fn nack(k: usize, type_url: &'static str, error: &'static str) -> Ask {
    Ask {
        error: Some(error),
        ..ack(k, type_url)
    }
}

impl Ask {
    fn acking(mut self, k: usize) -> Self {
        self.nonce = Ref::Of(k);
        self
    }
    fn nonce(mut self, nonce: &'static str) -> Self {
        self.nonce = Ref::Literal(nonce);
        self
    }
    fn initial(mut self, initial: Initial) -> Self {
        self.initial = initial;
        self
    }
    fn subscribing(mut self, subscribe: Vec<String>) -> Self {
        self.subscribe = subscribe;
        self
    }
}

/// A response as a row expects it: its type, the names it carries (sorted; with a TTL shown
/// as `name (ttl Ns)`, a heartbeat's as `name (ttl Ns, no body)`), and its removed names.
#[derive(Debug)]
pub(super) struct Seen {
    type_url: &'static str,
    names: Vec<String>,
    removed: Vec<String>,
    /// Every resource carries the version it had in response `k`.
    versions_as: Option<usize>,
}

fn delta(type_url: &'static str, names: &[&str], removed: &[&str]) -> Seen {
    Seen {
        type_url,
        names: owned(names),
        removed: owned(removed),
        versions_as: None,
    }
}

impl Seen {
    fn versions_as(mut self, k: usize) -> Self {
        self.versions_as = Some(k);
        self
    }
}

const NOTHING: Vec<Seen> = Vec::new();

fn shown(r: &DeltaResource) -> String {
    match (&r.ttl, &r.resource) {
        (None, Some(_)) => r.name.clone(),
        (None, None) => format!("{} (no body)", r.name),
        (Some(d), Some(_)) => format!("{} (ttl {}s)", r.name, d.seconds),
        (Some(d), None) => format!("{} (ttl {}s, no body)", r.name, d.seconds),
    }
}

fn names_of(got: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut names: Vec<String> = got.resources.iter().map(shown).collect();
    names.sort();
    names
}

impl Scripted for DeltaStream {
    type Ask = Ask;
    type Seen = Seen;

    fn request(ask: &Ask, earlier: &[DeltaDiscoveryResponse]) -> DeltaDiscoveryRequest {
        let initial_resource_versions: HashMap<String, String> = match ask.initial {
            Initial::Nothing => HashMap::new(),
            Initial::HeldFrom(k) => earlier[k - 1]
                .resources
                .iter()
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect(),
            Initial::Literal(held) => held
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        };
        DeltaDiscoveryRequest {
            type_url: ask.type_url.to_owned(),
            resource_names_subscribe: ask.subscribe.clone(),
            resource_names_unsubscribe: ask.unsubscribe.clone(),
            initial_resource_versions,
            response_nonce: ask.nonce.resolve(earlier, |r| &r.nonce),
            error_detail: error_detail(ask.error),
            ..DeltaDiscoveryRequest::default()
        }
    }

    fn mismatch(
        want: &Seen,
        got: &DeltaDiscoveryResponse,
        earlier: &[DeltaDiscoveryResponse],
    ) -> Option<String> {
        let mut removed = got.removed_resources.clone();
        removed.sort();
        if got.type_url != want.type_url || names_of(got) != want.names || removed != want.removed {
            return Some("other type, resources or removed names".to_owned());
        }
        let mut all: Vec<&str> = got.resources.iter().map(|r| r.name.as_str()).collect();
        all.extend(got.removed_resources.iter().map(String::as_str));
        if all.iter().collect::<BTreeSet<_>>().len() != all.len() {
            return Some("a name appears twice in one response".to_owned());
        }
        let k = want.versions_as?;
        let before = &earlier[k - 1].resources;
        got.resources
            .iter()
            .find(|r| {
                !before
                    .iter()
                    .any(|b| b.name == r.name && b.version == r.version)
            })
            .map(|r| format!("{} does not carry its version of response {k}", r.name))
    }

    fn show(got: &DeltaDiscoveryResponse) -> String {
        format!(
            "{} nonce {} {:?} removed {:?}",
            short_name(&got.type_url),
            got.nonce,
            names_of(got),
            got.removed_resources
        )
    }

    fn nonce(r: &DeltaDiscoveryResponse) -> &str {
        &r.nonce
    }

    fn version(r: &DeltaDiscoveryResponse) -> &str {
        &r.system_version_info
    }
}

table! { DeltaStream;
    delta_wildcard_first_request_is_answered_even_when_empty:
    ads(vec![]) => [
        Request(sub(CLUSTER, &[], &[]), vec![delta(CLUSTER, &[], &[])]),
        Request(ack(1, CLUSTER), NOTHING),
    ]

    delta_sends_only_what_changed:
    ads(vec![res(CLUSTER, "a", "a"), res(CLUSTER, "b", "b")]) => [
        Request(sub(CLUSTER, &["*"], &[]), vec![delta(CLUSTER, &["a", "b"], &[])]),
        Request(ack(1, CLUSTER), NOTHING),
        Update(vec![res(CLUSTER, "a", "a"), res(CLUSTER, "b", "b2"), res(CLUSTER, "c", "c")],
            vec![delta(CLUSTER, &["b", "c"], &[])]),
        Request(ack(2, CLUSTER), NOTHING),
        Update(vec![res(CLUSTER, "a", "a"), res(CLUSTER, "c", "c")],
            vec![delta(CLUSTER, &[], &["b"])]),
    ]

    delta_subscribed_name_that_does_not_exist_goes_in_removed_resources:
    ads(vec![res(ENDPOINT, "a", "a")]) => [
        Request(sub(ENDPOINT, &["a", "missing"], &[]), vec![delta(ENDPOINT, &["a"], &["missing"])]),
        Request(ack(1, ENDPOINT), NOTHING),
        // Told once: a later change does not report it again.
        Update(vec![res(ENDPOINT, "a", "a2")], vec![delta(ENDPOINT, &["a"], &[])]),
        // Remembered: it is sent when it appears.
        Update(vec![res(ENDPOINT, "a", "a2"), res(ENDPOINT, "missing", "m")],
            vec![delta(ENDPOINT, &["missing"], &[])]),
    ]

    delta_reconnect_with_initial_versions_skips_unchanged_and_removes_missing:
    ads(vec![res(CLUSTER, "a", "a"), res(CLUSTER, "b", "b")]) => [
        Request(sub(CLUSTER, &["*"], &[]), vec![delta(CLUSTER, &["a", "b"], &[])]),
        Reconnect,
        Update(vec![res(CLUSTER, "a", "a"), res(CLUSTER, "c", "c")], NOTHING),
        // a is unchanged and is not re-sent.
        Request(sub(CLUSTER, &["*"], &[]).initial(Initial::HeldFrom(1)),
            vec![delta(CLUSTER, &["c"], &["b"])]),
    ]

    /// Mirrors hostile.rs `a_delta_request_of_fifty_thousand_held_names_is_answered…`, small.
    delta_held_versions_that_are_not_ours_are_resent_and_missing_names_removed:
    ads(vec![res(ENDPOINT, "e-0", "e-0")]) => [
        Request(sub(ENDPOINT, &["e-0", "e-1", "e-2"], &[])
            .initial(Initial::Literal(&[("e-0", "v0"), ("e-1", "v0"), ("e-2", "v0")])),
            vec![delta(ENDPOINT, &["e-0"], &["e-1", "e-2"])]),
    ]

    delta_stale_nonce_still_honours_subscription_changes:
    ads(vec![res(ENDPOINT, "a", "a"), res(ENDPOINT, "b", "b")]) => [
        Request(sub(ENDPOINT, &["a"], &[]), vec![delta(ENDPOINT, &["a"], &[])]),
        Request(sub(ENDPOINT, &["b"], &[]).nonce("stale-or-garbage"),
            vec![delta(ENDPOINT, &["b"], &[])]),
        Record(ENDPOINT, rec().acks(0)),
        // Response 1's nonce is an old one now; its unsubscribe counts all the same.
        Request(sub(ENDPOINT, &[], &["a"]).acking(1), NOTHING),
        Update(vec![res(ENDPOINT, "a", "a2"), res(ENDPOINT, "b", "b2")],
            vec![delta(ENDPOINT, &["b"], &[])]),
        Record(ENDPOINT, rec().acks(0)),
    ]

    delta_nack_is_recorded_and_not_resent:
    ads(vec![res(CLUSTER, "a", "bad")]) => [
        Request(sub(CLUSTER, &["*"], &[]), vec![delta(CLUSTER, &["a"], &[])]),
        Request(nack(1, CLUSTER, "cluster a: bad"), NOTHING),
        Record(CLUSTER, rec().state(Nacked).nacks(1).responses(1)
            .last_nack("cluster a: bad", 1, None)),
        // A change elsewhere in the group does not bring the rejected payload back.
        Update(vec![res(CLUSTER, "a", "bad"), res(LISTENER, "l", "l")], NOTHING),
        Update(vec![res(CLUSTER, "a", "good")], vec![delta(CLUSTER, &["a"], &[])]),
    ]

    delta_unsubscribe_then_resubscribe_sends_again:
    ads(vec![res(ROUTE, "r", "r")]) => [
        Request(sub(ROUTE, &["r"], &[]), vec![delta(ROUTE, &["r"], &[])]),
        Request(ack(1, ROUTE), NOTHING),
        Request(sub(ROUTE, &[], &["r", "never-had"]), NOTHING),
        Request(sub(ROUTE, &["r"], &[]), vec![delta(ROUTE, &["r"], &[])]),
    ]

    delta_wildcard_plus_name_then_name_unsubscribed_stays:
    ads(vec![res(CLUSTER, "a", "a")]) => [
        Request(sub(CLUSTER, &["*", "a"], &[]), vec![delta(CLUSTER, &["a"], &[])]),
        Request(ack(1, CLUSTER), NOTHING),
        Request(sub(CLUSTER, &[], &["a"]), NOTHING),
        // Still covered by the wildcard.
        Update(vec![res(CLUSTER, "a", "a2")], vec![delta(CLUSTER, &["a"], &[])]),
    ]

    delta_ads_removes_clusters_and_endpoints_after_listeners_and_routes:
    ads(vec![
        res(CLUSTER, "old", "old"),
        res(ENDPOINT, "old", "old"),
        res(LISTENER, "l", "l1"),
        res(ROUTE, "r", "r1"),
    ]) => [
        Request(sub(CLUSTER, &[], &[]), vec![delta(CLUSTER, &["old"], &[])]),
        Request(ack(1, CLUSTER), NOTHING),
        Request(sub(ENDPOINT, &["old", "new"], &[]), vec![delta(ENDPOINT, &["old"], &["new"])]),
        Request(ack(2, ENDPOINT), NOTHING),
        Request(sub(LISTENER, &[], &[]), vec![delta(LISTENER, &["l"], &[])]),
        Request(ack(3, LISTENER), NOTHING),
        Request(sub(ROUTE, &["r"], &[]), vec![delta(ROUTE, &["r"], &[])]),
        Request(ack(4, ROUTE), NOTHING),
        Update(vec![
            res(CLUSTER, "new", "new"),
            res(ENDPOINT, "new", "new"),
            res(LISTENER, "l", "l2"),
            res(ROUTE, "r", "r2"),
        ], vec![
            delta(CLUSTER, &["new"], &[]),
            delta(ENDPOINT, &["new"], &[]),
            delta(LISTENER, &["l"], &[]),
            delta(ROUTE, &["r"], &[]),
            delta(CLUSTER, &[], &["old"]),
            delta(ENDPOINT, &[], &["old"]),
        ]),
    ]

    delta_ttl_resources_carry_ttl_and_get_bodyless_heartbeats:
    ads(vec![res_ttl(CLUSTER, "t", "t", 3), res(CLUSTER, "p", "p")])
        .features(&[FEATURE_TTL]) => [
        Request(sub(CLUSTER, &["*"], &[]), vec![delta(CLUSTER, &["p", "t (ttl 3s)"], &[])]),
        Request(ack(1, CLUSTER), NOTHING),
        // Only resources with a TTL get heartbeats, with the version they were sent with.
        Heartbeat(vec![delta(CLUSTER, &["t (ttl 3s, no body)"], &[]).versions_as(1)]),
    ]

    /// No gRPC test (the SotW one has this half).
    delta_ttl_is_neither_sent_nor_refreshed_for_clients_that_do_not_announce_it:
    ads(vec![res_ttl(CLUSTER, "t", "t", 3)]) => [
        Request(sub(CLUSTER, &["*"], &[]), vec![delta(CLUSTER, &["t"], &[])]),
        Request(ack(1, CLUSTER), NOTHING),
        Heartbeat(NOTHING),
    ]

    /// No gRPC test (the SotW one has this rule).
    delta_unknown_types_are_remembered_and_served_when_they_exist:
    ads(vec![]) => [
        Request(sub(THING, &["t"], &[]), NOTHING),
        Update(vec![res(THING, "t", "t")], vec![delta(THING, &["t"], &[])]),
    ]

    the_name_limit_is_configurable:
    no_group().limits(|l| l.max_names_per_type = 2) => [
        Request(sub(ENDPOINT, &["a", "b"], &[]), NOTHING),
        Refused(sub(ENDPOINT, &["c"], &[]), ResourceExhausted, &["3 names", "max_names_per_type"]),
    ]

    /// Mirrors hostile.rs `huge_resource_names_are_refused_naming_the_limit_and_hold_nothing`.
    delta_huge_resource_names_are_refused_naming_the_limit:
    ads(vec![res(ENDPOINT, "a", "a")]) => [
        Refused(sub(ENDPOINT, &[], &[]).subscribing(vec!["n".repeat(4 << 20)]),
            ResourceExhausted, &["max_name_bytes"]),
    ]

    /// The Delta form of protocol_limits.rs `per_type_service_refuses_other_types_…`.
    delta_per_type_stream_refuses_other_types_and_serves_its_own:
    ads(vec![res(CLUSTER, "c", "c")]).per_type(CLUSTER) => [
        Request(sub("", &[], &[]), vec![delta(CLUSTER, &["c"], &[])]),
        Refused(sub(LISTENER, &[], &[]).acking(1), InvalidArgument, &["this stream serves"]),
    ]

    /// The Delta form of protocol_limits.rs `ads_request_without_or_with_malformed_type_url…`.
    delta_ads_request_without_or_with_malformed_type_url_is_invalid_argument:
    ads(vec![]) => [
        Refused(sub("", &[], &[]), InvalidArgument, &["type_url is required"]),
        Reconnect,
        Refused(sub("Cluster", &[], &[]), InvalidArgument, &["malformed type_url"]),
    ]

    /// No gRPC test.
    delta_a_stream_over_max_types_is_resource_exhausted:
    no_group().limits(|l| l.max_types = 2) => [
        Request(sub(CLUSTER, &[], &[]), NOTHING),
        Request(sub(LISTENER, &[], &[]), NOTHING),
        Request(sub(CLUSTER, &["c"], &[]), NOTHING),
        Refused(sub(ENDPOINT, &["e"], &[]), ResourceExhausted, &["at most 2", "max_types"]),
    ]

    /// No gRPC test.
    delta_names_over_max_names_bytes_are_resource_exhausted_and_unsubscribing_frees_them:
    no_group().limits(|l| l.max_names_bytes = CLUSTER.len() + 10) => [
        Request(sub(CLUSTER, &["0123456789"], &[]), NOTHING),
        Request(sub(CLUSTER, &["abcdefghij"], &["0123456789"]), NOTHING),
        Refused(sub(CLUSTER, &["k"], &[]), ResourceExhausted, &["max_names_bytes"]),
    ]
}
