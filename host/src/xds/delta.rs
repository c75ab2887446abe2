//! Incremental (delta) xDS: per resource, what the client holds, and the difference to send.
//!
//! Pure, synchronous state like `sotw.rs`; the async shell in `stream.rs` drives it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use nebucloud_xds_proto::google::protobuf::Any;
use tonic::Status;

use crate::cache::{combined_version, Resource, ResourceSet};

use super::context::{pb_duration, Scope, StreamContext, StreamProtocol};
use super::status::{unix_now, Nack};
use super::subscription::SubscriptionState;
use super::types::{push_rank, removal_deferred};

/// Per type: the subscription and what the client holds.
#[derive(Debug, Default)]
struct DeltaType {
    sub: SubscriptionState,
    /// Name → version of every resource the client holds (told by us, or by the client in
    /// `initial_resource_versions`).
    held: HashMap<String, String>,
    /// Subscribed names that do not exist and that the client was told so.
    told_absent: BTreeSet<String>,
    nonce: Option<String>,
    sent_version: Option<String>,
    /// The first request still awaits an answer (a wildcard one is answered even if empty).
    first_unanswered: bool,
    /// Whether resources with a TTL were sent (heartbeats may be due).
    has_ttl: bool,
}

/// What one type's diff holds.
#[derive(Default)]
struct Diff {
    changed: Vec<Arc<Resource>>,
    removed: Vec<String>,
}

/// The delta protocol state of one stream.
#[derive(Debug)]
pub(crate) struct DeltaStream {
    ctx: StreamContext,
    set: Option<Arc<ResourceSet>>,
    types: BTreeMap<String, DeltaType>,
}

impl DeltaStream {
    /// The difference between what the client holds of `type_url` and the current set; updates
    /// the record of what it holds as if the diff were sent.
    fn diff(&mut self, type_url: &str) -> Option<Diff> {
        let set = self.set.as_ref()?;
        let st = self.types.get_mut(type_url)?;
        let of_type = set.of_type(type_url);
        let mut diff = Diff::default();
        let mut consider = |r: &Arc<Resource>, st: &mut DeltaType| {
            if st.held.get(r.name()).map(String::as_str) != Some(r.version()) {
                st.held.insert(r.name().to_owned(), r.version().to_owned());
                st.told_absent.remove(r.name());
                diff.changed.push(Arc::clone(r));
            }
        };
        if let Some(of_type) = of_type {
            if st.sub.is_wildcard() {
                for r in of_type.iter() {
                    consider(r, st);
                }
            } else {
                let names: Vec<String> = st.sub.names().iter().cloned().collect();
                for name in names {
                    if let Some(r) = of_type.get(&name) {
                        consider(r, st);
                    }
                }
            }
        }
        let exists = |name: &str| of_type.is_some_and(|t| t.get(name).is_some());
        let gone: Vec<String> = st.held.keys().filter(|n| !exists(n)).cloned().collect();
        for name in gone {
            st.held.remove(&name);
            diff.removed.push(name);
        }
        // A subscribed name that does not exist is reported removed once, so the client
        // stops waiting for it; it is sent when it appears.
        let absent: Vec<String> = st
            .sub
            .names()
            .iter()
            .filter(|n| !exists(n) && !st.told_absent.contains(*n) && !diff.removed.contains(*n))
            .cloned()
            .collect();
        for name in absent {
            st.told_absent.insert(name.clone());
            diff.removed.push(name);
        }
        diff.removed.sort();
        if diff.changed.is_empty()
            && diff.removed.is_empty()
            && !(st.first_unanswered && st.sub.is_wildcard())
        {
            st.first_unanswered = false;
            return None;
        }
        st.first_unanswered = false;
        Some(diff)
    }

    fn response(
        &mut self,
        type_url: &str,
        changed: &[Arc<Resource>],
        removed: Vec<String>,
        heartbeat: bool,
    ) -> DeltaDiscoveryResponse {
        let ttl = self.ctx.ttl;
        let resources = changed
            .iter()
            .map(|r| DeltaResource {
                name: r.name().to_owned(),
                version: r.version().to_owned(),
                resource: (!(heartbeat && r.ttl().is_some())).then(|| Any {
                    type_url: r.type_url().to_owned(),
                    value: r.body().clone(),
                }),
                ttl: r.ttl().filter(|_| ttl).map(pb_duration),
                ..DeltaResource::default()
            })
            .collect();
        let version = self
            .set
            .as_ref()
            .and_then(|s| s.of_type(type_url).map(|t| t.version().to_owned()))
            .unwrap_or_else(|| combined_version([]));
        let nonce = self.ctx.nonce();
        self.ctx.record.sent(type_url, &version, &nonce);
        if let Some(st) = self.types.get_mut(type_url) {
            st.has_ttl |= ttl && changed.iter().any(|r| r.ttl().is_some());
            st.nonce = Some(nonce.clone());
            st.sent_version = Some(version.clone());
        }
        DeltaDiscoveryResponse {
            system_version_info: version,
            resources,
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce,
            ..DeltaDiscoveryResponse::default()
        }
    }

