//! The HTTP connection manager that every HTTP listener wraps, for Envoy and gRPC alike: where
//! its routes come from, and its HTTP filters ending in the router.

use nebucloud_xds_proto::envoy::config::core::v3::ConfigSource;
use nebucloud_xds_proto::envoy::config::route::v3::RouteConfiguration;
use nebucloud_xds_proto::envoy::extensions::filters::http::router::v3::Router;
use nebucloud_xds_proto::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{CodecType, RouteSpecifier},
    http_filter, HttpConnectionManager, HttpFilter, Rds,
};

use super::core::{ads, any};

/// The name of the router HTTP filter, the terminal filter of every chain.
pub const ROUTER: &str = "envoy.filters.http.router";

/// The name of the HTTP connection manager network filter in a listener's filter chain.
pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";

/// The router filter: named [`ROUTER`], with `typed_config` an `Any` of
/// `envoy.extensions.filters.http.router.v3.Router` (Envoy and gRPC both resolve filters by that
/// type URL).
pub fn router_filter() -> HttpFilter {
    HttpFilter {
        name: ROUTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    }
}

/// Where an HTTP connection manager gets its routes: by RDS from a config source, or inline.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSource(RouteSpecifier);

impl RouteSource {
    /// RDS over ADS for the route configuration `route_config_name`: what gRPC clients and
    /// Envoy with `ads_config` take, and per-type Envoy NACKs (see [`ads()`](super::ads)).
    pub fn ads(route_config_name: impl Into<String>) -> Self {
        Self::rds(ads(), route_config_name)
    }

    /// RDS from `config_source` for the route configuration `route_config_name`: for a node
    /// that may be a per-type Envoy, [`config_source_for`](super::config_source_for).
    pub fn rds(config_source: ConfigSource, route_config_name: impl Into<String>) -> Self {
        Self(RouteSpecifier::Rds(Rds {
            config_source: Some(config_source),
            route_config_name: route_config_name.into(),
        }))
    }

    /// The routes inline, with no RDS round trip.
    pub fn inline(route_config: RouteConfiguration) -> Self {
        Self(RouteSpecifier::RouteConfig(route_config))
    }
}

impl From<RouteConfiguration> for RouteSource {
    fn from(route_config: RouteConfiguration) -> Self {
        Self::inline(route_config)
    }
}

/// An `HttpConnectionManager` with `codec_type: AUTO`, a `stat_prefix`, its routes, and HTTP
/// filters that always end in the router: filters added here go before it, and an empty list
/// (which gRPC C-core NACKs) cannot be built.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConnectionManager {
    stat_prefix: String,
    routes: RouteSource,
    filters: Vec<HttpFilter>,
}

impl ConnectionManager {
    /// A connection manager whose stats are prefixed `stat_prefix` (Envoy requires it
    /// non-empty) and whose routes come from `routes`.
    pub fn new(stat_prefix: impl Into<String>, routes: impl Into<RouteSource>) -> Self {
        Self {
            stat_prefix: stat_prefix.into(),
            routes: routes.into(),
            filters: Vec::new(),
        }
    }

    /// Adds an HTTP filter, after those already added and before the router. A filter named
    /// [`ROUTER`] is ignored, as the router is always added last.
    pub fn http_filter(mut self, filter: HttpFilter) -> Self {
        if filter.name != ROUTER {
            self.filters.push(filter);
        }
        self
    }

    /// The finished `HttpConnectionManager`.
    #[must_use]
    pub fn build(self) -> HttpConnectionManager {
        let mut http_filters = self.filters;
        http_filters.push(router_filter());
        HttpConnectionManager {
            codec_type: CodecType::Auto.into(),
            stat_prefix: self.stat_prefix,
            http_filters,
            route_specifier: Some(self.routes.0),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::route_to_cluster;
    use nebucloud_xds_proto::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use nebucloud_xds_proto::prost::{Message, Name};

    fn typed_config_url(filter: &HttpFilter) -> &str {
        match &filter.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => &any.type_url,
            other => panic!("no typed_config: {other:?}"),
        }
    }

    #[test]
    fn router_filter_has_the_router_name_and_type() {
        let router = router_filter();
        assert_eq!(router.name, "envoy.filters.http.router");
        assert_eq!(
            typed_config_url(&router),
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        );
    }

    #[test]
    fn router_stays_last_after_added_filters() {
        let extra = HttpFilter {
            name: "envoy.filters.http.fault".to_owned(),
            ..Default::default()
        };
        let hcm = ConnectionManager::new("ingress", RouteSource::ads("r"))
            .http_filter(router_filter())
            .http_filter(extra)
            .build();
        let names: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["envoy.filters.http.fault", ROUTER]);
        assert_eq!(hcm.codec_type, CodecType::Auto as i32);
        assert_eq!(hcm.stat_prefix, "ingress");
    }

    #[test]
    fn ads_route_source_is_rds_over_ads() {
        let hcm = ConnectionManager::new("s", RouteSource::ads("routes")).build();
        let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("not rds");
        };
        assert_eq!(rds.route_config_name, "routes");
        assert!(matches!(
            rds.config_source.and_then(|c| c.config_source_specifier),
            Some(ConfigSourceSpecifier::Ads(_))
        ));
    }

    #[test]
    fn inline_route_source_embeds_the_configuration() {
        let rc = route_to_cluster("r", "c");
        let hcm = ConnectionManager::new("s", rc.clone()).build();
        assert_eq!(hcm.route_specifier, Some(RouteSpecifier::RouteConfig(rc)));
        let decoded =
            HttpConnectionManager::decode(any(&hcm).value).expect("HCM decodes from its Any");
        assert_eq!(decoded, hcm);
        assert_eq!(any(&hcm).type_url, HttpConnectionManager::type_url());
    }
}
