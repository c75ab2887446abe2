//! Endpoint assignments (EDS): a cluster's backends grouped by locality, each locality carrying
//! the `load_balancing_weight` without which gRPC clients drop it silently.

use nebucloud_xds_proto::envoy::config::core::v3::{HealthStatus, Locality};
use nebucloud_xds_proto::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};

use super::core::{socket_address, u32_value};

/// A `ClusterLoadAssignment` for one cluster: its name and its localities.
#[derive(Clone, Debug)]
#[must_use]
pub struct LoadAssignment {
    cluster_name: String,
    localities: Vec<LocalityEndpoints>,
}

impl LoadAssignment {
    /// An assignment for `cluster_name` (the EDS resource name: the cluster's name, or its
    /// `service_name` when it has one), with no localities yet.
    pub fn new(cluster_name: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            localities: Vec::new(),
        }
    }

    /// Adds a locality.
    pub fn locality(mut self, locality: LocalityEndpoints) -> Self {
        self.localities.push(locality);
        self
    }

    /// Adds the endpoint `host:port` to the last locality added, or to a new unnamed locality of
    /// weight 1 if there is none yet.
    pub fn endpoint(mut self, host: impl Into<String>, port: u16) -> Self {
        let locality = match self.localities.pop() {
            Some(locality) => locality,
            None => LocalityEndpoints::new("", ""),
        };
        self.localities.push(locality.endpoint(host, port));
        self
    }

    /// The finished `ClusterLoadAssignment`; every locality in it has a weight of at least 1.
    #[must_use]
    pub fn build(self) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: self.cluster_name,
            endpoints: self
                .localities
                .into_iter()
                .map(LocalityEndpoints::build)
                .collect(),
            ..Default::default()
        }
    }
}

/// The endpoints of one locality (region, zone, sub-zone) and the locality's weight and
/// priority.
#[derive(Clone, Debug)]
#[must_use]
pub struct LocalityEndpoints {
    locality: Locality,
    weight: u32,
    priority: u32,
    endpoints: Vec<Backend>,
}

impl LocalityEndpoints {
    /// A locality in `region` and `zone` with weight 1, priority 0 and no endpoints yet.
    pub fn new(region: impl Into<String>, zone: impl Into<String>) -> Self {
        Self {
            locality: Locality {
                region: region.into(),
                zone: zone.into(),
                sub_zone: String::new(),
            },
            weight: 1,
            priority: 0,
            endpoints: Vec::new(),
        }
    }

    /// Sets the sub-zone.
    pub fn sub_zone(mut self, sub_zone: impl Into<String>) -> Self {
        self.locality.sub_zone = sub_zone.into();
        self
    }

    /// Sets the locality's share of traffic against the other localities of the same priority.
    /// A weight of 0 is raised to 1: Envoy rejects 0, and gRPC clients drop such a locality
    /// without a NACK.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Sets the priority (0 is the highest); priorities in an assignment must be contiguous
    /// from 0.
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// Adds the endpoint `host:port` with no weight and health of its own.
    pub fn endpoint(self, host: impl Into<String>, port: u16) -> Self {
        self.backend(Backend::new(host, port))
    }

    /// Adds an endpoint with its own options.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.endpoints.push(backend);
        self
    }

    /// The finished `LocalityLbEndpoints`, with `load_balancing_weight` always set.
    #[must_use]
    pub fn build(self) -> LocalityLbEndpoints {
        LocalityLbEndpoints {
            locality: Some(self.locality),
            lb_endpoints: self.endpoints.into_iter().map(Backend::build).collect(),
            load_balancing_weight: Some(u32_value(self.weight)),
            priority: self.priority,
            ..Default::default()
        }
    }
}

/// One endpoint (`LbEndpoint`): a socket address, optionally with a weight and a health
/// status.
#[derive(Clone, Debug)]
#[must_use]
pub struct Backend {
    host: String,
    port: u16,
    weight: Option<u32>,
    health: Option<HealthStatus>,
}

