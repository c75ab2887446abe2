//! Real Envoy 1.40 configured by our server in all four xDS modes: traffic flows through the
//! listener we serve, updates arrive on the open stream, and Envoy shows our versions.

use std::time::Duration;

use nebucloud_xds::{Resource, ResourceSet};
use nebucloud_xds_guest::build::{
    ads, api_config_source, duration, envoy_http_listener, ApiType, EdsCluster, LoadAssignment,
    RouteConfig, RouteRule, RouteSource, VirtualHostSpec,
};
use nebucloud_xds_guest::proto::envoy::config::core::v3::ConfigSource;
use nebucloud_xds_proto::type_url;
use serde_json::Value;

use crate::scripted::TestServer;
use crate::support::backend::HttpBackend;
use crate::support::envoy::{Envoy, XdsMode};
use crate::support::{free_port, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

/// Where Envoy fetches RDS and EDS from: over ADS, or (per-type modes) its own services.
pub(crate) fn config_source(mode: XdsMode) -> ConfigSource {
    match mode {
        XdsMode::SotwAds | XdsMode::DeltaAds => ads(),
        XdsMode::SotwPerType => api_config_source(ApiType::Grpc, "xds_cluster"),
        XdsMode::DeltaPerType => api_config_source(ApiType::DeltaGrpc, "xds_cluster"),
    }
}

/// A listener on `port` routing `/` to cluster `backend` (and `/v2` to `backend-v2` when
/// `extra_route`), whose endpoints are the given backends.
pub(crate) fn http_mesh(
    mode: XdsMode,
    port: u16,
    backends: &[(&str, u16)],
    extra_route: bool,
) -> ResourceSet {
    let src = config_source(mode);
    let mut vh = VirtualHostSpec::new("all");
    if extra_route {
        vh = vh.route(RouteRule::to_cluster("/v2", "backend-v2"));
    }
    vh = vh.route(RouteRule::to_cluster("/", "backend"));
    let route = RouteConfig::new("local_route").virtual_host(vh).build();
    let listener = envoy_http_listener(
        "ingress",
        "127.0.0.1",
        port,
        RouteSource::rds(src.clone(), "local_route"),
    );
    let mut resources = vec![
        Resource::from_message("ingress", &listener),
        Resource::from_message("local_route", &route),
    ];
    for (cluster, backend_port) in backends {
        let c = EdsCluster::new(*cluster)
            .eds_config(src.clone())
            .connect_timeout(Duration::from_secs(1))
            .build();
        let cla = LoadAssignment::new(*cluster)
            .endpoint("127.0.0.1", *backend_port)
            .build();
        resources.push(Resource::from_message(*cluster, &c));
        resources.push(Resource::from_message(*cluster, &cla));
    }
    ResourceSet::new(resources).unwrap()
}

/// The `version_info` Envoy reports for a dynamic listener in its config dump.
fn listener_version(dump: &Value, name: &str) -> Option<String> {
    dump["configs"].as_array()?.iter().find_map(|c| {
        c["dynamic_listeners"].as_array()?.iter().find_map(|l| {
            (l["name"] == name).then(|| {
                l["active_state"]["version_info"]
                    .as_str()
                    .map(str::to_owned)
            })?
        })
    })
}

async fn envoy_gets_config_routes_traffic_and_takes_updates(mode: XdsMode) {
    let server = TestServer::start().await;
    let b1 = HttpBackend::start("b1").await.unwrap();
    let b2 = HttpBackend::start("b2").await.unwrap();
    let port = free_port();
    let node = format!("envoy-{mode:?}");
    server.cache.set(
        &node,
        http_mesh(mode, port, &[("backend", b1.port())], false),
    );
    let envoy = Envoy::start(server.addr.port(), &node, mode).await.unwrap();

    let body = wait_until(WAIT, POLL, async || {
        Envoy::ok_body(port, "/").await.map(Some)
    })
    .await;
    assert_eq!(
        body.unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail())),
        "b1"
    );

    // Envoy's config dump shows the version we served for the listener.
    let set = server.cache.get(&node).unwrap();
    let expected = match mode {
        XdsMode::SotwAds | XdsMode::SotwPerType => set
            .of_type(type_url::LISTENER)
            .unwrap()
            .version()
            .to_owned(),
        XdsMode::DeltaAds | XdsMode::DeltaPerType => set
            .get(type_url::LISTENER, "ingress")
            .unwrap()
            .version()
            .to_owned(),
    };
    let dump = envoy.config_dump().await.unwrap();
    assert_eq!(listener_version(&dump, "ingress"), Some(expected));
    let connections = envoy.xds_connections().await;

    // A new endpoint and a new route reach Envoy on the open stream.
    server.cache.set(
        &node,
        http_mesh(
            mode,
            port,
            &[("backend", b2.port()), ("backend-v2", b1.port())],
            true,
        ),
    );
    let body = wait_until(WAIT, POLL, async || {
        Ok(Some(Envoy::ok_body(port, "/").await?).filter(|b| b == "b2"))
    })
    .await;
    assert_eq!(
        body.unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail())),
        "b2"
    );
    let v2 = wait_until(WAIT, POLL, async || {
        Ok(Some(Envoy::ok_body(port, "/v2/x").await?).filter(|b| b == "b1"))
    })
    .await;
    assert_eq!(
        v2.unwrap_or_else(|e| panic!("the new route never applied: {e}\n{}", envoy.log_tail())),
        "b1"
    );
    assert_eq!(
        envoy.xds_connections().await,
        connections,
        "the update must arrive without a reconnect"
    );
    let status = server.server.nodes().get(&node).unwrap();
    assert!(
        status.types.values().all(|t| t.nacks == 0),
        "no NACKs expected: {status:?}"
    );
}

