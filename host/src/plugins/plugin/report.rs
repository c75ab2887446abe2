//! What a plugin call reports: why a load or a call failed, what a call cost and read, and
//! the counters of a plugin version.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::CONTRACT;
use crate::inputs::Reads;

/// Why a plugin file cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    /// Not a WebAssembly component (a core module, or not wasm at all).
    #[error("not a WebAssembly component ({reason}); build plugins with `cargo build --target wasm32-wasip2`")]
    NotAComponent {
        /// What the file is instead, on one line.
        reason: String,
        /// wasmtime's error, when the file got as far as its parser (`reason` is then its
        /// chain on one line); none when the first bytes already tell.
        #[source]
        source: Option<wasmtime::Error>,
    },
    /// The plugin imports something the contract does not offer.
    #[error("imports `{0}`, which the plugin contract does not offer (plugins get `{CONTRACT}` and no files, sockets, environment or clocks)")]
    ForeignImport(String),
    /// The plugin was built against another contract version.
    #[error("built against `{found}`; this host speaks `{CONTRACT}` (and runs plugins built against 0.1)")]
    ContractVersion {
        /// The import it has.
        found: String,
    },
    /// The plugin does not export the contract's functions with the contract's types.
    #[error("does not implement the plugin world: {0:#}")]
    Exports(#[source] wasmtime::Error),
    /// Its `init` refused its configuration ([`PluginFault::Returned`]), or trapped.
    #[error("init failed: {}", init_failure(.0))]
    Init(#[source] PluginFault),
}

/// What `init failed: …` goes on with: the plugin's own message when it refused its config
/// (without the `init: ` its fault carries, which would say init twice), else the fault.
fn init_failure(fault: &PluginFault) -> String {
    match fault {
        PluginFault::Returned(m) => m.strip_prefix("init: ").unwrap_or(m).to_owned(),
        other => other.to_string(),
    }
}

/// Why one call of a plugin produced no resources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginFault {
    /// The plugin returned an error.
    #[error("returned an error: {0}")]
    Returned(String),
    /// The plugin trapped (a panic, an `unreachable`, a forbidden import).
    #[error("trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline.
    #[error("ran past its deadline of {0}")]
    Timeout(Deadline),
    /// The plugin tried to grow its memory past its limit.
    #[error("exceeded its memory limit of {limit} bytes (asked for {asked})")]
    MemoryLimit {
        /// The limit.
        limit: usize,
        /// What its memories would have totalled.
        asked: usize,
    },
    /// More resource bytes than the input limit would have been handed over.
    #[error("input of {bytes} bytes exceeds the limit of {limit}")]
    InputTooLarge {
        /// Bytes.
        bytes: usize,
        /// Limit.
        limit: usize,
    },
    /// The plugin returned more bytes than its output limit.
    #[error("output of {bytes} bytes exceeds the limit of {limit}")]
    OutputTooLarge {
        /// Bytes.
        bytes: usize,
        /// Limit.
        limit: usize,
    },
    /// Copying the output out of the guest would have taken more host memory than the host
    /// allows for it ([`PluginLimits::lift_bytes`](crate::plugins::PluginLimits::lift_bytes)):
    /// refused before the copy, so its exact size is not known.
    #[error("output refused before it was copied: it needs more than {lift_limit} bytes of host memory, the most the host copies for an output limit of {limit}")]
    OutputTooLargeToCopy {
        /// The most the host copies out of the guest at once.
        lift_limit: usize,
        /// `max_output_bytes`.
        limit: usize,
    },
    /// A host call (`get`, `list`) asked for more than one of the call's budgets allows: the
    /// call ends at once.
    #[error("host call `{call}` exceeded {limit} of {max} (asked for {asked})")]
    HostCallLimit {
        /// The host call.
        call: &'static str,
        /// The limit: its config key (`max_reads`, `max_read_bytes`, `max_document_bytes`)
        /// or, for a key's length, `the kind length limit` / `the name length limit`.
        limit: &'static str,
        /// What the call would have brought the count (reads, or bytes) to.
        asked: usize,
        /// The limit's value.
        max: usize,
    },
    /// The output broke the contract (undecodable body, unknown type, duplicate name).
    #[error("returned an invalid resource: {0}")]
    InvalidOutput(String),
    /// A fresh instance could not be made.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    /// The inputs could not be read reliably (an internal fault of the host): the run may have
    /// seen too little, so its result is not used.
    #[error("ran on unreliable inputs: {0}")]
    InputsUnavailable(String),
}

impl PluginFault {
    /// Whether the same call on the same inputs may well succeed next time: a deadline hit
    /// under load, an instance that could not be had, inputs the host could not read. Plugins
    /// are pure, so every other fault repeats until the plugin or what it read changes.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PluginFault::Timeout(_)
                | PluginFault::Instantiate(_)
                | PluginFault::InputsUnavailable(_)
        )
    }
}

