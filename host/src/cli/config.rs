//! `config check`: a config file loaded the way `serve` loads it, without serving.

use std::path::Path;

use nebucloud_xds::app::{load_chain, load_inputs_with};
use nebucloud_xds::config::Config;
use nebucloud_xds::plugins::{EngineOptions, PluginEngine};

/// Loads `file`, compiles every plugin and reads the inputs, then prints what was found; any
/// failure is the error `serve` would stop on.
pub(crate) async fn check(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let engine = PluginEngine::new(EngineOptions::once()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    if let Some(tls) = &config.xds.tls {
        tls.check()?;
    }
    let chain = load_chain(&config, &engine)?;
    let (store, _) = load_inputs_with(config.inputs.dir.as_deref(), config.inputs.limits())?;
    println!("{}: ok", file.display());
    println!(
        "  xds: {} (group by {:?})",
        config.xds.listen, config.xds.group_by
    );
    println!("  admin: {}", config.admin.listen);
    for p in chain.plugins() {
        println!(
            "  plugin {} {} (deadline {} ms, memory {} bytes)",
            p.name(),
            p.hash(),
            p.limits().deadline_ms,
            p.limits().memory_bytes
        );
    }
    println!("  inputs: {} documents", store.len());
    Ok(())
}
