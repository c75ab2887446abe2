//! Real proxyless gRPC clients (C-core via grpcio, and grpc-js) resolve `xds:///greeter`
//! through our server and complete RPCs to a local backend.

use std::time::Duration;

use nebucloud_xds::{Resource, ResourceSet};
use nebucloud_xds_guest::build::{grpc_api_listener, route_to_cluster, EdsCluster, LoadAssignment};

use crate::scripted::TestServer;
use crate::support::clients::{who, ClientKind, GrpcBackend, GrpcClient};
use crate::support::wait_until;

/// What a gRPC client needs for `xds:///greeter`: LDS → RDS → CDS → EDS.
pub(crate) fn greeter(backend_port: u16) -> ResourceSet {
    greeter_with_listener(
        backend_port,
        Resource::from_message("greeter", &grpc_api_listener("greeter", "greeter-route")),
    )
}

/// The same with another `greeter` listener (e.g. one a client must reject).
pub(crate) fn greeter_with_listener(backend_port: u16, listener: Resource) -> ResourceSet {
    ResourceSet::new([
        listener,
        Resource::from_message(
            "greeter-route",
            &route_to_cluster("greeter-route", "greeter"),
        ),
        Resource::from_message("greeter", &EdsCluster::new("greeter").build()),
        Resource::from_message(
            "greeter",
            &LoadAssignment::new("greeter")
                .endpoint("127.0.0.1", backend_port)
                .build(),
        ),
    ])
    .unwrap()
}

async fn grpc_client_resolves_and_completes_an_rpc(kind: ClientKind) {
    let server = TestServer::start().await;
    let backend = GrpcBackend::start_tagged("g1").await.unwrap();
    let node = format!("grpc-{}", kind.name());
    server.cache.set(&node, greeter(backend.port()));
    let result = GrpcClient::new(kind, server.addr.port(), &node, "greeter")
        .timeout(Duration::from_secs(20))
        .first_ok()
        .await
        .unwrap_or_else(|e| panic!("{e}\nbackend: {}", backend.stderr_tail()));
    assert_eq!(who(&result), Some("g1"));
    // The client has exited: its record is freed once the server sees the stream close.
    let nodes = server.server.nodes();
    let gone = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || Ok(nodes.get(&node).is_none().then_some(())),
    )
    .await;
    assert!(
        gone.is_ok(),
        "a node's record is freed when its stream closes"
    );
}

#[tokio::test]
async fn grpc_c_core_resolves_xds_target_and_completes_an_rpc() {
    grpc_client_resolves_and_completes_an_rpc(ClientKind::CCore).await;
}

#[tokio::test]
async fn grpc_js_resolves_xds_target_and_completes_an_rpc() {
    grpc_client_resolves_and_completes_an_rpc(ClientKind::GrpcJs).await;
}
