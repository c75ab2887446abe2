//! State-of-the-World: what one stream has asked for, what it was sent, and what to send next.
//!
//! Pure, synchronous state: the async shell in `stream.rs` feeds it requests and new resource
//! sets and writes out what it returns.

use std::collections::BTreeMap;
use std::sync::Arc;

use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::service::discovery::v3::DiscoveryRequest;
use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT};
use tonic::Status;

use crate::cache::{Resource, ResourceSet};

use super::context::{Scope, StreamContext, StreamProtocol};
use super::limits::MAX_CLIENT_VERSION_BYTES;
use super::nack::Nack;
use super::subscription::{select, version_of, SubscriptionChange, SubscriptionState};
use super::types::{is_full_state, is_known, push_rank};
use super::warming;
use super::wire::{self, SotwResponse};

/// Per type: the subscription and what was last sent.
#[derive(Debug, Default)]
struct SotwType {
    sub: SubscriptionState,
    /// The nonce of the last response of this type; requests naming another are stale.
    nonce: Option<String>,
    /// The version of the last response sent: what ACKs and NACKs refer to.
    sent_version: Option<String>,
    /// The version of the selection the client holds, as far as the stream knows: the last
    /// one sent, or the one it announced on reconnecting, or, after it dropped names, what is
    /// left of it. `None` when unknown: the next answer is then sent in full.
    holds: Option<String>,
    /// The version of the selection when it was last computed.
    selected: Option<String>,
    /// The version the client said it holds when it (re)opened the stream.
    client_version: Option<String>,
    /// Whether the last response carried resources with a TTL (heartbeats due).
    has_ttl: bool,
    /// Whether the client rejected the last response.
    rejected: bool,
}

/// The State-of-the-World protocol state of one stream.
#[derive(Debug)]
pub(crate) struct SotwStream {
    ctx: StreamContext,
    set: Option<Arc<ResourceSet>>,
    types: BTreeMap<String, SotwType>,
    rewarm: warming::Rewarm,
}

impl SotwStream {
    /// Builds a response for `type_url`; `heartbeat` sends TTL'd resources without a body.
    /// What it says besides its nonce is encoded once per set for every stream that sends it.
    fn response(
        &mut self,
        type_url: &str,
        version: &str,
        resources: &[Arc<Resource>],
        heartbeat: bool,
    ) -> SotwResponse {
        let wrap = self.ctx.ttl && self.ctx.resource_in_sotw;
        let has_ttl = wrap && resources.iter().any(|r| r.ttl().is_some());
        let body = wire::shared_body(
            self.set.as_deref(),
            (type_url, version),
            resources,
            wrap,
            heartbeat,
        );
        let nonce = self.ctx.nonce();
        self.ctx.record.sent(type_url, version, &nonce);
        let st = self.types.entry(type_url.to_owned()).or_default();
        st.nonce = Some(nonce.clone());
        st.sent_version = Some(version.to_owned());
        st.holds = Some(version.to_owned());
        let announced = st.client_version.take().is_some();
        st.has_ttl = has_ttl;
        // A heartbeat is no new version: a rejection of the last one still stands.
        st.rejected &= heartbeat;
        match type_url {
            CLUSTER if !heartbeat => self.rewarm.clusters_sent(resources, announced),
            // Any endpoints response carries those of the clusters that warm, or is them.
            ENDPOINT if !heartbeat => drop(self.rewarm.take()),
            _ => {}
        }
        SotwResponse::new((version, resources.len()), nonce, body)
    }

