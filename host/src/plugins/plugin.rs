//! One loaded plugin version: compiled once, checked against the contract, and called on
//! warm instances that are dropped the moment one traps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nebucloud_xds_proto::envoy::config::core::v3::Node;
use wasmtime::component::{Component, Linker};
use wasmtime::{Store, Trap};

use super::bindings::{self, PluginPre};
use super::call::{add_to_linker, CallState, PANIC_PREFIX};
use super::engine::{PluginEngine, EPOCH_TICK};
use super::inputs::{InputView, Reads, StaticInputs};
use super::limits::PluginLimits;
use super::stdio;
use crate::cache::Resource;

/// The contract version this host speaks.
pub(crate) const CONTRACT: &str = "nebucloud:xds/host@0.1.0";
/// How many idle instances a plugin keeps for reuse.
const WARM_INSTANCES: usize = 4;

/// Why a plugin file cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginLoadError {
    /// Not a WebAssembly component (a core module, or not wasm at all).
    #[error("not a WebAssembly component ({0}); build plugins with `cargo build --target wasm32-wasip2`")]
    NotAComponent(String),
    /// The plugin imports something the contract does not offer.
    #[error("imports `{0}`, which the plugin contract does not offer (plugins get `{CONTRACT}` and no files, sockets, environment or clocks)")]
    ForeignImport(String),
    /// The plugin was built against another contract version.
    #[error("built against `{found}`; this host speaks `{CONTRACT}`")]
    ContractVersion {
        /// The import it has.
        found: String,
    },
    /// The plugin does not export the contract's functions with the contract's types.
    #[error("does not implement the plugin world: {0}")]
    Exports(String),
    /// Its `init` refused its configuration, or trapped.
    #[error("init failed: {0}")]
    Init(String),
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
    #[error("ran past its deadline of {0:?}")]
    Timeout(Duration),
    /// The plugin tried to grow its memory past its limit.
    #[error("exceeded its memory limit of {limit} bytes (asked for {asked})")]
    MemoryLimit {
        /// The limit.
        limit: usize,
        /// What it asked for.
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

/// What one call cost and read.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    /// The inputs it read.
    pub reads: Reads,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Instructions (fuel) used, when the engine counts them.
    pub instructions: Option<u64>,
    /// The instance's linear memory high-water mark, in bytes.
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

struct Warm {
    store: Store<CallState>,
    instance: bindings::Plugin,
}

/// A loaded plugin version.
pub struct Plugin {
    name: Arc<str>,
    hash: String,
    config: String,
    limits: PluginLimits,
    engine: PluginEngine,
    pre: PluginPre<CallState>,
    warm: Mutex<Vec<Warm>>,
    stats: PluginStats,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .finish()
    }
}

