//! The small pieces every resource is made of (`envoy.config.core.v3` and the protobuf
//! well-known types): `Any` packing, config sources, socket addresses, durations.
//!
//! A config source nested in a resource (RDS in a listener, EDS in a cluster) must name the
//! transport the client already uses, and no single form serves every client (measured with
//! Envoy 1.40, gRPC C-core 1.85 and grpc-js 1.14): `ads {}` serves ADS Envoys and gRPC clients,
//! per-type Envoys need `api_config_source`, and `self {}`, which the xDS spec offers for
//! exactly this, is accepted by the gRPC clients but NACKed by Envoy in every mode (`Missing
//! config source specifier in envoy::config::core::v3::ConfigSource`). Builders default to
//! [`ads()`]; [`config_source_for`] chooses by the node's transport.

use nebucloud_xds_proto::envoy::config::core::v3::{
    address, api_config_source, config_source::ConfigSourceSpecifier, grpc_service,
    socket_address::PortSpecifier, Address, AggregatedConfigSource, ApiConfigSource, ApiVersion,
    ConfigSource, GrpcService, SocketAddress,
};
use nebucloud_xds_proto::google::protobuf::{self as pb, Any};
use nebucloud_xds_proto::prost::{bytes::Bytes, Message, Name};

use crate::node::Node;

/// Packs `msg` into an `Any` whose `type_url` is `type.googleapis.com/<full message name>`,
/// the form every xDS client resolves.
pub fn any<M: Name + Message>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: Bytes::from(msg.encode_to_vec()),
    }
}

/// A `ConfigSource` that says "over the ADS stream you already have": `ads {}` with
/// `resource_api_version: V3`. The builders' default for nested RDS and EDS sources.
///
/// Envoy over ADS (SotW and Delta), gRPC C-core and grpc-js take it. Envoy with a stream per
/// type NACKs it (a cluster's EDS source: `ADS must be configured to support an ADS config
/// source`): for nodes that may be such an Envoy, use [`config_source_for`].
pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3.into(),
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// The xDS transport that an [`api_config_source()`] subscribes with: one gRPC stream per
/// resource type, state-of-the-world or incremental.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ApiType {
    /// State-of-the-world (`GRPC`).
    #[default]
    Grpc,
    /// Incremental (`DELTA_GRPC`).
    DeltaGrpc,
}

impl ApiType {
    fn to_proto(self) -> api_config_source::ApiType {
        match self {
            Self::Grpc => api_config_source::ApiType::Grpc,
            Self::DeltaGrpc => api_config_source::ApiType::DeltaGrpc,
        }
    }
}

