//! Clusters (CDS): an EDS cluster for every client, a static one for Envoy, and the HTTP/2
//! upstream option that Envoy needs to reach a gRPC backend.

use std::collections::HashMap;
use std::time::Duration;

use nebucloud_xds_proto::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
    Cluster,
};
use nebucloud_xds_proto::envoy::config::core::v3::{ConfigSource, Http2ProtocolOptions};
use nebucloud_xds_proto::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
    },
    HttpProtocolOptions,
};
use nebucloud_xds_proto::google::protobuf::Any;

use super::core::{ads, any, duration};
use super::endpoint::{LoadAssignment, LocalityEndpoints};

/// The `typed_extension_protocol_options` key under which Envoy looks for a cluster's upstream
/// HTTP options.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Envoy's own default, stated explicitly so that every cluster carries one.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `HttpProtocolOptions {explicit_http_config {http2_protocol_options {}}}` packed as an `Any`:
/// the value for [`HTTP_PROTOCOL_OPTIONS`] that makes Envoy speak HTTP/2 (and so gRPC) to the
/// cluster's endpoints.
pub fn http2_protocol_options() -> Any {
    any(&HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    })
}

fn protocol_options(http2: bool) -> HashMap<String, Any> {
    let mut options = HashMap::new();
    if http2 {
        options.insert(HTTP_PROTOCOL_OPTIONS.to_owned(), http2_protocol_options());
    }
    options
}

/// A cluster whose endpoints come from EDS, in the shape Envoy and both gRPC clients accept:
/// `type: EDS`, `lb_policy: ROUND_ROBIN`, an explicit `connect_timeout`, and
/// `eds_cluster_config.eds_config` set ([`ads()`](super::ads) unless told otherwise, which
/// every client but a per-type Envoy takes).
#[derive(Clone, Debug)]
#[must_use]
pub struct EdsCluster {
    name: String,
    service_name: String,
    eds_config: ConfigSource,
    connect_timeout: Duration,
    http2: bool,
}

impl EdsCluster {
    /// An EDS cluster named `name`, fetching its endpoints over ADS under the same name, with a
    /// 5 s connect timeout and the upstream protocol left to Envoy's default (HTTP/1.1).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            service_name: String::new(),
            eds_config: ads(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            http2: false,
        }
    }

    /// Asks EDS for `service_name` instead of the cluster name; the `ClusterLoadAssignment`
    /// must then carry that name as its `cluster_name`.
    pub fn service_name(mut self, service_name: impl Into<String>) -> Self {
        self.service_name = service_name.into();
        self
    }

    /// Fetches endpoints from `source` instead of ADS. Envoy with a stream per type needs an
    /// [`api_config_source`](super::api_config_source) here, which gRPC clients refuse;
    /// [`config_source_for`](super::config_source_for) gives each node the one it takes.
    pub fn eds_config(mut self, source: ConfigSource) -> Self {
        self.eds_config = source;
        self
    }

    /// Sets how long Envoy waits for a TCP connection to an endpoint.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Makes Envoy use HTTP/2 to the endpoints, which a gRPC backend requires; gRPC clients
    /// ignore the option.
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// The finished `Cluster`.
    #[must_use]
    pub fn build(self) -> Cluster {
        Cluster {
            name: self.name,
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds.into())),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(self.eds_config),
                service_name: self.service_name,
            }),
            connect_timeout: Some(duration(self.connect_timeout)),
            lb_policy: LbPolicy::RoundRobin.into(),
            typed_extension_protocol_options: protocol_options(self.http2),
            ..Default::default()
        }
    }
}

/// A `type: STATIC` cluster whose endpoints are inline in its `load_assignment`, for Envoy
/// (gRPC clients do not accept STATIC clusters). Useful for fixed upstreams such as the
/// control plane itself.
#[derive(Clone, Debug)]
#[must_use]
pub struct StaticCluster {
    name: String,
    locality: LocalityEndpoints,
    connect_timeout: Duration,
    http2: bool,
}

