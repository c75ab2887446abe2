//! The server's config file (TOML): where to listen, how nodes group, which plugins run in
//! which order with which limits, where inputs come from. Unknown keys are errors that name
//! the key; relative paths are relative to the file. Each section lives with its checks:
//! `[xds]`/`[admin]` in `xds.rs`, `[[plugins]]`/`[reload]`/`[pipeline]` in `plugins.rs`,
//! `[inputs]` in `inputs.rs`.

mod inputs;
mod plugins;
mod xds;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use inputs::{CustomResourceKind, EtcdConfig, InputsConfig, KubernetesConfig};
pub use plugins::{PipelineConfig, PluginConfig, ReloadConfig};
pub use xds::{AdminConfig, GroupBy, XdsConfig};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The xDS port.
    #[serde(default)]
    pub xds: XdsConfig,
    /// The admin HTTP API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Hot reload of plugin files.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Coalescing of input changes.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Where input documents come from.
    #[serde(default)]
    pub inputs: InputsConfig,
    /// The plugin chain, in order.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (with the key and line for TOML errors).
    pub reason: String,
}

impl Config {
    /// Reads and checks a config file; relative paths in it become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |reason: String| ConfigError {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut names = std::collections::BTreeSet::new();
        for p in &mut config.plugins {
            if !names.insert(p.name.clone()) {
                return Err(err(format!("two plugins are named {:?}", p.name)));
            }
            p.path = base.join(&p.path);
        }
        if let Some(tls) = &mut config.xds.tls {
            tls.cert = base.join(&tls.cert);
            tls.key = base.join(&tls.key);
            if let Some(ca) = &mut tls.client_ca {
                *ca = base.join(&*ca);
            }
        }
        if let Some(dir) = &mut config.inputs.dir {
            *dir = base.join(&*dir);
        }
        if let Some(token) = &mut config.admin.token_file {
            *token = base.join(&*token);
        }
        for dir in &mut config.reload.plugin_dirs {
            // Joined, an empty entry would silently mean the config file's directory.
            if dir.as_os_str().is_empty() {
                return Err(err("reload.plugin_dirs has an empty entry".into()));
            }
            *dir = base.join(&*dir);
        }
        config.check().map_err(err)?;
        Ok(config)
    }

    /// Checks values that parse but cannot work (a zero interval, an empty prefix, a limit of
    /// nothing); the error names the key.
    pub fn check(&self) -> Result<(), String> {
        self.xds.check()?;
        self.reload.check()?;
        self.admin.check()?;
        self.pipeline.check()?;
        self.inputs.check()?;
        for p in &self.plugins {
            p.check()?;
        }
        Ok(())
    }

    /// The defaults, for serving a static resource directory (no plugins).
    pub fn default_for_resources() -> Self {
        Config {
            xds: XdsConfig::default(),
            admin: AdminConfig::default(),
            reload: ReloadConfig::default(),
            pipeline: PipelineConfig::default(),
            inputs: InputsConfig::default(),
            plugins: Vec::new(),
        }
    }
}

impl PluginConfig {
    /// The plugin's config as JSON, for its `init`.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or(serde_json::Value::Null)
    }
}

/// `Err` naming `key` when `value` is 0.
pub(super) fn positive(key: &str, value: u64) -> Result<(), String> {
    if value == 0 {
        Err(format!("{key} is 0: it must be at least 1"))
    } else {
        Ok(())
    }
}

/// A duration in whole milliseconds, as the config file writes it.
pub(super) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
