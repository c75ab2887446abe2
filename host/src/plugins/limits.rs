//! What one plugin call may use: time, memory, and the size of what crosses the boundary.

use std::time::Duration;

use serde::Deserialize;

/// Per-plugin limits on every call. The defaults are safe for a generator that serves a few
/// thousand resources; raise them per plugin in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Wall-clock time one call may take, in milliseconds (default 1000). Enforced by epoch
    /// interruption: a plugin in an endless loop is stopped within a millisecond of it.
    pub deadline_ms: u64,
    /// The most linear memory an instance may grow to, in bytes (default 64 MiB).
    pub memory_bytes: usize,
    /// The most resource bytes handed to one call (default 16 MiB).
    pub max_input_bytes: usize,
    /// The most resource bytes one call may return (default 16 MiB).
    pub max_output_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            deadline_ms: 1000,
            memory_bytes: 64 << 20,
            max_input_bytes: 16 << 20,
            max_output_bytes: 16 << 20,
        }
    }
}

impl PluginLimits {
    /// The deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

/// The store's resource limiter: refuses memory growth past the cap with an error that
/// becomes the trap's message (so the fault is reported as "memory limit", not a bare trap).
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) exceeded: Option<usize>,
    pub(crate) peak: usize,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = Some(desired);
            return Err(wasmtime::Error::msg(format!(
                "memory limit: the plugin asked for {desired} bytes of linear memory; its limit is {} bytes",
                self.limit
            )));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
