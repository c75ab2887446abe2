//! `plugin run`, `plugin check` and `plugin bench`: a plugin or a config's chain exercised
//! without a server, for one node (`plugin test`, for many, is in `golden`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nebucloud_xds::app::load_inputs;
use nebucloud_xds::inputs::DEFAULT_MAX_FILE_BYTES;
use nebucloud_xds::plugins::{
    bench_plugin, BenchOptions, EngineOptions, NodeView, Plugin, PluginChain, PluginEngine,
    PluginLimits,
};
use nebucloud_xds::schema::Schema;
use nebucloud_xds_proto::envoy::config::core::v3::Node;

use super::dry_run::{read_node, resource_json, DryRun};

/// How long `plugin run --profile` runs the chain again after its first run: a plugin that
/// takes 100 µs gets thousands of samples, where one run would give it one or none.
const PROFILE_TIME: Duration = Duration::from_secs(1);

/// Runs the chain of the config at `config_path` for the node at `node_path` (with `inputs`,
/// else the config's inputs) and prints the resources as JSON, with what each plugin used
/// against its limits and which inputs it read. With `profile`, runs it again for
/// [`PROFILE_TIME`] and writes each plugin's profile there (also when the first run fails:
/// where a plugin that ran past its deadline spent its time is then the question).
pub(crate) fn run(
    config_path: &Path,
    node_path: &Path,
    inputs: Option<&Path>,
    profile: Option<&Path>,
) -> anyhow::Result<()> {
    let options = EngineOptions {
        fuel: true,
        profile: profile.is_some(),
        ..EngineOptions::once()
    };
    let dry = DryRun::load(config_path, inputs, options)?;
    for e in &dry.skipped {
        tracing::warn!(error = %e, "input file skipped until it is fixed");
    }
    let node = dry.read_node(node_path)?;
    let schema = Schema::envoy()?;
    let chain = &dry.chain;
    let out = match (dry.run(&node), profile) {
        (Ok(out), _) => out,
        (Err(e), Some(path)) => {
            if let Err(w) = write_profiles(chain, path, 1) {
                eprintln!("{w:#}");
            }
            return Err(e.into());
        }
        (Err(e), None) => return Err(e.into()),
    };
    let resources: Vec<serde_json::Value> = out
        .resources
        .iter()
        .map(|r| {
            let mut json = resource_json(schema, r);
            json.insert("version".into(), r.version().into());
            serde_json::Value::Object(json)
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
                "node_reads": report.node_reads.names(),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(
            &serde_json::json!({ "node": node.id(), "resources": resources, "plugins": plugins })
        )?
    );
    if let Some(path) = profile {
        let (started, mut runs) = (Instant::now(), 1);
        while started.elapsed() < PROFILE_TIME {
            dry.run(&node)?;
            runs += 1;
        }
        write_profiles(chain, path, runs)?;
    }
    Ok(())
}

/// Writes each plugin's profile, to `path` for a chain of one plugin, else to `path` with the
/// plugin's name before the extension (`out.mesh.json`), and says where and how to open them.
fn write_profiles(chain: &PluginChain, path: &Path, runs: u64) -> anyhow::Result<()> {
    let one = chain.plugins().len() == 1;
    for plugin in chain.plugins() {
        let file = if one {
            path.to_owned()
        } else {
            named_after(path, plugin.name())
        };
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&file)
                .with_context(|| format!("cannot write {}", file.display()))?,
        );
        let samples = plugin
            .finish_profile(&mut out)
            .map_err(|e| anyhow::anyhow!("profile of {}: {e:#}", plugin.name()))?;
        out.flush()
            .with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!(
            "profile of plugin {}: {samples} stack samples over {runs} run{} of the chain, written to {}",
            plugin.name(),
            if runs == 1 { "" } else { "s" },
            file.display()
        );
    }
    eprintln!(
        "open {} at https://profiler.firefox.com (\"Load a profile from file\"): Call Tree and \
         Flame Graph show where the time goes, per function",
        if one { "it" } else { "each" }
    );
    Ok(())
}

/// `dir/out.json` with `name` before its extension: `dir/out.name.json`.
fn named_after(path: &Path, name: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(Default::default, |s| s.to_string_lossy());
    match path.extension() {
        Some(ext) => path.with_file_name(format!("{stem}.{name}.{}", ext.to_string_lossy())),
        None => path.with_file_name(format!("{stem}.{name}")),
    }
}

/// Loads the plugin `file` with the default limits, `init` with the JSON `config` included,
/// and prints its version; an error says which part of the contract it breaks.
pub(crate) fn check(file: &Path, config: &str) -> anyhow::Result<()> {
    let config: serde_json::Value = serde_json::from_str(config).context("--config is not JSON")?;
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let engine = PluginEngine::new(EngineOptions::once()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
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
        Some(path) => read_node(
            path,
            DEFAULT_MAX_FILE_BYTES,
            &format!("inputs.max_file_bytes = {DEFAULT_MAX_FILE_BYTES} (the default)"),
        )?,
        None => NodeView::from(Node {
            id: "bench".into(),
            user_agent_name: "envoy".into(),
            ..Node::default()
        }),
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
