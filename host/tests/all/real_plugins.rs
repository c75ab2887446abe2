//! Real Envoy and real gRPC clients configured by the mesh plugin through the policy chain of
//! the server as `serve` builds it: requests flow, input file changes reach them, and a failing
//! run leaves them on their last good configuration.

use std::time::Duration;

use crate::scripted::TestServer;
use crate::support::app::{plugin_entry, ConfigDir};
use crate::support::backend::HttpBackend;
use crate::support::clients::{who, ClientKind, GrpcBackend, GrpcClient};
use crate::support::envoy::{Envoy, XdsMode};
use crate::support::{free_port, plugin_wasm, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

pub(crate) fn service(name: &str, protocol: &str, port: u16) -> serde_json::Value {
    serde_json::json!({"kind": "Service", "name": name, "protocol": protocol,
        "endpoints": [{"address": "127.0.0.1", "port": port, "zone": "a"}]})
}

/// An inputs file of these documents.
pub(crate) fn services(docs: &[serde_json::Value]) -> String {
    serde_json::to_string(docs).unwrap()
}

/// The quickstart chain (mesh → retries → cluster-guard) as `serve` runs it from a config in
/// `dir`: its inputs from `dir`'s `inputs/`, scanned every 20 ms.
pub(crate) async fn mesh_server(listener_port: u16, dir: &ConfigDir) -> TestServer {
    dir.serve(&mesh_config(listener_port, "")).await
}

/// The config of [`mesh_server`], with `inputs` (keys of `[inputs]`) added.
pub(crate) fn mesh_config(listener_port: u16, inputs: &str) -> String {
    let mesh = format!("{{ listener_port = {listener_port} }}");
    format!(
        "[pipeline]\ndebounce_ms = 20\n\n\
         [inputs]\ndir = \"inputs\"\ninterval_ms = 20\n{inputs}\n{}{}{}",
        plugin_entry("mesh", &plugin_wasm("mesh"), &mesh),
        plugin_entry(
            "retries",
            &plugin_wasm("retries"),
            "{ num_retries = 2, timeout_ms = 5000 }"
        ),
        plugin_entry("cluster-guard", &plugin_wasm("cluster-guard"), "{}"),
    )
}

#[tokio::test]
async fn envoy_and_grpc_clients_are_configured_by_the_plugin_chain_and_keep_last_good_config() {
    let web1 = HttpBackend::start("web-1").await.unwrap();
    let web2 = HttpBackend::start("web-2").await.unwrap();
    let greeter = GrpcBackend::start_tagged("greeter-1").await.unwrap();
    let dir = ConfigDir::new();
    dir.write_input(
        "services.json",
        &services(&[
            service("web", "http", web1.port()),
            service("greeter", "grpc", greeter.port()),
        ]),
    );
    let port = free_port();
    let server = mesh_server(port, &dir).await;
    let pipeline = server.pipeline();

    // Envoy: the ingress listener routes /web/ to the web service.
    let envoy = Envoy::start(server.addr.port(), "envoy-mesh", XdsMode::SotwAds)
        .await
        .unwrap();
    let got = wait_until(WAIT, POLL, async || {
        Envoy::ok_body(port, "/web/x").await.map(Some)
    })
    .await;
    assert_eq!(
        got.unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail())),
        "web-1"
    );
    // The retries policy shaped what Envoy holds.
    let dump = envoy.config_dump().await.unwrap().to_string();
    assert!(
        dump.contains("connect-failure") && dump.contains("\"num_retries\":2"),
        "retry policy missing from Envoy's config"
    );

    // gRPC clients resolve xds:///greeter through the same chain.
    for kind in ClientKind::ALL {
        let result = GrpcClient::new(
            kind,
            server.addr.port(),
            &format!("{}-mesh", kind.name()),
            "greeter",
        )
        .timeout(Duration::from_secs(20))
        .first_ok()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(who(&result), Some("greeter-1"), "{}", kind.name());
    }

    // An input change reaches Envoy on its open stream.
    dir.write_input(
        "services.json",
        &services(&[
            service("web", "http", web2.port()),
            service("greeter", "grpc", greeter.port()),
        ]),
    );
    let got = wait_until(WAIT, POLL, async || {
        Ok(Some(Envoy::ok_body(port, "/web/x").await?).filter(|b| b == "web-2"))
    })
    .await;
    assert!(
        got.is_ok(),
        "the input change never reached Envoy\n{}",
        envoy.log_tail()
    );

    // A broken input makes the mesh plugin fail: the group keeps its last good config.
    let version_before = server.versions();
    dir.write_input(
        "services.json",
        &services(&[
            service("web", "http", 0),
            service("greeter", "grpc", greeter.port()),
        ]),
    );
    let failed = wait_until(WAIT, POLL, async || {
        Ok(pipeline
            .groups()
            .into_iter()
            .find(|g| g.node_id == "envoy-mesh" && g.last_error.is_some()))
    })
    .await
    .unwrap();
    let error = failed.last_error.unwrap();
    assert!(
        error.starts_with("plugin mesh on node envoy-mesh:") && error.contains("port 0"),
        "{error}"
    );
    let version_after = server.versions();
    assert_eq!(
        version_before, version_after,
        "a failed run must publish nothing"
    );
    assert_eq!(
        Envoy::ok_body(port, "/web/x").await.unwrap(),
        "web-2",
        "Envoy keeps serving its last good config"
    );
}
