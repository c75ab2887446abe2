//! Incremental (delta) xDS: per resource, what the client holds, and the difference to send.
//!
//! Pure, synchronous state like `sotw.rs`; the async shell in `stream.rs` drives it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT};
use tonic::Status;

use crate::cache::{combined_version, Resource, ResourceSet};

use super::context::{pb_duration, serves, Scope, StreamContext, StreamProtocol};
use super::nack::Nack;
use super::types::{push_rank, removal_deferred};
use super::warming;

mod held;
use held::DeltaType;

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
    rewarm: warming::Rewarm,
}

impl DeltaStream {
    /// The difference between what the client holds of `type_url` and the current set; updates
    /// the record of what it holds as if the diff were sent.
    ///
    /// O((h + n) log m) for h names held, n subscribed and m in the set: every name is looked
    /// up, never searched for.
    fn diff(&mut self, type_url: &str) -> Option<Diff> {
        let set = self.set.as_ref()?;
        let st = self.types.get_mut(type_url)?;
        let of_type = set.of_type(type_url);
        let exists = |name: &str| of_type.is_some_and(|t| t.get(name).is_some());
        let DeltaType {
            sub,
            held,
            told_absent,
            ..
        } = &mut *st;
        let mut diff = Diff::default();
        let mut replaced = Vec::new();
        let mut consider = |r: &Arc<Resource>| {
            if held.get(r.name()).map(String::as_str) != Some(r.version()) {
                let before = held.insert(r.name().to_owned(), r.version().to_owned());
                told_absent.remove(r.name());
                diff.changed.push(Arc::clone(r));
                if type_url == CLUSTER && before.is_some() {
                    // A cluster the client held in another version warms (`warming`).
                    replaced.push(Arc::clone(r));
                }
            }
        };
        if let Some(of_type) = of_type {
            if sub.is_wildcard() {
                of_type.iter().for_each(&mut consider);
            } else {
                sub.names()
                    .iter()
                    .filter_map(|name| of_type.get(name))
                    .for_each(&mut consider);
            }
        }
        held.retain(|name, _| {
            let keep = exists(name);
            if !keep {
                diff.removed.push(name.clone());
                // A subscribed name reported removed here need not be reported absent again.
                if sub.names().contains(name) {
                    told_absent.insert(name.clone());
                }
            }
            keep
        });
        // A subscribed name that does not exist is reported removed once, so the client
        // stops waiting for it; it is sent when it appears. A type the server does not know
        // and the group has none of is left unanswered (the spec allows it).
        if serves(type_url, Some(set)) {
            for name in sub.names() {
                if !exists(name) && told_absent.insert(name.clone()) {
                    diff.removed.push(name.clone());
                }
            }
        }
        diff.removed.sort_unstable();
        self.rewarm.clusters_replaced(&replaced);
        // Everything the client announced is now reconciled with the set: what it still
        // holds is what the set has.
        self.ctx.release_bytes(std::mem::take(&mut st.announced));
        let first_unanswered = std::mem::take(&mut st.first_unanswered);
        let answer_empty = first_unanswered && st.sub.is_wildcard() && serves(type_url, Some(set));
        if diff.changed.is_empty() && diff.removed.is_empty() && !answer_empty {
            return None;
        }
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
                resource: (!(heartbeat && r.ttl().is_some())).then(|| r.to_any()),
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
            // A heartbeat is no new version: a rejection of the last one still stands.
            st.rejected &= heartbeat;
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

    /// The endpoints owed to clusters that warm (see `warming`) that the client holds
    /// unchanged, subscribes to and does not get in `sent` already; none after a rejection.
    fn owed_endpoints(&mut self, sent: &[Arc<Resource>]) -> Vec<Arc<Resource>> {
        let (Some(set), Some(st)) = (self.set.as_ref(), self.types.get(ENDPOINT)) else {
            return Vec::new();
        };
        if st.rejected || !self.rewarm.owes() {
            return Vec::new();
        }
        let in_diff: HashSet<&str> = sent.iter().map(|r| r.name()).collect();
        let names = self.rewarm.take();
        let again = warming::endpoints(set, &st.sub, &names, |r| {
            !in_diff.contains(r.name())
                && st.held.get(r.name()).map(String::as_str) == Some(r.version())
        });
        warming::count_resent("delta", again.len());
        again
    }

    /// An endpoints diff with the endpoints owed to clusters that warm added (`warming`).
    fn with_owed(&mut self, mut diff: Option<Diff>) -> Option<Diff> {
        let sent = diff.as_ref().map_or(&[][..], |d| &d.changed[..]);
        let again = self.owed_endpoints(sent);
        if !again.is_empty() {
            diff.get_or_insert_with(Diff::default).changed.extend(again);
        }
        diff
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
    const INCREMENTAL: bool = true;

    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(ctx: StreamContext, set: Option<Arc<ResourceSet>>) -> Self {
        let rewarm = warming::Rewarm::new(ctx.scope == Scope::Aggregated);
        DeltaStream {
            ctx,
            set,
            types: BTreeMap::new(),
            rewarm,
        }
    }

    fn on_request(
        &mut self,
        mut req: DeltaDiscoveryRequest,
    ) -> Result<Vec<DeltaDiscoveryResponse>, Status> {
        let type_url = self.ctx.resolve(&req.type_url)?;
        let first = !self.types.contains_key(&type_url);
        let subscribe = req.resource_names_subscribe.iter().map(String::as_str);
        self.ctx.check_name_bytes(&type_url, subscribe)?;
        let set = self.set.as_deref();
        if !self
            .ctx
            .admit_type(&type_url, set, first, self.types.keys())
        {
            return Ok(Vec::new());
        }
        if first {
            self.ctx.check_types(self.types.len() + 1)?;
            let initial = &req.initial_resource_versions;
            self.ctx.check_names(&type_url, initial.len())?;
            let announced = initial.iter().flat_map(|(n, v)| [n.as_str(), v.as_str()]);
            self.ctx.check_name_bytes(&type_url, announced)?;
            self.ctx.hold_bytes(0, type_url.len())?;
        }
        let st = self.types.entry(type_url.clone()).or_default();
        self.ctx
            .check_names(&type_url, st.sub.len() + req.resource_names_subscribe.len())?;

        if !first && !req.response_nonce.is_empty() {
            if st.nonce.as_deref() == Some(req.response_nonce.as_str()) {
                st.rejected = req.error_detail.is_some();
                match &req.error_detail {
                    Some(err) => self.ctx.record.nacked(
                        &type_url,
                        Nack::from_client(&req.response_nonce, st.sent_version.clone(), "", err),
                    ),
                    None => {
                        let v = st.sent_version.as_deref().unwrap_or_default();
                        self.ctx.record.acked(&type_url, v);
                    }
                }
            } else {
                // Stale: its ACK/NACK is for an older response; its subscription changes
                // still count (the delta protocol's rule).
                metrics::counter!("xds_stale_requests_total", "mode" => "delta").increment(1);
            }
        }

        let before = st.sub.bytes() + st.announced;
        let change = st.sub.apply_delta(
            first,
            &req.resource_names_subscribe,
            &req.resource_names_unsubscribe,
        );
        if first {
            st.first_unanswered = true;
            st.held = std::mem::take(&mut req.initial_resource_versions);
            st.announced = st.held.iter().map(|(n, v)| n.len() + v.len()).sum();
            st.forget_uncovered();
        }
        for name in &change.removed {
            // The client forgets what it unsubscribed from, unless the wildcard still covers it.
            if !st.sub.covers(name) {
                st.forget(name);
            }
            st.told_absent.remove(name);
        }
        if change.wildcard_removed {
            // Checked only when the wildcard goes: explicit unsubscribes are handled one by one.
            st.forget_uncovered();
        }
        self.ctx.hold_bytes(before, st.sub.bytes() + st.announced)?;
        let mut diff = self.diff(&type_url);
        if type_url == ENDPOINT {
            diff = self.with_owed(diff);
        }
        let mut out = Vec::new();
        if let Some(d) = diff {
            out.push(self.response(&type_url, &d.changed, d.removed, false));
        }
        if type_url == CLUSTER {
            // Endpoints owed to clusters that warm go right after them.
            let again = self.owed_endpoints(&[]);
            if !again.is_empty() {
                out.push(self.response(ENDPOINT, &again, Vec::new(), false));
            }
        }
        Ok(out)
    }

    fn on_update(&mut self, set: Option<Arc<ResourceSet>>) -> Vec<DeltaDiscoveryResponse> {
        self.set = set;
        self.rewarm.updating(None);
        let mut order: Vec<String> = self.types.keys().cloned().collect();
        order.sort_by_key(|t| (push_rank(t), t.clone()));
        let aggregated = self.ctx.scope == Scope::Aggregated;
        let mut out = Vec::new();
        let mut deferred = Vec::new();
        for type_url in order {
            let mut diff = self.diff(&type_url);
            if type_url == ENDPOINT {
                // Endpoints owed to clusters that warm join the endpoints diff.
                diff = self.with_owed(diff);
            }
            let Some(mut diff) = diff else {
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

    #[cfg(test)]
    fn name_bytes(&self) -> usize {
        self.ctx.name_bytes()
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
