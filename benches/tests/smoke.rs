//! Smoke runs of the benchmark tools, small enough for `cargo test`: the load generator with
//! 200 nodes against every server over SotW and Delta, and `bench_plugin` on the mesh plugin.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds::plugins::{bench_plugin, BenchOptions, InputView};
use nx_bench::fixtures::{envoy_node, plugin_dir, services, static_inputs};

#[test]
fn loadgen_configures_200_nodes_and_every_change_reaches_all_of_them() {
    let out = std::env::temp_dir().join(format!("nx-loadgen-smoke-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    cmd.args([
        "--nodes",
        "200",
        "--updates",
        "2",
        "--streams-per-conn",
        "20",
        "--check",
    ])
    .args(["--timeout-s", "60", "--name", "smoke"])
    .arg("--out")
    .arg(&out)
    .arg("--server-bin")
    .arg(env!("CARGO_BIN_EXE_bench-server"));
    if !plugin_dir().join("mesh.wasm").exists() {
        eprintln!("mesh.wasm not built (make plugins): our server serves static resources");
        cmd.arg("--static-resources");
    }
    let status = cmd.status().expect("loadgen runs");
    assert!(status.success(), "loadgen --check failed: {status}");
    for file in [
        "smoke.json",
        "smoke.md",
        "smoke-updates.svg",
        "smoke-initial.svg",
        "smoke-memory.svg",
    ] {
        assert!(out.join(file).exists(), "{file} written");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("smoke.json")).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().map(Vec::len), Some(6));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn bench_plugin_reports_latency_instructions_and_memory() {
    let path = plugin_dir().join("mesh.wasm");
    let wasm = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make plugins`)", path.display()));
    let inputs: Arc<dyn InputView> = Arc::new(static_inputs(&services(10, 0)));
    let options = BenchOptions {
        duration: Duration::from_millis(200),
        fresh_calls: 5,
        ..BenchOptions::default()
    };
    let report = bench_plugin(
        &wasm,
        &serde_json::json!({}),
        &envoy_node(0),
        &[],
        inputs,
        &options,
    )
    .expect("the mesh plugin runs");
    assert_eq!(report.output_resources, 22);
    assert!(report.reused.calls >= 10 && report.fresh.calls >= 3);
    assert!(report.reused.p50_ns > 0 && report.reused.p50_ns <= report.reused.p99_ns);
    assert!(report.instructions.unwrap_or(0) > 1000);
    assert!(report.peak_memory_bytes > 0);
    let text = report.to_string();
    assert!(
        text.contains("fresh instance") && text.contains("instructions per call"),
        "{text}"
    );
}
