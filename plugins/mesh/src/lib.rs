//! A service-mesh generator: from `Service` input documents, every node gets a cluster and
//! its endpoints per service; gRPC clients get an API listener per service (resolve
//! `xds:///<service>`), Envoy gets one HTTP listener that routes to every service.
//!
//! A `Service` document:
//!
//! ```yaml
//! kind: Service
//! name: greeter
//! protocol: grpc          # grpc (HTTP/2 to the endpoints) or http
//! endpoints:
//!   - { address: 127.0.0.1, port: 50051, zone: a, weight: 1 }
//! ```
//!
//! A node whose metadata lists `services: [a, b]` gets only those (and is recomputed only
//! when they change); any other node gets every service.
//!
//! gRPC clients fetch routes and endpoints over ADS. Envoy fetches them the way it connected
//! (one ADS stream, or a stream per type through the bootstrap cluster `xds_cluster`), so an
//! Envoy's result depends on its transport: ADS and per-type Envoys of one identity are
//! computed apart, and each gets config it accepts.

use std::collections::BTreeMap;

use nebucloud_xds_guest::build::{
    ads, config_source_for, envoy_http_listener, grpc_api_listener, route_to_cluster, Backend,
    EdsCluster, LoadAssignment, LocalityEndpoints, RouteConfig, RouteRule, RouteSource,
    VirtualHostSpec,
};
use nebucloud_xds_guest::serde::{Deserialize, Serialize};
use nebucloud_xds_guest::{export_plugin, Context, Error, Resource, Result};

