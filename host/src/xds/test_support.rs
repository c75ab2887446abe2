//! Scripts for the protocol state machines: a table row opens a stream without a network,
//! plays its steps (requests, new resource sets, heartbeats, reconnects) and checks what
//! comes back after each one. "Nothing arrives" is an empty answer, not a quiet window.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::service::discovery::v3::{DiscoveryResponse, Resource as Wrapped};
use nebucloud_xds_proto::google::protobuf::Any;
use nebucloud_xds_proto::google::rpc::Status as RpcStatus;
use nebucloud_xds_proto::type_url::{CLUSTER, RESOURCE_WRAPPER};
use prost::Message;
use tonic::Code;

use crate::cache::{Resource, ResourceSet};

use super::context::{Scope, StreamContext, StreamLimits, StreamProtocol};
use super::status::{DeliveryState, NodeRegistry};

/// Generates one `#[test]` per row of a protocol's table: `name: setup => [steps]`. The name
/// states the behaviour (and is, where one exists, the name of the gRPC-level test it mirrors).
macro_rules! table {
    ($protocol:ty; $($(#[$meta:meta])* $name:ident: $setup:expr => [$($step:expr),* $(,)?])*) => {
        $(
            $(#[$meta])*
            #[test]
            fn $name() {
                $crate::xds::test_support::run::<$protocol>(
                    stringify!($name),
                    $setup,
                    vec![$($step),*],
                );
            }
        )*
    };
}
pub(super) use table;

/// Types no Envoy serves: remembered until the group has resources of them.
pub(super) const THING: &str = "type.googleapis.com/example.v1.Thing";
pub(super) const OTHER_THING: &str = "type.googleapis.com/example.v1.OtherThing";

/// The node id every scripted stream opens with.
const NODE_ID: &str = "n1";

/// A resource whose body is its label, as the gRPC tests' `res`.
pub(super) fn res(type_url: &str, name: &str, body: &str) -> Resource {
    Resource::new(type_url, name, body.as_bytes().to_vec())
}

/// A resource with a TTL of `secs` seconds.
pub(super) fn res_ttl(type_url: &str, name: &str, body: &str, secs: u64) -> Resource {
    res(type_url, name, body).with_ttl(Duration::from_secs(secs))
}

/// Owned names.
pub(super) fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The names `prefix0`, `prefix1`, … : a subscription too large to write out.
pub(super) fn many(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

/// How a stream opens: its scope, the client's features, its limits, and the group's
/// resources (`None`: the node's group does not exist).
pub(super) struct Setup {
    scope: Scope,
    features: &'static [&'static str],
    limits: StreamLimits,
    resources: Option<Vec<Resource>>,
}

/// An aggregated (ADS) stream of a client without features, whose group holds `resources`.
pub(super) fn ads(resources: Vec<Resource>) -> Setup {
    Setup {
        scope: Scope::Aggregated,
        features: &[],
        limits: StreamLimits::default(),
        resources: Some(resources),
    }
}

/// An aggregated stream of a node whose group has no resources at all (not even an empty set).
pub(super) fn no_group() -> Setup {
    Setup {
        resources: None,
        ..ads(Vec::new())
    }
}

impl Setup {
    /// A per-type service stream (CDS, LDS, …) instead of ADS.
    pub(super) fn per_type(mut self, type_url: &'static str) -> Self {
        self.scope = Scope::Single(type_url);
        self
    }

    /// The client features the node announces.
    pub(super) fn features(mut self, features: &'static [&'static str]) -> Self {
        self.features = features;
        self
    }

    /// The stream's limits: the defaults, changed by `f`.
    pub(super) fn limits(mut self, f: impl FnOnce(&mut StreamLimits)) -> Self {
        f(&mut self.limits);
        self
    }
}

/// The `error_detail` of a NACK with this message.
pub(super) fn error_detail(message: Option<&str>) -> Option<RpcStatus> {
    message.map(|message| RpcStatus {
        code: 3,
        message: message.to_owned(),
        details: Vec::new(),
    })
}

/// A nonce or version a request carries: none, that of an earlier response (1-based, counted
/// over the whole script as the gRPC tests' `r1`, `r2`, …), or a literal one.
#[derive(Debug, Clone, Copy, Default)]
pub(super) enum Ref {
    #[default]
    Empty,
    Of(usize),
    Literal(&'static str),
}

impl Ref {
    /// The nonce or version itself, `field` reading it from an earlier response.
    pub(super) fn resolve<R>(self, earlier: &[R], field: impl Fn(&R) -> &str) -> String {
        match self {
            Ref::Empty => String::new(),
            Ref::Literal(s) => s.to_owned(),
            Ref::Of(k) => field(&earlier[k - 1]).to_owned(),
        }
    }
}

/// Checks of the node's delivery record of one type; unset fields are not checked.
#[derive(Debug, Default)]
pub(super) struct Rec {
    state: Option<DeliveryState>,
    responses: Option<u64>,
    acks: Option<u64>,
    nacks: Option<u64>,
    nack_message: Option<&'static str>,
    acked: Option<usize>,
    rejected: Option<usize>,
    kept: Option<usize>,
}

/// A record check that checks nothing yet.
pub(super) fn rec() -> Rec {
    Rec::default()
}

impl Rec {
    pub(super) fn state(mut self, s: DeliveryState) -> Self {
        self.state = Some(s);
        self
    }
    pub(super) fn responses(mut self, n: u64) -> Self {
        self.responses = Some(n);
        self
    }
    pub(super) fn acks(mut self, n: u64) -> Self {
        self.acks = Some(n);
        self
    }
    pub(super) fn nacks(mut self, n: u64) -> Self {
        self.nacks = Some(n);
        self
    }
    /// The last NACK: its message, the version it rejected (that of response `rejected`)
    /// and the version the client kept (that of response `kept`, or empty).
    pub(super) fn last_nack(
        mut self,
        message: &'static str,
        rejected: usize,
        kept: Option<usize>,
    ) -> Self {
        (self.nack_message, self.rejected, self.kept) = (Some(message), Some(rejected), kept);
        self
    }
    /// The ACKed version is that of response `k`.
    pub(super) fn acked(mut self, k: usize) -> Self {
        self.acked = Some(k);
        self
    }
}

/// One step of a script and what must come back from it.
pub(super) enum Step<P: Scripted> {
    /// The client sends a request; these responses, in this order, come back.
    Request(P::Ask, Vec<P::Seen>),
    /// The client sends a request that ends the stream with this code, the message naming
    /// the rule (every one of these substrings).
    Refused(P::Ask, Code, &'static [&'static str]),
    /// The group's resources become these.
    Update(Vec<Resource>, Vec<P::Seen>),
    /// The heartbeat timer fires if the stream armed it (`needs_heartbeat`, as the shell
    /// asks); expecting heartbeats requires it armed.
    Heartbeat(Vec<P::Seen>),
    /// The stream ends and the same client opens a new one; responses keep their numbers.
    Reconnect,
    /// The node's record of a type.
    Record(&'static str, Rec),
}

/// What a protocol adds to the script runner: how a scripted request becomes a request, and
/// how a response is compared with the expected one.
pub(super) trait Scripted: StreamProtocol + Sized {
    /// A request as a table writes it.
    type Ask;
    /// A response as a table expects it.
    type Seen: Debug;
    fn request(ask: &Self::Ask, earlier: &[Self::Response]) -> Self::Request;
    /// Why `got` is not `want`, if it is not.
    fn mismatch(
        want: &Self::Seen,
        got: &Self::Response,
        earlier: &[Self::Response],
    ) -> Option<String>;
    /// A one-line picture of a response for failure messages.
    fn show(got: &Self::Response) -> String;
    fn nonce(r: &Self::Response) -> &str;
    fn version(r: &Self::Response) -> &str;
}

fn open<P: Scripted>(
    registry: &Arc<NodeRegistry>,
    setup: &Setup,
    set: Option<Arc<ResourceSet>>,
) -> P {
    let node = Node {
        id: NODE_ID.to_owned(),
        client_features: setup.features.iter().map(|f| (*f).to_owned()).collect(),
        ..Node::default()
    };
    let record = registry.open(&node, "g");
    P::new(
        StreamContext::new(&node, setup.scope, setup.limits, record),
        set,
    )
}

/// Plays `steps` on a fresh stream and panics at the first step whose outcome differs.
pub(super) fn run<P: Scripted>(row: &str, setup: Setup, steps: Vec<Step<P>>) {
    let registry = Arc::new(NodeRegistry::default());
    let mut set = setup
        .resources
        .as_ref()
        .map(|r| Arc::new(ResourceSet::new(r.iter().cloned()).unwrap()));
    let mut stream: P = open(&registry, &setup, set.clone());
    let mut sent: Vec<P::Response> = Vec::new();
    // Where the current stream's responses start: nonces are unique per stream.
    let mut first_of_stream = 0;
    for (i, step) in steps.into_iter().enumerate() {
        let at = format!("{row}, step {}", i + 1);
        let (want, got) = match step {
            Step::Request(ask, want) => {
                let got = stream.on_request(P::request(&ask, &sent));
                (want, got.unwrap_or_else(|s| panic!("{at}: refused: {s:?}")))
            }
            Step::Refused(ask, code, message) => {
                match stream.on_request(P::request(&ask, &sent)) {
                    Err(s) => {
                        assert_eq!(s.code(), code, "{at}: {}", s.message());
                        let lacks = message.iter().find(|m| !s.message().contains(**m));
                        assert!(lacks.is_none(), "{at}: {s:?} lacks {lacks:?}");
                    }
                    Ok(out) => panic!("{at}: not refused; sent {}", show_all::<P>(&out)),
                }
                continue;
            }
            Step::Update(resources, want) => {
                set = Some(Arc::new(ResourceSet::new(resources).unwrap()));
                (want, stream.on_update(set.clone()))
            }
            Step::Heartbeat(want) => {
                let armed = stream.needs_heartbeat();
                assert!(armed || want.is_empty(), "{at}: heartbeats are off");
                let got = armed.then(|| stream.on_heartbeat());
                (want, got.unwrap_or_default())
            }
            Step::Reconnect => {
                drop(stream);
                stream = open(&registry, &setup, set.clone());
                first_of_stream = sent.len();
                continue;
            }
            Step::Record(type_url, rec) => {
                check_record::<P>(&at, &registry, type_url, &rec, &sent);
                continue;
            }
        };
        assert_eq!(
            want.len(),
            got.len(),
            "{at}: expected {want:#?}\ngot {}",
            show_all::<P>(&got)
        );
        for (w, g) in want.iter().zip(got) {
            if let Some(why) = P::mismatch(w, &g, &sent) {
                panic!("{at}: {why}\nexpected {w:?}\ngot {}", P::show(&g));
            }
            let nonce = P::nonce(&g);
            let reused = sent[first_of_stream..].iter().any(|r| P::nonce(r) == nonce);
            assert!(!reused, "{at}: nonce {nonce:?} reused on one stream");
            sent.push(g);
        }
    }
}

fn show_all<P: Scripted>(out: &[P::Response]) -> String {
    let lines: Vec<String> = out.iter().map(|r| P::show(r)).collect();
    format!("[{}]", lines.join(",\n "))
}

fn check_record<P: Scripted>(
    at: &str,
    registry: &NodeRegistry,
    type_url: &str,
    rec: &Rec,
    sent: &[P::Response],
) {
    fn check<T: PartialEq + Debug>(at: &str, field: &str, want: Option<T>, got: T) {
        if let Some(want) = want {
            assert_eq!(want, got, "{at}: {field}");
        }
    }
    let node = registry
        .get(NODE_ID)
        .unwrap_or_else(|| panic!("{at}: no record of the node"));
    let t = node.types.get(type_url).cloned().unwrap_or_default();
    let version = |k: usize| Some(P::version(&sent[k - 1]).to_owned());
    check(at, "state", rec.state.map(Some), t.state);
    check(at, "responses", rec.responses, t.responses);
    check(at, "acks", rec.acks, t.acks);
    check(at, "nacks", rec.nacks, t.nacks);
    check(at, "acked_version", rec.acked.map(version), t.acked_version);
    let nack = t.last_nack.as_ref();
    let message = nack.map(|n| n.message.as_str());
    check(at, "NACK message", rec.nack_message.map(Some), message);
    let rejected = nack.and_then(|n| n.rejected_version.clone());
    check(
        at,
        "NACK rejected_version",
        rec.rejected.map(version),
        rejected,
    );
    let kept = nack.map(|n| n.kept_version.clone()).unwrap_or_default();
    let kept_want = rec.kept.and_then(version).unwrap_or_default();
    check(
        at,
        "NACK kept_version",
        rec.nack_message.map(|_| kept_want),
        kept,
    );
}

/// The resources of a SotW response as a table writes them: each its body, a `Resource`
/// wrapper as `body (ttl Ns)` or, in a heartbeat, `name (ttl Ns, no body)`; a resource whose
/// type is not the response's says so.
pub(super) fn sotw_resources(got: &DiscoveryResponse) -> Vec<String> {
    let body = |a: &Any| match String::from_utf8_lossy(&a.value) {
        _ if a.type_url == CLUSTER && super::warming::tests::shown(&a.value).is_some() => {
            super::warming::tests::shown(&a.value).unwrap_or_default()
        }
        text if a.type_url == got.type_url => text.into_owned(),
        text => format!("{text} [as {}]", a.type_url),
    };
    let shown = |a: &Any| {
        if a.type_url != RESOURCE_WRAPPER {
            return body(a);
        }
        let w = Wrapped::decode(a.value.clone()).expect("a Resource wrapper");
        let ttl = w
            .ttl
            .map_or("no ttl".into(), |d| format!("ttl {}s", d.seconds));
        match &w.resource {
            Some(inner) => format!("{} ({ttl})", body(inner)),
            None => format!("{} ({ttl}, no body)", w.name),
        }
    };
    got.resources.iter().map(shown).collect()
}
