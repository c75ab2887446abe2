//! Real clients reject invalid resources: Envoy and gRPC C-core NACK them, the server records
//! the NACK with its error_detail, and nothing is re-sent until the config changes.

use std::time::Duration;

use nebucloud_xds::xds::{DeliveryState, TypeStatus};
use nebucloud_xds::{Resource, ResourceSet};
use nebucloud_xds_guest::build::{api_listener, ConnectionManager, EdsCluster, RouteSource};
use nebucloud_xds_guest::proto::google::protobuf::Duration as PbDuration;
use nebucloud_xds_proto::type_url;

use crate::real_envoy::http_mesh;
use crate::real_grpc::{greeter, greeter_with_listener};
use crate::scripted::TestServer;
use crate::support::backend::HttpBackend;
use crate::support::clients::{who, ClientKind, GrpcBackend, GrpcClient};
use crate::support::envoy::{Envoy, XdsMode};
use crate::support::{free_port, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// How long we watch for a re-send that must not happen: Envoy re-NACKs within milliseconds
/// when a server loops, so two seconds would show hundreds.
const WATCH: Duration = Duration::from_secs(2);

async fn type_status(server: &TestServer, node: &str, t: &str) -> Option<TypeStatus> {
    server
        .server
        .nodes()
        .get(node)
        .and_then(|n| n.types.get(t).cloned())
}

async fn wait_state(server: &TestServer, node: &str, t: &str, state: DeliveryState) -> TypeStatus {
    wait_until(WAIT, POLL, async || {
        Ok(type_status(server, node, t)
            .await
            .filter(|s| s.state == Some(state)))
    })
    .await
    .unwrap_or_else(|e| panic!("{t} never reached {state:?}: {e}"))
}

#[tokio::test]
async fn envoy_nack_is_recorded_and_nothing_is_resent_until_the_config_changes() {
    let server = TestServer::start().await;
    let b1 = HttpBackend::start("b1").await.unwrap();
    let b2 = HttpBackend::start("b2").await.unwrap();
    let port = free_port();
    let node = "envoy-nack";
    let good = http_mesh(XdsMode::SotwAds, port, &[("backend", b1.port())], false);
    server.cache.set(
        node,
        ResourceSet::new(good.iter().map(|r| (**r).clone())).unwrap(),
    );
    let envoy = Envoy::start(server.addr.port(), node, XdsMode::SotwAds)
        .await
        .unwrap();
    wait_state(&server, node, type_url::LISTENER, DeliveryState::Acked).await;

    // An invalid cluster: Envoy requires connect_timeout > 0.
    let mut bad_cluster = EdsCluster::new("backend").build();
    bad_cluster.connect_timeout = Some(PbDuration {
        seconds: -1,
        nanos: 0,
    });
    let bad = good.iter().map(|r| {
        if r.type_url() == type_url::CLUSTER {
            Resource::from_message("backend", &bad_cluster)
        } else {
            (**r).clone()
        }
    });
    server.cache.set(node, ResourceSet::new(bad).unwrap());
    let nacked = wait_state(&server, node, type_url::CLUSTER, DeliveryState::Nacked).await;
    let nack = nacked.last_nack.clone().unwrap();
    assert!(
        nack.message.contains("positive duration"),
        "error_detail: {}",
        nack.message
    );
    assert_ne!(nack.code, 0);

    tokio::time::sleep(WATCH).await;
    let after = type_status(&server, node, type_url::CLUSTER).await.unwrap();
    assert_eq!(
        after.responses, nacked.responses,
        "the rejected config must not be re-sent"
    );
    assert_eq!(after.nacks, 1);
    // Envoy keeps serving with its last good config.
    assert_eq!(
        Envoy::http_get(port, "/", "example.com")
            .await
            .unwrap()
            .body,
        "b1"
    );

    // A change of config is sent, accepted, and applied.
    server.cache.set(
        node,
        http_mesh(XdsMode::SotwAds, port, &[("backend", b2.port())], false),
    );
    let acked = wait_state(&server, node, type_url::CLUSTER, DeliveryState::Acked).await;
    assert_eq!(acked.responses, after.responses + 1);
    let body = wait_until(WAIT, POLL, async || {
        Ok(Envoy::http_get(port, "/", "example.com")
            .await
            .ok()
            .filter(|r| r.body == "b2"))
    })
    .await;
    assert!(body.is_ok(), "{}", envoy.log_tail());
}

/// A gRPC listener whose connection manager has no HTTP filters: C-core rejects it.
fn grpc_listener_without_filters() -> Resource {
    let mut hcm = ConnectionManager::new("greeter", RouteSource::ads("greeter-route")).build();
    hcm.http_filters.clear();
    Resource::from_message("greeter", &api_listener("greeter", &hcm))
}

#[tokio::test]
async fn grpc_c_core_nack_is_recorded_and_nothing_is_resent_until_the_config_changes() {
    let server = TestServer::start().await;
    let backend = GrpcBackend::start_tagged("g1").await.unwrap();
    let node = "ccore-nack";
    let with = |listener: Resource| greeter_with_listener(backend.port(), listener);
    server
        .cache
        .set(node, with(grpc_listener_without_filters()));
    let client = GrpcClient::new(ClientKind::CCore, server.addr.port(), node, "greeter")
        .timeout(Duration::from_secs(30));
    let run = tokio::spawn(async move { client.first_ok().await });

    let nacked = wait_state(&server, node, type_url::LISTENER, DeliveryState::Nacked).await;
    let nack = nacked.last_nack.clone().unwrap();
    assert!(
        nack.message.contains("filter"),
        "error_detail: {}",
        nack.message
    );
    assert_eq!(
        nack.kept_version, "",
        "the client never accepted a listener"
    );
    tokio::time::sleep(WATCH).await;
    let after = type_status(&server, node, type_url::LISTENER)
        .await
        .unwrap();
    assert_eq!(
        after.responses, nacked.responses,
        "the rejected listener must not be re-sent"
    );

    server.cache.set(node, greeter(backend.port()));
    let result = run.await.unwrap().unwrap();
    assert_eq!(who(&result), Some("g1"));
}
