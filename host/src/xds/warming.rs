//! Cluster warming on an aggregated stream: a changed cluster waits for its endpoints again.
//!
//! When Envoy receives a cluster it already has in a changed version, it builds a new cluster
//! beside the old one and keeps it warming until a `ClusterLoadAssignment` for it arrives. The
//! endpoints may not have changed at all, and then nothing would be sent: on State of the World
//! Envoy asks again at the version and nonce it already holds (an ACK the server does not
//! answer), on Delta it asks for nothing, since it is already subscribed. Either way the new
//! cluster waits out Envoy's initial fetch timeout (15 s by default) before it uses its cached
//! copy. The xDS spec puts this on the server: "Management server is expected to provide the
//! EDS/RDS updates during warming". So after a response that changes clusters a client held,
//! an aggregated stream sends those clusters' endpoints again, changed or not (as Istio does).
//! The same holds on a reconnect when the clusters changed while the client was away: the
//! endpoints are owed ([`Rewarm`]) until the client says which it holds, then sent. They are
//! not sent after the client rejected its last endpoints: not under a version it refused.
//!
//! Per-type streams need nothing: the new cluster's endpoints come over a subscription of its
//! own, which is answered as any first request.

use std::collections::BTreeSet;
use std::sync::Arc;

use nebucloud_xds_proto::envoy::config::cluster::v3::cluster::DiscoveryType;
use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT};
use prost::Message;

use crate::cache::{Resource, ResourceSet};

use super::subscription::SubscriptionState;

/// The fields of an Envoy `Cluster` that say where its endpoints come from. Decoding into this
/// instead of the whole `Cluster` skips every other field without allocating: the server looks
/// at each changed cluster once per aggregated stream.
#[derive(Clone, PartialEq, Message)]
struct ClusterEndpointsView {
    /// `Cluster.name`.
    #[prost(string, tag = "1")]
    name: String,
    /// `Cluster.type` (the `cluster_discovery_type` oneof's `DiscoveryType`).
    #[prost(int32, optional, tag = "2")]
    discovery_type: Option<i32>,
    /// `Cluster.eds_cluster_config`.
    #[prost(message, optional, tag = "3")]
    eds_cluster_config: Option<EdsClusterConfigView>,
}

/// `Cluster.EdsClusterConfig`, its `service_name` only.
#[derive(Clone, PartialEq, Message)]
struct EdsClusterConfigView {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// The name of the `ClusterLoadAssignment` an EDS cluster waits for while it warms: its
/// `eds_cluster_config.service_name`, or its own name. `None` for clusters of other kinds
/// (static, DNS, custom) and for a body that is not a `Cluster`.
pub(crate) fn endpoints_name(cluster: &Resource) -> Option<String> {
    let view = ClusterEndpointsView::decode(cluster.body().clone()).ok()?;
    if view.discovery_type != Some(DiscoveryType::Eds as i32) {
        return None;
    }
    let service = view
        .eds_cluster_config
        .map(|c| c.service_name)
        .filter(|s| !s.is_empty());
    // Envoy names the subscription after the cluster's own `name` field.
    let own = Some(view.name).filter(|n| !n.is_empty());
    Some(service.or(own).unwrap_or_else(|| cluster.name().to_owned()))
}

/// The endpoint names that the replaced `clusters` wait for, sorted, each once.
pub(crate) fn endpoint_names<'a>(
    clusters: impl IntoIterator<Item = &'a Arc<Resource>>,
) -> Vec<String> {
    let mut names: Vec<String> = clusters
        .into_iter()
        .filter_map(|c| endpoints_name(c))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The endpoint names that clusters in `sent` wait for because they changed since `old`.
pub(crate) fn changed_since(old: &ResourceSet, sent: &[Arc<Resource>]) -> Vec<String> {
    endpoint_names(sent.iter().filter(|r| {
        old.get(CLUSTER, r.name())
            .is_some_and(|before| before.version() != r.version())
    }))
}

/// The endpoints named in `names` that `set` has and `sub` covers, for which `send` holds.
/// O(k log n) for k names: each is looked up.
pub(crate) fn endpoints(
    set: &ResourceSet,
    sub: &SubscriptionState,
    names: &[String],
    send: impl Fn(&Resource) -> bool,
) -> Vec<Arc<Resource>> {
    let Some(of_type) = set.of_type(ENDPOINT) else {
        return Vec::new();
    };
    names
        .iter()
        .filter(|n| sub.covers(n))
        .filter_map(|n| of_type.get(n))
        .filter(|r| send(r))
        .cloned()
        .collect()
}

/// What an aggregated stream owes the clusters Envoy warms: the names of their endpoints, to
/// send again once the client holds endpoints the stream can resend. Kept until the end of the
/// next update at most, so that a cluster replaced before the client asked for endpoints on
/// this stream (a reconnect) is served as one replaced by an update, and never more names than
/// one update or one request replaced.
#[derive(Debug, Default)]
pub(crate) struct Rewarm {
    aggregated: bool,
    /// SotW, during an update: the set the clusters are compared with. Kept across an update
    /// that leaves the stream without a set (its group recreated), dropped after the next.
    before: Option<Arc<ResourceSet>>,
    owed: BTreeSet<String>,
}

impl Rewarm {
    /// Owes nothing, ever, unless `aggregated`.
    pub(crate) fn new(aggregated: bool) -> Self {
        Rewarm {
            aggregated,
            ..Rewarm::default()
        }
    }

    /// An update begins, replacing `old` (SotW: the stream's set until now; Delta: `None`).
    /// What is still owed from before was for a moment that has passed: it is dropped.
    pub(crate) fn updating(&mut self, old: Option<Arc<ResourceSet>>) {
        self.owed.clear();
        if self.aggregated && old.is_some() {
            self.before = old;
        }
    }

    /// The update is done; `has_set`: the stream has a set now.
    pub(crate) fn updated(&mut self, has_set: bool) {
        if has_set {
            self.before = None;
        }
    }

    /// SotW: a Cluster response of `sent` went out. Those that changed since the set before the
    /// update warm; outside an update (a first request), all of them do if the client
    /// `announced` it held clusters from an earlier stream.
    pub(crate) fn clusters_sent(&mut self, sent: &[Arc<Resource>], announced: bool) {
        if !self.aggregated {
            return;
        }
        match &self.before {
            Some(before) => self.owed.extend(changed_since(before, sent)),
            None if announced => self.owed.extend(endpoint_names(sent)),
            None => {}
        }
    }

    /// Delta: these clusters replaced versions the client held.
    pub(crate) fn clusters_replaced(&mut self, replaced: &[Arc<Resource>]) {
        if self.aggregated && !replaced.is_empty() {
            self.owed.extend(endpoint_names(replaced));
        }
    }

    /// Whether endpoints are owed.
    pub(crate) fn owes(&self) -> bool {
        !self.owed.is_empty()
    }

    /// The names owed, forgotten here.
    pub(crate) fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.owed).into_iter().collect()
    }
}

