//! The plugin runtime with real wasm plugins (built by `make plugins`): the mesh generator
//! through the policy chain, and the imports a Rust plugin links.

use std::sync::Arc;

use nebucloud_xds::inputs::StaticInputs;
use nebucloud_xds::plugins::{EngineOptions, Plugin, PluginChain, PluginEngine, PluginLimits};
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::config::route::v3::RouteConfiguration;
use nebucloud_xds_proto::type_url;
use prost::Message;

use crate::support::plugin_wasm;

pub(crate) fn engine() -> PluginEngine {
    PluginEngine::new(EngineOptions::default()).unwrap()
}

pub(crate) fn load(engine: &PluginEngine, name: &str, config: serde_json::Value) -> Arc<Plugin> {
    let wasm = std::fs::read(plugin_wasm(name)).unwrap();
    Arc::new(
        Plugin::load(engine, name, &wasm, &config, PluginLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

pub(crate) fn services() -> StaticInputs {
    let mut inputs = StaticInputs::new();
    inputs.insert(
        "Service",
        "greeter",
        r#"{"protocol":"grpc","endpoints":[{"address":"127.0.0.1","port":50051,"zone":"a"}]}"#,
    );
    inputs.insert(
        "Service",
        "web",
        r#"{"protocol":"http","endpoints":[{"address":"127.0.0.1","port":8080}]}"#,
    );
    inputs
}

#[test]
fn mesh_with_both_policies_computes_checked_resources_and_records_reads() {
    let engine = engine();
    let chain = PluginChain::new(vec![
        load(&engine, "mesh", serde_json::json!({"listener_port": 10001})),
        load(&engine, "retries", serde_json::json!({"num_retries": 3})),
        load(&engine, "cluster-guard", serde_json::json!({})),
    ]);
    let node = Node {
        id: "envoy-1".into(),
        user_agent_name: "envoy".into(),
        ..Node::default()
    };
    let out = chain.run(&node, Arc::new(services())).unwrap();
    let names = |t: &str| {
        out.resources
            .of_type(t)
            .map(|r| r.iter().map(|r| r.name().to_owned()).collect::<Vec<_>>())
    };
    assert_eq!(
        names(type_url::CLUSTER),
        Some(vec!["greeter".to_owned(), "web".to_owned()])
    );
    assert_eq!(names(type_url::LISTENER), Some(vec!["ingress".to_owned()]));
    assert!(out.reads.kinds.contains("Service"));
    assert_eq!(out.reports.len(), 3);
    let grpc = Node {
        id: "grpc-1".into(),
        user_agent_name: "gRPC C-core".into(),
        ..Node::default()
    };
    let out = chain.run(&grpc, Arc::new(services())).unwrap();
    assert_eq!(
        out.resources
            .of_type(type_url::LISTENER)
            .map(|r| r.iter().map(|r| r.name().to_owned()).collect::<Vec<_>>()),
        Some(vec!["greeter".to_owned(), "web".to_owned()])
    );
}

/// The hand-made two-memory component grows each of its memories to about 41 MiB and returns
/// nothing: under a 128 MiB cap it succeeds, and its peak is the sum of both.
#[test]
fn peak_memory_is_the_sum_over_an_instances_memories() {
    let engine = engine();
    let limits = PluginLimits {
        memory_bytes: 128 << 20,
        ..PluginLimits::default()
    };
    let wasm = std::fs::read(plugin_wasm("bad-two-memories")).unwrap();
    let plugin = Plugin::load(&engine, "two", &wasm, &serde_json::json!({}), limits).unwrap();
    let node = Node {
        id: "envoy-1".into(),
        ..Node::default()
    };
    let (out, report) = plugin
        .call(&node, &[], Arc::new(StaticInputs::new()))
        .unwrap();
    assert!(out.is_empty());
    let peak = report.peak_memory;
    assert!(peak > 80 << 20 && peak < 82 << 20, "peak {peak} bytes");
}

/// A rebuilt plugin whose functions did not change (tagger v1 and v2 differ in a string) is
/// compiled mostly from the engine's cache of compiled functions, and runs as its own build:
/// the cache gives back code, never another build's output.
#[test]
fn a_rebuilt_plugin_takes_its_unchanged_functions_from_the_compile_cache() {
    let engine = engine();
    let mesh = load(&engine, "mesh", serde_json::json!({}));
    let v1 = load(&engine, "tagger_v1", serde_json::json!({}));
    let first = engine.compile_cache();
    assert!(first.entries > 0, "{first:?}");
    let v2 = load(&engine, "tagger_v2", serde_json::json!({}));
    let second = engine.compile_cache();
    let hits = second.hits - first.hits;
    let looked_up = hits + (second.misses - first.misses);
    eprintln!("tagger_v2: {hits} of {looked_up} functions from the cache; {second:?}");
    assert!(
        hits * 4 >= looked_up * 3,
        "at least 75% of tagger_v2's functions come from the cache: {hits} of {looked_up}"
    );
    let stamp = |plugin: Arc<Plugin>| {
        let chain = PluginChain::new(vec![Arc::clone(&mesh), plugin]);
        let out = chain.run(Node::default(), Arc::new(services())).unwrap();
        let route = out.resources.get(type_url::ROUTE, "ingress").unwrap();
        let route = RouteConfiguration::decode(route.body().clone()).unwrap();
        route
            .virtual_hosts
            .iter()
            .flat_map(|vh| &vh.response_headers_to_add)
            .filter_map(|h| h.header.as_ref())
            .filter(|h| h.key == "x-plugin-version")
            .map(|h| h.value.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(stamp(v1), ["v1".to_owned()].into());
    assert_eq!(stamp(v2), ["v2".to_owned()].into());

    // A one-shot engine (plugin check, run, bench) keeps nothing.
    let once = PluginEngine::new(EngineOptions::once()).unwrap();
    load(&once, "tagger_v1", serde_json::json!({}));
    assert_eq!(once.compile_cache().entries, 0);
}