/// The deadline a call ran past, and the host call it was making when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// The call's deadline (`deadline_ms`).
    pub limit: Duration,
    /// The host call (`get`, `list` or `log`) the plugin was making when the deadline was hit
    /// (the last it made, if it made any in the last two epoch ticks), and how many times the
    /// call made it: a plugin stuck in a loop of host calls, or in one slow call. None when
    /// the plugin was in its own code.
    pub host_call: Option<(&'static str, u64)>,
}

impl From<Duration> for Deadline {
    fn from(limit: Duration) -> Self {
        Deadline {
            limit,
            host_call: None,
        }
    }
}

impl std::fmt::Display for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.limit)?;
        match self.host_call {
            Some((call, 1)) => write!(f, " while calling `{call}` (called once)"),
            Some((call, n)) => write!(f, " while calling `{call}` (called {} times)", grouped(n)),
            None => Ok(()),
        }
    }
}

/// `n` with its thousands grouped: 1,234,567.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// What one call cost and read.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    /// The inputs it read.
    pub reads: Reads,
    /// The node fields it read.
    pub node_reads: crate::plugins::NodeReads,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Instructions (fuel) used, when the engine counts them.
    pub instructions: Option<u64>,
    /// The instance's linear memory high-water mark, in bytes, summed over its memories.
    pub peak_memory: usize,
    /// The bytes of resources returned.
    pub output_bytes: usize,
}

/// Counters of one plugin version since it was loaded.
#[derive(Debug, Default)]
pub struct PluginStats {
    calls: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
    instructions: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`PluginStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PluginStatsSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Mean wall-clock time per call, in microseconds.
    pub mean_call_us: u64,
    /// Instructions used in all (when counted).
    pub instructions: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
}

impl PluginStats {
    pub(crate) fn record(
        &self,
        elapsed: Duration,
        instructions: Option<u64>,
        error: Option<&PluginFault>,
    ) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.instructions
            .fetch_add(instructions.unwrap_or(0), Ordering::Relaxed);
        if let Some(e) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(e.to_string());
            }
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> PluginStatsSnapshot {
        let calls = self.calls.load(Ordering::Relaxed);
        PluginStatsSnapshot {
            calls,
            errors: self.errors.load(Ordering::Relaxed),
            mean_call_us: self
                .nanos
                .load(Ordering::Relaxed)
                .checked_div(calls)
                .unwrap_or(0)
                / 1000,
            instructions: self.instructions.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|l| l.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// An error as wasmtime reports a bad export: a context over a cause.
    fn export_mismatch() -> wasmtime::Error {
        wasmtime::Error::msg("expected `list<resource>`, found `string`")
            .context("type mismatch for export `run`")
    }

    #[test]
    fn load_errors_keep_wasmtimes_error_and_the_fault_as_source_and_read_as_before() {
        let err = PluginLoadError::Exports(export_mismatch());
        // What `PluginLoadError::Exports(format!("{e:#}"))` displayed.
        assert_eq!(
            err.to_string(),
            format!(
                "does not implement the plugin world: {:#}",
                export_mismatch()
            )
        );
        assert_eq!(
            err.to_string(),
            "does not implement the plugin world: type mismatch for export `run`: expected `list<resource>`, found `string`"
        );
        let source = err.source().expect("the wasmtime error is the source");
        assert_eq!(source.to_string(), "type mismatch for export `run`");

        let refused = PluginLoadError::Init(PluginFault::Returned("init: no key `port`".into()));
        assert_eq!(refused.to_string(), "init failed: no key `port`");
        let timed_out =
            PluginLoadError::Init(PluginFault::Timeout(Duration::from_millis(5).into()));
        assert_eq!(
            timed_out.to_string(),
            "init failed: ran past its deadline of 5ms"
        );
        assert_eq!(
            timed_out
                .source()
                .and_then(|s| s.downcast_ref::<PluginFault>()),
            Some(&PluginFault::Timeout(Duration::from_millis(5).into()))
        );
    }

    #[test]
    fn a_deadline_hit_in_a_loop_of_host_calls_names_the_call_and_its_count() {
        let deadline = |host_call| {
            PluginFault::Timeout(Deadline {
                limit: Duration::from_millis(200),
                host_call,
            })
            .to_string()
        };
        assert_eq!(deadline(None), "ran past its deadline of 200ms");
        assert_eq!(
            deadline(Some(("get", 1_234_567))),
            "ran past its deadline of 200ms while calling `get` (called 1,234,567 times)"
        );
        assert_eq!(
            deadline(Some(("list", 1))),
            "ran past its deadline of 200ms while calling `list` (called once)"
        );
        let grouped: Vec<String> = [0, 999, 1000, 123_456, 1_000_000].map(grouped).into();
        assert_eq!(grouped, ["0", "999", "1,000", "123,456", "1,000,000"]);
    }
}
