//! The plugin runtime: WebAssembly components that compute each node's resources, run in a
//! sandbox (no files, sockets, environment or clocks) with per-call limits, chained into
//! generators, transforms and validators.

mod bench;
mod call;
mod chain;
mod engine;
mod host;
mod limits;
mod plugin;
mod slots;
mod stdio;
mod watch;

/// The host side of the WIT contract in `proto/wit/plugin.wit`.
mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../proto/wit",
    });
}

pub use bench::{bench_plugin, BenchError, BenchOptions, BenchReport, Latency};
pub use chain::{ChainOutput, PluginChain, PluginRunError};
pub use engine::{EngineOptions, PluginEngine};
pub use host::{ChainHost, ChainTrial, TrialFuture};
pub use limits::PluginLimits;
pub use plugin::{
    CallReport, Deadline, Plugin, PluginFault, PluginLoadError, PluginStats, PluginStatsSnapshot,
};
pub use slots::{PluginSlots, PluginStatus, Rejected, ReloadError, ReloadOutcome, SlotSpec};
pub use watch::watch_plugin_files;
