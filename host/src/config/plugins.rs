//! `[[plugins]]`, `[reload]` and `[pipeline]`: which plugins run in which order with which
//! limits, how their files are reloaded, and how input changes are coalesced.

use std::path::PathBuf;

use serde::Deserialize;

use super::{millis, positive, InvalidValue};
use crate::plugins::PluginLimits;

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Its name in logs, metrics and the admin API.
    pub name: String,
    /// The `.wasm` component.
    pub path: PathBuf,
    /// Handed to the plugin's `init` as JSON.
    #[serde(default = "empty_table")]
    pub config: toml::Value,
    /// Per-call limits.
    #[serde(default)]
    pub limits: PluginLimits,
}

fn empty_table() -> toml::Value {
    toml::Value::Table(toml::Table::new())
}

/// `[reload]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload a plugin when its file changes (default true).
    pub watch: bool,
    /// How often plugin files are polled when no file events can be had, in ms (default 250).
    /// With events (inotify), a file closed after writing or renamed into place is loaded once
    /// no other event came for it for 50 ms.
    pub interval_ms: u64,
    /// How long a change that no close or rename marks whole must stay unchanged before it
    /// is loaded, in ms (default 1000): under the polling fallback, or for a writer that keeps
    /// the file open. A torn file is refused by the load's checks and tried again at the next
    /// change.
    pub settle_ms: u64,
    /// The directories a reload may read plugin files from, relative to this file (default:
    /// the directories of the configured plugin files). A file is read only if it is a
    /// regular file inside one of them once symlinks are resolved, whether it is named by
    /// `POST /plugins/{name}/reload {"path": …}` or watched.
    pub plugin_dirs: Vec<PathBuf>,
    /// The largest plugin file a reload reads, in bytes (default 64 MiB).
    pub max_plugin_bytes: u64,
    /// How long reading a plugin file for a reload may take, in ms (default 10,000).
    pub read_timeout_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            interval_ms: 250,
            settle_ms: 1000,
            plugin_dirs: Vec::new(),
            max_plugin_bytes: crate::plugins::PluginSlots::DEFAULT_MAX_PLUGIN_BYTES,
            read_timeout_ms: millis(crate::plugins::PluginSlots::DEFAULT_READ_TIMEOUT),
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Quiet time that ends a burst of input changes, in ms (default 100).
    pub debounce_ms: u64,
    /// Longest a change waits for its burst to end, in ms (default 1000).
    pub max_delay_ms: u64,
    /// How long a node group is kept after its last stream closed, in ms (default 300,000:
    /// five minutes). Then its record, cache entry and results are forgotten, and a node that
    /// comes back is computed afresh. `0` forgets a group as its last stream closes (then
    /// clients that only make unary fetches are never served).
    pub group_grace_ms: u64,
    /// The most node groups held at once (default 50,000); a stream or fetch that would make
    /// another is refused with `RESOURCE_EXHAUSTED` until one is forgotten.
    pub max_groups: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            debounce_ms: 100,
            max_delay_ms: 1000,
            group_grace_ms: millis(crate::pipeline::DEFAULT_GROUP_GRACE),
            max_groups: crate::pipeline::DEFAULT_MAX_GROUPS,
        }
    }
}

impl PluginConfig {
    /// Values that parse but cannot work, naming the key.
    pub(super) fn check(&self) -> Result<(), InvalidValue> {
        if self.name.trim().is_empty() {
            return Err(InvalidValue::new(
                "plugins.name",
                "plugins.name is empty: every plugin needs a name",
            ));
        }
        let key = |field: &str| format!("plugins.{}.limits.{field}", self.name);
        positive(&key("deadline_ms"), self.limits.deadline_ms)?;
        positive(&key("memory_bytes"), self.limits.memory_bytes as u64)?;
        positive(&key("max_input_bytes"), self.limits.max_input_bytes as u64)?;
        positive(
            &key("max_output_bytes"),
            self.limits.max_output_bytes as u64,
        )?;
        positive(&key("max_reads"), self.limits.max_reads as u64)?;
        positive(&key("max_read_bytes"), self.limits.max_read_bytes as u64)?;
        positive(
            &key("max_document_bytes"),
            self.limits.max_document_bytes as u64,
        )?;
        Ok(())
    }
}

impl ReloadConfig {
    /// Values that parse but cannot work, naming the key.
    pub(super) fn check(&self) -> Result<(), InvalidValue> {
        positive("reload.interval_ms", self.interval_ms)?;
        positive("reload.max_plugin_bytes", self.max_plugin_bytes)?;
        positive("reload.read_timeout_ms", self.read_timeout_ms)?;
        if self.plugin_dirs.iter().any(|d| d.as_os_str().is_empty()) {
            return Err(InvalidValue::new(
                "reload.plugin_dirs",
                "reload.plugin_dirs has an empty entry",
            ));
        }
        Ok(())
    }
}

impl PipelineConfig {
    /// Values that parse but cannot work, naming the key.
    pub(super) fn check(&self) -> Result<(), InvalidValue> {
        positive("pipeline.debounce_ms", self.debounce_ms)?;
        positive("pipeline.max_delay_ms", self.max_delay_ms)?;
        positive("pipeline.max_groups", self.max_groups as u64)?;
        if self.debounce_ms > self.max_delay_ms {
            return Err(InvalidValue::new(
                "pipeline.debounce_ms",
                format!(
                    "pipeline.debounce_ms ({}) is longer than pipeline.max_delay_ms ({}): a \
                     burst could never end before its deadline",
                    self.debounce_ms, self.max_delay_ms
                ),
            ));
        }
        Ok(())
    }
}
