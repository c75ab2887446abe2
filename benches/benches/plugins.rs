//! Plugin overhead: the same plugin function called natively and as wasm (on a reused
//! instance and on a fresh one), for a trivial call and the mesh generator at 10 and 200
//! services; prints wasm/native and fresh/reused ratios from the same run.
//!
//! Needs the built mesh plugin (`make plugins`): `mesh.wasm` in `$NX_PLUGIN_DIR` or
//! `build/plugins`. Only one plugin crate can be linked natively into a binary (each exports
//! the same component symbols), so the trivial case is the mesh plugin with nothing to do: a
//! gRPC node and no services (it parses its config, lists services through the host, returns
//! nothing).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkGroup, Criterion};
use nebucloud_xds::inputs::{InputView, Reads};
use nebucloud_xds::plugins::{
    EngineOptions, NodeReads, NodeView, Plugin, PluginEngine, PluginLimits,
};
use nebucloud_xds::Resource;
use nebucloud_xds_guest::{run_native, MemoryInputs};
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nx_bench::criterion_ratios::{criterion_dir, human, report, Ratio};
use nx_bench::fixtures::{
    envoy_node, guest_node, memory_inputs, plugin_dir, services, static_inputs,
};

/// One plugin on one input, both ways.
struct Case {
    group: &'static str,
    node: Node,
    memory: MemoryInputs,
    inputs: Arc<dyn InputView>,
}

fn measure(c: &mut Criterion, engine: &PluginEngine, case: &Case) {
    let path = plugin_dir().join("mesh.wasm");
    let Ok(wasm) = std::fs::read(&path) else {
        eprintln!(
            "skipping {}: {} is missing (run `make plugins`)",
            case.group,
            path.display()
        );
        return;
    };
    let config = serde_json::json!({});
    let plugin = match Plugin::load(engine, case.group, &wasm, &config, PluginLimits::default()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skipping {}: {e}", case.group);
            return;
        }
    };
    // As the pipeline calls: the node made once (each call records what it reads of it).
    let node = Arc::new(NodeView::from(&case.node));
    let call = || {
        let (mut reads, mut node_reads) = (Reads::default(), NodeReads::default());
        plugin.call_reading(
            &node,
            &[],
            Arc::clone(&case.inputs),
            &mut reads,
            &mut node_reads,
        )
    };
    let gnode = guest_node(&case.node);
    let mut g: BenchmarkGroup<'_, _> = c.benchmark_group(case.group);
    // Native: the function, plus making the host's resources of its output (content hashes),
    // which the host does for a wasm plugin's output too.
    g.bench_function("native", |b| {
        b.iter(|| {
            let out = run_native(mesh::generate, &gnode, &config, &case.memory, vec![])
                .unwrap_or_default();
            black_box(
                out.into_iter()
                    .map(|r| Resource::new(r.type_url, r.name, r.body))
                    .collect::<Vec<_>>(),
            )
        })
    });
    g.bench_function("wasm_reused", |b| b.iter(|| black_box(call().ok())));
    g.bench_function("wasm_fresh", |b| {
        b.iter(|| {
            plugin.drop_warm_instances();
            black_box(call().ok())
        })
    });
    g.finish();
}

fn case(group: &'static str, node: Node, n: usize) -> Case {
    let svcs = services(n, 0);
    let inputs: Arc<dyn InputView> = Arc::new(static_inputs(&svcs));
    Case {
        group,
        node,
        memory: memory_inputs(&svcs),
        inputs,
    }
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let engine = match PluginEngine::new(EngineOptions::default()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("no plugin engine: {e:#}");
            return;
        }
    };
    let grpc_node = Node {
        user_agent_name: "grpc-go".to_owned(),
        ..envoy_node(0)
    };
    let cases = [
        // Nothing to do: the cost of crossing the boundary (and one host call).
        case("plugin_trivial", grpc_node, 0),
        case("plugin_mesh_10", envoy_node(0), 10),
        case("plugin_mesh_200", envoy_node(0), 200),
    ];
    for k in &cases {
        measure(&mut c, &engine, k);
    }
    c.final_summary();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (label, group) in [
        ("trivial (gRPC node, no services)", "plugin_trivial"),
        ("mesh, 10 services", "plugin_mesh_10"),
        ("mesh, 200 services", "plugin_mesh_200"),
    ] {
        for (what, pair) in [
            ("wasm reused / native", ("wasm_reused", "native")),
            ("wasm fresh / native", ("wasm_fresh", "native")),
            ("wasm fresh / wasm reused", ("wasm_fresh", "wasm_reused")),
        ] {
            if let Some(r) = Ratio::of(&format!("{label}: {what}"), group, pair, since) {
                rows.push(r);
            }
        }
    }
    if let Some(r) = rows
        .iter()
        .find(|r| r.name.starts_with("trivial") && r.name.ends_with("/ native"))
    {
        notes.push(format!(
            "- Target: trivial plugin ≤ 5 µs per call: {} on a reused instance ({}).",
            human(r.ours_ns),
            if r.ours_ns <= 5_000.0 {
                "met"
            } else {
                "missed"
            }
        ));
    }
    for r in rows
        .iter()
        .filter(|r| r.name.starts_with("mesh") && r.name.ends_with("reused / native"))
    {
        notes.push(format!(
            "- Target: realistic plugin ≤ 1.2× native: {} ×{:.2} ({}).",
            r.name.split(':').next().unwrap_or_default(),
            r.ratio,
            if r.ratio <= 1.2 { "met" } else { "missed" }
        ));
    }
    report(
        "Plugin overhead: the same function natively and as a wasm component, same run",
        "plugins",
        ["measured", "baseline", "ratio"],
        &rows,
        &notes.join("\n"),
    );
}