/// A service the mesh knows.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(crate = "nebucloud_xds_guest::serde")]
pub struct Service {
    /// How clients talk to it.
    #[serde(default)]
    pub protocol: Protocol,
    /// Where it runs.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// The protocol a service speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(crate = "nebucloud_xds_guest::serde", rename_all = "lowercase")]
pub enum Protocol {
    /// gRPC: upstream connections use HTTP/2.
    #[default]
    Grpc,
    /// Plain HTTP/1.1.
    Http,
}

/// One instance of a service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(crate = "nebucloud_xds_guest::serde")]
pub struct Endpoint {
    /// IP address or host name.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Zone (locality); endpoints without one share the zone `default`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Relative weight within its zone (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
}

/// The plugin's `config` table, decoded once when the plugin loads (a typo refuses the load).
#[derive(Debug, Deserialize)]
#[serde(crate = "nebucloud_xds_guest::serde", deny_unknown_fields)]
pub struct Config {
    /// The address Envoy's ingress listener binds.
    #[serde(default = "default_address")]
    listener_address: String,
    /// The port of Envoy's ingress listener.
    #[serde(default = "default_port")]
    listener_port: u16,
    /// The region every locality is in.
    #[serde(default = "default_region")]
    region: String,
    /// The cluster in Envoy's bootstrap that reaches this server: per-type Envoys fetch routes
    /// and endpoints through it.
    #[serde(default = "default_xds_cluster")]
    xds_cluster: String,
}

fn default_address() -> String {
    "127.0.0.1".to_owned()
}
fn default_port() -> u16 {
    10000
}
fn default_region() -> String {
    "local".to_owned()
}
fn default_xds_cluster() -> String {
    "xds_cluster".to_owned()
}

/// The name of Envoy's listener and of its route table.
pub const INGRESS: &str = "ingress";

/// The plugin function.
pub fn generate(
    ctx: &Context<'_>,
    config: &Config,
    mut resources: Vec<Resource>,
) -> Result<Vec<Resource>> {
    let services = services_for_node(ctx)?;
    let grpc = ctx.node().is_grpc();
    // gRPC clients speak ADS only, so their result need not read the transport; Envoy's nested
    // sources must match how it connected.
    let nested = if grpc {
        ads()
    } else {
        config_source_for(ctx.node(), &config.xds_cluster)
    };
    for (name, svc) in &services {
        let mut cluster = EdsCluster::new(name.as_str()).eds_config(nested.clone());
        if svc.protocol == Protocol::Grpc {
            cluster = cluster.http2();
        }
        resources.push(Resource::new(name.as_str(), &cluster.build()));
        resources.push(Resource::new(
            name.as_str(),
            &load_assignment(name, svc, &config.region)?,
        ));
        if grpc {
            resources.push(Resource::new(
                name.as_str(),
                &grpc_api_listener(name.as_str(), name.as_str()),
            ));
            resources.push(Resource::new(
                name.as_str(),
                &route_to_cluster(name.as_str(), name.as_str()),
            ));
        }
    }
    if !grpc {
        let listener = envoy_http_listener(
            INGRESS,
            config.listener_address.as_str(),
            config.listener_port,
            RouteSource::rds(nested, INGRESS),
        );
        resources.push(Resource::new(INGRESS, &listener));
        resources.push(Resource::new(INGRESS, &ingress_routes(&services)));
    }
    Ok(resources)
}

fn services_for_node(ctx: &Context<'_>) -> Result<BTreeMap<String, Service>> {
    match ctx.node().metadata::<Vec<String>>("services")? {
        Some(names) => {
            let mut out = BTreeMap::new();
            for name in names {
                if let Some(svc) = ctx.get::<Service>("Service", &name)? {
                    out.insert(name, svc);
                }
            }
            Ok(out)
        }
        None => Ok(ctx.list::<Service>("Service")?.into_iter().collect()),
    }
}

fn load_assignment(
    name: &str,
    svc: &Service,
    region: &str,
) -> Result<nebucloud_xds_guest::proto::envoy::config::endpoint::v3::ClusterLoadAssignment> {
    let mut zones: BTreeMap<&str, LocalityEndpoints> = BTreeMap::new();
    for ep in &svc.endpoints {
        if ep.port == 0 {
            return Err(Error::msg(format!(
                "service {name}: endpoint {} has port 0",
                ep.address
            )));
        }
        let zone = ep.zone.as_deref().unwrap_or("default");
        let locality = zones
            .remove(zone)
            .unwrap_or_else(|| LocalityEndpoints::new(region, zone));
        let mut backend = Backend::new(ep.address.as_str(), ep.port);
        if let Some(w) = ep.weight {
            backend = backend.weight(w);
        }
        zones.insert(zone, locality.backend(backend));
    }
    Ok(zones
        .into_values()
        .fold(LoadAssignment::new(name), LoadAssignment::locality)
        .build())
}

/// Envoy's routes: `Host: <service>` goes to that service; any other host routes by the
/// first path segment (`/<service>/…`).
fn ingress_routes(
    services: &BTreeMap<String, Service>,
) -> nebucloud_xds_guest::proto::envoy::config::route::v3::RouteConfiguration {
    let mut config = RouteConfig::new(INGRESS);
    let mut catch_all = VirtualHostSpec::new("by-path");
    for name in services.keys() {
        config = config.virtual_host(
            VirtualHostSpec::new(name.as_str())
                .domains([name.clone(), format!("{name}:*")])
                .route(RouteRule::to_cluster("/", name.as_str())),
        );
        catch_all = catch_all.route(RouteRule::to_cluster(format!("/{name}/"), name.as_str()));
    }
    config.virtual_host(catch_all).build()
}

export_plugin!(generate, config = Config);

#[cfg(test)]
mod tests {
    use nebucloud_xds_guest::build::{api_config_source, ApiType};
    use nebucloud_xds_guest::prost::Message;
    use nebucloud_xds_guest::proto::envoy::config::cluster::v3::Cluster;
    use nebucloud_xds_guest::proto::envoy::config::core::v3::ConfigSource;
    use nebucloud_xds_guest::proto::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use nebucloud_xds_guest::proto::envoy::config::listener::v3::{filter, Listener};
    use nebucloud_xds_guest::proto::envoy::extensions::filters::network as net;
    use nebucloud_xds_guest::serde_json::json;
    use nebucloud_xds_guest::{run_native, MemoryInputs, Node, Transport};

    use super::*;
    use net::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager,
    };

    fn svc(port: u16, zone: &str) -> Service {
        Service {
            protocol: Protocol::Grpc,
            endpoints: vec![Endpoint {
                address: "127.0.0.1".into(),
                port,
                zone: Some(zone.into()),
                weight: None,
            }],
        }
    }

    fn names_of<M: nebucloud_xds_guest::prost::Name>(out: &[Resource]) -> Vec<&str> {
        out.iter()
            .filter(|r| r.is::<M>())
            .map(|r| r.name.as_str())
            .collect()
    }

    #[test]
    fn grpc_nodes_get_an_api_listener_per_service_and_weighted_localities() {
        let inputs = MemoryInputs::new()
            .with("Service", "a", &svc(1, "z1"))
            .with("Service", "b", &svc(2, "z2"));
        let node = Node::new("n").with_user_agent("gRPC Python", "");
        let out = run_native(generate, &node, &json!({}), &inputs, vec![]).unwrap();
        assert_eq!(names_of::<Listener>(&out), vec!["a", "b"]);
        assert_eq!(names_of::<Cluster>(&out), vec!["a", "b"]);
        let cla: ClusterLoadAssignment = out
            .iter()
            .find_map(|r| r.decode().transpose())
            .unwrap()
            .unwrap();
        assert!(
            cla.endpoints
                .iter()
                .all(|l| l.load_balancing_weight.is_some()),
            "gRPC drops unweighted localities"
        );
    }

