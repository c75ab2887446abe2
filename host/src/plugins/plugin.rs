//! One loaded plugin version: compiled once, checked against the contract, and called on
//! warm instances that are dropped the moment one traps.

mod fault;
mod profile;
mod report;
mod sandbox;
mod ticks;
mod versions;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::{Component, Linker};
use wasmtime::Store;

use super::bindings::{v1, PluginPre};
use super::call::{add_to_linker, CallState};
use super::engine::PluginEngine;
use super::limits::PluginLimits;
use super::node::{NodeReads, NodeView};
use super::stdio;
use crate::cache::Resource;
use crate::inputs::{InputView, Reads, StaticInputs};
use profile::Sampler;
pub use report::{
    CallReport, Deadline, PluginFault, PluginLoadError, PluginStats, PluginStatsSnapshot,
};
use sandbox::{check_import, define_random};
use versions::{run_instance, Instance, Pre};

/// The contract version this host speaks.
pub(crate) const CONTRACT: &str = "nebucloud:xds@0.2.0";
/// Its `host` interface.
pub(crate) const HOST_V2: &str = "nebucloud:xds/host@0.2.0";
/// Its `node` interface.
pub(crate) const NODE_V2: &str = "nebucloud:xds/node@0.2.0";
/// The `host` interface of contract 0.1.0, whose plugins still run.
pub(crate) const HOST_V1: &str = "nebucloud:xds/host@0.1.0";
/// How many idle instances a plugin keeps for reuse.
const WARM_INSTANCES: usize = 4;

struct Warm {
    store: Store<CallState>,
    instance: Instance,
}

