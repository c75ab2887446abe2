//! The small pieces every resource is made of (`envoy.config.core.v3` and the protobuf
//! well-known types): `Any` packing, config sources, socket addresses, durations.

use nebucloud_xds_proto::envoy::config::core::v3::{
    address, api_config_source, config_source::ConfigSourceSpecifier, grpc_service,
    socket_address::PortSpecifier, Address, AggregatedConfigSource, ApiConfigSource, ApiVersion,
    ConfigSource, GrpcService, SocketAddress,
};
use nebucloud_xds_proto::google::protobuf::{self as pb, Any};
use nebucloud_xds_proto::prost::{bytes::Bytes, Message, Name};

/// Packs `msg` into an `Any` whose `type_url` is `type.googleapis.com/<full message name>`,
/// the form every xDS client resolves.
pub fn any<M: Name + Message>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: Bytes::from(msg.encode_to_vec()),
    }
}

/// A `ConfigSource` that says "over the ADS stream you already have": `ads {}` with
/// `resource_api_version: V3`.
///
/// This is the only form gRPC clients accept for nested RDS and EDS sources, and what Envoy
/// needs when its bootstrap uses `ads_config`.
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
/// cluster); an `ads {}` there is accepted and then never fetched. `cluster_name` names the
/// bootstrap cluster that reaches the control plane.
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