    /// What to send for one type now, if anything. `change`: what the request just changed in
    /// the subscription; resources it newly covers (named, or by turning wildcard on) are
    /// answered even if unchanged, since the client may have dropped them.
    fn next_for(
        &mut self,
        type_url: &str,
        change: Option<&SubscriptionChange>,
    ) -> Option<(String, Vec<Arc<Resource>>)> {
        let set = self.set.as_ref()?;
        let st = self.types.get_mut(type_url)?;
        if !st.sub.is_wildcard() && st.sub.names().is_empty() {
            // Unsubscribed from everything: nothing to say, even for full-state types; the
            // client holds nothing now.
            (st.holds, st.selected, st.client_version) = (None, None, None);
            return None;
        }
        let (version, resources) = select(set, type_url, &st.sub);
        if change.is_some_and(|c| !c.removed.is_empty() || c.wildcard_removed) {
            // The client drops what it no longer asks for: if it held the whole selection, it
            // holds the rest of it now; if not, what it holds is unknown.
            let current = st.holds.is_some() && st.holds == st.selected;
            st.holds = current.then(|| version.clone());
            st.client_version = None;
        }
        st.selected = Some(version.clone());
        let full = is_full_state(type_url) || st.sub.is_wildcard();
        // Turning wildcard on asks for the full state, even an empty one. O(k log n) for k new
        // names: each is looked up, not searched for.
        let newly_covered_exist = change.is_some_and(|c| {
            c.wildcard_added
                || set
                    .of_type(type_url)
                    .is_some_and(|t| c.added.iter().any(|n| t.get(n).is_some()))
        });
        match &st.holds {
            Some(held) if *held == version && !newly_covered_exist => return None,
            Some(_) => {}
            None => {
                // Absence means nothing for per-name types: wait until a named resource exists.
                // A type the server does not know is not answered until it has resources of
                // it (the spec lets a server leave a type it does not serve unanswered).
                if resources.is_empty() && (!full || !is_known(type_url)) {
                    return None;
                }
                // A reconnecting client already holds exactly this: nothing to send.
                if st.client_version.as_deref() == Some(version.as_str()) {
                    st.holds = Some(version);
                    return None;
                }
            }
        }
        if resources.is_empty() && !full {
            // Per-name types have no deletion by omission: an empty response says nothing.
            return None;
        }
        Some((version, resources))
    }

    /// The endpoints owed to clusters that warm (see `warming`), at the version the client
    /// holds, since nothing in them changed (per-name types may be sent in part). Kept owed
    /// while the client holds no endpoints this stream can vouch for.
    fn owed_endpoints(&mut self) -> Option<SotwResponse> {
        let (set, st) = (self.set.as_ref()?, self.types.get(ENDPOINT)?);
        let held = st
            .holds
            .as_ref()
            .filter(|h| st.selected.as_ref() == Some(*h));
        let held = held.filter(|_| !st.rejected);
        let (Some(held), true) = (held.cloned(), self.rewarm.owes()) else {
            return None;
        };
        let (names, had_ttl) = (self.rewarm.take(), st.has_ttl);
        // A wildcard subscription reads each response as the full state: it gets all of it.
        let resources = match st.sub.is_wildcard() {
            true => select(set, ENDPOINT, &st.sub).1,
            false => warming::endpoints(set, &st.sub, &names, |_| true),
        };
        if resources.is_empty() {
            return None;
        }
        warming::count_resent("sotw", resources.len());
        let response = self.response(ENDPOINT, &held, &resources, false);
        if let Some(st) = self.types.get_mut(ENDPOINT) {
            // Only some of the endpoints: the others' TTLs still need heartbeats.
            st.has_ttl |= had_ttl;
        }
        Some(response)
    }

    fn stale_clusters(&self, old: &ResourceSet) -> Vec<Arc<Resource>> {
        let (Some(new), Some(st)) = (self.set.as_ref(), self.types.get(CLUSTER)) else {
            return Vec::new();
        };
        let (_, before) = select(old, CLUSTER, &st.sub);
        before
            .into_iter()
            .filter(|r| new.get(CLUSTER, r.name()).is_none())
            .collect()
    }
}

impl StreamProtocol for SotwStream {
    const INCREMENTAL: bool = false;

    type Request = DiscoveryRequest;
    type Response = SotwResponse;

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(ctx: StreamContext, set: Option<Arc<ResourceSet>>) -> Self {
        let rewarm = warming::Rewarm::new(ctx.scope == Scope::Aggregated);
        SotwStream {
            ctx,
            set,
            types: BTreeMap::new(),
            rewarm,
        }
    }

