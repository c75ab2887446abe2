//! A policy: every route that forwards to a cluster and has no retry policy gets one, and no
//! timeout gets a default — so that no team ships routes without them.
//!
//! Configuration (all optional), declared with `export_plugin!(apply, config = Config)`: it is
//! checked when the plugin loads and handed to every call decoded.
//!
//! ```toml
//! config = { retry_on = "5xx,reset,connect-failure,unavailable", num_retries = 2, timeout_ms = 15000 }
//! ```

use nebucloud_xds_guest::proto::envoy::config::route::v3::route::Action;
use nebucloud_xds_guest::proto::envoy::config::route::v3::{RetryPolicy, RouteConfiguration};
use nebucloud_xds_guest::proto::google::protobuf::{Duration, UInt32Value};
use nebucloud_xds_guest::serde::Deserialize;
use nebucloud_xds_guest::{export_plugin, Context, Resource, Result};

/// The plugin's `config` table. No direct serde dependency: the derive goes through the SDK's
/// re-export, which `crate = …` names.
#[derive(Debug, Deserialize)]
#[serde(crate = "nebucloud_xds_guest::serde", deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_retry_on")]
    retry_on: String,
    #[serde(default = "default_retries")]
    num_retries: u32,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_retry_on() -> String {
    // Envoy's HTTP conditions and gRPC's status names: each client ignores the other's.
    "5xx,reset,connect-failure,unavailable".to_owned()
}
fn default_retries() -> u32 {
    2
}
fn default_timeout_ms() -> u64 {
    15_000
}

/// The plugin function.
pub fn apply(
    _ctx: &Context<'_>,
    config: &Config,
    resources: Vec<Resource>,
) -> Result<Vec<Resource>> {
    resources
        .into_iter()
        .map(|r| match r.decode::<RouteConfiguration>()? {
            Some(mut routes) => {
                add_policies(&mut routes, config);
                Ok(Resource::new(r.name, &routes))
            }
            None => Ok(r),
        })
        .collect()
}

fn add_policies(routes: &mut RouteConfiguration, config: &Config) {
    for vh in &mut routes.virtual_hosts {
        for route in &mut vh.routes {
            let Some(Action::Route(action)) = route.action.as_mut() else {
                continue;
            };
            if action.retry_policy.is_none() && vh.retry_policy.is_none() {
                action.retry_policy = Some(RetryPolicy {
                    retry_on: config.retry_on.clone(),
                    num_retries: Some(UInt32Value {
                        value: config.num_retries,
                    }),
                    ..RetryPolicy::default()
                });
            }
            if action.timeout.is_none() {
                let ms = config.timeout_ms;
                action.timeout = Some(Duration {
                    seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
                    nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
                });
            }
        }
    }
}

export_plugin!(apply, config = Config);

#[cfg(test)]
mod tests {
    use nebucloud_xds_guest::build::{route_to_cluster, RouteConfig, RouteRule, VirtualHostSpec};
    use nebucloud_xds_guest::serde_json::json;
    use nebucloud_xds_guest::{run_native, MemoryInputs, Node};

    use super::*;

    fn action(
        rc: &RouteConfiguration,
        vh: usize,
        r: usize,
    ) -> &nebucloud_xds_guest::proto::envoy::config::route::v3::RouteAction {
        match rc.virtual_hosts[vh].routes[r].action.as_ref() {
            Some(Action::Route(a)) => a,
            _ => panic!("not a route action"),
        }
    }

    #[test]
    fn routes_without_policies_get_them_and_existing_ones_are_kept() {
        let own = RouteConfig::new("own")
            .virtual_host(
                VirtualHostSpec::new("v").route(
                    RouteRule::to_cluster("/", "c")
                        .retry("gateway-error", 7)
                        .timeout(std::time::Duration::from_secs(1)),
                ),
            )
            .build();
        let input = vec![
            Resource::new("plain", &route_to_cluster("plain", "c")),
            Resource::new("own", &own),
        ];
        let out = run_native(
            apply,
            &Node::default(),
            &json!({"num_retries": 3}),
            &MemoryInputs::new(),
            input,
        )
        .unwrap();
        let plain: RouteConfiguration = out[0].decode().unwrap().unwrap();
        let a = action(&plain, 0, 0);
        assert_eq!(
            a.retry_policy
                .as_ref()
                .and_then(|p| p.num_retries)
                .map(|n| n.value),
            Some(3)
        );
        assert_eq!(a.timeout.as_ref().map(|d| d.seconds), Some(15));
        let own: RouteConfiguration = out[1].decode().unwrap().unwrap();
        let a = action(&own, 0, 0);
        assert_eq!(
            a.retry_policy.as_ref().map(|p| p.retry_on.as_str()),
            Some("gateway-error")
        );
        assert_eq!(a.timeout.as_ref().map(|d| d.seconds), Some(1));
    }

    #[test]
    fn other_resources_pass_through_untouched() {
        let r = Resource {
            type_url: "type.googleapis.com/x.Y".into(),
            name: "n".into(),
            body: vec![1, 2, 3],
        };
        let out = run_native(
            apply,
            &Node::default(),
            &json!({}),
            &MemoryInputs::new(),
            vec![r.clone()],
        )
        .unwrap();
        assert_eq!(out, vec![r]);
    }
}
