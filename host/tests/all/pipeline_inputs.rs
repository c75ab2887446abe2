//! The pipeline with real plugins: a change recomputes only the groups that read it; input
//! files edited, added, deleted and broken reach (or, broken, do not disturb) a real Envoy;
//! and no bad plugin ever takes a connected client's config away.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nebucloud_xds::cache::Cache;
use nebucloud_xds::inputs::{watch_dir, DirSource, DocKey, InputLimits, InputStore, InputView};
use nebucloud_xds::pipeline::{Pipeline, PipelineOptions};
use nebucloud_xds::plugins::{Plugin, PluginChain, PluginLimits};
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::google::protobuf::{value::Kind, ListValue, Struct, Value};

use crate::plugins_runtime::{engine, load};
use crate::real_plugins::mesh_server;
use crate::scripted::*;
use crate::support::app::{plugin_entry, ConfigDir};
use crate::support::backend::HttpBackend;
use crate::support::envoy::{Envoy, XdsMode};
use crate::support::{free_port, plugin_wasm, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

fn service_yaml(name: &str, port: u16) -> String {
    format!("kind: Service\nname: {name}\nprotocol: http\nendpoints:\n  - {{ address: 127.0.0.1, port: {port} }}\n")
}

/// A node whose metadata limits the mesh plugin to `services`.
fn node_reading(id: &str, services: &[&str]) -> Node {
    let list = ListValue {
        values: services
            .iter()
            .map(|s| Value {
                kind: Some(Kind::StringValue((*s).into())),
            })
            .collect(),
    };
    let mut metadata = Struct::default();
    metadata.fields.insert(
        "services".into(),
        Value {
            kind: Some(Kind::ListValue(list)),
        },
    );
    Node {
        id: id.into(),
        user_agent_name: "gRPC test".into(),
        metadata: Some(metadata),
        ..Node::default()
    }
}

#[tokio::test]
async fn a_change_recomputes_only_the_groups_that_read_it() {
    let dir = ConfigDir::new();
    let server = mesh_server(free_port(), &dir).await;
    let pipeline = server.pipeline();
    // The test is an input source of its own: it writes the store and tells the pipeline.
    let store = server.inputs();
    let docs = |a: u16, b: u16| {
        let mut d = nebucloud_xds::inputs::parse_documents(
            std::path::Path::new("a.yaml"),
            &service_yaml("a", a),
        )
        .unwrap();
        d.extend(
            nebucloud_xds::inputs::parse_documents(
                std::path::Path::new("b.yaml"),
                &service_yaml("b", b),
            )
            .unwrap(),
        );
        d
    };
    store.replace_source("test", docs(1, 2));
    let mut reads_a = Sotw::open(&server, node_reading("reads-a", &["a"])).await;
    let mut reads_b = Sotw::open(&server, node_reading("reads-b", &["b"])).await;
    for (c, name) in [(&mut reads_a, "a"), (&mut reads_b, "b")] {
        c.request(T_ENDPOINT, &[name], "", "").await;
        let r = c.recv().await;
        c.ack(&r, &[name]).await;
    }
    let runs = |id: &str| {
        pipeline
            .groups()
            .into_iter()
            .find(|g| g.node_id == id)
            .map(|g| g.runs)
            .unwrap_or(0)
    };
    let (a0, b0) = (runs("reads-a"), runs("reads-b"));
    assert_eq!((a0, b0), (1, 1));

    let changed = store.replace_source("test", docs(11, 2));
    assert_eq!(changed, vec![DocKey::new("Service", "a")]);
    let mut batches = pipeline.batches();
    let before = *batches.borrow_and_update();
    pipeline.inputs_changed(changed);
    batches.wait_for(|n| *n > before).await.unwrap();
    assert_eq!(
        runs("reads-a"),
        a0 + 1,
        "the group that read `a` is recomputed"
    );
    assert_eq!(
        runs("reads-b"),
        b0,
        "the group that did not read `a` is not"
    );
    reads_a.recv().await;
    reads_b.expect_quiet().await;
}

#[tokio::test]
async fn editing_adding_deleting_and_breaking_input_files_drive_a_real_envoy() {
    let (one, two, three) = (
        HttpBackend::start("one").await.unwrap(),
        HttpBackend::start("two").await.unwrap(),
        HttpBackend::start("three").await.unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(n);
    std::fs::write(file("web.yaml"), service_yaml("web", one.port())).unwrap();
    let port = free_port();
    let config = ConfigDir::new();
    let server = mesh_server(port, &config).await;
    let pipeline = server.pipeline();
    // A directory source of the test's own, into the server's store: the test scans by hand
    // right after each write (no settle window), so each step is exact.
    let at_once = InputLimits {
        settle: Duration::ZERO,
        ..InputLimits::default()
    };
    let mut source =
        DirSource::with_limits(dir.path(), Arc::clone(server.inputs()), at_once).unwrap();
    pipeline.inputs_changed(source.scan().0);
    let envoy = Envoy::start(server.addr.port(), "envoy-files", XdsMode::DeltaAds)
        .await
        .unwrap();
    let get = |path: &'static str| async move { Envoy::http_get(port, path, "example.com").await };
    let expect = async |path: &'static str, status: u16, body: &str| {
        let seen = wait_until(WAIT, POLL, async || {
            Ok(get(path)
                .await
                .ok()
                .filter(|r| r.status == status && (status != 200 || r.body == body)))
        })
        .await;
        assert!(
            seen.is_ok(),
            "{path} never answered {status} {body}\n{}",
            envoy.log_tail()
        );
    };
    expect("/web/", 200, "one").await;
    // Bump mtimes past whole-second resolution so every rewrite is seen as one.
    let touch = |n: &str, secs: u64| {
        let f = std::fs::File::options().append(true).open(file(n)).unwrap();
        f.set_modified(std::time::SystemTime::now() + Duration::from_secs(secs))
            .unwrap();
    };

    std::fs::write(file("web.yaml"), service_yaml("web", two.port())).unwrap();
    touch("web.yaml", 2);
    pipeline.inputs_changed(source.scan().0);
    expect("/web/", 200, "two").await;

    std::fs::write(file("api.yaml"), service_yaml("api", three.port())).unwrap();
    pipeline.inputs_changed(source.scan().0);
    expect("/api/", 200, "three").await;

    std::fs::write(file("web.yaml"), "kind: Service\nname: web\nendpoints: [\n").unwrap();
    touch("web.yaml", 4);
    let (changed, errors) = source.scan();
    assert!(changed.is_empty());
    let e = errors[0].to_string();
    assert!(e.contains("web.yaml") && e.contains("line"), "{e}");
    expect("/web/", 200, "two").await;

    std::fs::remove_file(file("api.yaml")).unwrap();
    pipeline.inputs_changed(source.scan().0);
    expect("/api/", 404, "").await;
    assert_eq!(
        get("/web/").await.unwrap().body,
        "two",
        "the broken file's last documents stay"
    );
}

/// A file written in two steps whose first half parses (one service of two), with a pause
/// shorter than the settle window but longer than several scans: the pipeline is told of the
/// file once, whole.
// Wired by hand: the directory source alone, watched, with a recorder where the pipeline goes.
#[tokio::test]
async fn a_half_written_input_file_is_never_published() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(InputStore::new());
    let settle = Duration::from_millis(1500);
    let limits = InputLimits {
        settle,
        ..InputLimits::default()
    };
    let source = DirSource::with_limits(dir.path(), Arc::clone(&store), limits).unwrap();
    // What the store held each time the pipeline was told of a change.
    let published = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let (seen, s) = (Arc::clone(&published), Arc::clone(&store));
    tokio::spawn(watch_dir(source, Duration::from_millis(50), move |_| {
        let names = s.list("Service").into_iter().map(|d| d.name).collect();
        seen.lock().unwrap().push(names);
    }));
    let whole = format!(
        "{}---\n{}",
        service_yaml("web", 8001),
        service_yaml("api", 8002)
    );
    let (first, rest) = whole.split_at(whole.find("---").unwrap());
    let path = dir.path().join("shop.yaml");
    // One writer, one open handle: the first half is on disk (and parses) for 400 ms before
    // the rest arrives and the file is closed. Neither the file events (no close yet) nor the
    // settle rule may publish it meanwhile.
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(first.as_bytes()).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    file.write_all(rest.as_bytes()).unwrap();
    drop(file);
    wait_until(WAIT, POLL, async || {
        Ok((store.list("Service").len() == 2).then_some(()))
    })
    .await
    .unwrap();
    tokio::time::sleep(settle).await;
    assert_eq!(
        *published.lock().unwrap(),
        vec![vec!["api".to_owned(), "web".to_owned()]],
        "published once, whole"
    );
}