impl StaticCluster {
    /// A static cluster named `name` with no endpoints yet, a 5 s connect timeout and
    /// `lb_policy: ROUND_ROBIN`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            locality: LocalityEndpoints::new("", ""),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            http2: false,
        }
    }

    /// Adds the endpoint `host:port`; `host` must be an IP address, as STATIC clusters do not
    /// resolve names.
    pub fn endpoint(mut self, host: impl Into<String>, port: u16) -> Self {
        self.locality = self.locality.endpoint(host, port);
        self
    }

    /// Sets how long Envoy waits for a TCP connection to an endpoint.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Makes Envoy use HTTP/2 to the endpoints (needed for a gRPC upstream such as an xDS
    /// server).
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// The finished `Cluster`; its `load_assignment` names the cluster and has one locality of
    /// weight 1.
    #[must_use]
    pub fn build(self) -> Cluster {
        let load_assignment = LoadAssignment::new(self.name.clone())
            .locality(self.locality)
            .build();
        Cluster {
            name: self.name,
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static.into())),
            load_assignment: Some(load_assignment),
            connect_timeout: Some(duration(self.connect_timeout)),
            lb_policy: LbPolicy::RoundRobin.into(),
            typed_extension_protocol_options: protocol_options(self.http2),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nebucloud_xds_proto::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use nebucloud_xds_proto::prost::{Message, Name};

    fn discovery_type(cluster: &Cluster) -> Option<DiscoveryType> {
        match cluster.cluster_discovery_type {
            Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).ok(),
            _ => None,
        }
    }

    #[test]
    fn eds_cluster_defaults_to_ads_round_robin_and_a_connect_timeout() {
        let cluster = EdsCluster::new("backend").build();
        assert_eq!(cluster.name, "backend");
        assert_eq!(discovery_type(&cluster), Some(DiscoveryType::Eds));
        assert_eq!(cluster.lb_policy, LbPolicy::RoundRobin as i32);
        assert_eq!(cluster.connect_timeout.map(|d| d.seconds), Some(5));
        let eds = cluster.eds_cluster_config.unwrap();
        assert!(matches!(
            eds.eds_config.unwrap().config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert!(cluster.typed_extension_protocol_options.is_empty());
    }

    #[test]
    fn http2_option_is_explicit_http2_under_the_upstream_options_key() {
        let cluster = EdsCluster::new("grpc-backend").http2().build();
        let packed = &cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS];
        assert_eq!(packed.type_url, HttpProtocolOptions::type_url());
        let options = HttpProtocolOptions::decode(packed.value.clone()).unwrap();
        let Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) =
            options.upstream_protocol_options
        else {
            panic!("not explicit_http_config: {options:?}");
        };
        assert!(matches!(
            explicit.protocol_config,
            Some(ProtocolConfig::Http2ProtocolOptions(_))
        ));
    }

    #[test]
    fn eds_cluster_takes_a_given_config_source_and_service_name() {
        let source = super::super::api_config_source(super::super::ApiType::Grpc, "xds");
        let cluster = EdsCluster::new("c")
            .eds_config(source.clone())
            .service_name("svc")
            .connect_timeout(Duration::from_millis(250))
            .build();
        let eds = cluster.eds_cluster_config.unwrap();
        assert_eq!(eds.eds_config, Some(source));
        assert_eq!(eds.service_name, "svc");
        let timeout = cluster.connect_timeout.unwrap();
        assert_eq!((timeout.seconds, timeout.nanos), (0, 250_000_000));
    }

    #[test]
    fn static_cluster_has_inline_weighted_endpoints() {
        let cluster = StaticCluster::new("xds_cluster")
            .endpoint("127.0.0.1", 18000)
            .http2()
            .build();
        assert_eq!(discovery_type(&cluster), Some(DiscoveryType::Static));
        assert!(cluster
            .typed_extension_protocol_options
            .contains_key(HTTP_PROTOCOL_OPTIONS));
        let cla = cluster.load_assignment.unwrap();
        assert_eq!(cla.cluster_name, "xds_cluster");
        let [locality] = cla.endpoints.as_slice() else {
            panic!("expected one locality: {cla:?}");
        };
        assert_eq!(locality.load_balancing_weight.map(|w| w.value), Some(1));
        assert_eq!(locality.lb_endpoints.len(), 1);
    }

    #[test]
    fn cluster_round_trips_through_the_wire() {
        let cluster = EdsCluster::new("backend").http2().build();
        let decoded = Cluster::decode(cluster.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, cluster);
        assert_eq!(
            super::super::any(&cluster).type_url,
            nebucloud_xds_proto::type_url::CLUSTER
        );
    }
}