impl Backend {
    /// The endpoint `host:port`, with no weight and health status `UNKNOWN` (which clients
    /// treat as healthy).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            weight: None,
            health: None,
        }
    }

    /// Sets the endpoint's weight within its locality; 0 is raised to 1, the smallest weight
    /// Envoy accepts.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight.max(1));
        self
    }

    /// Sets the health status the control plane reports; clients send no traffic to
    /// `UNHEALTHY`, `DRAINING` or `TIMEOUT` endpoints.
    pub fn health(mut self, health: HealthStatus) -> Self {
        self.health = Some(health);
        self
    }

    /// The finished `LbEndpoint`.
    #[must_use]
    pub fn build(self) -> LbEndpoint {
        LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(self.host, self.port)),
                ..Default::default()
            })),
            health_status: self.health.unwrap_or(HealthStatus::Unknown).into(),
            load_balancing_weight: self.weight.map(u32_value),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nebucloud_xds_proto::envoy::config::core::v3::{
        address, socket_address::PortSpecifier, SocketAddress,
    };
    use nebucloud_xds_proto::prost::Message;

    fn socket(endpoint: &LbEndpoint) -> &SocketAddress {
        let Some(HostIdentifier::Endpoint(e)) = &endpoint.host_identifier else {
            panic!("no endpoint: {endpoint:?}");
        };
        let Some(address::Address::SocketAddress(sa)) =
            e.address.as_ref().and_then(|a| a.address.as_ref())
        else {
            panic!("no socket address: {e:?}");
        };
        sa
    }

    #[test]
    fn every_locality_carries_a_weight_by_default() {
        let cla = LoadAssignment::new("backend")
            .locality(LocalityEndpoints::new("local", "a").endpoint("127.0.0.1", 50051))
            .locality(LocalityEndpoints::new("local", "b").endpoint("127.0.0.2", 50051))
            .build();
        assert_eq!(cla.cluster_name, "backend");
        assert_eq!(cla.endpoints.len(), 2);
        for locality in &cla.endpoints {
            assert_eq!(locality.load_balancing_weight.map(|w| w.value), Some(1));
        }
        let zones: Vec<_> = cla
            .endpoints
            .iter()
            .map(|l| {
                l.locality
                    .as_ref()
                    .map(|l| (l.region.as_str(), l.zone.as_str()))
            })
            .collect();
        assert_eq!(zones, [Some(("local", "a")), Some(("local", "b"))]);
    }

    #[test]
    fn zero_weights_are_raised_to_one() {
        let locality = LocalityEndpoints::new("r", "z")
            .weight(0)
            .backend(Backend::new("127.0.0.1", 1).weight(0))
            .build();
        assert_eq!(locality.load_balancing_weight.map(|w| w.value), Some(1));
        assert_eq!(
            locality.lb_endpoints[0]
                .load_balancing_weight
                .map(|w| w.value),
            Some(1)
        );
    }

    #[test]
    fn backend_carries_address_weight_and_health() {
        let endpoint = Backend::new("10.0.0.7", 8443)
            .weight(3)
            .health(HealthStatus::Draining)
            .build();
        let sa = socket(&endpoint);
        assert_eq!(sa.address, "10.0.0.7");
        assert_eq!(sa.port_specifier, Some(PortSpecifier::PortValue(8443)));
        assert_eq!(endpoint.load_balancing_weight.map(|w| w.value), Some(3));
        assert_eq!(endpoint.health_status, HealthStatus::Draining as i32);
        assert_eq!(Backend::new("h", 1).build().load_balancing_weight, None);
    }

    #[test]
    fn endpoint_shortcut_fills_the_last_locality_or_creates_one() {
        let cla = LoadAssignment::new("c")
            .endpoint("127.0.0.1", 1)
            .endpoint("127.0.0.1", 2)
            .locality(LocalityEndpoints::new("r", "z").priority(1).sub_zone("s"))
            .endpoint("127.0.0.1", 3)
            .build();
        let counts: Vec<_> = cla.endpoints.iter().map(|l| l.lb_endpoints.len()).collect();
        assert_eq!(counts, [2, 1]);
        assert_eq!(cla.endpoints[1].priority, 1);
        assert_eq!(
            cla.endpoints[1]
                .locality
                .as_ref()
                .map(|l| l.sub_zone.as_str()),
            Some("s")
        );
    }

    #[test]
    fn assignment_round_trips_through_the_wire() {
        let cla = LoadAssignment::new("c").endpoint("127.0.0.1", 9).build();
        let decoded = ClusterLoadAssignment::decode(cla.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, cla);
        assert_eq!(
            super::super::any(&cla).type_url,
            nebucloud_xds_proto::type_url::ENDPOINT
        );
    }
}
