//! The client side of the property tests: what a client asked for and holds, how each
//! response changes that, and the requests it sends (with the refusals they must meet).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use nebucloud_xds_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest,
};
use nebucloud_xds_proto::google::rpc::Status as RpcStatus;
use tonic::Code;

use crate::xds::context::{StreamLimits, StreamProtocol};
use crate::xds::delta::DeltaStream;
use crate::xds::sotw::SotwStream;
use crate::xds::wire::SotwResponse;

use super::{resource, NAMES, TYPES};

/// What the client asked for and holds of one type.
#[derive(Debug, Default, Clone)]
pub(super) struct Client {
    pub(super) requested: bool,
    pub(super) wildcard: bool,
    names: BTreeSet<String>,
    ever_named: bool,
    /// SotW: the last list sent. Delta: unused.
    pub(super) list: Vec<String>,
    /// Name → body (SotW) or version (Delta).
    pub(super) view: BTreeMap<String, String>,
    /// The same with every response applied, NACKed or not: what the server must believe
    /// the client holds.
    pub(super) seen: BTreeMap<String, String>,
    before_last: BTreeMap<String, String>,
    nonces: Vec<String>,
    /// A NACK of the latest response, with no config or subscription change since.
    pub(super) nacked: bool,
    /// Delta: names reported removed and not sent since.
    pub(super) told_absent: BTreeSet<String>,
    /// Whether a NACK ever rolled the view back (the server then cannot know what it holds).
    pub(super) rolled_back: bool,
}

impl Client {
    fn bytes(&self, t: usize) -> usize {
        if !self.requested {
            return 0;
        }
        TYPES[t].len() + self.names.iter().map(String::len).sum::<usize>()
    }
    pub(super) fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
    pub(super) fn names(&self) -> impl Iterator<Item = &String> {
        self.names.iter()
    }
    fn forget_uncovered(&mut self) {
        let (wildcard, names) = (self.wildcard, &self.names);
        self.view.retain(|n, _| wildcard || names.contains(n));
        self.seen.retain(|n, _| wildcard || names.contains(n));
        self.told_absent.retain(|n| names.contains(n));
    }
    fn nack(&mut self, stale: bool) -> Option<String> {
        let latest = self.nonces.last().cloned()?;
        if stale {
            return Some(
                self.nonces
                    .iter()
                    .rev()
                    .nth(1)
                    .cloned()
                    .unwrap_or("0".into()),
            );
        }
        self.view = self.before_last.clone();
        self.rolled_back = true;
        self.nacked = true;
        Some(latest)
    }
    fn received(&mut self, nonce: &str) {
        assert!(!self.nacked, "a response after a NACK with nothing changed");
        self.before_last = self.view.clone();
        self.nonces.push(nonce.to_owned());
    }
}

fn error() -> Option<RpcStatus> {
    Some(RpcStatus {
        code: 3,
        message: "rejected".into(),
        details: vec![],
    })
}

pub(super) fn sotw_apply(clients: &mut [Client; 2], out: Vec<SotwResponse>) {
    for r in out.iter().map(SotwResponse::message) {
        let t = TYPES.iter().position(|t| *t == r.type_url).unwrap();
        let c = &mut clients[t];
        c.received(&r.nonce);
        if t == 0 || c.wildcard {
            c.view.clear();
            c.seen.clear();
        }
        for any in r.resources {
            let body = String::from_utf8(any.value.to_vec()).unwrap();
            let name = body.split('/').next().unwrap().to_owned();
            c.seen.insert(name.clone(), body.clone());
            c.view.insert(name, body);
        }
    }
}

pub(super) fn delta_apply(clients: &mut [Client; 2], out: Vec<DeltaDiscoveryResponse>) {
    for r in out {
        let t = TYPES.iter().position(|t| *t == r.type_url).unwrap();
        let c = &mut clients[t];
        c.received(&r.nonce);
        for res in r.resources {
            c.told_absent.remove(&res.name);
            c.seen.insert(res.name.clone(), res.version.clone());
            c.view.insert(res.name, res.version);
        }
        for name in r.removed_resources {
            c.view.remove(&name);
            c.seen.remove(&name);
            c.told_absent.insert(name);
        }
    }
}