impl Plugin {
    /// Compiles and checks a plugin: a component whose imports are the contract's (plus the
    /// WASI interfaces Rust's std links, which trap or get deterministic shims), which exports
    /// `init` and `run`, and whose `init` accepts `config`.
    pub fn load(
        engine: &PluginEngine,
        name: &str,
        wasm: &[u8],
        config: &serde_json::Value,
        limits: PluginLimits,
    ) -> Result<Self, PluginLoadError> {
        // Said here in one line: the parser's own message dumps the first bytes over lines.
        if !wasm.starts_with(b"\0asm") {
            return Err(PluginLoadError::NotAComponent(
                "not WebAssembly at all: the file does not start with `\\0asm`".into(),
            ));
        }
        if wasm.starts_with(b"\0asm\x01\0\0\0") {
            return Err(PluginLoadError::NotAComponent(
                "this is a core wasm module".into(),
            ));
        }
        let component = Component::new(engine.engine(), wasm)
            .map_err(|e| PluginLoadError::NotAComponent(format!("{e:#}")))?;
        let mut linker = Linker::<CallState>::new(engine.engine());
        add_to_linker(&mut linker).map_err(|e| PluginLoadError::Exports(format!("{e:#}")))?;
        for (import, _) in component.component_type().imports(engine.engine()) {
            check_import(import)?;
            if import.starts_with("wasi:random/") {
                define_random(&mut linker, import)
                    .map_err(|e| PluginLoadError::Exports(format!("{e:#}")))?;
            } else if import.starts_with("wasi:") {
                linker
                    .instance(import)
                    .and_then(|mut inst| {
                        stdio::define_resources(&mut inst)?;
                        stdio::define(&mut inst, import)
                    })
                    .map_err(|e| PluginLoadError::Exports(format!("{e:#}")))?;
            }
        }
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| PluginLoadError::Exports(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| PluginLoadError::Exports(format!("{e:#}")))?;
        let plugin = Plugin {
            name: name.into(),
            hash: content_hash(wasm),
            config: config.to_string(),
            limits,
            engine: engine.clone(),
            pre,
            warm: Mutex::new(Vec::new()),
            stats: PluginStats::default(),
        };
        // Canary: one instance must come up and accept its config.
        let warm = plugin
            .instantiate(Arc::new(StaticInputs::new()))
            .map_err(|f| {
                PluginLoadError::Init(match f {
                    // "init failed: init: …" says init once too often.
                    PluginFault::Returned(m) => {
                        m.strip_prefix("init: ").map_or(m.clone(), str::to_owned)
                    }
                    other => other.to_string(),
                })
            })?;
        plugin.release(warm);
        Ok(plugin)
    }

    /// The plugin's name in the chain.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The content hash of the plugin file: its version.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Its limits.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Its counters.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    /// Runs the plugin for `node` on `resources`. Blocking: call it off the async runtime.
    pub fn call(
        &self,
        node: &Node,
        resources: &[Resource],
        inputs: Arc<dyn InputView>,
    ) -> Result<(Vec<Resource>, CallReport), PluginFault> {
        self.call_reading(node, resources, inputs, &mut Reads::default())
    }

    /// As [`Plugin::call`], and whatever the outcome, `reads` receives what the call read
    /// before it returned or failed: a failed run depends on exactly those inputs.
    pub fn call_reading(
        &self,
        node: &Node,
        resources: &[Resource],
        inputs: Arc<dyn InputView>,
        reads: &mut Reads,
    ) -> Result<(Vec<Resource>, CallReport), PluginFault> {
        let start = Instant::now();
        let result = self.call_inner(node, resources, inputs, reads);
        match &result {
            Ok((_, report)) => self.stats.record(report.elapsed, report.instructions, None),
            Err(fault) => self.stats.record(start.elapsed(), None, Some(fault)),
        }
        result
    }

