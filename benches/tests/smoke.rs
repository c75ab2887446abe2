//! Smoke runs of the benchmark tools, small enough for `cargo test`: the load generator with
//! 200 nodes against every server over SotW and Delta, its plugin-reload and churn modes, and
//! `bench_plugin` on the mesh plugin.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds::inputs::InputView;
use nebucloud_xds::plugins::{bench_plugin, BenchOptions, NodeView};
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
fn loadgen_times_plugin_file_changes_until_every_node_acked_them() {
    let versions: Vec<_> = ["tagger_v1", "tagger_v2", "tagger_v3"]
        .iter()
        .map(|v| plugin_dir().join(format!("{v}.wasm")))
        .collect();
    for v in &versions {
        assert!(
            v.exists(),
            "{} missing: run `make test-plugins`",
            v.display()
        );
    }
    let list = versions
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = std::env::temp_dir().join(format!("nx-loadgen-reload-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--nodes",
            "200",
            "--updates",
            "3",
            "--streams-per-conn",
            "20",
        ])
        .args([
            "--grouping",
            "cluster,node",
            "--protocols",
            "sotw",
            "--check",
        ])
        .args(["--reload", &list, "--reload-interval-ms", "20"])
        .args([
            "--reload-settle-ms",
            "100",
            "--timeout-s",
            "60",
            "--name",
            "reload",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--server-bin")
        .arg(env!("CARGO_BIN_EXE_bench-server"))
        .status()
        .expect("loadgen runs");
    assert!(
        status.success(),
        "loadgen --reload --check failed: {status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("reload.json")).unwrap()).unwrap();
    let runs = json["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 2, "one run per grouping, ours only");
    for run in &runs {
        assert_eq!(run["implementation"], "ours");
        assert_eq!(run["reload"]["settle_ms"], 100);
        let updates = run["updates"].as_array().cloned().unwrap_or_default();
        assert_eq!(updates.len(), 3);
        assert!(updates.iter().all(|u| u["acked"] == 200), "{run}");
        // Nothing is loaded before the file has been unchanged for the settle window.
        assert!(
            run["update_all"]["p50_ms"].as_f64().unwrap_or(0.0) >= 100.0,
            "{run}"
        );
    }
    let md = std::fs::read_to_string(out.join("reload.md")).unwrap();
    assert!(md.contains("file change → all ACKed"), "{md}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn loadgen_churn_forgets_the_departed_groups_and_live_nodes_keep_receiving_changes() {
    let mesh = plugin_dir().join("mesh.wasm");
    assert!(
        mesh.exists(),
        "{} missing: run `make plugins`",
        mesh.display()
    );
    let out = std::env::temp_dir().join(format!("nx-loadgen-churn-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--churn", "2:200", "--impls", "ours", "--protocols", "sotw"])
        .args(["--live-nodes", "20", "--updates", "2", "--grace-ms", "500"])
        .args(["--streams-per-conn", "20", "--timeout-s", "60", "--check"])
        .args(["--name", "churn"])
        .arg("--out")
        .arg(&out)
        .arg("--server-bin")
        .arg(env!("CARGO_BIN_EXE_bench-server"))
        .status()
        .expect("loadgen runs");
    assert!(status.success(), "loadgen --churn --check failed: {status}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("churn.json")).unwrap()).unwrap();
    let runs = json["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "ours only");
    let run = &runs[0];
    // A group per node (identity): the live nodes' groups, then theirs and the newcomers'.
    let baseline = run["groups_baseline"]["count"].as_u64().unwrap_or(0);
    assert_eq!(baseline, 20, "{run}");
    assert!(run["groups_peak"].as_u64().unwrap_or(0) > baseline, "{run}");
    assert_eq!(
        run["groups_after"]["count"].as_u64(),
        Some(baseline),
        "{run}"
    );
    assert_eq!(run["groups_after"]["evicted"].as_u64(), Some(400), "{run}");
    for what in ["cache_entries", "node_records"] {
        assert_eq!(
            run["groups_after"][what].as_u64(),
            Some(baseline),
            "{what}: {run}"
        );
    }
    for phase in ["before", "after"] {
        let updates = run[phase]["updates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(updates.len(), 2, "{phase}: {run}");
        assert!(updates.iter().all(|u| u["acked"] == 20), "{phase}: {run}");
    }
    let md = std::fs::read_to_string(out.join("churn.md")).unwrap();
    assert!(md.contains("groups: baseline / peak / after grace"), "{md}");
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
        &NodeView::from(envoy_node(0)),
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
