//! The one wasmtime engine plugins run on: the component model, the pooling allocator,
//! epoch interruption for deadlines, compiled functions kept between loads, and (for
//! measuring) fuel and stack samples.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::compile_cache::{CompileCache, CompileCacheStats, MAX_BYTES, MAX_ENTRIES};

/// How often the epoch advances: the granularity of plugin deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);
/// How often the epoch advances on an engine that profiles: each tick is a stack sample, and a
/// call of a few milliseconds needs dozens to show where it goes.
pub(crate) const PROFILE_TICK: Duration = Duration::from_micros(100);

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Count instructions (fuel). Costs 10–15% per call: off when serving, on in
    /// `plugin run` and `plugin bench`, which report it.
    pub fuel: bool,
    /// How many instances may exist at once across all plugins (warm pools included).
    pub max_instances: u32,
    /// Sample the wasm stack of every plugin call at each epoch tick, every 100 µs instead of
    /// every millisecond, for [`Plugin::finish_profile`](crate::plugins::Plugin::finish_profile).
    /// Each sample walks the stack: on in `plugin run --profile`, never when serving.
    pub profile: bool,
    /// Keep compiled functions between loads, so that a new build of a plugin compiles only
    /// what changed (at most 200,000 functions and 128 MiB). On when serving, where plugins
    /// are reloaded; off for one-shot commands, which load each plugin once.
    pub keep_compiled: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            fuel: false,
            max_instances: 256,
            profile: false,
            keep_compiled: true,
        }
    }
}

impl EngineOptions {
    /// For a command that loads each plugin once: no compiled functions kept.
    pub fn once() -> Self {
        EngineOptions {
            keep_compiled: false,
            ..EngineOptions::default()
        }
    }
}

/// The wasmtime engine shared by every plugin of a server, with its epoch ticker.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    options: EngineOptions,
    compiled: Arc<CompileCache>,
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("options", &self.options)
            .finish()
    }
}

/// Stops the epoch thread when the last engine handle goes.
struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// An engine with these options.
    pub fn new(options: EngineOptions) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(options.max_instances)
            .total_core_instances(options.max_instances * 2)
            .total_memories(options.max_instances)
            .total_tables(options.max_instances * 2)
            .max_memories_per_component(4)
            .max_tables_per_component(8);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(options.fuel)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let compiled = Arc::new(CompileCache::new(MAX_ENTRIES, MAX_BYTES));
        if options.keep_compiled {
            config.enable_incremental_compilation(compiled.clone())?;
        }
        let engine = Engine::new(&config)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let weak = engine.weak();
        let flag = Arc::clone(&stop);
        let tick = tick(options);
        thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| wasmtime::Error::new(e).context("cannot start the epoch thread"))?;
        Ok(PluginEngine {
            engine,
            options,
            compiled,
            _ticker: Arc::new(Ticker { stop }),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The options it was built with.
    pub fn options(&self) -> EngineOptions {
        self.options
    }

    /// What its cache of compiled functions holds, and how often a load found a function
    /// there instead of compiling it.
    pub fn compile_cache(&self) -> CompileCacheStats {
        self.compiled.stats()
    }

    /// How often its epoch advances.
    pub(crate) fn tick(&self) -> Duration {
        tick(self.options)
    }
}

fn tick(options: EngineOptions) -> Duration {
    if options.profile {
        PROFILE_TICK
    } else {
        EPOCH_TICK
    }
}