    fn call_inner(
        &self,
        node: &Node,
        resources: &[Resource],
        inputs: Arc<dyn InputView>,
        reads: &mut Reads,
    ) -> Result<(Vec<Resource>, CallReport), PluginFault> {
        let start = Instant::now();
        let bytes: usize = resources
            .iter()
            .map(|r| r.body().len() + r.name().len())
            .sum();
        if bytes > self.limits.max_input_bytes {
            return Err(PluginFault::InputTooLarge {
                bytes,
                limit: self.limits.max_input_bytes,
            });
        }
        let taken = self.warm.lock().ok().and_then(|mut w| w.pop());
        let mut warm = match taken {
            Some(w) => w,
            None => self.instantiate(Arc::clone(&inputs))?,
        };
        warm.store.data_mut().begin(&node.id, inputs);
        self.arm(&mut warm.store);
        // Asking a store without fuel for it builds an error, with a backtrace when
        // RUST_BACKTRACE is set: ~5 µs per call, more than a trivial plugin costs.
        let counting = self.engine.options().fuel;
        let fuel_before = counting.then(|| warm.store.get_fuel().ok()).flatten();
        let wit_node = wit_node(node);
        let wit_resources: Vec<bindings::Resource> = resources
            .iter()
            .map(|r| bindings::Resource {
                type_url: r.type_url().to_owned(),
                name: r.name().to_owned(),
                body: r.body().to_vec(),
            })
            .collect();
        let result = warm
            .instance
            .call_run(&mut warm.store, &wit_node, &wit_resources);
        warm.store.data_mut().flush_stdio();
        reads.extend(warm.store.data().reads.clone());
        let report = |store: &Store<CallState>, output_bytes| CallReport {
            reads: store.data().reads.clone(),
            elapsed: start.elapsed(),
            instructions: fuel_before
                .zip(counting.then(|| store.get_fuel().ok()).flatten())
                .map(|(b, a)| b.saturating_sub(a)),
            peak_memory: store.data().memory.peak,
            output_bytes,
        };
        match result {
            Ok(Ok(out)) => {
                let output_bytes: usize = out.iter().map(|r| r.body.len() + r.name.len()).sum();
                let report = report(&warm.store, output_bytes);
                self.release(warm);
                if output_bytes > self.limits.max_output_bytes {
                    return Err(PluginFault::OutputTooLarge {
                        bytes: output_bytes,
                        limit: self.limits.max_output_bytes,
                    });
                }
                let out = out
                    .into_iter()
                    .map(|r| Resource::new(r.type_url, r.name, r.body))
                    .collect();
                Ok((out, report))
            }
            Ok(Err(message)) => {
                self.release(warm);
                Err(PluginFault::Returned(message))
            }
            // A trapped instance is never used again: it is dropped here.
            Err(e) => Err(self.classify(&warm.store, &e)),
        }
    }

    fn arm(&self, store: &mut Store<CallState>) {
        let ticks = (self.limits.deadline().as_micros() / EPOCH_TICK.as_micros()).max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        if self.engine.options().fuel {
            let _ = store.set_fuel(u64::MAX / 2);
        }
    }

    fn instantiate(&self, inputs: Arc<dyn InputView>) -> Result<Warm, PluginFault> {
        let mut store = Store::new(
            self.engine.engine(),
            CallState::new(Arc::clone(&self.name), self.limits.memory_bytes, inputs),
        );
        store.limiter(|s| &mut s.memory);
        self.arm(&mut store);
        let instance =
            self.pre
                .instantiate(&mut store)
                .map_err(|e| match self.classify(&store, &e) {
                    PluginFault::Trap(m) => PluginFault::Instantiate(m),
                    other => other,
                })?;
        let init = instance.call_init(&mut store, &self.config);
        store.data_mut().flush_stdio();
        match init {
            Ok(Ok(())) => Ok(Warm { store, instance }),
            Ok(Err(message)) => Err(PluginFault::Returned(format!("init: {message}"))),
            Err(e) => Err(self.classify(&store, &e)),
        }
    }

    /// Drops the idle instances, so that the next call starts a fresh one: what a cold pool
    /// costs is what `plugin bench` reports as "fresh".
    pub fn drop_warm_instances(&self) {
        if let Ok(mut pool) = self.warm.lock() {
            pool.clear();
        }
    }

    fn release(&self, warm: Warm) {
        if let Ok(mut pool) = self.warm.lock() {
            if pool.len() < WARM_INSTANCES {
                pool.push(warm);
            }
        }
    }

    fn classify(&self, store: &Store<CallState>, e: &wasmtime::Error) -> PluginFault {
        let state = store.data();
        if let Some(asked) = state.memory.exceeded {
            return PluginFault::MemoryLimit {
                limit: state.memory.limit,
                asked,
            };
        }
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return PluginFault::Timeout(self.limits.deadline());
        }
        // A guest panic reaches us as `unreachable` after its hook logged the message; any
        // other trap is described by wasmtime.
        match state
            .errors
            .iter()
            .rev()
            .find(|l| l.starts_with(PANIC_PREFIX))
        {
            Some(panic) => PluginFault::Trap(panic.clone()),
            None => PluginFault::Trap(with_sandbox_hint(format!("{}", e.root_cause()))),
        }
    }
}

