//! Listeners (LDS) in the three shapes clients ask for: the API listener a proxyless gRPC
//! channel resolves, a socket listener for Envoy, and the server listener of an xDS-enabled gRPC
//! server.

use nebucloud_xds_proto::envoy::config::core::v3::Address;
use nebucloud_xds_proto::envoy::config::listener::v3::{
    filter, ApiListener, Filter, FilterChain, Listener,
};
use nebucloud_xds_proto::envoy::config::route::v3::RouteConfiguration;
use nebucloud_xds_proto::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

use super::core::{any, socket_address};
use super::http::{ConnectionManager, RouteSource, HTTP_CONNECTION_MANAGER};
use super::route::{RouteConfig, RouteRule, VirtualHostSpec};

/// The `Listener` a gRPC client resolves for the channel target `xds:///NAME`: named `name`,
/// `api_listener` an `HttpConnectionManager` that fetches the route configuration
/// `route_config_name` by RDS over ADS, router filter last.
#[must_use]
pub fn grpc_api_listener(
    name: impl Into<String>,
    route_config_name: impl Into<String>,
) -> Listener {
    let name = name.into();
    let hcm = ConnectionManager::new(name.clone(), RouteSource::ads(route_config_name)).build();
    api_listener(name, &hcm)
}

/// Like [`grpc_api_listener`], with the routes inline instead of fetched by RDS: the client skips
/// the RDS step and subscribes to the clusters straight away.
#[must_use]
pub fn grpc_api_listener_inline(
    name: impl Into<String>,
    route_config: RouteConfiguration,
) -> Listener {
    let name = name.into();
    let hcm = ConnectionManager::new(name.clone(), route_config).build();
    api_listener(name, &hcm)
}

/// A `Listener` named `name` whose `api_listener` is `hcm` packed as an `Any`, for gRPC clients
/// that need HTTP filters beyond the router (build `hcm` with [`ConnectionManager`] to keep the
/// router last).
#[must_use]
pub fn api_listener(name: impl Into<String>, hcm: &HttpConnectionManager) -> Listener {
    Listener {
        name: name.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(hcm)),
        }),
        ..Default::default()
    }
}

/// An Envoy socket `Listener` named `name` on `bind_addr:port`, with one filter chain whose only
/// network filter is the HTTP connection manager (stat prefix `name`, codec auto, router last)
/// taking its routes from `routes`.
///
/// [`RouteSource::ads`] serves Envoy over ADS only; to serve the node whatever its transport,
/// pass [`RouteSource::rds`] with [`config_source_for`](super::config_source_for), or the routes
/// inline.
#[must_use]
pub fn envoy_http_listener(
    name: impl Into<String>,
    bind_addr: impl Into<String>,
    port: u16,
    routes: impl Into<RouteSource>,
) -> Listener {
    let name = name.into();
    let hcm = ConnectionManager::new(name.clone(), routes).build();
    socket_listener(name, socket_address(bind_addr, port), &hcm)
}

