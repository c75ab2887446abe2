//! Measuring one plugin as its author would (`nebucloud-xds plugin bench FILE`): calls per
//! second and latency on reused and on fresh instances, instructions and memory per call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::{EngineOptions, PluginEngine};
use super::limits::PluginLimits;
use super::node::{NodeReads, NodeView};
use super::plugin::{Plugin, PluginFault, PluginLoadError};
use crate::cache::Resource;
use crate::inputs::{InputView, Reads};

/// How long and how much to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchOptions {
    /// Time spent calling a warm (reused) instance after one warm-up call.
    pub duration: Duration,
    /// Calls on a fresh instance each (bounded by `duration` too).
    pub fresh_calls: u32,
    /// The plugin's limits, as it would be served.
    pub limits: PluginLimits,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            duration: Duration::from_secs(2),
            fresh_calls: 200,
            limits: PluginLimits::default(),
        }
    }
}

/// Latency of one kind of call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Latency {
    /// Calls measured.
    pub calls: u64,
    /// Median, in nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, in nanoseconds.
    pub p99_ns: u64,
    /// Mean, in nanoseconds.
    pub mean_ns: u64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
            samples.get(rank - 1).map_or(0, nanos)
        };
        let total: u128 = samples.iter().map(Duration::as_nanos).sum();
        Latency {
            calls: n as u64,
            p50_ns: at(0.50),
            p99_ns: at(0.99),
            mean_ns: u64::try_from(total / n.max(1) as u128).unwrap_or(u64::MAX),
        }
    }
}

fn nanos(d: &Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What one plugin costs per call, measured on the serving configuration (no fuel); the
/// instructions come from one extra call on an engine that counts them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// Calls per second on a reused instance, one thread.
    pub calls_per_sec: f64,
    /// Calls on a warm instance: what serving costs.
    pub reused: Latency,
    /// Calls on a new instance each (instantiate, `init`, `run`): a cold pool.
    pub fresh: Latency,
    /// Instructions one call executes (wasm fuel).
    pub instructions: Option<u64>,
    /// The instance's linear memory high-water mark, in bytes.
    pub peak_memory_bytes: usize,
    /// Resources one call returns.
    pub output_resources: usize,
    /// Bytes of resources one call returns.
    pub output_bytes: usize,
}

fn human(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000 => format!("{:.2} ms", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} µs", n as f64 / 1e3),
        n => format!("{n} ns"),
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, what: &str, l: &Latency| {
            writeln!(
                f,
                "{what}: p50 {}  p99 {}  mean {}  ({} calls)",
                human(l.p50_ns),
                human(l.p99_ns),
                human(l.mean_ns),
                l.calls
            )
        };
        writeln!(
            f,
            "calls/s (one thread, reused instance): {:.0}",
            self.calls_per_sec
        )?;
        line(f, "reused instance", &self.reused)?;
        line(f, "fresh instance ", &self.fresh)?;
        match self.instructions {
            Some(n) => writeln!(f, "instructions per call: {n}")?,
            None => writeln!(f, "instructions per call: not counted")?,
        }
        writeln!(
            f,
            "peak linear memory: {:.1} MiB",
            self.peak_memory_bytes as f64 / f64::from(1 << 20)
        )?;
        writeln!(
            f,
            "output: {} resources, {} bytes",
            self.output_resources, self.output_bytes
        )
    }
}

/// Why a plugin could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The engine could not start.
    #[error("plugin engine: {0:#}")]
    Engine(#[source] wasmtime::Error),
    /// The plugin does not load.
    #[error(transparent)]
    Load(#[from] PluginLoadError),
    /// A call failed: a plugin that fails on this input cannot be timed.
    #[error("the plugin fails on this input: {0}")]
    Call(#[from] PluginFault),
}

/// Measures `wasm` called for `node` with `resources` and `inputs`. Blocking: it runs for
/// about `options.duration` plus the fresh calls.
pub fn bench_plugin(
    wasm: &[u8],
    config: &serde_json::Value,
    node: &NodeView,
    resources: &[Resource],
    inputs: Arc<dyn InputView>,
    options: &BenchOptions,
) -> Result<BenchReport, BenchError> {
    let engine = |fuel| {
        PluginEngine::new(EngineOptions {
            fuel,
            ..EngineOptions::once()
        })
        .map_err(BenchError::Engine)
    };
    let serving = engine(false)?;
    let plugin = Plugin::load(&serving, "bench", wasm, config, options.limits)?;
    // As the pipeline calls: the node made once, each call recording its reads.
    let node = Arc::new(node.clone());
    let call = |plugin: &Plugin, inputs: Arc<dyn InputView>| {
        let (mut reads, mut node_reads) = (Reads::default(), NodeReads::default());
        plugin.call_reading(&node, resources, inputs, &mut reads, &mut node_reads)
    };
    let (out, _) = call(&plugin, Arc::clone(&inputs))?;

    let mut reused = Vec::new();
    let started = Instant::now();
    while started.elapsed() < options.duration || reused.len() < 10 {
        let t = Instant::now();
        call(&plugin, Arc::clone(&inputs))?;
        reused.push(t.elapsed());
    }
    let calls_per_sec = reused.len() as f64 / started.elapsed().as_secs_f64();

    let mut fresh = Vec::new();
    let started = Instant::now();
    while fresh.len() < options.fresh_calls as usize
        && (started.elapsed() < options.duration || fresh.len() < 3)
    {
        plugin.drop_warm_instances();
        let t = Instant::now();
        call(&plugin, Arc::clone(&inputs))?;
        fresh.push(t.elapsed());
    }

    let counting = engine(true)?;
    let counted = Plugin::load(&counting, "bench", wasm, config, options.limits)?;
    let (_, report) = call(&counted, inputs)?;
    Ok(BenchReport {
        calls_per_sec,
        reused: Latency::of(reused),
        fresh: Latency::of(fresh),
        instructions: report.instructions,
        peak_memory_bytes: report.peak_memory,
        output_resources: out.len(),
        output_bytes: report.output_bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn an_engine_error_is_the_source_and_reads_as_before() {
        let cause = || wasmtime::Error::msg("out of address space").context("pooling allocator");
        let err = BenchError::Engine(cause());
        // What `BenchError::Engine(format!("{e:#}"))` displayed.
        assert_eq!(err.to_string(), format!("plugin engine: {:#}", cause()));
        assert_eq!(
            err.to_string(),
            "plugin engine: pooling allocator: out of address space"
        );
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("pooling allocator")
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_nanos).collect();
        let l = Latency::of(samples);
        assert_eq!((l.calls, l.p50_ns, l.p99_ns, l.mean_ns), (100, 50, 99, 50));
        assert_eq!(Latency::of(Vec::new()).calls, 0);
    }
}
