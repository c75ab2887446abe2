//! Whether a resource set is whole: every EDS and RDS name its clusters and listeners refer
//! to is in it (go-control-plane's `Snapshot.Consistent`).

use std::fmt;

use nebucloud_xds_proto::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType,
};
use nebucloud_xds_proto::envoy::config::cluster::v3::Cluster;
use nebucloud_xds_proto::envoy::config::listener::v3::{filter::ConfigType, Listener};
use nebucloud_xds_proto::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use nebucloud_xds_proto::google::protobuf::Any;
use nebucloud_xds_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use prost::{Message, Name};

use super::set::{ResourceSet, TypeResources};

/// Why a [`ResourceSet`] is not consistent: every reference it lacks, and every cluster or
/// listener whose references could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent resources: {}", list(.problems))]
pub struct ConsistencyError {
    /// Each problem, clusters' before listeners', in name order.
    pub problems: Vec<Inconsistency>,
}

/// One problem [`ResourceSet::check_consistent`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inconsistency {
    /// A resource refers to one the set does not hold.
    Dangling {
        /// The type URL of the referring resource (a `Cluster` or a `Listener`).
        referrer_type_url: &'static str,
        /// The referring resource's name.
        referrer: String,
        /// The type URL of the missing resource (`ClusterLoadAssignment` or
        /// `RouteConfiguration`).
        missing_type_url: &'static str,
        /// The name it refers to.
        missing: String,
    },
    /// A resource does not decode as its type (or as its HTTP connection manager), so its
    /// references are unknown.
    Undecodable {
        /// The type URL.
        type_url: &'static str,
        /// The resource's name.
        name: String,
        /// The decoder's reason.
        reason: String,
    },
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |t: &str| t.rsplit('.').next().unwrap_or_default().to_owned();
        match self {
            Inconsistency::Dangling {
                referrer_type_url,
                referrer,
                missing_type_url,
                missing,
            } => write!(
                f,
                "{} {referrer:?} refers to {} {missing:?}, which is missing",
                short(referrer_type_url),
                short(missing_type_url)
            ),
            Inconsistency::Undecodable {
                type_url,
                name,
                reason,
            } => write!(f, "{} {name:?} does not decode: {reason}", short(type_url)),
        }
    }
}

fn list(problems: &[Inconsistency]) -> String {
    let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
    all.join("; ")
}

impl ResourceSet {
    /// Checks that every `ClusterLoadAssignment` an EDS cluster asks for (its
    /// `eds_cluster_config.service_name`, or its name) and every `RouteConfiguration` a
    /// listener's HTTP connection manager fetches by RDS (in its filter chains, default filter
    /// chain or API listener) is in the set, as go-control-plane's `Snapshot.Consistent` does.
    /// A client waits for a missing one (Envoy keeps the cluster or listener warming).
    ///
    /// The error names every dangling reference, not only the first.
    pub fn check_consistent(&self) -> Result<(), ConsistencyError> {
        let mut problems = Vec::new();
        let mut dangling = |referrer_type_url, referrer: &str, missing_type_url, missing: &str| {
            if self.get(missing_type_url, missing).is_none() {
                problems.push(Inconsistency::Dangling {
                    referrer_type_url,
                    referrer: referrer.to_owned(),
                    missing_type_url,
                    missing: missing.to_owned(),
                });
            }
        };
        let mut undecodable = Vec::new();
        for (name, cluster) in self.decoded::<Cluster>(CLUSTER, &mut undecodable) {
            let eds = ClusterDiscoveryType::Type(DiscoveryType::Eds.into());
            if cluster.cluster_discovery_type == Some(eds) {
                let service = cluster.eds_cluster_config.map(|c| c.service_name);
                let wanted = service.filter(|s| !s.is_empty());
                dangling(CLUSTER, name, ENDPOINT, wanted.as_deref().unwrap_or(name));
            }
        }
        for (name, listener) in self.decoded::<Listener>(LISTENER, &mut undecodable) {
            for packed in connection_managers(&listener) {
                match HttpConnectionManager::decode(packed.value.clone()) {
                    Ok(HttpConnectionManager {
                        route_specifier: Some(RouteSpecifier::Rds(rds)),
                        ..
                    }) => dangling(LISTENER, name, ROUTE, &rds.route_config_name),
                    Ok(_) => {}
                    Err(e) => undecodable.push((LISTENER, name.to_owned(), e)),
                }
            }
        }
        problems.extend(undecodable.into_iter().map(|(type_url, name, e)| {
            Inconsistency::Undecodable {
                type_url,
                name,
                reason: e.to_string(),
            }
        }));
        match problems.is_empty() {
            true => Ok(()),
            false => Err(ConsistencyError { problems }),
        }
    }