#[tokio::test]
async fn no_bad_plugin_takes_a_connected_clients_config_away() {
    let engine = engine();
    let dir = ConfigDir::new();
    let config = format!(
        "[pipeline]\ndebounce_ms = 10\n\n{}",
        plugin_entry("mesh", &plugin_wasm("mesh"), "{}")
    );
    let server = dir.serve(&config).await;
    let pipeline = server.pipeline();
    // The test is an input source of its own.
    server.inputs().replace_source(
        "test",
        nebucloud_xds::inputs::parse_documents(
            std::path::Path::new("s.yaml"),
            &service_yaml("web", 8080),
        )
        .unwrap(),
    );
    // The chains below are set on the pipeline directly: a reload's canary would refuse them.
    let mesh = load(&engine, "mesh", serde_json::json!({}));
    let mut client = Sotw::open(&server, node("holder")).await;
    client.request(T_CLUSTER, &[], "", "").await;
    let held = client.recv().await;
    client.ack(&held, &[]).await;
    let group = server.cache.groups()[0].clone();
    let version = server.cache.get(&group).unwrap().version().to_owned();

    for (bad, expect) in [
        ("bad_panic", "panicked at"),
        ("bad_endless_loop", "deadline"),
        ("bad_alloc_1gib", "memory limit"),
        ("bad_garbage_body", "does not decode"),
        ("bad_unknown_type", "names no Envoy API message"),
        ("bad_duplicate_names", "duplicate"),
        ("bad_oversized_output", "exceeds the limit"),
        ("bad_get_flood", "exceeded the name length limit of 4096"),
        (
            "bad_error_log_flood",
            "deliberate panic after an error-log flood",
        ),
        ("bad_two_memories", "memory limit"),
        ("bad_aliased_output", "refused before it was copied"),
    ] {
        let wasm = std::fs::read(plugin_wasm(bad)).unwrap();
        // A short deadline for the endless loop; the others need their time to misbehave.
        let deadline_ms = if bad == "bad_endless_loop" { 200 } else { 5000 };
        let limits = PluginLimits {
            deadline_ms,
            ..PluginLimits::default()
        };
        let plugin =
            Arc::new(Plugin::load(&engine, bad, &wasm, &serde_json::json!({}), limits).unwrap());
        pipeline.set_chain(PluginChain::new(vec![Arc::clone(&mesh), plugin]));
        let error = wait_until(WAIT, POLL, async || {
            Ok(pipeline
                .group(&group)
                .and_then(|g| g.last_error)
                .filter(|e| e.contains(bad)))
        })
        .await
        .unwrap_or_else(|e| panic!("{bad}: {e}"));
        assert!(
            error.starts_with(&format!("plugin {bad} on node holder:")) && error.contains(expect),
            "{error}"
        );
        assert_eq!(
            server.cache.get(&group).unwrap().version(),
            version,
            "{bad} changed the served config"
        );
        client.expect_quiet().await;
    }
    // The server kept serving throughout: a good chain takes effect at once.
    pipeline.set_chain(PluginChain::new(vec![mesh]));
    let ok = wait_until(WAIT, POLL, async || {
        Ok(pipeline.group(&group).filter(|g| g.last_error.is_none()))
    })
    .await;
    assert!(ok.is_ok());
}