/// One test per xDS mode for `$run(mode)`, named as given: SotW ADS, Delta ADS, SotW per
/// type, Delta per type.
macro_rules! in_every_mode {
    ($run:ident: $sotw_ads:ident, $delta_ads:ident, $sotw_per_type:ident, $delta_per_type:ident) => {
        #[tokio::test]
        async fn $sotw_ads() {
            $run(XdsMode::SotwAds).await;
        }

        #[tokio::test]
        async fn $delta_ads() {
            $run(XdsMode::DeltaAds).await;
        }

        #[tokio::test]
        async fn $sotw_per_type() {
            $run(XdsMode::SotwPerType).await;
        }

        #[tokio::test]
        async fn $delta_per_type() {
            $run(XdsMode::DeltaPerType).await;
        }
    };
}

in_every_mode!(envoy_gets_config_routes_traffic_and_takes_updates:
    envoy_sotw_ads_gets_config_routes_traffic_and_takes_updates,
    envoy_delta_ads_gets_config_routes_traffic_and_takes_updates,
    envoy_sotw_per_type_gets_config_routes_traffic_and_takes_updates,
    envoy_delta_per_type_gets_config_routes_traffic_and_takes_updates);

/// `http_mesh` with one cluster, `backend`, whose connect timeout is `connect_timeout` and
/// whose endpoint source never times out: a cluster Envoy keeps warming stays warming.
fn one_cluster_mesh(mode: XdsMode, port: u16, backend: u16, connect_timeout: u64) -> ResourceSet {
    let mut src = config_source(mode);
    // Zero turns Envoy's initial fetch timeout off: without it, Envoy gives up waiting for the
    // endpoints after 15 s and uses its cached copy, which hides a server that never answers.
    src.initial_fetch_timeout = Some(duration(Duration::ZERO));
    let route = RouteConfig::new("local_route")
        .virtual_host(VirtualHostSpec::new("all").route(RouteRule::to_cluster("/", "backend")))
        .build();
    let listener = envoy_http_listener(
        "ingress",
        "127.0.0.1",
        port,
        RouteSource::rds(src.clone(), "local_route"),
    );
    let cluster = EdsCluster::new("backend")
        .eds_config(src)
        .connect_timeout(Duration::from_secs(connect_timeout))
        .build();
    let cla = LoadAssignment::new("backend")
        .endpoint("127.0.0.1", backend)
        .build();
    ResourceSet::new(vec![
        Resource::from_message("ingress", &listener),
        Resource::from_message("local_route", &route),
        Resource::from_message("backend", &cluster),
        Resource::from_message("backend", &cla),
    ])
    .unwrap()
}

/// The connect timeout of the active cluster `name` in Envoy's config dump, when no cluster is
/// warming.
fn settled_connect_timeout(dump: &Value, name: &str) -> Option<String> {
    let clusters = dump["configs"]
        .as_array()?
        .iter()
        .find(|c| c.get("dynamic_active_clusters").is_some())?;
    if clusters["dynamic_warming_clusters"]
        .as_array()
        .is_some_and(|w| !w.is_empty())
    {
        return None;
    }
    clusters["dynamic_active_clusters"]
        .as_array()?
        .iter()
        .find(|c| c["cluster"]["name"] == name)
        .and_then(|c| c["cluster"]["connect_timeout"].as_str())
        .map(str::to_owned)
}

/// A cluster that changes while its endpoints do not: Envoy warms the new cluster and asks for
/// its endpoints again, at the version it already holds. The server must answer that request
/// (the spec: "management server is expected to provide the EDS/RDS updates during warming"),
/// or the new cluster waits out Envoy's initial fetch timeout, here turned off.
async fn envoy_takes_a_changed_cluster_whose_endpoints_did_not_change(mode: XdsMode) {
    let server = TestServer::start().await;
    let b1 = HttpBackend::start("b1").await.unwrap();
    let port = free_port();
    let node = format!("envoy-warming-{mode:?}");
    server
        .cache
        .set(&node, one_cluster_mesh(mode, port, b1.port(), 1));
    let envoy = Envoy::start(server.addr.port(), &node, mode).await.unwrap();
    let body = wait_until(WAIT, POLL, async || {
        Envoy::ok_body(port, "/").await.map(Some)
    })
    .await;
    assert_eq!(
        body.unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail())),
        "b1"
    );
    let dump = envoy.config_dump().await.unwrap();
    assert_eq!(
        settled_connect_timeout(&dump, "backend").as_deref(),
        Some("1s")
    );

    server
        .cache
        .set(&node, one_cluster_mesh(mode, port, b1.port(), 3));
    let settled = wait_until(WAIT, POLL, async || {
        let dump = envoy.config_dump().await?;
        Ok(settled_connect_timeout(&dump, "backend").filter(|t| t == "3s"))
    })
    .await;
    settled.unwrap_or_else(|e| {
        panic!(
            "the changed cluster never left warming: {e}\n{}",
            envoy.log_tail()
        )
    });
    assert_eq!(Envoy::ok_body(port, "/").await.unwrap(), "b1");
}

in_every_mode!(envoy_takes_a_changed_cluster_whose_endpoints_did_not_change:
    envoy_sotw_ads_takes_a_changed_cluster_whose_endpoints_did_not_change,
    envoy_delta_ads_takes_a_changed_cluster_whose_endpoints_did_not_change,
    envoy_sotw_per_type_takes_a_changed_cluster_whose_endpoints_did_not_change,
    envoy_delta_per_type_takes_a_changed_cluster_whose_endpoints_did_not_change);
