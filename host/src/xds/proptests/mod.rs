//! Property tests of the SotW and Delta state machines: random requests and resource sets,
//! checked against a model of what the client asked for and holds.

mod model;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT};
use proptest::prelude::*;

use crate::cache::{Resource, ResourceSet};

use super::context::{Scope, StreamContext, StreamLimits, StreamProtocol};
use super::delta::DeltaStream;
use super::sotw::SotwStream;
use super::status::NodeRegistry;

use model::{delta_request, sotw_request, Client};

/// A full-state type and a per-name one.
pub(super) const TYPES: [&str; 2] = [CLUSTER, ENDPOINT];
/// Resource names (few, so that requests and sets keep meeting); the last is the wildcard.
pub(super) const NAMES: [&str; 4] = ["alpha", "bravo", "charlie", "*"];
/// How many real names there are.
const N: usize = NAMES.len() - 1;

/// One step: a request of the client on type `t` (an index in [`TYPES`]), or a new set.
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// SotW: these names replace the subscription. Delta: subscribe to them; the first
    /// request of a type also announces `initial` (a name, and the generation held or junk).
    Subscribe {
        t: usize,
        names: Vec<usize>,
        initial: Vec<(usize, Option<u8>)>,
    },
    /// SotW: the subscription without these names. Delta: unsubscribe from them.
    Unsubscribe { t: usize, names: Vec<usize> },
    /// An ACK of the latest response.
    Ack { t: usize },
    /// A NACK of the latest response, or of an older one (stale: the server ignores it).
    Nack { t: usize, stale: bool },
    /// The group's new resources: (type, name, generation of the body).
    Update(Vec<(usize, usize, u8)>),
}

fn op() -> impl Strategy<Value = Op> {
    // The wildcard now and then: while it is on, unsubscribing a name changes nothing.
    let name = || prop_oneof![6 => 0..N, 1 => Just(N)];
    let names = move || prop::collection::vec(name(), 0..4);
    let initial = prop::collection::vec((0..N, prop::option::of(0..3u8)), 0..4);
    prop_oneof![
        (0..2usize, names(), initial).prop_map(|(t, names, initial)| Op::Subscribe {
            t,
            names,
            initial
        }),
        (0..2usize, names()).prop_map(|(t, names)| Op::Unsubscribe { t, names }),
        (0..2usize).prop_map(|t| Op::Ack { t }),
        (0..2usize, any::<bool>()).prop_map(|(t, stale)| Op::Nack { t, stale }),
        prop::collection::vec((0..2usize, 0..N, 0..3u8), 0..6).prop_map(Op::Update),
    ]
}

pub(super) fn resource(t: usize, n: usize, generation: &str) -> Resource {
    Resource::new(
        TYPES[t],
        NAMES[n],
        format!("{}/{generation}", NAMES[n]).into_bytes(),
    )
}

fn resource_set(items: impl IntoIterator<Item = ((usize, usize), String)>) -> Arc<ResourceSet> {
    let unique: BTreeMap<(usize, usize), String> = items.into_iter().collect();
    let all = unique.iter().map(|((t, n), g)| resource(*t, *n, g));
    Arc::new(ResourceSet::new(all).unwrap())
}

fn limits(tight: bool) -> StreamLimits {
    StreamLimits {
        max_names_per_type: if tight { 3 } else { 4 },
        max_names_bytes: if tight {
            CLUSTER.len() + ENDPOINT.len() + 14
        } else {
            1 << 20
        },
        ..StreamLimits::default()
    }
}

fn context(limits: StreamLimits) -> StreamContext {
    let node = Node {
        id: "prop".into(),
        ..Node::default()
    };
    let record = Arc::new(NodeRegistry::default()).open(&node, "g");
    StreamContext::new(&node, Scope::Aggregated, limits, record)
}

type Items = Vec<(usize, usize, u8)>;

fn generations(items: Items) -> Arc<ResourceSet> {
    resource_set(items.into_iter().map(|(t, n, g)| ((t, n), g.to_string())))
}

/// One protocol as the run loop drives it.
trait Driver: StreamProtocol {
    /// Sends the request `op` makes on type `t`; whether the stream goes on.
    fn send(&mut self, clients: &mut [Client; 2], t: usize, op: Op, limits: &StreamLimits) -> bool;
    /// Applies the responses to the client.
    fn apply(clients: &mut [Client; 2], out: Vec<Self::Response>);
    /// What the client holds of a resource: its body (SotW) or its version (Delta).
    fn value(r: &Resource) -> String;
    /// Whether a name asked for that does not exist is reported removed.
    const TELLS_ABSENT: bool;
    /// Whether the client's view must be its subscription exactly: Delta deletes explicitly,
    /// SotW only for full-state types (elsewhere absence means nothing).
    fn exact(c: &Client, t: usize) -> bool;
}

impl Driver for SotwStream {
    const TELLS_ABSENT: bool = false;