    /// The resources of `type_url` decoded as `M`, by name; those that do not decode are
    /// added to `failed`.
    fn decoded<'a, M: Message + Default>(
        &'a self,
        type_url: &'static str,
        failed: &mut Vec<(&'static str, String, prost::DecodeError)>,
    ) -> Vec<(&'a str, M)> {
        let resources = self
            .of_type(type_url)
            .into_iter()
            .flat_map(TypeResources::iter);
        let mut out = Vec::new();
        for r in resources {
            match M::decode(r.body().clone()) {
                Ok(m) => out.push((r.name(), m)),
                Err(e) => failed.push((type_url, r.name().to_owned(), e)),
            }
        }
        out
    }
}

/// The HTTP connection managers of a listener, packed: the network filters of its filter
/// chains and default filter chain, and its API listener (gRPC clients).
fn connection_managers(listener: &Listener) -> impl Iterator<Item = &Any> {
    let chains = listener
        .filter_chains
        .iter()
        .chain(&listener.default_filter_chain);
    let filters = chains
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(ConfigType::TypedConfig(any)) => Some(any),
            _ => None,
        });
    let api = listener
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref());
    filters
        .chain(api)
        .filter(|any| any.type_url == HttpConnectionManager::type_url())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Resource, ResourceSet};
    use nebucloud_xds_guest::build::{
        envoy_http_listener, grpc_api_listener, route_to_cluster, EdsCluster, LoadAssignment,
        RouteSource,
    };

    fn resources(extra: Vec<Resource>) -> Vec<Resource> {
        let mut all = vec![
            Resource::from_message("web", &EdsCluster::new("web").build()),
            Resource::from_message("web", &LoadAssignment::new("web").build()),
            Resource::from_message(
                "api",
                &EdsCluster::new("api").service_name("api-eds").build(),
            ),
            Resource::from_message("api-eds", &LoadAssignment::new("api-eds").build()),
            Resource::from_message("r", &route_to_cluster("r", "web")),
            Resource::from_message(
                "in",
                &envoy_http_listener("in", "0.0.0.0", 80, RouteSource::ads("r")),
            ),
        ];
        all.extend(extra);
        all
    }

    #[test]
    fn a_set_whose_references_all_resolve_is_consistent() {
        let set = ResourceSet::new(resources(vec![Resource::from_message(
            "grpc",
            &grpc_api_listener("grpc", "r"),
        )]));
        assert_eq!(set.map(|s| s.check_consistent()), Ok(Ok(())));
    }

    #[test]
    fn a_missing_load_assignment_and_a_missing_route_are_named() {
        let mut all = resources(vec![Resource::from_message(
            "grpc",
            &grpc_api_listener("grpc", "grpc-routes"),
        )]);
        all.retain(|r| r.name() != "api-eds");
        let Ok(set) = ResourceSet::new(all) else {
            panic!("a valid set")
        };
        let err = set.check_consistent().err().map(|e| e.problems);
        let dangling = |rt, referrer: &str, mt, missing: &str| Inconsistency::Dangling {
            referrer_type_url: rt,
            referrer: referrer.into(),
            missing_type_url: mt,
            missing: missing.into(),
        };
        assert_eq!(
            err,
            Some(vec![
                dangling(CLUSTER, "api", ENDPOINT, "api-eds"),
                dangling(LISTENER, "grpc", ROUTE, "grpc-routes"),
            ])
        );
        let text = set.check_consistent().err().map(|e| e.to_string());
        assert_eq!(
            text.as_deref(),
            Some(
                "inconsistent resources: Cluster \"api\" refers to ClusterLoadAssignment \
                 \"api-eds\", which is missing; Listener \"grpc\" refers to \
                 RouteConfiguration \"grpc-routes\", which is missing"
            )
        );
    }

    #[test]
    fn a_listener_that_does_not_decode_is_reported() {
        let bad = Resource::new(LISTENER, "bad", vec![0xff]);
        let set = ResourceSet::new(resources(vec![bad]));
        let problems = set
            .ok()
            .and_then(|s| s.check_consistent().err())
            .map(|e| e.problems);
        assert!(
            matches!(problems.as_deref(), Some([Inconsistency::Undecodable { name, .. }]) if name == "bad"),
            "{problems:?}"
        );
    }
}
