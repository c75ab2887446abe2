//! What one plugin call may use: time, memory, the size of what crosses the boundary, and how
//! much its host calls (`get`, `list`) may record and copy.

use std::time::Duration;

use serde::Deserialize;

/// The longest `kind` a plugin may pass to `get` or `list`, in bytes: checked before the host
/// copies the key out of the guest.
pub(crate) const MAX_KIND_BYTES: usize = 256;
/// The longest `name` a plugin may pass to `get`, in bytes: checked before the host copies it.
pub(crate) const MAX_NAME_BYTES: usize = 4096;
/// The most table elements an instance may have across all its tables.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// The least [`PluginLimits::lift_bytes`] is, whatever the output limit: room for a long log
/// line or an error message.
const MIN_LIFT_BYTES: usize = 1 << 20;

/// Per-plugin limits on every call. The defaults are safe for a generator that serves a few
/// thousand resources; raise them per plugin in the config file. Every field may be left out:
/// the defaults are those of [`PluginLimits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Wall-clock time one call may take, in milliseconds (default 1000). Enforced by epoch
    /// interruption: a plugin in an endless loop is stopped within a millisecond of it.
    pub deadline_ms: u64,
    /// The most linear memory an instance may have, in bytes, summed over all its memories
    /// (default 64 MiB): a component with several memories shares one budget.
    pub memory_bytes: usize,
    /// The most resource bytes handed to one call (default 16 MiB).
    pub max_input_bytes: usize,
    /// The most resource bytes one call may return (default 16 MiB).
    pub max_output_bytes: usize,
    /// The most reads one call may record: distinct `(kind, name)` pairs asked of `get` plus
    /// distinct kinds asked of `list` (default 10,000). The record is what the host keeps to
    /// know which input changes recompute the node, so it must stay small.
    pub max_reads: usize,
    /// The most bytes of kinds and names one call's recorded reads may hold (default 1 MiB).
    pub max_read_bytes: usize,
    /// The most bytes of input documents (kind, name and JSON) that `get` and `list` may copy
    /// into one call, counted every time a document is handed over (default 64 MiB).
    pub max_document_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            deadline_ms: 1000,
            memory_bytes: 64 << 20,
            max_input_bytes: 16 << 20,
            max_output_bytes: 16 << 20,
            max_reads: 10_000,
            max_read_bytes: 1 << 20,
            max_document_bytes: 64 << 20,
        }
    }
}

impl PluginLimits {
    /// The deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// The most host memory wasmtime may allocate to lift one value out of the guest: the
    /// call's output, or one host call's arguments. Twice `max_output_bytes`, and at least
    /// 1 MiB.
    ///
    /// It is wasmtime's hostcall fuel, charged *before* each copy as the value is lifted: every
    /// string's and byte list's length, and a list's length times the size of its host
    /// element (72 bytes per resource record). So it bounds what lifting allocates even when
    /// the guest points many records at the same bytes (which its memory cap alone does not:
    /// 24 bytes of guest memory per record can name a whole body). An output whose names and
    /// bodies fit `max_output_bytes` stays under it unless type URLs and records take another
    /// `max_output_bytes` (about 120,000 resources at the defaults); past it the call fails
    /// with `OutputTooLargeToCopy`, and within it the exact size is checked against
    /// `max_output_bytes` before anything else is built from it.
    pub fn lift_bytes(&self) -> usize {
        self.max_output_bytes.saturating_mul(2).max(MIN_LIFT_BYTES)
    }
}

/// The store's resource limiter: the instance's memories and tables share one budget each.
/// A refused growth of memory is an error that becomes the trap's message (so the fault is
/// reported as "memory limit", not a bare trap).
///
/// The limiter is told `current` and `desired` of one memory at a time, and never which
/// memory; growth only adds (`desired - current`) to a running total, and a memory's creation
/// is a growth from 0. Memories never shrink, so the total is the instance's high-water mark.
/// A growth that the limiter allows but wasmtime then refuses (past a memory's declared
/// maximum) stays counted: the total can only err towards refusing.
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    /// The total the refused growth asked for, in this call.
    pub(crate) exceeded: Option<usize>,
    /// Linear memory across the instance's memories, in bytes.
    pub(crate) total: usize,
    /// Table elements across the instance's tables.
    tables: usize,
}

impl MemoryCap {
    /// A budget of `limit` bytes for an instance yet to be created.
    pub(crate) fn new(limit: usize) -> Self {
        MemoryCap {
            limit,
            exceeded: None,
            total: 0,
            tables: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total.saturating_add(desired.saturating_sub(current));
        if total > self.limit {
            self.exceeded = Some(total);
            return Err(wasmtime::Error::msg(format!(
                "memory limit: the plugin's linear memories would total {total} bytes; its limit is {} bytes",
                self.limit
            )));
        }
        self.total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let tables = self.tables.saturating_add(desired.saturating_sub(current));
        if tables > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.tables = tables;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;

    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn memories_share_one_budget() {
        let mut cap = MemoryCap::new(64 * MIB);
        // Two memories created at 1 MiB each, then each grown to 40 MiB: each stays under
        // the limit, their sum does not.
        assert!(cap.memory_growing(0, MIB, None).unwrap());
        assert!(cap.memory_growing(0, MIB, None).unwrap());
        assert!(cap.memory_growing(MIB, 40 * MIB, None).unwrap());
        assert_eq!(cap.total, 41 * MIB);
        let refused = cap.memory_growing(MIB, 40 * MIB, None).unwrap_err();
        assert_eq!(cap.exceeded, Some(80 * MIB));
        assert!(
            refused.to_string().contains("would total 83886080 bytes"),
            "{refused}"
        );
        assert_eq!(cap.total, 41 * MIB, "a refused growth is not counted");
    }

    #[test]
    fn tables_share_one_budget() {
        let mut cap = MemoryCap::new(MIB);
        assert!(cap.table_growing(0, 60_000, None).unwrap());
        assert!(!cap.table_growing(0, 60_000, None).unwrap());
        assert!(cap.table_growing(0, 40_000, None).unwrap());
    }

    #[test]
    fn every_limit_has_a_default_when_left_out() {
        let limits: PluginLimits = toml::from_str("max_reads = 5").unwrap();
        assert_eq!(
            limits,
            PluginLimits {
                max_reads: 5,
                ..PluginLimits::default()
            }
        );
        assert_eq!(
            (limits.max_read_bytes, limits.max_document_bytes),
            (MIB, 64 * MIB)
        );
    }
}
