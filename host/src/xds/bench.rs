//! Entry points for `benches/benches/subscriptions.rs`: one large request handled by a
//! stream's protocol state, with no network in between. Not a stable API.

use std::collections::HashMap;
use std::sync::Arc;

use nebucloud_xds_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use nebucloud_xds_proto::type_url::ENDPOINT;

use crate::cache::{Resource, ResourceSet};

use super::context::{Scope, StreamContext, StreamLimits, StreamProtocol};
use super::delta::DeltaStream;
use super::sotw::SotwStream;

/// `n` endpoints named `ep-0`, `ep-1`, …, and what a client that held all of them would
/// announce on reconnecting.
pub struct ManyNames {
    set: Arc<ResourceSet>,
    names: Vec<String>,
    versions: HashMap<String, String>,
    sotw_version: String,
    limits: StreamLimits,
}

/// One request, built outside the timing, ready for a stream's state to handle.
pub struct PreparedRequest(Prepared);

enum Prepared {
    Sotw(SotwStream, Option<DiscoveryRequest>),
    Delta(DeltaStream, Option<DeltaDiscoveryRequest>),
}

impl ManyNames {
    /// The group's `n` endpoints and the client's view of them.
    pub fn new(n: usize) -> Self {
        let names: Vec<String> = (0..n).map(|i| format!("ep-{i}")).collect();
        let set = ResourceSet::new(
            names
                .iter()
                .map(|name| Resource::new(ENDPOINT, name.clone(), name.clone().into_bytes())),
        )
        .unwrap_or_default();
        let versions = set
            .iter()
            .map(|r| (r.name().to_owned(), r.version().to_owned()))
            .collect();
        let limits = StreamLimits {
            max_names_per_type: 2 * n + 1,
            ..StreamLimits::default()
        };
        let mut many = ManyNames {
            set: Arc::new(set),
            names,
            versions,
            sotw_version: String::new(),
            limits,
        };
        let mut probe = many.sotw_stream();
        many.sotw_version = probe
            .on_request(many.sotw_request(Vec::new(), String::new(), String::new()))
            .ok()
            .and_then(|r| r.into_iter().next())
            .map(|r| r.version_info)
            .unwrap_or_default();
        many
    }

    /// A Delta stream's first request after a reconnect: it subscribes to every name and
    /// announces each at the version it has, so the answer is empty.
    pub fn delta_reconnect(&self) -> PreparedRequest {
        let stream = DeltaStream::new(self.context(), Some(Arc::clone(&self.set)));
        let request = DeltaDiscoveryRequest {
            type_url: ENDPOINT.to_owned(),
            node: None,
            resource_names_subscribe: self.names.clone(),
            initial_resource_versions: self.versions.clone(),
            ..DeltaDiscoveryRequest::default()
        };
        PreparedRequest(Prepared::Delta(stream, Some(request)))
    }

    /// A SotW stream's first request after a reconnect: it names every resource with the
    /// version of exactly those, so the answer is empty.
    pub fn sotw_reconnect(&self) -> PreparedRequest {
        let request = self.sotw_request(Vec::new(), self.sotw_version.clone(), String::new());
        PreparedRequest(Prepared::Sotw(self.sotw_stream(), Some(request)))
    }

    /// A SotW stream that holds every name (ACKed) and now also names as many that do not
    /// exist: nothing new exists, so the answer is empty.
    pub fn sotw_add_absent(&self) -> PreparedRequest {
        let mut stream = self.sotw_stream();
        let nonce = stream
            .on_request(self.sotw_request(Vec::new(), String::new(), String::new()))
            .ok()
            .and_then(|r| r.into_iter().next())
            .map(|r| r.nonce)
            .unwrap_or_default();
        let absent = (0..self.names.len())
            .map(|i| format!("absent-{i}"))
            .collect();
        let request = self.sotw_request(absent, self.sotw_version.clone(), nonce);
        PreparedRequest(Prepared::Sotw(stream, Some(request)))
    }

    fn context(&self) -> StreamContext {
        StreamContext::detached(Scope::Aggregated, self.limits)
    }

    fn sotw_stream(&self) -> SotwStream {
        SotwStream::new(self.context(), Some(Arc::clone(&self.set)))
    }

    fn sotw_request(&self, more: Vec<String>, version: String, nonce: String) -> DiscoveryRequest {
        let mut resource_names = self.names.clone();
        resource_names.extend(more);
        DiscoveryRequest {
            type_url: ENDPOINT.to_owned(),
            resource_names,
            version_info: version,
            response_nonce: nonce,
            ..DiscoveryRequest::default()
        }
    }
}