    fn on_request(&mut self, req: DiscoveryRequest) -> Result<Vec<SotwResponse>, Status> {
        let type_url = self.ctx.resolve(&req.type_url)?;
        self.ctx.check_names(&type_url, req.resource_names.len())?;
        self.ctx
            .check_name_bytes(&type_url, req.resource_names.iter().map(String::as_str))?;
        let first = !self.types.contains_key(&type_url);
        let set = self.set.as_deref();
        if !self
            .ctx
            .admit_type(&type_url, set, first, self.types.keys())
        {
            return Ok(Vec::new());
        }
        if first {
            self.ctx.check_types(self.types.len() + 1)?;
            self.ctx.hold_bytes(0, type_url.len())?;
            // A version longer than any we issue cannot name what the client holds.
            let held = &req.version_info;
            let client_version =
                (!held.is_empty() && held.len() <= MAX_CLIENT_VERSION_BYTES).then(|| held.clone());
            self.types.insert(
                type_url.clone(),
                SotwType {
                    client_version,
                    ..SotwType::default()
                },
            );
        }
        let Some(st) = self.types.get_mut(&type_url) else {
            return Ok(Vec::new());
        };

        // Nonces are per stream: the first request of a type may carry one from an earlier
        // stream, which means nothing here. After that, a request that answers anything but
        // our latest response of this type is stale: the client will answer the newest one.
        let answers = !first && !req.response_nonce.is_empty();
        if answers && st.nonce.as_deref() != Some(req.response_nonce.as_str()) {
            metrics::counter!("xds_stale_requests_total", "mode" => "sotw").increment(1);
            return Ok(Vec::new());
        }
        if answers {
            // The nonce is ours, so the version the client accepted or rejected is the one we
            // sent with it: nothing the client wrote is stored unbounded.
            st.rejected = req.error_detail.is_some();
            match &req.error_detail {
                Some(err) => self.ctx.record.nacked(
                    &type_url,
                    Nack::from_client(
                        &req.response_nonce,
                        st.sent_version.clone(),
                        &req.version_info,
                        err,
                    ),
                ),
                None => {
                    let version = st.sent_version.as_deref().unwrap_or_default();
                    self.ctx.record.acked(&type_url, version);
                }
            }
        }
        let before = st.sub.bytes();
        let change = st.sub.apply_sotw(req.resource_names);
        self.ctx.hold_bytes(before, st.sub.bytes())?;
        // A NACK is never answered with the rejected payload: unless the subscription asks for
        // something new, `next_for` finds the version unchanged and sends nothing.
        let mut out: Vec<SotwResponse> = (self.next_for(&type_url, Some(&change)))
            .map(|(v, r)| self.response(&type_url, &v, &r, false))
            .into_iter()
            .collect();
        if type_url == CLUSTER || type_url == ENDPOINT {
            out.extend(self.owed_endpoints());
        }
        Ok(out)
    }

    fn on_update(&mut self, set: Option<Arc<ResourceSet>>) -> Vec<SotwResponse> {
        let old = std::mem::replace(&mut self.set, set);
        self.rewarm.updating(old.clone());
        let mut order: Vec<String> = self.types.keys().cloned().collect();
        order.sort_by_key(|t| (push_rank(t), t.clone()));
        // Make before break: on an aggregated stream, clusters that disappear are kept in the
        // first CDS response and removed only after the listeners and routes that used them
        // have been replaced.
        let stale = match (&old, self.ctx.scope) {
            (Some(old), Scope::Aggregated) => self.stale_clusters(old),
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        let mut final_cds = None;
        for type_url in order {
            let Some((version, resources)) = self.next_for(&type_url, None) else {
                // Endpoints unchanged: those of clusters that warm go again all the same.
                if type_url == ENDPOINT {
                    out.extend(self.owed_endpoints());
                }
                continue;
            };
            if type_url == CLUSTER && !stale.is_empty() && self.types.len() > 1 {
                let mut keep = resources.clone();
                keep.extend(stale.iter().cloned());
                keep.sort_by(|a, b| a.name().cmp(b.name()));
                let keep_version = version_of(&keep);
                out.push(self.response(&type_url, &keep_version, &keep, false));
                final_cds = Some((version, resources));
            } else {
                out.push(self.response(&type_url, &version, &resources, false));
            }
        }
        // Before the final clusters: they changed nothing the first ones did not.
        self.rewarm.updated(self.set.is_some());
        if let Some((version, resources)) = final_cds {
            out.push(self.response(CLUSTER, &version, &resources, false));
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

    fn on_heartbeat(&mut self) -> Vec<SotwResponse> {
        let Some(set) = self.set.clone() else {
            return Vec::new();
        };
        let due: Vec<String> = self
            .types
            .iter()
            // A rejected version is not heartbeaten: it would resend what the client refused.
            .filter(|(_, t)| t.has_ttl && !t.rejected)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for type_url in due {
            let Some(st) = self.types.get(&type_url) else {
                continue;
            };
            let (version, resources) = select(&set, &type_url, &st.sub);
            // Only a client that holds the current version is refreshed; a pending change
            // goes out as a normal response instead.
            if st.holds.as_deref() == Some(version.as_str()) {
                out.push(self.response(&type_url, &version, &resources, true));
            }
        }
        out
    }
}
