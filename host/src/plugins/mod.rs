//! The plugin runtime: WebAssembly components that compute each node's resources, run in a
//! sandbox (no files, sockets, environment or clocks) with per-call limits, chained into
//! generators, transforms and validators.

mod bench;
mod call;
mod chain;
mod compile_cache;
mod engine;
mod host;
mod limits;
mod node;
mod plugin;
mod slots;
mod stdio;
mod watch;

/// The host side of the WIT contract in `proto/wit/plugin.wit`, and of the one before it
/// (`proto/wit-0.1`), whose plugins still run, as reading the whole node.
mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../proto/wit",
    });

    /// Contract 0.1.0: `run` gets the whole node.
    pub(crate) mod v1 {
        wasmtime::component::bindgen!({
            world: "plugin",
            path: "../proto/wit-0.1",
        });
    }
}

pub use bench::{bench_plugin, BenchError, BenchOptions, BenchReport, Latency};
pub use chain::{ChainOutput, PluginChain, PluginRunError};
pub use compile_cache::CompileCacheStats;
pub use engine::{EngineOptions, PluginEngine};
pub use host::{ChainHost, ChainTrial, TrialFuture};
pub use limits::PluginLimits;
pub use node::{NodeField, NodeReads, NodeView, Transport};
pub use plugin::{
    CallReport, Deadline, Plugin, PluginFault, PluginLoadError, PluginStats, PluginStatsSnapshot,
};
pub use slots::{
    PluginPlan, PluginSlots, PluginStatus, ReconfigureOutcome, Rejected, ReloadError,
    ReloadOutcome, SlotSpec,
};
pub use watch::watch_plugin_files;
