//! Hot reload under load: a real Envoy over ADS and a real gRPC client keep their streams
//! while a plugin is replaced three times amid a steady stream of input changes; broken
//! versions are refused and the old one keeps serving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds::inputs::{Document, InputStore};
use nebucloud_xds::pipeline::Pipeline;
use nebucloud_xds::plugins::{PluginSlots, ReloadError};
use nebucloud_xds_proto::type_url;

use crate::scripted::{node, Sotw, TestServer};
use crate::support::app::{plugin_entry, ConfigDir};
use crate::support::backend::HttpBackend;
use crate::support::clients::{ClientKind, GrpcBackend, GrpcClient};
use crate::support::envoy::{Envoy, XdsMode};
use crate::support::{free_port, plugin_wasm, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

fn service_json(name: &str, protocol: &str, port: u16, weight: u64) -> String {
    serde_json::json!({"kind": "Service", "name": name, "protocol": protocol,
        "endpoints": [{"address": "127.0.0.1", "port": port, "zone": "a", "weight": weight}]})
    .to_string()
}

/// The server as `serve` builds it, with the test as its input source: it writes the store
/// and tells the pipeline what changed.
struct Mesh {
    server: TestServer,
    pipeline: Pipeline,
    slots: PluginSlots,
    store: Arc<InputStore>,
    tagger_path: std::path::PathBuf,
    dir: ConfigDir,
}

/// These tests reload by hand: a file watch would contend with them for the reload.
const RELOAD_BY_HAND: &str = "[reload]\nwatch = false\n";

/// mesh → tagger(v1) → cluster-guard, with the tagger loaded from a file the test controls
/// (beside the config) and plugin files reloaded as `reload` (a `[reload]` section) says.
async fn mesh_with_tagger(listener_port: u16, web: u16, greeter: u16, reload: &str) -> Mesh {
    let dir = ConfigDir::new();
    let tagger_path = dir.path().join("tagger.wasm");
    std::fs::copy(plugin_wasm("tagger_v1"), &tagger_path).unwrap();
    let mesh = format!("{{ listener_port = {listener_port} }}");
    let config = format!(
        "[pipeline]\ndebounce_ms = 20\n\n{reload}\n{}{}{}",
        plugin_entry("mesh", &plugin_wasm("mesh"), &mesh),
        plugin_entry("tagger", &tagger_path, "{}"),
        plugin_entry("cluster-guard", &plugin_wasm("cluster-guard"), "{}"),
    );
    let server = dir.serve(&config).await;
    let store = Arc::clone(server.inputs());
    store.replace_source("web", parse(&service_json("web", "http", web, 1)));
    store.replace_source(
        "greeter",
        parse(&service_json("greeter", "grpc", greeter, 1)),
    );
    Mesh {
        pipeline: server.pipeline().clone(),
        slots: server.slots().clone(),
        server,
        store,
        tagger_path,
        dir,
    }
}

fn parse(json: &str) -> Vec<Document> {
    nebucloud_xds::inputs::parse_documents(std::path::Path::new("test.json"), json).unwrap()
}

async fn version_header(port: u16) -> anyhow::Result<Option<String>> {
    let r = Envoy::http_get(port, "/web/", "example.com").await?;
    anyhow::ensure!(r.status == 200, "status {}", r.status);
    Ok(r.header("x-plugin-version").map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_replaced_three_times_under_load_without_dropping_a_stream_or_a_request() {
    let web = HttpBackend::start("web").await.unwrap();
    let greeter = GrpcBackend::start_tagged("greeter").await.unwrap();
    let port = free_port();
    let mesh = mesh_with_tagger(port, web.port(), greeter.port(), RELOAD_BY_HAND).await;
    let envoy = Envoy::start(mesh.server.addr.port(), "envoy-reload", XdsMode::SotwAds)
        .await
        .unwrap();
    let v1 = wait_until(WAIT, POLL, async || version_header(port).await)
        .await
        .unwrap();
    assert_eq!(v1, "v1");
    let connections = envoy.xds_connections().await;
    let mut grpc = GrpcClient::new(
        ClientKind::CCore,
        mesh.server.addr.port(),
        "grpc-reload",
        "greeter",
    )
    .watch(Duration::from_secs(60))
    .unwrap();
    grpc.next_matching(WAIT, |v| v["ok"] == true).await.unwrap();

    // Load: input changes every 50 ms, and requests through Envoy every 10 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let (failures, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let churn = {
        let (store, pipeline, stop) = (
            Arc::clone(&mesh.store),
            mesh.pipeline.clone(),
            Arc::clone(&stop),
        );
        let web_port = web.port();
        tokio::spawn(async move {
            let mut w = 1;
            while !stop.load(Ordering::Relaxed) {
                w = w % 5 + 1;
                pipeline.inputs_changed(
                    store.replace_source("web", parse(&service_json("web", "http", web_port, w))),
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let traffic = {
        let (stop, failures, requests) = (
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&requests),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                requests.fetch_add(1, Ordering::Relaxed);
                if !matches!(Envoy::http_get(port, "/web/", "example.com").await, Ok(r) if r.status == 200)
                {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let grpc_acked = |m: &Mesh| {
        m.server.server.nodes().get("grpc-reload").and_then(|n| {
            n.types
                .get(type_url::ROUTE)
                .and_then(|t| t.acked_version.clone())
        })
    };
    let mut route_versions = vec![grpc_acked(&mesh)];
    // Two replacements through the admin path (a new file), one by rewriting the watched file.
    for (i, v) in ["v2", "v3", "v1"].iter().enumerate() {
        if i < 2 {
            let outcome = mesh
                .slots
                .reload("tagger", Some(&plugin_wasm(&format!("tagger_{v}"))))
                .await
                .unwrap();
            assert!(matches!(
                outcome,
                nebucloud_xds::plugins::ReloadOutcome::Swapped { .. }
            ));
        } else {
            // Back to the original file (which holds v1), as a config rollout would.
            mesh.slots
                .reload("tagger", Some(&mesh.tagger_path))
                .await
                .unwrap();
        }
        let seen = wait_until(WAIT, POLL, async || {
            Ok(version_header(port).await?.filter(|h| h == v))
        })
        .await;
        assert!(
            seen.is_ok(),
            "Envoy never got tagger {v}\n{}",
            envoy.log_tail()
        );
        let before = route_versions.last().cloned().flatten();
        let acked = wait_until(WAIT, POLL, async || {
            Ok(grpc_acked(&mesh).filter(|a| Some(a) != before.as_ref()))
        })
        .await
        .unwrap();
        route_versions.push(Some(acked));
    }
    stop.store(true, Ordering::Relaxed);
    churn.await.unwrap();
    traffic.await.unwrap();

    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "of {} requests through Envoy",
        requests.load(Ordering::Relaxed)
    );
    assert_eq!(
        envoy.xds_connections().await,
        connections,
        "Envoy's xDS connection was reset"
    );
    for n in mesh.server.server.nodes().list() {
        assert_eq!(n.streams, 1, "{} reconnected", n.node_id);
        assert!(
            n.types.values().all(|t| t.nacks == 0),
            "{} NACKed: {n:?}",
            n.node_id
        );
    }
    let lines = grpc.stop().await.unwrap();
    assert!(
        lines.len() > 5,
        "the gRPC client kept calling: {} results",
        lines.len()
    );
    assert!(
        lines.iter().all(|l| l["ok"] == true),
        "a gRPC call failed during the reloads: {lines:?}"
    );
    assert_eq!(mesh.slots.status()[1].loads, 4);
}

#[tokio::test]
async fn a_broken_version_is_refused_and_the_old_one_keeps_serving() {
    let web = HttpBackend::start("web").await.unwrap();
    let port = free_port();
    let mesh = mesh_with_tagger(port, web.port(), 1, RELOAD_BY_HAND).await;
    // A node whose id makes the canary plugin panic.
    let mut canary = Sotw::open(&mesh.server, node("canary-fail-1")).await;
    canary.request(type_url::LISTENER, &[], "", "").await;
    let first = canary.recv().await;
    canary.ack(&first, &[]).await;
    let before = mesh.slots.status()[1].version.clone();

    let err = mesh
        .slots
        .reload("tagger", Some(&plugin_wasm("bad_panic_on_canary")))
        .await
        .unwrap_err();
    let ReloadError::Refused { reason, hash, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        reason.contains("canary")
            && reason.contains("canary-fail-1")
            && reason.contains("panicked"),
        "{reason}"
    );
    let status = &mesh.slots.status()[1];
    assert_eq!(status.version, before, "the old version keeps serving");
    assert_eq!(
        status
            .rejected
            .as_ref()
            .map(|r| (&r.hash, r.error.contains("panicked"))),
        Some((hash, true))
    );

    let garbage = mesh.dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm but not really").unwrap();
    let err = mesh
        .slots
        .reload("tagger", Some(&garbage))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a WebAssembly component"), "{err}");
    assert_eq!(mesh.slots.status()[1].version, before);
    canary.expect_quiet().await;

    // Rollback is one call, and with nothing to roll back to it says so.
    assert!(matches!(
        mesh.slots.rollback("tagger"),
        Err(ReloadError::NoPrevious(_))
    ));
    mesh.slots
        .reload("tagger", Some(&plugin_wasm("tagger_v2")))
        .await
        .unwrap();
    mesh.slots.rollback("tagger").unwrap();
    assert_eq!(mesh.slots.status()[1].version, before);
}

/// The new version runs cleanly, but its output makes a validator later in the chain refuse a
/// group the current version serves: the canary blames the new version, names the validator's
/// reason, and nothing changes for the connected client.
#[tokio::test]
async fn a_version_that_makes_a_later_validator_refuse_a_working_group_is_refused() {
    let web = HttpBackend::start("web").await.unwrap();
    let port = free_port();
    let mesh = mesh_with_tagger(port, web.port(), 1, RELOAD_BY_HAND).await;
    let mut client = Sotw::open(&mesh.server, node("validated-1")).await;
    client.request(type_url::ROUTE, &[], "", "").await;
    let first = client.recv().await;
    client.ack(&first, &[]).await;
    let before = mesh.slots.status()[1].version.clone();

    let err = mesh
        .slots
        .reload("tagger", Some(&plugin_wasm("bad_drop_clusters")))
        .await
        .unwrap_err();
    let ReloadError::Refused { reason, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        reason.contains("validated-1")
            && reason.contains("returned an error: routes point at clusters that do not exist")
            && reason.contains("cluster-guard")
            && reason.contains("with this version of tagger"),
        "{reason}"
    );
    let status = &mesh.slots.status()[1];
    assert_eq!(status.version, before, "the old version keeps serving");
    assert!(status.rejected.is_some());
    client.expect_quiet().await;
}

#[tokio::test]
async fn a_plugin_file_written_slowly_in_chunks_is_loaded_once_whole() {
    // The server's own watch of its plugin files.
    let reload = "[reload]\ninterval_ms = 50\nsettle_ms = 600\n";
    let mesh = mesh_with_tagger(free_port(), 1, 1, reload).await;
    let new = std::fs::read(plugin_wasm("tagger_v2")).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&mesh.tagger_path).unwrap();
        for chunk in new.chunks(new.len() / 5 + 1) {
            f.write_all(chunk).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let expected = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&new));
    let loaded = wait_until(WAIT, POLL, async || {
        Ok((mesh.slots.status()[1].version == expected).then_some(()))
    })
    .await;
    assert!(
        loaded.is_ok(),
        "the whole file was never loaded: {:?}",
        mesh.slots.status()[1]
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = &mesh.slots.status()[1];
    assert_eq!(
        status.loads, 2,
        "loaded exactly once after the initial load"
    );
    assert!(
        status.rejected.is_none(),
        "a partial file was offered: {:?}",
        status.rejected
    );
}