/// Sends one SotW request; whether the stream goes on (a refusal ends it, and must be due).
pub(super) fn sotw_request(
    s: &mut SotwStream,
    clients: &mut [Client; 2],
    t: usize,
    list: Vec<String>,
    nack: Option<bool>,
    limits: &StreamLimits,
) -> bool {
    let c = &clients[t];
    let first = !c.requested;
    let mut next = c.clone();
    next.requested = true;
    if list.is_empty() {
        next.wildcard = !next.ever_named;
    } else {
        next.ever_named = true;
        next.wildcard = list.iter().any(|n| n == "*");
    }
    next.names = list.iter().filter(|n| *n != "*").cloned().collect();
    next.list = list.clone();
    let latest = c.nonces.last().cloned().unwrap_or_default();
    let (nonce, error_detail) = match nack.map(|stale| next.nack(stale)) {
        Some(Some(nonce)) => (nonce, error()),
        _ => (latest, None),
    };
    let others = clients[1 - t].bytes(1 - t);
    let over =
        list.len() > limits.max_names_per_type || others + next.bytes(t) > limits.max_names_bytes;
    let changed = first || next.wildcard != c.wildcard || next.names != c.names;
    let req = DiscoveryRequest {
        type_url: TYPES[t].to_owned(),
        resource_names: list,
        version_info: if first { "junk".into() } else { String::new() },
        response_nonce: nonce,
        error_detail,
        ..DiscoveryRequest::default()
    };
    match s.on_request(req) {
        Err(status) => {
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(over, "refused within the limits: {status:?}");
            false
        }
        Ok(out) => {
            assert!(!over, "accepted over the limits");
            assert_eq!(s.name_bytes(), others + next.bytes(t));
            assert!(s.name_bytes() <= limits.max_names_bytes);
            if changed {
                next.nacked = false;
            }
            next.forget_uncovered();
            clients[t] = next;
            sotw_apply(clients, out);
            true
        }
    }
}

/// Sends one Delta request; whether the stream goes on (a refusal ends it, and must be due).
#[allow(clippy::too_many_arguments)]
pub(super) fn delta_request(
    d: &mut DeltaStream,
    clients: &mut [Client; 2],
    t: usize,
    subscribe: Vec<String>,
    unsubscribe: Vec<String>,
    initial: &[(usize, Option<u8>)],
    nack: Option<bool>,
    limits: &StreamLimits,
) -> bool {
    let c = &clients[t];
    let first = !c.requested;
    let mut next = c.clone();
    next.requested = true;
    if first && subscribe.is_empty() && !next.ever_named {
        next.wildcard = true;
    }
    for n in &subscribe {
        next.ever_named = true;
        if n == "*" {
            next.wildcard = true;
        } else {
            next.names.insert(n.clone());
        }
    }
    for n in &unsubscribe {
        if n == "*" {
            next.wildcard = false;
        } else {
            next.names.remove(n);
        }
    }
    let announced: HashMap<String, String> = initial
        .iter()
        .filter(|(n, _)| first && next.covers(NAMES[*n]))
        .map(|(n, g)| {
            let version = g.map_or("junk".into(), |g| {
                resource(t, *n, &g.to_string()).version().to_owned()
            });
            (NAMES[*n].to_owned(), version)
        })
        .collect();
    if first {
        next.view = announced.clone().into_iter().collect();
        next.seen = next.view.clone();
    }
    let latest = c.nonces.last().cloned().unwrap_or_default();
    let (nonce, error_detail) = match nack.map(|stale| next.nack(stale)) {
        Some(Some(nonce)) => (nonce, error()),
        _ if nack.is_some() || subscribe.is_empty() && unsubscribe.is_empty() => (latest, None),
        _ => (String::new(), None),
    };
    let others = clients[1 - t].bytes(1 - t);
    let pending: usize = announced.iter().map(|(k, v)| k.len() + v.len()).sum();
    let over = announced.len() > limits.max_names_per_type
        || c.names.len() + subscribe.len() > limits.max_names_per_type
        || others + next.bytes(t) + pending > limits.max_names_bytes;
    let changed = first || next.wildcard != c.wildcard || next.names != c.names;
    let req = DeltaDiscoveryRequest {
        type_url: TYPES[t].to_owned(),
        resource_names_subscribe: subscribe,
        resource_names_unsubscribe: unsubscribe,
        initial_resource_versions: announced,
        response_nonce: nonce,
        error_detail,
        ..DeltaDiscoveryRequest::default()
    };
    match d.on_request(req) {
        Err(status) => {
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(over, "refused within the limits: {status:?}");
            false
        }
        Ok(out) => {
            assert!(!over, "accepted over the limits");
            // The announced versions were reconciled with the set in this request.
            assert_eq!(d.name_bytes(), others + next.bytes(t));
            assert!(d.name_bytes() <= limits.max_names_bytes);
            if changed {
                next.nacked = false;
            }
            next.forget_uncovered();
            clients[t] = next;
            delta_apply(clients, out);
            true
        }
    }
}
