//! `plugin run`, `plugin check` and `plugin bench`: a plugin or a config's chain exercised
//! without a server, for one node.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nebucloud_xds::app::{load_chain, load_inputs, load_inputs_with};
use nebucloud_xds::config::Config;
use nebucloud_xds::plugins::{
    bench_plugin, BenchOptions, EngineOptions, Plugin, PluginEngine, PluginLimits,
};
use nebucloud_xds::schema::Schema;
use nebucloud_xds_proto::envoy::config::core::v3::Node;

/// Runs the chain of the config at `config_path` for the node at `node_path` (with `inputs`,
/// else the config's inputs) and prints the resources as JSON, with what each plugin used
/// against its limits and which inputs it read.
pub(crate) fn run(
    config_path: &Path,
    node_path: &Path,
    inputs: Option<&Path>,
) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let engine = PluginEngine::new(EngineOptions {
        fuel: true,
        ..EngineOptions::default()
    })
    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let chain = load_chain(&config, &engine)?;
    let (store, _) = load_inputs_with(
        inputs.or(config.inputs.dir.as_deref()),
        config.inputs.limits(),
    )?;
    let node = read_node(node_path)?;
    let schema = Schema::envoy()?;
    let out = chain.run(&node, store)?;
    let resources: Vec<serde_json::Value> = out
        .resources
        .iter()
        .map(|r| {
            serde_json::json!({
                "type_url": r.type_url(),
                "name": r.name(),
                "version": r.version(),
                "resource": schema.to_json(r.type_url(), r.body()).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect();
    let plugins: Vec<serde_json::Value> = out
        .reports
        .iter()
        .zip(chain.plugins())
        .map(|((name, report), plugin)| {
            let limits = plugin.limits();
            serde_json::json!({
                "plugin": name,
                "instructions": report.instructions,
                "elapsed_us": report.elapsed.as_micros(),
                "peak_memory_bytes": report.peak_memory,
                "memory_limit_bytes": limits.memory_bytes,
                "output_bytes": report.output_bytes,
                "output_limit_bytes": limits.max_output_bytes,
                "reads": report.reads.kinds.iter().map(|k| format!("{k}/*")).chain(report.reads.documents.iter().map(ToString::to_string)).collect::<Vec<_>>(),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(
            &serde_json::json!({ "node": node.id, "resources": resources, "plugins": plugins })
        )?
    );
    Ok(())
}

/// Loads the plugin `file` with the default limits, `init` with the JSON `config` included,
/// and prints its version; an error says which part of the contract it breaks.
pub(crate) fn check(file: &Path, config: &str) -> anyhow::Result<()> {
    let config: serde_json::Value = serde_json::from_str(config).context("--config is not JSON")?;
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let engine =
        PluginEngine::new(EngineOptions::default()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let plugin = Plugin::load(&engine, name, &wasm, &config, PluginLimits::default())
        .with_context(|| file.display().to_string())?;
    println!("{}: ok, version {}", file.display(), plugin.hash());
    Ok(())
}

/// Calls the plugin `file` for `seconds` (clamped to 0.1–600) on one node, an Envoy node
/// `bench` by default, and prints the report.
pub(crate) fn bench(
    file: &Path,
    config: &str,
    node: Option<&Path>,
    inputs: Option<&Path>,
    seconds: f64,
) -> anyhow::Result<()> {
    let config: serde_json::Value = serde_json::from_str(config).context("--config is not JSON")?;
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let node = match node {
        Some(path) => read_node(path)?,
        None => Node {
            id: "bench".into(),
            user_agent_name: "envoy".into(),
            ..Node::default()
        },
    };
    let (store, _) = load_inputs(inputs)?;
    let options = BenchOptions {
        duration: Duration::from_secs_f64(seconds.clamp(0.1, 600.0)),
        ..BenchOptions::default()
    };
    let report = bench_plugin(&wasm, &config, &node, &[], store, &options)
        .with_context(|| file.display().to_string())?;
    println!("{report}");
    Ok(())
}

/// A node from YAML/JSON in Envoy's `Node` form.
fn read_node(path: &Path) -> anyhow::Result<Node> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_yaml::from_str(&text).with_context(|| path.display().to_string())?;
    let msg = Schema::envoy()?
        .from_json("type.googleapis.com/envoy.config.core.v3.Node", json)
        .with_context(|| path.display().to_string())?;
    Ok(prost::Message::decode(
        prost::Message::encode_to_vec(&msg).as_slice(),
    )?)
}