/// `install_chain` publishes a reload's precomputed results as they are when no input changed
/// since they were computed, and recomputes with the installed chain when one did. The results
/// come from another chain here, so the cache shows which path was taken.
// Wired by hand: the pipeline alone over fixed inputs, with no server, calling what a reload calls.
#[tokio::test]
async fn precomputed_results_are_published_only_while_the_inputs_are_unchanged() {
    let engine = engine();
    let mesh = load(&engine, "mesh", serde_json::json!({}));
    let tagger = load(&engine, "tagger_v2", serde_json::json!({}));
    let installed = PluginChain::new(vec![Arc::clone(&mesh)]);
    let other = PluginChain::new(vec![mesh, tagger]);
    let inputs: Arc<dyn InputView> = Arc::new(crate::plugins_runtime::services());
    let cache = Cache::new();
    let pipeline = Pipeline::start(
        cache.clone(),
        installed.clone(),
        Arc::clone(&inputs),
        PipelineOptions::default(),
    );
    let node = node("precomputed");
    let group = "g";
    let mut batches = pipeline.batches();
    let settle = |batches: &mut tokio::sync::watch::Receiver<u64>| {
        let before = *batches.borrow_and_update();
        let mut b = batches.clone();
        async move {
            tokio::time::timeout(WAIT, b.wait_for(|n| *n > before))
                .await
                .expect("a batch ran")
                .unwrap();
        }
    };
    let first = settle(&mut batches);
    pipeline.stream_opened(group, &node).unwrap();
    first.await;
    let ours = installed.run(&node, Arc::clone(&inputs)).unwrap().resources;
    let theirs = other.run(&node, Arc::clone(&inputs)).unwrap().resources;
    assert_ne!(ours.version(), theirs.version());
    assert_eq!(cache.get(group).unwrap().version(), ours.version());
    let runs = || pipeline.group(group).map(|g| g.runs).unwrap_or(0);
    let runs_before = runs();

    // Fresh: published as given, with no run of the installed chain.
    let generation = pipeline.input_generation();
    let result = other.run(&node, Arc::clone(&inputs));
    let done = settle(&mut batches);
    pipeline.install_chain(installed.clone(), generation, vec![(group.into(), result)]);
    done.await;
    assert_eq!(cache.get(group).unwrap().version(), theirs.version());
    assert_eq!(
        runs(),
        runs_before + 1,
        "the precomputed run is counted, nothing else ran"
    );

    // Stale: an input change was announced after the results were computed.
    let generation = pipeline.input_generation();
    let result = other.run(&node, Arc::clone(&inputs));
    pipeline.inputs_changed(Vec::new());
    let done = settle(&mut batches);
    pipeline.install_chain(installed.clone(), generation, vec![(group.into(), result)]);
    done.await;
    wait_until(WAIT, POLL, async || {
        Ok(cache
            .get(group)
            .filter(|s| s.version() == ours.version())
            .map(|_| ()))
    })
    .await
    .expect("recomputed with the installed chain");
    assert_eq!(
        runs(),
        runs_before + 2,
        "recomputed once; the stale results were not recorded"
    );
}