/// Explains the traps a plugin gets for using what the sandbox does not offer.
fn with_sandbox_hint(message: String) -> String {
    let hint = if message.contains("wasi:clocks/") {
        "plugins have no clocks: a plugin's output may depend only on its node, resources, config and inputs"
    } else if message.contains("wasi:filesystem/") {
        "plugins have no files: read input documents with ctx.get / ctx.list"
    } else if message.contains("wasi:cli/environment") {
        "plugins have no environment: use the plugin's config"
    } else {
        return message;
    };
    format!("{message} ({hint})")
}

/// Allows the contract (at a compatible version) and the WASI interfaces Rust's std links;
/// refuses the rest, and names it.
fn check_import(import: &str) -> Result<(), PluginLoadError> {
    if let Some(rest) = import.strip_prefix("nebucloud:xds/") {
        let compatible = rest
            .split_once('@')
            .is_some_and(|(_, v)| v.starts_with("0.1."));
        return if compatible {
            Ok(())
        } else {
            Err(PluginLoadError::ContractVersion {
                found: import.to_owned(),
            })
        };
    }
    const STD_WASI: &[&str] = &[
        "wasi:cli/environment@",
        "wasi:cli/exit@",
        "wasi:cli/stdin@",
        "wasi:cli/stdout@",
        "wasi:cli/stderr@",
        "wasi:cli/terminal-",
        "wasi:io/",
        "wasi:clocks/",
        "wasi:filesystem/",
        "wasi:random/",
    ];
    if STD_WASI.iter().any(|p| import.starts_with(p)) {
        Ok(())
    } else {
        Err(PluginLoadError::ForeignImport(import.to_owned()))
    }
}

/// Deterministic randomness: std seeds `HashMap` from it; a plugin's output must not depend
/// on it, and with constants it cannot.
fn define_random(linker: &mut Linker<CallState>, import: &str) -> wasmtime::Result<()> {
    let mut inst = linker.instance(import)?;
    let bytes = |len: u64| -> Vec<u8> {
        (0..len.min(1 << 20))
            .map(|i| (i as u8).wrapping_mul(167).wrapping_add(13))
            .collect()
    };
    match import.split('@').next().unwrap_or_default() {
        "wasi:random/random" => {
            inst.func_wrap("get-random-bytes", move |_, (len,): (u64,)| {
                Ok((bytes(len),))
            })?;
            inst.func_wrap("get-random-u64", |_, (): ()| {
                Ok((0x9e37_79b9_7f4a_7c15_u64,))
            })?;
        }
        "wasi:random/insecure" => {
            inst.func_wrap("get-insecure-random-bytes", move |_, (len,): (u64,)| {
                Ok((bytes(len),))
            })?;
            inst.func_wrap("get-insecure-random-u64", |_, (): ()| {
                Ok((0x2545_f491_4f6c_dd1d_u64,))
            })?;
        }
        "wasi:random/insecure-seed" => {
            inst.func_wrap("insecure-seed", |_, (): ()| {
                Ok(((0x243f_6a88_85a3_08d3_u64, 0x1319_8a2e_0370_7344_u64),))
            })?;
        }
        _ => {}
    }
    Ok(())
}

fn content_hash(wasm: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(wasm))
}

/// The node as the contract describes it.
pub(crate) fn wit_node(node: &Node) -> bindings::Node {
    bindings::Node {
        id: node.id.clone(),
        cluster: node.cluster.clone(),
        locality: node.locality.as_ref().map(|l| bindings::nebucloud::xds::types::Locality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            sub_zone: l.sub_zone.clone(),
        }),
        metadata_json: node.metadata.as_ref().map_or_else(|| "{}".to_owned(), |m| crate::schema::struct_to_json(m).to_string()),
        user_agent_name: node.user_agent_name.clone(),
        user_agent_version: match &node.user_agent_version_type {
            Some(nebucloud_xds_proto::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
            _ => String::new(),
        },
        client_features: node.client_features.clone(),
    }
}