    #[test]
    fn envoy_nodes_get_one_ingress_listener_on_the_configured_port() {
        let inputs = MemoryInputs::new().with("Service", "a", &svc(1, "z1"));
        let node = Node::new("e").with_user_agent("envoy", "");
        let out = run_native(
            generate,
            &node,
            &json!({"listener_port": 12345}),
            &inputs,
            vec![],
        )
        .unwrap();
        assert_eq!(names_of::<Listener>(&out), vec![INGRESS]);
        let l: Listener = out
            .iter()
            .find_map(|r| r.decode().transpose())
            .unwrap()
            .unwrap();
        let port = l.address.and_then(|a| a.address).map(|a| format!("{a:?}"));
        assert!(port.unwrap_or_default().contains("12345"));
    }

    /// Every nested config source in `out`: clusters' EDS and listeners' RDS.
    fn nested_sources(out: &[Resource]) -> Vec<ConfigSource> {
        let mut sources = Vec::new();
        for r in out {
            if let Some(c) = r.decode::<Cluster>().unwrap() {
                sources.extend(c.eds_cluster_config.and_then(|e| e.eds_config));
            }
            if let Some(l) = r.decode::<Listener>().unwrap() {
                let packed = l.api_listener.and_then(|a| a.api_listener).or_else(|| {
                    match &l.filter_chains.first()?.filters.first()?.config_type {
                        Some(filter::ConfigType::TypedConfig(any)) => Some(any.clone()),
                        _ => None,
                    }
                });
                let hcm = HttpConnectionManager::decode(packed.unwrap().value).unwrap();
                if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                    sources.extend(rds.config_source);
                }
            }
        }
        sources
    }

    #[test]
    fn envoy_fetches_routes_and_endpoints_the_way_it_connected_and_grpc_over_ads() {
        let inputs = MemoryInputs::new().with("Service", "a", &svc(1, "z1"));
        let config = json!({"xds_cluster": "control-plane"});
        let sources = |node: Node| {
            let out = run_native(generate, &node, &config, &inputs, vec![]).unwrap();
            let sources = nested_sources(&out);
            assert_eq!(sources.len(), 2, "one cluster and one listener: {out:?}");
            sources
        };
        let envoy = |aggregated, incremental| {
            Node::new("e")
                .with_user_agent("envoy", "")
                .with_transport(Transport {
                    aggregated,
                    incremental,
                })
        };
        for (node, expected) in [
            (envoy(true, false), ads()),
            (envoy(true, true), ads()),
            (
                envoy(false, false),
                api_config_source(ApiType::Grpc, "control-plane"),
            ),
            (
                envoy(false, true),
                api_config_source(ApiType::DeltaGrpc, "control-plane"),
            ),
            (Node::new("g").with_user_agent("gRPC Python", ""), ads()),
        ] {
            assert_eq!(sources(node), [expected.clone(), expected]);
        }
    }

    #[test]
    fn metadata_services_limit_what_a_node_reads() {
        let inputs = MemoryInputs::new()
            .with("Service", "a", &svc(1, "z1"))
            .with("Service", "b", &svc(2, "z2"));
        let node = Node::new("n")
            .with_user_agent("grpc-node-js", "")
            .with_metadata(json!({"services": ["b", "missing"]}));
        let out = run_native(generate, &node, &json!({}), &inputs, vec![]).unwrap();
        assert_eq!(names_of::<Cluster>(&out), vec!["b"]);
    }

    #[test]
    fn bad_config_and_bad_documents_are_errors_naming_the_field() {
        let node = Node::default();
        let e = run_native(
            generate,
            &node,
            &json!({"listener_prt": 1}),
            &MemoryInputs::new(),
            vec![],
        )
        .unwrap_err();
        assert!(e.message().contains("listener_prt"), "{e}");
        let inputs =
            MemoryInputs::new().with("Service", "a", &json!({"endpoints": [{"address": "x"}]}));
        let e = run_native(generate, &node, &json!({}), &inputs, vec![]).unwrap_err();
        assert!(
            e.message().contains("Service/a") && e.message().contains("port"),
            "{e}"
        );
    }
}