    fn ttl_resources(&self, type_url: &str) -> Vec<Arc<Resource>> {
        let (Some(set), Some(st)) = (self.set.as_ref(), self.types.get(type_url)) else {
            return Vec::new();
        };
        let Some(of_type) = set.of_type(type_url) else {
            return Vec::new();
        };
        st.held
            .iter()
            .filter_map(|(name, version)| of_type.get(name).filter(|r| r.version() == version))
            .filter(|r| r.ttl().is_some())
            .cloned()
            .collect()
    }
}

impl StreamProtocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(ctx: StreamContext, set: Option<Arc<ResourceSet>>) -> Self {
        DeltaStream {
            ctx,
            set,
            types: BTreeMap::new(),
        }
    }

    fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
    ) -> Result<Vec<DeltaDiscoveryResponse>, Status> {
        let type_url = self.ctx.scope.resolve(&req.type_url)?;
        let first = !self.types.contains_key(&type_url);
        if first {
            self.ctx.check_types(self.types.len() + 1)?;
            self.ctx
                .check_names(&type_url, req.initial_resource_versions.len())?;
        }
        let st = self.types.entry(type_url.clone()).or_default();
        self.ctx
            .check_names(&type_url, st.sub.len() + req.resource_names_subscribe.len())?;

        if !first && !req.response_nonce.is_empty() {
            if st.nonce.as_deref() == Some(req.response_nonce.as_str()) {
                match &req.error_detail {
                    Some(err) => self.ctx.record.nacked(
                        &type_url,
                        Nack {
                            nonce: req.response_nonce.clone(),
                            rejected_version: st.sent_version.clone(),
                            kept_version: String::new(),
                            code: err.code,
                            message: err.message.clone(),
                            at_unix_secs: unix_now(),
                        },
                    ),
                    None => {
                        let v = st.sent_version.clone().unwrap_or_default();
                        self.ctx.record.acked(&type_url, &v);
                    }
                }
            } else {
                // Stale: its ACK/NACK is for an older response; its subscription changes
                // still count (the delta protocol's rule).
                metrics::counter!("xds_stale_requests_total", "mode" => "delta").increment(1);
            }
        }

        let change = st.sub.apply_delta(
            first,
            &req.resource_names_subscribe,
            &req.resource_names_unsubscribe,
        );
        if first {
            st.first_unanswered = true;
            st.held = req.initial_resource_versions.clone();
        }
        for name in &change.removed {
            // The client forgets what it unsubscribed from, unless the wildcard still covers it.
            if !st.sub.covers(name) {
                st.held.remove(name);
            }
            st.told_absent.remove(name);
        }
        if !st.sub.is_wildcard() {
            let sub = st.sub.clone();
            st.held.retain(|name, _| sub.covers(name));
        }
        Ok(self
            .diff(&type_url)
            .map(|d| vec![self.response(&type_url, &d.changed, d.removed, false)])
            .unwrap_or_default())
    }

    fn on_update(&mut self, set: Option<Arc<ResourceSet>>) -> Vec<DeltaDiscoveryResponse> {
        self.set = set;
        let mut order: Vec<String> = self.types.keys().cloned().collect();
        order.sort_by_key(|t| (push_rank(t), t.clone()));
        let aggregated = self.ctx.scope == Scope::Aggregated;
        let mut out = Vec::new();
        let mut deferred = Vec::new();
        for type_url in order {
            let Some(mut diff) = self.diff(&type_url) else {
                continue;
            };
            // Make before break: removals of clusters and endpoints go last on ADS.
            if aggregated && removal_deferred(&type_url) && !diff.removed.is_empty() {
                deferred.push((type_url.clone(), std::mem::take(&mut diff.removed)));
                if diff.changed.is_empty() {
                    continue;
                }
            }
            out.push(self.response(&type_url, &diff.changed, diff.removed, false));
        }
        for (type_url, removed) in deferred {
            out.push(self.response(&type_url, &[], removed, false));
        }
        out
    }

    fn needs_heartbeat(&self) -> bool {
        self.types.values().any(|t| t.has_ttl)
    }

    fn on_heartbeat(&mut self) -> Vec<DeltaDiscoveryResponse> {
        if !self.ctx.ttl {
            return Vec::new();
        }
        let types: Vec<String> = self
            .types
            .iter()
            .filter(|(_, t)| t.has_ttl)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for type_url in types {
            let due = self.ttl_resources(&type_url);
            if due.is_empty() {
                if let Some(st) = self.types.get_mut(&type_url) {
                    st.has_ttl = false;
                }
            } else {
                out.push(self.response(&type_url, &due, Vec::new(), true));
            }
        }
        out
    }
}