/// Counts the endpoints sent again for warming clusters.
pub(crate) fn count_resent(mode: &'static str, resources: usize) {
    if resources == 0 {
        return;
    }
    metrics::counter!("xds_warming_endpoints_resent_total", "mode" => mode)
        .increment(resources as u64);
}

#[cfg(test)]
pub(crate) mod tests {
    use nebucloud_xds_proto::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, EdsClusterConfig,
    };
    use nebucloud_xds_proto::envoy::config::cluster::v3::Cluster;

    use super::*;

    /// An EDS cluster named `name` whose endpoints are `service` (empty: its own name), with
    /// `label` as its alt stat name so that versions of it differ.
    pub(crate) fn eds_cluster(name: &str, service: &str, label: &str) -> Resource {
        let cluster = Cluster {
            name: name.to_owned(),
            alt_stat_name: label.to_owned(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                service_name: service.to_owned(),
                ..EdsClusterConfig::default()
            }),
            ..Cluster::default()
        };
        Resource::new(CLUSTER, name, cluster.encode_to_vec())
    }

    /// How table rows show a cluster built by [`eds_cluster`]: `eds:<label>`; `None` for any
    /// other body.
    pub(crate) fn shown(body: &[u8]) -> Option<String> {
        let cluster = Cluster::decode(body).ok()?;
        let eds = cluster.cluster_discovery_type
            == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        (eds && !cluster.name.is_empty()).then(|| format!("eds:{}", cluster.alt_stat_name))
    }

    #[test]
    fn an_eds_cluster_waits_for_its_service_name_or_its_own_name() {
        assert_eq!(
            endpoints_name(&eds_cluster("web", "", "v1")).as_deref(),
            Some("web")
        );
        assert_eq!(
            endpoints_name(&eds_cluster("web", "web-eps", "v1")).as_deref(),
            Some("web-eps")
        );
    }

    #[test]
    fn other_clusters_and_other_bodies_wait_for_nothing() {
        let static_cluster = Cluster {
            name: "s".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            ..Cluster::default()
        };
        let r = Resource::new(CLUSTER, "s", static_cluster.encode_to_vec());
        assert_eq!(endpoints_name(&r), None);
        assert_eq!(
            endpoints_name(&Resource::new(CLUSTER, "x", b"c1".to_vec())),
            None
        );
        assert_eq!(
            endpoints_name(&Resource::new(CLUSTER, "x", Vec::new())),
            None
        );
    }
}
