//! Route configurations (RDS): virtual hosts that match every authority by default, and routes
//! that forward to a cluster, split across weighted clusters, or (on xDS-enabled gRPC servers)
//! do not forward at all.

use std::time::Duration;

use nebucloud_xds_proto::envoy::config::route::v3::{
    self as rt, route::Action, route_action::ClusterSpecifier, route_action::MaxStreamDuration,
    route_match::PathSpecifier, weighted_cluster::ClusterWeight, NonForwardingAction, RetryPolicy,
    RouteAction, RouteConfiguration, RouteMatch, WeightedCluster,
};

use super::core::{duration, u32_value};

/// A `RouteConfiguration`: a name (the RDS resource name) and its virtual hosts.
#[derive(Clone, Debug)]
#[must_use]
pub struct RouteConfig {
    name: String,
    virtual_hosts: Vec<VirtualHostSpec>,
}

impl RouteConfig {
    /// A route configuration named `name` with no virtual hosts yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            virtual_hosts: Vec::new(),
        }
    }

    /// Adds a virtual host; names must be unique within the configuration.
    pub fn virtual_host(mut self, virtual_host: VirtualHostSpec) -> Self {
        self.virtual_hosts.push(virtual_host);
        self
    }

    /// The finished `RouteConfiguration`.
    #[must_use]
    pub fn build(self) -> RouteConfiguration {
        RouteConfiguration {
            name: self.name,
            virtual_hosts: self
                .virtual_hosts
                .into_iter()
                .map(VirtualHostSpec::build)
                .collect(),
            ..Default::default()
        }
    }
}

/// The simplest useful `RouteConfiguration`: `name`, one virtual host matching every domain
/// (`"*"`), one route for every path (prefix `/`) to `cluster`.
#[must_use]
pub fn route_to_cluster(name: impl Into<String>, cluster: impl Into<String>) -> RouteConfiguration {
    let name = name.into();
    RouteConfig::new(name.clone())
        .virtual_host(VirtualHostSpec::new(name).route(RouteRule::to_cluster("/", cluster)))
        .build()
}

/// A `VirtualHost`: a name, the authorities it serves, and its routes in match order.
#[derive(Clone, Debug)]
#[must_use]
pub struct VirtualHostSpec {
    name: String,
    domains: Vec<String>,
    routes: Vec<RouteRule>,
}

impl VirtualHostSpec {
    /// A virtual host named `name` serving every domain (`"*"`), with no routes yet.
    ///
    /// `"*"` matters: gRPC clients match the channel target against `domains` and hang, without
    /// a NACK, when nothing matches.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            domains: vec!["*".to_owned()],
            routes: Vec::new(),
        }
    }

    /// Replaces the domains (`host`, `host:port`, `*.suffix`, `prefix.*` or `*`).
    pub fn domains<I, S>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.domains = domains.into_iter().map(Into::into).collect();
        self
    }

    /// Appends a route; the first route whose match fits a request wins.
    pub fn route(mut self, route: RouteRule) -> Self {
        self.routes.push(route);
        self
    }

    /// The finished `VirtualHost`.
    #[must_use]
    pub fn build(self) -> rt::VirtualHost {
        rt::VirtualHost {
            name: self.name,
            domains: self.domains,
            routes: self.routes.into_iter().map(RouteRule::build).collect(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug)]
enum Target {
    Cluster(String),
    Weighted(Vec<(String, u32)>),
    NonForwarding,
}

/// A `Route`: a path-prefix match and what to do with matching requests. Every constructor sets
/// an action, so a built route is never the action-less route clients reject.
#[derive(Clone, Debug)]
#[must_use]
pub struct RouteRule {
    prefix: String,
    target: Target,
    timeout: Option<Duration>,
    max_stream_duration: Option<Duration>,
    retry: Option<(String, u32)>,
}

impl RouteRule {
    fn new(prefix: impl Into<String>, target: Target) -> Self {
        Self {
            prefix: prefix.into(),
            target,
            timeout: None,
            max_stream_duration: None,
            retry: None,
        }
    }

    /// Requests whose path starts with `prefix` go to `cluster`. For gRPC, `/` matches every
    /// method and `/pkg.Service/` one service.
    pub fn to_cluster(prefix: impl Into<String>, cluster: impl Into<String>) -> Self {
        Self::new(prefix, Target::Cluster(cluster.into()))
    }

    /// Requests whose path starts with `prefix` are split across `clusters` in proportion to
    /// their weights. The list must not be empty and the weights must not all be 0, or clients
    /// NACK the route configuration.
    pub fn to_weighted_clusters<I, S>(prefix: impl Into<String>, clusters: I) -> Self
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let clusters = clusters.into_iter().map(|(c, w)| (c.into(), w)).collect();
        Self::new(prefix, Target::Weighted(clusters))
    }

    /// Requests whose path starts with `prefix` are served locally by an xDS-enabled gRPC
    /// server (`non_forwarding_action`); such servers refuse every RPC that does not match a
    /// route of this kind.
    pub fn non_forwarding(prefix: impl Into<String>) -> Self {
        Self::new(prefix, Target::NonForwarding)
    }

    /// Sets Envoy's per-request timeout (`route.timeout`); gRPC clients ignore it and use
    /// [`max_stream_duration`](Self::max_stream_duration). Has no effect on a non-forwarding
    /// route.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets `max_stream_duration`, the per-RPC deadline that gRPC clients apply (and Envoy too).
    /// Has no effect on a non-forwarding route.
    pub fn max_stream_duration(mut self, limit: Duration) -> Self {
        self.max_stream_duration = Some(limit);
        self
    }

    /// Retries up to `num_retries` times on the conditions in `retry_on` (comma-separated, e.g.
    /// `"5xx,reset"` for Envoy or `"unavailable,cancelled"` for gRPC). Has no effect on a
    /// non-forwarding route.
    pub fn retry(mut self, retry_on: impl Into<String>, num_retries: u32) -> Self {
        self.retry = Some((retry_on.into(), num_retries));
        self
    }

    /// The finished `Route`.
    #[must_use]
    pub fn build(self) -> rt::Route {
        let action = match self.target {
            Target::NonForwarding => Action::NonForwardingAction(NonForwardingAction {}),
            Target::Cluster(cluster) => Action::Route(route_action(
                ClusterSpecifier::Cluster(cluster),
                self.timeout,
                self.max_stream_duration,
                self.retry,
            )),
            Target::Weighted(clusters) => Action::Route(route_action(
                ClusterSpecifier::WeightedClusters(weighted(clusters)),
                self.timeout,
                self.max_stream_duration,
                self.retry,
            )),
        };
        rt::Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix(self.prefix)),
                ..Default::default()
            }),
            action: Some(action),
            ..Default::default()
        }
    }
}