/// A socket `Listener` named `name` on `address`, with one filter chain holding `hcm` as the
/// `envoy.filters.network.http_connection_manager` network filter.
#[must_use]
pub fn socket_listener(
    name: impl Into<String>,
    address: Address,
    hcm: &HttpConnectionManager,
) -> Listener {
    Listener {
        name: name.into(),
        address: Some(address),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HTTP_CONNECTION_MANAGER.to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The resource name an xDS-enabled gRPC server asks for when it listens on `host:port`
/// (bootstrap template `grpc/server?xds.resource.listening_address=%s`). IPv6 hosts are
/// bracketed, as the server formats them.
#[must_use]
pub fn server_listener_name(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("grpc/server?xds.resource.listening_address=[{host}]:{port}")
    } else {
        format!("grpc/server?xds.resource.listening_address={host}:{port}")
    }
}

/// The `Listener` an xDS-enabled gRPC server listening on `host:port` needs before it serves:
/// named by [`server_listener_name`], `address` equal to the listening address, one filter
/// chain whose connection manager has inline routes that accept every RPC
/// (`non_forwarding_action` on prefix `/`, domains `*`), router filter last.
#[must_use]
pub fn grpc_server_listener(host: &str, port: u16) -> Listener {
    let routes = RouteConfig::new("grpc-server-routes")
        .virtual_host(VirtualHostSpec::new("grpc-server").route(RouteRule::non_forwarding("/")))
        .build();
    let hcm = ConnectionManager::new("grpc_server", routes).build();
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    socket_listener(
        server_listener_name(host, port),
        socket_address(bare_host, port),
        &hcm,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{ads, api_config_source, ApiType, ROUTER};
    use nebucloud_xds_proto::envoy::config::core::v3::{
        address, config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
    };
    use nebucloud_xds_proto::envoy::config::route::v3::route::Action;
    use nebucloud_xds_proto::envoy::extensions::filters::http::router::v3::Router;
    use nebucloud_xds_proto::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, http_filter,
    };
    use nebucloud_xds_proto::google::protobuf::Any;
    use nebucloud_xds_proto::prost::{Message, Name};

    fn unpack_hcm(packed: &Any) -> HttpConnectionManager {
        assert_eq!(packed.type_url, HttpConnectionManager::type_url());
        HttpConnectionManager::decode(packed.value.clone()).unwrap()
    }

    fn chain_hcm(listener: &Listener) -> HttpConnectionManager {
        let [chain] = listener.filter_chains.as_slice() else {
            panic!("expected one filter chain: {listener:?}");
        };
        let [filter] = chain.filters.as_slice() else {
            panic!("expected one network filter: {chain:?}");
        };
        assert_eq!(filter.name, "envoy.filters.network.http_connection_manager");
        let Some(filter::ConfigType::TypedConfig(packed)) = &filter.config_type else {
            panic!("no typed_config: {filter:?}");
        };
        unpack_hcm(packed)
    }

    fn assert_router_last(hcm: &HttpConnectionManager) {
        let last = hcm.http_filters.last().expect("http_filters is not empty");
        assert_eq!(last.name, ROUTER);
        let Some(http_filter::ConfigType::TypedConfig(packed)) = &last.config_type else {
            panic!("router has no typed_config");
        };
        assert_eq!(packed.type_url, Router::type_url());
    }

    fn listen_address(listener: &Listener) -> (String, Option<PortSpecifier>) {
        match listener.address.as_ref().and_then(|a| a.address.clone()) {
            Some(address::Address::SocketAddress(sa)) => (sa.address, sa.port_specifier),
            other => panic!("not a socket address: {other:?}"),
        }
    }

    #[test]
    fn grpc_api_listener_decodes_to_rds_over_ads_with_router_last() {
        let listener = grpc_api_listener("greeter", "greeter-routes");
        assert_eq!(listener.name, "greeter");
        assert!(listener.address.is_none() && listener.filter_chains.is_empty());
        let packed = listener.api_listener.and_then(|a| a.api_listener).unwrap();
        let hcm = unpack_hcm(&packed);
        assert_router_last(&hcm);
        let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("not rds");
        };
        assert_eq!(rds.route_config_name, "greeter-routes");
        assert_eq!(rds.config_source, Some(ads()));
    }

    #[test]
    fn grpc_api_listener_inline_carries_the_route_configuration() {
        let rc = crate::build::route_to_cluster("r", "c");
        let listener = grpc_api_listener_inline("greeter", rc.clone());
        let packed = listener.api_listener.and_then(|a| a.api_listener).unwrap();
        let hcm = unpack_hcm(&packed);
        assert_router_last(&hcm);
        assert_eq!(hcm.route_specifier, Some(RouteSpecifier::RouteConfig(rc)));
    }

    #[test]
    fn envoy_listener_binds_and_uses_the_given_config_source() {
        let source = api_config_source(ApiType::DeltaGrpc, "xds_cluster");
        let listener = envoy_http_listener(
            "ingress",
            "127.0.0.1",
            10000,
            RouteSource::rds(source.clone(), "routes"),
        );
        assert_eq!(
            listen_address(&listener),
            (
                "127.0.0.1".to_owned(),
                Some(PortSpecifier::PortValue(10000))
            )
        );
        let hcm = chain_hcm(&listener);
        assert_eq!(hcm.stat_prefix, "ingress");
        assert_router_last(&hcm);
        let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("not rds");
        };
        assert!(matches!(
            rds.config_source.and_then(|c| c.config_source_specifier),
            Some(ConfigSourceSpecifier::ApiConfigSource(_))
        ));
    }

    #[test]
    fn grpc_server_listener_matches_its_address_and_does_not_forward() {
        let listener = grpc_server_listener("127.0.0.1", 50051);
        assert_eq!(
            listener.name,
            "grpc/server?xds.resource.listening_address=127.0.0.1:50051"
        );
        assert_eq!(
            listen_address(&listener),
            (
                "127.0.0.1".to_owned(),
                Some(PortSpecifier::PortValue(50051))
            )
        );
        let hcm = chain_hcm(&listener);
        assert_router_last(&hcm);
        let Some(RouteSpecifier::RouteConfig(rc)) = hcm.route_specifier else {
            panic!("routes are not inline");
        };
        let route = &rc.virtual_hosts[0].routes[0];
        assert_eq!(rc.virtual_hosts[0].domains, ["*"]);
        assert!(matches!(route.action, Some(Action::NonForwardingAction(_))));
    }

    #[test]
    fn server_listener_name_brackets_ipv6_hosts() {
        assert_eq!(
            server_listener_name("::1", 8080),
            "grpc/server?xds.resource.listening_address=[::1]:8080"
        );
        let listener = grpc_server_listener("[::1]", 8080);
        assert_eq!(listener.name, server_listener_name("::1", 8080));
        assert_eq!(listen_address(&listener).0, "::1");
    }

    #[test]
    fn listeners_round_trip_with_the_lds_type_url() {
        for listener in [
            grpc_api_listener("a", "r"),
            envoy_http_listener("b", "0.0.0.0", 8080, RouteSource::ads("r")),
            grpc_server_listener("127.0.0.1", 1),
        ] {
            let packed = any(&listener);
            assert_eq!(packed.type_url, nebucloud_xds_proto::type_url::LISTENER);
            assert_eq!(Listener::decode(packed.value).unwrap(), listener);
        }
    }
}