/// A loaded plugin version.
pub struct Plugin {
    name: Arc<str>,
    hash: String,
    config: String,
    limits: PluginLimits,
    engine: PluginEngine,
    pre: Pre,
    warm: Mutex<Vec<Warm>>,
    stats: PluginStats,
    /// The samples of its calls, on an engine that profiles.
    profile: Option<Arc<Sampler>>,
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
            return Err(PluginLoadError::NotAComponent {
                reason: "not WebAssembly at all: the file does not start with `\\0asm`".into(),
                source: None,
            });
        }
        if wasm.starts_with(b"\0asm\x01\0\0\0") {
            return Err(PluginLoadError::NotAComponent {
                reason: "this is a core wasm module".into(),
                source: None,
            });
        }
        let component =
            Component::new(engine.engine(), wasm).map_err(|e| PluginLoadError::NotAComponent {
                reason: format!("{e:#}"),
                source: Some(e),
            })?;
        let mut linker = Linker::<CallState>::new(engine.engine());
        add_to_linker(&mut linker).map_err(PluginLoadError::Exports)?;
        for (import, _) in component.component_type().imports(engine.engine()) {
            check_import(import)?;
            if import.starts_with("wasi:random/") {
                define_random(&mut linker, import).map_err(PluginLoadError::Exports)?;
            } else if import.starts_with("wasi:") {
                linker
                    .instance(import)
                    .and_then(|mut inst| {
                        stdio::define_resources(&mut inst)?;
                        stdio::define(&mut inst, import)
                    })
                    .map_err(PluginLoadError::Exports)?;
            }
        }
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(PluginLoadError::Exports)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(PluginLoadError::Exports)?;
        // The exports tell the versions apart (a plugin that reads nothing imports nothing).
        let pre = match PluginPre::new(pre.clone()) {
            Ok(current) => Pre::Current(current),
            Err(e) => Pre::V1(v1::PluginPre::new(pre).map_err(|_| PluginLoadError::Exports(e))?),
        };
        let mut plugin = Plugin {
            name: name.into(),
            hash: content_hash(wasm),
            config: config.to_string(),
            limits,
            engine: engine.clone(),
            pre,
            warm: Mutex::new(Vec::new()),
            stats: PluginStats::default(),
            profile: None,
        };
        // Canary: one instance must come up and accept its config.
        let warm = plugin
            .instantiate(Arc::new(StaticInputs::new()))
            .map_err(PluginLoadError::Init)?;
        plugin.release(warm);
        // The profile holds calls, not the load.
        if engine.options().profile {
            match Sampler::new(engine.engine(), name, &component, engine.tick()) {
                Ok(sampler) => plugin.profile = Some(Arc::new(sampler)),
                Err(e) => tracing::warn!(plugin = name, "cannot profile this plugin: {e:#}"),
            }
        }
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

    /// Writes where this plugin's calls spent their time since it was loaded, on an engine
    /// with [`EngineOptions::profile`](crate::plugins::EngineOptions::profile), as a Firefox
    /// profiler "processed profile" (JSON: open it at <https://profiler.firefox.com>), and
    /// returns how many samples it holds. Its functions are named from the component's name
    /// section. The profile is written once: a second call is an error, as is a plugin on an
    /// engine that does not profile.
    pub fn finish_profile(&self, out: &mut dyn std::io::Write) -> wasmtime::Result<u64> {
        match &self.profile {
            Some(sampler) => sampler.finish(out),
            None => Err(wasmtime::Error::msg(
                "no profile: the plugin's engine does not profile (EngineOptions::profile), or \
                 its profiler could not start (logged when it loaded)",
            )),
        }
    }

    /// Runs the plugin for `node` on `resources`. Blocking: call it off the async runtime.
    pub fn call(
        &self,
        node: impl Into<NodeView>,
        resources: &[Resource],
        inputs: Arc<dyn InputView>,
    ) -> Result<(Vec<Resource>, CallReport), PluginFault> {
        let node = Arc::new(node.into());
        let mut node_reads = NodeReads::default();
        self.call_reading(
            &node,
            resources,
            inputs,
            &mut Reads::default(),
            &mut node_reads,
        )
    }

    /// As [`Plugin::call`], and whatever the outcome, `reads` and `node_reads` receive what
    /// the call read before it returned or failed: a failed run depends on exactly those.
    pub fn call_reading(
        &self,
        node: &Arc<NodeView>,
        resources: &[Resource],
        inputs: Arc<dyn InputView>,
        reads: &mut Reads,
        node_reads: &mut NodeReads,
    ) -> Result<(Vec<Resource>, CallReport), PluginFault> {
        let start = Instant::now();
        let result = self.call_inner(node, resources, inputs, reads, node_reads);
        match &result {
            Ok((_, report)) => self.stats.record(report.elapsed, report.instructions, None),
            Err(fault) => self.stats.record(start.elapsed(), None, Some(fault)),
        }
        result
    }

    fn call_inner(
        &self,
        node: &Arc<NodeView>,
        resources: &[Resource],
        inputs: Arc<dyn InputView>,
        reads: &mut Reads,
        node_reads: &mut NodeReads,
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
        warm.store.data_mut().begin(node, inputs);
        self.arm(&mut warm.store);
        // Asking a store without fuel for it builds an error, with a backtrace when
        // RUST_BACKTRACE is set: ~5 µs per call, more than a trivial plugin costs.
        let counting = self.engine.options().fuel;
        let fuel_before = counting.then(|| warm.store.get_fuel().ok()).flatten();
        let result = run_instance(&warm.instance, &mut warm.store, node, resources);
        warm.store.data_mut().finish();
        reads.extend(warm.store.data().reads.clone());
        node_reads.extend(&warm.store.data().node_reads);
        let report = |store: &Store<CallState>, output_bytes| CallReport {
            reads: store.data().reads.clone(),
            node_reads: store.data().node_reads.clone(),
            elapsed: start.elapsed(),
            instructions: fuel_before
                .zip(counting.then(|| store.get_fuel().ok()).flatten())
                .map(|(b, a)| b.saturating_sub(a)),
            peak_memory: store.data().memory.total,
            output_bytes,
        };
        match result {
            Ok(Ok(out)) => {
                let output_bytes: usize = out
                    .iter()
                    .map(|(_, name, body)| body.len() + name.len())
                    .sum();
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
                    .map(|(type_url, name, body)| Resource::new(type_url, name, body))
                    .collect();
                Ok((out, report))
            }
            Ok(Err(message)) => {
                self.release(warm);
                Err(PluginFault::Returned(message))
            }
            // A trapped instance is never used again: it is dropped here.
            Err(e) => Err(fault::classify(&self.limits, &warm.store, &e)),
        }
    }

    fn arm(&self, store: &mut Store<CallState>) {
        ticks::arm(store, self.limits.deadline(), self.profile.clone());
        // What wasmtime may allocate to lift one value out of the guest (the output, or one
        // host call's arguments), charged before each copy: see `PluginLimits::lift_bytes`.
        store.set_hostcall_fuel(self.limits.lift_bytes());
        if self.engine.options().fuel {
            let _ = store.set_fuel(u64::MAX / 2);
        }
    }

    fn instantiate(&self, inputs: Arc<dyn InputView>) -> Result<Warm, PluginFault> {
        let mut store = Store::new(
            self.engine.engine(),
            CallState::new(Arc::clone(&self.name), self.limits, inputs),
        );
        store.limiter(|s| &mut s.memory);
        self.arm(&mut store);
        let instance = match &self.pre {
            Pre::Current(pre) => pre.instantiate(&mut store).map(Instance::Current),
            Pre::V1(pre) => pre.instantiate(&mut store).map(Instance::V1),
        }
        .map_err(|e| match fault::classify(&self.limits, &store, &e) {
            PluginFault::Trap(m) => PluginFault::Instantiate(m),
            other => other,
        })?;
        let init = match &instance {
            Instance::Current(i) => i.call_init(&mut store, &self.config),
            Instance::V1(i) => i.call_init(&mut store, &self.config),
        };
        store.data_mut().finish();
        match init {
            Ok(Ok(())) => Ok(Warm { store, instance }),
            Ok(Err(message)) => Err(PluginFault::Returned(format!("init: {message}"))),
            Err(e) => Err(fault::classify(&self.limits, &store, &e)),
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
}

fn content_hash(wasm: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(wasm))
}
