//! Builders for the xDS resource shapes that Envoy 1.40, gRPC C-core and grpc-js accept as is.
//!
//! Each builder fills in what clients require but reject silently when it is missing: a
//! `load_balancing_weight` on every locality, the router filter last in every
//! `HttpConnectionManager`, `"*"` as the default virtual-host domain, HTTP/2 to gRPC backends on
//! request. The results are plain [`crate::proto`] messages: change any field afterwards if a
//! builder does not cover it.
//!
//! Nested config sources (RDS in a listener, EDS in a cluster) default to [`ads()`], which Envoy
//! over ADS and both gRPC clients take; Envoy with a stream per type needs
//! [`api_config_source()`] there instead, and [`config_source_for`] picks by the node's
//! transport (see [`ads()`] for what each client accepts).
//!
//! ```
//! use nebucloud_xds_guest::build::{self, EdsCluster, LoadAssignment, LocalityEndpoints};
//!
//! let listener = build::grpc_api_listener("greeter", "greeter-routes");
//! let routes = build::route_to_cluster("greeter-routes", "greeter-cluster");
//! let cluster = EdsCluster::new("greeter-cluster").build();
//! let endpoints = LoadAssignment::new("greeter-cluster")
//!     .locality(LocalityEndpoints::new("local", "a").endpoint("127.0.0.1", 50051))
//!     .build();
//! # let _ = (listener, routes, cluster, endpoints);
//! ```

mod cluster;
mod core;
mod endpoint;
mod http;
mod listener;
mod route;

pub use self::cluster::{http2_protocol_options, EdsCluster, StaticCluster, HTTP_PROTOCOL_OPTIONS};
pub use self::core::{
    ads, any, api_config_source, config_source_for, duration, socket_address, ApiType,
};
pub use self::endpoint::{Backend, LoadAssignment, LocalityEndpoints};
pub use self::http::{
    router_filter, ConnectionManager, RouteSource, HTTP_CONNECTION_MANAGER, ROUTER,
};
pub use self::listener::{
    api_listener, envoy_http_listener, grpc_api_listener, grpc_api_listener_inline,
    grpc_server_listener, server_listener_name, socket_listener,
};
pub use self::route::{route_to_cluster, RouteConfig, RouteRule, VirtualHostSpec};
pub use nebucloud_xds_proto::envoy::config::core::v3::HealthStatus;