    fn send(&mut self, clients: &mut [Client; 2], t: usize, op: Op, limits: &StreamLimits) -> bool {
        let current = clients[t].list.clone();
        let (list, nack) = match op {
            Op::Subscribe { names, .. } => (names_of(&names), None),
            Op::Unsubscribe { names, .. } => {
                let drop = names_of(&names);
                (
                    current.into_iter().filter(|n| !drop.contains(n)).collect(),
                    None,
                )
            }
            Op::Nack { stale, .. } => (current, Some(stale)),
            Op::Ack { .. } | Op::Update(_) => (current, None),
        };
        sotw_request(self, clients, t, list, nack, limits)
    }
    fn apply(clients: &mut [Client; 2], out: Vec<Self::Response>) {
        model::sotw_apply(clients, out);
    }
    fn value(r: &Resource) -> String {
        String::from_utf8(r.body().to_vec()).unwrap_or_default()
    }
    fn exact(c: &Client, t: usize) -> bool {
        t == 0 || c.wildcard
    }
}

impl Driver for DeltaStream {
    const TELLS_ABSENT: bool = true;

    fn send(&mut self, clients: &mut [Client; 2], t: usize, op: Op, limits: &StreamLimits) -> bool {
        let (sub, unsub, initial, nack) = match op {
            Op::Subscribe { names, initial, .. } => (names_of(&names), vec![], initial, None),
            Op::Unsubscribe { names, .. } => (vec![], names_of(&names), vec![], None),
            Op::Nack { stale, .. } => (vec![], vec![], vec![], Some(stale)),
            Op::Ack { .. } | Op::Update(_) => (vec![], vec![], vec![], None),
        };
        delta_request(self, clients, t, sub, unsub, &initial, nack, limits)
    }
    fn apply(clients: &mut [Client; 2], out: Vec<Self::Response>) {
        model::delta_apply(clients, out);
    }
    fn value(r: &Resource) -> String {
        r.version().to_owned()
    }
    fn exact(_: &Client, _: usize) -> bool {
        true
    }
}

fn names_of(idx: &[usize]) -> Vec<String> {
    idx.iter().map(|i| NAMES[*i].to_owned()).collect()
}

/// `view` holds every subscribed resource that exists, as it is now (only the names that
/// exist are compared where absence means nothing, or where a NACK rolled the view back).
fn check_view<D: Driver>(
    c: &Client,
    t: usize,
    set: &ResourceSet,
    view: &BTreeMap<String, String>,
    rolled_back: bool,
) {
    let of_type: HashMap<&str, &Arc<Resource>> = set
        .of_type(TYPES[t])
        .map(|o| o.iter().map(|r| (r.name(), r)).collect())
        .unwrap_or_default();
    let expected: BTreeMap<String, String> = of_type
        .iter()
        .filter(|(n, _)| c.covers(n))
        .map(|(n, r)| ((*n).to_owned(), D::value(r)))
        .collect();
    let mut view = view.clone();
    if rolled_back || !D::exact(c, t) {
        view.retain(|n, _| of_type.contains_key(n.as_str()));
    } else if D::TELLS_ABSENT {
        // Delta: every name asked for was sent, or reported not to exist (it is not waited for).
        let waiting = c
            .names()
            .find(|n| !view.contains_key(*n) && !c.told_absent.contains(*n));
        assert_eq!(waiting, None, "type {t}: {c:?}");
    }
    assert_eq!(view, expected, "type {t}: {c:?}");
}

fn run<D: Driver>(tight: bool, start: Items, ops: Vec<Op>, last: &[(usize, usize)]) {
    let limits = limits(tight);
    let mut set = generations(start);
    let mut stream = D::new(context(limits), Some(Arc::clone(&set)));
    let mut clients: [Client; 2] = Default::default();
    // Then the client ACKs everything, and every resource changes (`final` bodies are new).
    let acks = (0..2).map(|t| Op::Ack { t });
    let change = last.iter().map(|(t, n)| (*t, *n, u8::MAX)).collect();
    for op in ops.into_iter().chain(acks).chain([Op::Update(change)]) {
        let t = match &op {
            Op::Update(items) => {
                clients.iter_mut().for_each(|c| c.nacked = false);
                set = generations(items.clone());
                let out = stream.on_update(Some(Arc::clone(&set)));
                D::apply(&mut clients, out);
                None
            }
            Op::Subscribe { t, .. } => Some(*t),
            Op::Unsubscribe { t, .. } | Op::Ack { t } | Op::Nack { t, .. } => {
                clients[*t].requested.then_some(*t)
            }
        };
        if let Some(t) = t {
            if !stream.send(&mut clients, t, op, &limits) {
                return;
            }
        }
        for (t, c) in clients.iter().enumerate() {
            if c.requested {
                check_view::<D>(c, t, &set, &c.seen, false);
            }
        }
    }
    for (t, c) in clients.iter().enumerate().filter(|(_, c)| c.requested) {
        check_view::<D>(c, t, &set, &c.view, c.rolled_back);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// No panic; state within the limits (and refused exactly when over them); nothing sent
    /// after a NACK until the config or the subscription changes; the client holds every
    /// subscribed resource that exists after each step, and, whatever it NACKed, after it
    /// ACKs everything and the config changes.
    #[test]
    fn sotw_and_delta_streams_keep_their_invariants(
        tight in any::<bool>(),
        start in prop::collection::vec((0..2usize, 0..N, 0..3u8), 0..6),
        ops in prop::collection::vec(op(), 1..50),
        last in prop::collection::vec((0..2usize, 0..N), 0..6),
    ) {
        run::<SotwStream>(tight, start.clone(), ops.clone(), &last);
        run::<DeltaStream>(tight, start, ops, &last);
    }
}
