//! A validator: rejects any route table that sends traffic to a cluster that does not exist
//! in the node's resources. Such a route would make Envoy answer 503 and gRPC clients fail
//! their RPCs; rejecting it keeps the node on its last good configuration instead.
//!
//! Put it last in the chain. It changes nothing; it only says no.

use std::collections::BTreeSet;

use nebucloud_xds_guest::proto::envoy::config::cluster::v3::Cluster;
use nebucloud_xds_guest::proto::envoy::config::route::v3::route::Action;
use nebucloud_xds_guest::proto::envoy::config::route::v3::route_action::ClusterSpecifier;
use nebucloud_xds_guest::proto::envoy::config::route::v3::RouteConfiguration;
use nebucloud_xds_guest::{export_plugin, Context, Error, Resource, Result};

/// The plugin function.
pub fn check(_ctx: &Context<'_>, resources: Vec<Resource>) -> Result<Vec<Resource>> {
    let clusters: BTreeSet<&str> = resources
        .iter()
        .filter(|r| r.is::<Cluster>())
        .map(|r| r.name.as_str())
        .collect();
    let mut dangling = Vec::new();
    for r in &resources {
        let Some(routes) = r.decode::<RouteConfiguration>()? else {
            continue;
        };
        for vh in &routes.virtual_hosts {
            for route in &vh.routes {
                let Some(Action::Route(action)) = &route.action else {
                    continue;
                };
                let targets: Vec<&str> = match &action.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) => vec![c.as_str()],
                    Some(ClusterSpecifier::WeightedClusters(w)) => {
                        w.clusters.iter().map(|c| c.name.as_str()).collect()
                    }
                    _ => Vec::new(),
                };
                for t in targets.into_iter().filter(|t| !clusters.contains(t)) {
                    dangling.push(format!(
                        "route table {:?}, virtual host {:?} → cluster {t:?}",
                        routes.name, vh.name
                    ));
                }
            }
        }
    }
    if dangling.is_empty() {
        Ok(resources)
    } else {
        Err(Error::msg(format!(
            "routes point at clusters that do not exist: {}",
            dangling.join("; ")
        )))
    }
}

export_plugin!(check);

#[cfg(test)]
mod tests {
    use nebucloud_xds_guest::build::{route_to_cluster, EdsCluster};
    use nebucloud_xds_guest::serde_json::json;
    use nebucloud_xds_guest::{run_native, MemoryInputs, Node};

    use super::*;

    #[test]
    fn routes_to_existing_clusters_pass_unchanged() {
        let input = vec![
            Resource::new("c", &EdsCluster::new("c").build()),
            Resource::new("r", &route_to_cluster("r", "c")),
        ];
        let out = run_native(
            check,
            &Node::default(),
            &json!({}),
            &MemoryInputs::new(),
            input.clone(),
        )
        .unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn a_route_to_a_missing_cluster_is_rejected_with_its_names() {
        let input = vec![Resource::new("r", &route_to_cluster("r", "ghost"))];
        let e = run_native(
            check,
            &Node::default(),
            &json!({}),
            &MemoryInputs::new(),
            input,
        )
        .unwrap_err();
        assert!(
            e.message().contains("\"r\"") && e.message().contains("\"ghost\""),
            "{e}"
        );
    }
}