impl PreparedRequest {
    /// Handles the request (once; later calls do nothing): how many resources and removals
    /// the responses carry, or the status that would end the stream.
    pub fn handle(&mut self) -> Result<usize, String> {
        let out = match &mut self.0 {
            Prepared::Sotw(stream, request) => request.take().map(|r| {
                stream
                    .on_request(r)
                    .map(|out| out.iter().map(|r| r.resource_count).sum())
            }),
            Prepared::Delta(stream, request) => request.take().map(|r| {
                stream.on_request(r).map(|out| {
                    out.iter()
                        .map(|r| r.resources.len() + r.removed_resources.len())
                        .sum()
                })
            }),
        };
        out.unwrap_or(Ok(0)).map_err(|s| s.message().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 50_000;

    fn name(i: usize) -> String {
        format!("ep-{i}")
    }

    fn endpoints(range: impl Iterator<Item = usize>) -> ResourceSet {
        ResourceSet::new(range.map(|i| Resource::new(ENDPOINT, name(i), name(i).into_bytes())))
            .unwrap()
    }

    fn limits() -> StreamLimits {
        StreamLimits {
            max_names_per_type: 3 * N,
            ..StreamLimits::default()
        }
    }

    fn sotw(names: Vec<String>, version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: ENDPOINT.to_owned(),
            resource_names: names,
            version_info: version.to_owned(),
            response_nonce: nonce.to_owned(),
            ..DiscoveryRequest::default()
        }
    }

    #[test]
    fn the_benchmarked_requests_are_answered_with_nothing() {
        let many = ManyNames::new(1000);
        for mut case in [
            many.delta_reconnect(),
            many.sotw_reconnect(),
            many.sotw_add_absent(),
        ] {
            assert_eq!(case.handle(), Ok(0));
        }
    }

    #[test]
    fn delta_reconnect_with_50k_names_sends_only_what_changed_and_removes_what_is_gone() {
        // Every tenth name is gone from the set; every seventh is held at an old version.
        let set = endpoints((0..N).filter(|i| i % 10 != 0));
        let initial: HashMap<String, String> = (0..N)
            .map(|i| {
                let current = set.get(ENDPOINT, &name(i)).filter(|_| i % 7 != 0);
                let version = current.map_or("old".to_owned(), |r| r.version().to_owned());
                (name(i), version)
            })
            .collect();
        let ctx = StreamContext::detached(Scope::Aggregated, StreamLimits::default());
        let mut d = DeltaStream::new(ctx, Some(Arc::new(set)));
        let out = d
            .on_request(DeltaDiscoveryRequest {
                type_url: ENDPOINT.to_owned(),
                resource_names_subscribe: (0..N).map(name).collect(),
                initial_resource_versions: initial,
                ..DeltaDiscoveryRequest::default()
            })
            .unwrap();
        assert_eq!(out.len(), 1);
        let mut sent: Vec<&str> = out[0].resources.iter().map(|r| r.name.as_str()).collect();
        sent.sort_unstable();
        let mut changed: Vec<String> = (0..N)
            .filter(|i| i % 10 != 0 && i % 7 == 0)
            .map(name)
            .collect();
        changed.sort_unstable();
        assert_eq!(sent, changed);
        let mut gone: Vec<String> = (0..N).filter(|i| i % 10 == 0).map(name).collect();
        gone.sort_unstable();
        assert_eq!(
            out[0].removed_resources, gone,
            "each gone name removed once"
        );

        // The announced versions are reconciled: the stream holds the names and the type URL.
        let bytes = |r: std::ops::Range<usize>| r.map(|i| name(i).len()).sum::<usize>();
        assert_eq!(d.name_bytes(), ENDPOINT.len() + bytes(0..N));
        let ack = DeltaDiscoveryRequest {
            type_url: ENDPOINT.to_owned(),
            response_nonce: out[0].nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        };
        assert!(d.on_request(ack).unwrap().is_empty());
        let unsubscribe = DeltaDiscoveryRequest {
            type_url: ENDPOINT.to_owned(),
            resource_names_unsubscribe: (0..N / 2).map(name).collect(),
            ..DeltaDiscoveryRequest::default()
        };
        assert!(d.on_request(unsubscribe).unwrap().is_empty());
        assert_eq!(d.name_bytes(), ENDPOINT.len() + bytes(N / 2..N));
    }

    #[test]
    fn sotw_with_50k_names_answers_only_new_names_that_exist() {
        let set = Arc::new(endpoints(0..=N));
        let ctx = || StreamContext::detached(Scope::Aggregated, limits());
        let mut s = SotwStream::new(ctx(), Some(Arc::clone(&set)));
        let held: Vec<String> = (0..N).map(name).collect();
        let out = s.on_request(sotw(held.clone(), "", "")).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].resource_count, N);
        let (version, nonce) = (out[0].version_info.clone(), out[0].nonce.clone());
        assert!(s
            .on_request(sotw(held.clone(), &version, &nonce))
            .unwrap()
            .is_empty());

        // 50,000 more names, none of which exists: nothing to send.
        let mut more = held.clone();
        more.extend((0..N).map(|i| format!("absent-{i}")));
        assert!(s
            .on_request(sotw(more.clone(), &version, &nonce))
            .unwrap()
            .is_empty());
        let absent_bytes: usize = (0..N).map(|i| format!("absent-{i}").len()).sum();
        let held_bytes: usize = held.iter().map(String::len).sum();
        assert_eq!(s.name_bytes(), ENDPOINT.len() + held_bytes + absent_bytes);

        // One more that exists: the whole selection, once.
        more.push(name(N));
        let out = s.on_request(sotw(more, &version, &nonce)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].resource_count, N + 1);

        // A reconnecting client that holds exactly the selection is sent nothing.
        let mut again = SotwStream::new(ctx(), Some(set));
        assert!(again
            .on_request(sotw(held, &version, ""))
            .unwrap()
            .is_empty());
    }
}
