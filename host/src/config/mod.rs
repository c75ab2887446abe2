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

/// Why a config file was refused; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of this shape (the error names the key and line).
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error.
        #[source]
        source: toml::de::Error,
    },
    /// Two plugins have one name.
    #[error("{}: two plugins are named {name:?}", path.display())]
    DuplicatePlugin {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
    },
    /// A value parses but cannot work.
    #[error("{}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key and why.
        #[source]
        source: InvalidValue,
    },
}

/// A value that parses but cannot work: a zero interval, an empty prefix, a limit of
/// nothing, a combination that would serve the wrong config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidValue {
    /// The key, e.g. `inputs.etcd.prefix` or `plugins.mesh.limits.deadline_ms`.
    pub key: String,
    /// What is wrong with it and what to do, naming the key.
    pub message: String,
}

impl InvalidValue {
    /// `key` is wrong: `message` says how (and names the key).
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidValue {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads and checks a config file; relative paths in it become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let path_buf = || path.to_owned();
        let invalid = |source| ConfigError::Invalid {
            path: path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut names = std::collections::BTreeSet::new();
        for p in &mut config.plugins {
            if !names.insert(p.name.clone()) {
                return Err(ConfigError::DuplicatePlugin {
                    path: path_buf(),
                    name: p.name.clone(),
                });
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
                return Err(invalid(InvalidValue::new(
                    "reload.plugin_dirs",
                    "reload.plugin_dirs has an empty entry",
                )));
            }
            *dir = base.join(&*dir);
        }
        config.check().map_err(invalid)?;
        Ok(config)
    }

    /// Checks values that parse but cannot work (a zero interval, an empty prefix, a limit of
    /// nothing); the error names the key.
    pub fn check(&self) -> Result<(), InvalidValue> {
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
pub(super) fn positive(key: &str, value: u64) -> Result<(), InvalidValue> {
    if value == 0 {
        Err(InvalidValue::new(
            key,
            format!("{key} is 0: it must be at least 1"),
        ))
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