fn weighted(clusters: Vec<(String, u32)>) -> WeightedCluster {
    WeightedCluster {
        clusters: clusters
            .into_iter()
            .map(|(name, weight)| ClusterWeight {
                name,
                weight: Some(u32_value(weight)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn route_action(
    cluster: ClusterSpecifier,
    timeout: Option<Duration>,
    max_stream_duration: Option<Duration>,
    retry: Option<(String, u32)>,
) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(cluster),
        timeout: timeout.map(duration),
        max_stream_duration: max_stream_duration.map(|d| MaxStreamDuration {
            max_stream_duration: Some(duration(d)),
            ..Default::default()
        }),
        retry_policy: retry.map(|(retry_on, n)| RetryPolicy {
            retry_on,
            num_retries: Some(u32_value(n)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nebucloud_xds_proto::prost::Message;

    fn route_action_of(route: &rt::Route) -> &RouteAction {
        let Some(Action::Route(action)) = &route.action else {
            panic!("not a forwarding route: {route:?}");
        };
        action
    }

    #[test]
    fn route_to_cluster_matches_every_domain_and_path() {
        let rc = route_to_cluster("greeter-routes", "greeter");
        assert_eq!(rc.name, "greeter-routes");
        let [vh] = rc.virtual_hosts.as_slice() else {
            panic!("expected one virtual host: {rc:?}");
        };
        assert_eq!(vh.domains, ["*"]);
        let [route] = vh.routes.as_slice() else {
            panic!("expected one route: {vh:?}");
        };
        assert_eq!(
            route
                .r#match
                .as_ref()
                .and_then(|m| m.path_specifier.clone()),
            Some(PathSpecifier::Prefix("/".to_owned()))
        );
        assert_eq!(
            route_action_of(route).cluster_specifier,
            Some(ClusterSpecifier::Cluster("greeter".to_owned()))
        );
    }

    #[test]
    fn route_options_land_in_the_route_action() {
        let route = RouteRule::to_cluster("/pkg.Svc/", "c")
            .timeout(Duration::from_secs(3))
            .max_stream_duration(Duration::from_secs(2))
            .retry("unavailable", 4)
            .build();
        let action = route_action_of(&route);
        assert_eq!(action.timeout.map(|d| d.seconds), Some(3));
        assert_eq!(
            action
                .max_stream_duration
                .and_then(|m| m.max_stream_duration)
                .map(|d| d.seconds),
            Some(2)
        );
        let retry = action.retry_policy.as_ref().unwrap();
        assert_eq!(retry.retry_on, "unavailable");
        assert_eq!(retry.num_retries.map(|n| n.value), Some(4));
    }

    #[test]
    fn weighted_clusters_keep_names_and_weights_in_order() {
        let route = RouteRule::to_weighted_clusters("/", [("blue", 90), ("green", 10)]).build();
        let Some(ClusterSpecifier::WeightedClusters(wc)) =
            &route_action_of(&route).cluster_specifier
        else {
            panic!("not weighted");
        };
        let pairs: Vec<_> = wc
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.weight.map(|w| w.value)))
            .collect();
        assert_eq!(pairs, [("blue", Some(90)), ("green", Some(10))]);
    }

    #[test]
    fn non_forwarding_route_has_the_server_action_and_no_route_action() {
        let route = RouteRule::non_forwarding("/").retry("5xx", 1).build();
        assert!(matches!(route.action, Some(Action::NonForwardingAction(_))));
    }

    #[test]
    fn virtual_host_domains_can_be_replaced() {
        let vh = VirtualHostSpec::new("vh")
            .domains(["greeter", "greeter:50051"])
            .build();
        assert_eq!(vh.domains, ["greeter", "greeter:50051"]);
    }

    #[test]
    fn route_configuration_round_trips_through_the_wire() {
        let rc = RouteConfig::new("r")
            .virtual_host(VirtualHostSpec::new("a").route(RouteRule::to_cluster("/", "c")))
            .virtual_host(VirtualHostSpec::new("b").route(RouteRule::non_forwarding("")))
            .build();
        let decoded = RouteConfiguration::decode(rc.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, rc);
        assert_eq!(
            super::super::any(&rc).type_url,
            nebucloud_xds_proto::type_url::ROUTE
        );
    }
}