/// A `ConfigSource` for per-type (non-ADS) Envoy: `api_config_source {api_type,
/// transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name}}]}` with
/// `resource_api_version: V3`.
///
/// Envoy configured per type needs this form in nested sources (RDS in a listener, EDS in a
/// cluster). `cluster_name` names the bootstrap cluster that reaches the control plane. Envoy
/// over ADS takes it too, but then fetches those resources on streams of their own beside the
/// ADS stream; gRPC clients NACK it (they take only `ads {}` or `self {}` there).
pub fn api_config_source(api_type: ApiType, cluster_name: impl Into<String>) -> ConfigSource {
    let grpc = GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
            grpc_service::EnvoyGrpc {
                cluster_name: cluster_name.into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    ConfigSource {
        resource_api_version: ApiVersion::V3.into(),
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
            api_type: api_type.to_proto().into(),
            transport_api_version: ApiVersion::V3.into(),
            grpc_services: vec![grpc],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The nested `ConfigSource` (RDS in a listener, EDS in a cluster) that `node` fetches from:
/// [`ads()`] for a node on one aggregated stream (every gRPC client, Envoy with `ads_config`),
/// else [`api_config_source()`] of the node's own API type (`GRPC` or `DELTA_GRPC`) through the
/// bootstrap cluster `xds_cluster`, which the node does not announce: the fleet's bootstraps
/// must agree on its name.
///
/// This reads [`Node::transport`], which makes the result depend on it: nodes of one identity
/// that connect differently (ADS and per-type Envoys, say) then get results of their own
/// instead of sharing one. Call it only where the transport matters; a result for gRPC clients
/// alone can use [`ads()`] without reading anything.
pub fn config_source_for(node: &Node, xds_cluster: &str) -> ConfigSource {
    let transport = node.transport();
    if transport.aggregated {
        ads()
    } else if transport.incremental {
        api_config_source(ApiType::DeltaGrpc, xds_cluster)
    } else {
        api_config_source(ApiType::Grpc, xds_cluster)
    }
}

/// A TCP socket `Address` for `host` (an IP literal or, for STRICT_DNS-style consumers, a
/// name) and `port`.
///
/// The port is a `u16` so that an out-of-range port, which grpc-js accepts without a NACK, cannot
/// be built by accident.
pub fn socket_address(host: impl Into<String>, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.into(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// Converts a [`std::time::Duration`] into the protobuf `Duration`, saturating at the largest
/// representable value instead of wrapping.
pub fn duration(d: std::time::Duration) -> pb::Duration {
    pb::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Always below 1e9, so it fits; the fallback only keeps the conversion total.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(999_999_999),
    }
}

/// Wraps a `u32` in the `UInt32Value` that optional weights and counts use.
pub(crate) fn u32_value(value: u32) -> pb::UInt32Value {
    pb::UInt32Value { value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Transport;
    use nebucloud_xds_proto::envoy::config::core::v3::config_source::ConfigSourceSpecifier as S;
    use std::time::Duration;

    #[test]
    fn any_carries_the_type_url_and_decodes_back() {
        let addr = socket_address("127.0.0.1", 8080);
        let packed = any(&addr);
        assert_eq!(
            packed.type_url,
            "type.googleapis.com/envoy.config.core.v3.Address"
        );
        assert_eq!(Address::decode(packed.value).unwrap(), addr);
    }

    #[test]
    fn ads_source_is_aggregated_and_v3() {
        let source = ads();
        assert_eq!(source.resource_api_version, ApiVersion::V3 as i32);
        assert!(matches!(source.config_source_specifier, Some(S::Ads(_))));
    }

    #[test]
    fn api_config_source_names_the_bootstrap_cluster_over_envoy_grpc() {
        let source = api_config_source(ApiType::DeltaGrpc, "xds_cluster");
        assert_eq!(source.resource_api_version, ApiVersion::V3 as i32);
        let Some(S::ApiConfigSource(api)) = source.config_source_specifier else {
            panic!("not an api_config_source: {source:?}");
        };
        assert_eq!(api.api_type, api_config_source::ApiType::DeltaGrpc as i32);
        assert_eq!(api.transport_api_version, ApiVersion::V3 as i32);
        let [grpc] = api.grpc_services.as_slice() else {
            panic!("expected one grpc service: {api:?}");
        };
        let Some(grpc_service::TargetSpecifier::EnvoyGrpc(envoy)) = &grpc.target_specifier else {
            panic!("not envoy_grpc: {grpc:?}");
        };
        assert_eq!(envoy.cluster_name, "xds_cluster");

        let sotw = api_config_source(ApiType::Grpc, "xds_cluster");
        let Some(S::ApiConfigSource(api)) = sotw.config_source_specifier else {
            panic!("not an api_config_source");
        };
        assert_eq!(api.api_type, api_config_source::ApiType::Grpc as i32);
    }

    #[test]
    fn config_source_for_follows_the_node_transport() {
        let source = |aggregated, incremental| {
            let node = Node::new("n").with_transport(Transport {
                aggregated,
                incremental,
            });
            config_source_for(&node, "xds_cluster")
        };
        assert_eq!(source(true, false), ads());
        assert_eq!(source(true, true), ads());
        assert_eq!(
            source(false, false),
            api_config_source(ApiType::Grpc, "xds_cluster")
        );
        assert_eq!(
            source(false, true),
            api_config_source(ApiType::DeltaGrpc, "xds_cluster")
        );
        // A node built without a transport is ADS SotW, as every gRPC client is.
        assert_eq!(config_source_for(&Node::new("n"), "x"), ads());
    }

    #[test]
    fn socket_address_sets_host_and_port_value() {
        let Some(address::Address::SocketAddress(sa)) = socket_address("::1", 443).address else {
            panic!("not a socket address");
        };
        assert_eq!(sa.address, "::1");
        assert_eq!(sa.port_specifier, Some(PortSpecifier::PortValue(443)));
    }

    #[test]
    fn duration_keeps_seconds_and_nanos_and_saturates() {
        let d = duration(Duration::from_millis(1_500));
        assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
        assert_eq!(duration(Duration::MAX).seconds, i64::MAX);
    }
}
