//! The load generator: N simulated nodes on ADS against a server in another process; measures
//! the time to configure all of them, the time from one input change to all of them having
//! ACKed it, the server's memory per connected node, and CPU. [`churn`] times the same change
//! before and after rounds of short-lived nodes.

pub mod churn;
pub mod client;
pub mod server;
mod steps;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use anyhow::Context as _;

use crate::servers::{Grouping, Impl};
use crate::stats::Summary;
use client::{Marker, NodeProgress, Protocol};
use server::ServerProcess;
use steps::{connect, ms, timed_change, wait, Epoch};

/// One run: one server, one protocol, N nodes.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The server implementation.
    pub implementation: Impl,
    /// SotW or Delta.
    pub protocol: Protocol,
    /// How many nodes.
    pub nodes: usize,
    /// How many ADS streams share one HTTP/2 connection (1: one connection per node, as real
    /// fleets do).
    pub streams_per_conn: usize,
    /// How many input changes to time.
    pub updates: u32,
    /// Services in the mesh.
    pub services: usize,
    /// Ours: the mesh plugin, to run the full pipeline.
    pub plugin: Option<PathBuf>,
    /// Ours with a plugin: the pipeline's debounce, in milliseconds.
    pub debounce_ms: u64,
    /// How long to wait for all nodes to be configured before reporting the stragglers.
    pub timeout: Duration,
    /// ... and for one change to reach all nodes.
    pub update_timeout: Duration,
    /// Ours with a plugin: how nodes are grouped.
    pub grouping: Grouping,
    /// What each timed change is.
    pub change: Change,
}

/// What a timed change is.
#[derive(Debug, Clone)]
pub enum Change {
    /// The server's inputs change: the first service's endpoint moves.
    Inputs,
    /// A plugin file is replaced. Ours runs the mesh plugin followed by a policy plugin loaded
    /// from a file it watches; change `k` copies `versions[k % len]` over that file, and a node
    /// has it once it ACKed the new route table (the policy stamps its version there).
    PluginFile {
        /// The policy's versions; the first is loaded at start. Each must change the route
        /// table differently from the one before it.
        versions: Vec<PathBuf>,
        /// The server's plugin file check interval, in ms.
        interval_ms: u64,
        /// ... and how long a changed file must stay unchanged before it is loaded, in ms.
        settle_ms: u64,
    },
}

impl Change {
    fn marker(&self) -> Marker {
        match self {
            Change::Inputs => Marker::INPUTS,
            Change::PluginFile { .. } => Marker::ROUTES,
        }
    }
}

/// How a plugin file change was watched for (reload runs).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReloadWatch {
    /// The server's file check interval, in ms.
    pub interval_ms: u64,
    /// The settle window, in ms: part of every measured latency by design.
    pub settle_ms: u64,
}

/// Timings of the initial configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Initial {
    /// From the first connection attempt to the last node configured.
    pub all_configured_ms: f64,
    /// Opening the HTTP/2 connections (part of the above).
    pub connect_ms: f64,
    /// Per node: from its stream's first request to its ACK of the last of the four types.
    pub per_node: Summary,
    /// Nodes configured (of `nodes`).
    pub configured: usize,
}

/// Timings of one input change.
#[derive(Debug, Clone, Serialize)]
pub struct Update {
    /// Nodes that ACKed the new version within the timeout.
    pub acked: usize,
    /// Per node: from the change to its ACK.
    pub per_node: Summary,
    /// Server CPU seconds spent on this change.
    pub server_cpu_s: f64,
    /// Load generator CPU seconds over the same time (its nodes decode and ACK).
    pub loadgen_cpu_s: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// `ours`, `seed` or `seed-push`.
    pub implementation: Impl,
    /// `sotw` or `delta`.
    pub protocol: Protocol,
    /// Nodes simulated.
    pub nodes: usize,
    /// Streams per HTTP/2 connection.
    pub streams_per_conn: usize,
    /// What the server did on a change (a description for the results).
    pub update_path: String,
    /// How nodes were grouped (ours with a plugin).
    pub grouping: Grouping,
    /// Reload runs: how the plugin file was watched; `None` for input changes.
    pub reload: Option<ReloadWatch>,
    /// Initial configuration.
    pub initial: Initial,
    /// Server resident memory with its resources loaded and no client, in bytes.
    pub rss_idle: u64,
    /// ... and with every node connected and configured.
    pub rss_connected: u64,
    /// `(rss_connected - rss_idle) / nodes`.
    pub bytes_per_node: f64,
    /// What the server's resources added to its memory before any client came, in bytes.
    pub setup_bytes: u64,
    /// Server CPU seconds while the nodes connected and were configured.
    pub server_cpu_connect_s: f64,
    /// Each input change.
    pub updates: Vec<Update>,
    /// All changes' per-node latencies together.
    pub update_all: Summary,
    /// Every per-node update latency, in ms (for the plot).
    #[serde(skip)]
    pub update_samples: Vec<f64>,
    /// Every per-node initial latency, in ms (for the plot).
    #[serde(skip)]
    pub initial_samples: Vec<f64>,
    /// Streams that failed.
    pub failed_streams: usize,
}

/// Runs one scenario against a fresh server process.
pub async fn run(s: &Scenario, server_bin: &Path) -> anyhow::Result<RunResult> {
    let label = format!("{} {:?} {}", s.implementation.name(), s.protocol, s.nodes);
    let mut args = vec![
        "--impl".to_owned(),
        s.implementation.name().to_owned(),
        "--nodes".to_owned(),
        s.nodes.to_string(),
        "--services".to_owned(),
        s.services.to_string(),
        "--debounce-ms".to_owned(),
        s.debounce_ms.to_string(),
    ];
    if let (Impl::Ours, Some(p)) = (s.implementation, &s.plugin) {
        args.extend(["--plugin".to_owned(), p.display().to_string()]);
        args.extend(["--grouping".to_owned(), grouping_arg(s.grouping).to_owned()]);
    }
    // Reload runs: the policy plugin's file, which the server watches and this run replaces.
    let watched = match &s.change {
        Change::Inputs => None,
        Change::PluginFile {
            versions,
            interval_ms,
            settle_ms,
        } => {
            anyhow::ensure!(
                s.implementation == Impl::Ours && s.plugin.is_some() && versions.len() >= 2,
                "a reload run needs our server with a plugin and two policy versions or more"
            );
            let dir = std::env::temp_dir().join(format!("nx-loadgen-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let file = dir.join("policy.wasm");
            std::fs::copy(&versions[0], &file)
                .with_context(|| format!("{}", versions[0].display()))?;
            args.extend([
                "--policy".to_owned(),
                file.display().to_string(),
                "--reload-interval-ms".to_owned(),
                interval_ms.to_string(),
                "--reload-settle-ms".to_owned(),
                settle_ms.to_string(),
            ]);
            Some((file, versions))
        }
    };
    let marker = s.change.marker();
    let mut server = ServerProcess::spawn(server_bin, &args).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = server.rss();
    let cpu0 = server.cpu();

    let epoch = Epoch::now();
    let progress: Arc<Vec<NodeProgress>> =
        Arc::new((0..s.nodes).map(|_| NodeProgress::default()).collect());
    let channels = connect(server.addr, s.nodes.div_ceil(s.streams_per_conn.max(1))).await?;
    let connect_ms = ms(epoch.at.elapsed());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..s.nodes {
        let channel = channels[i / s.streams_per_conn.max(1)].clone();
        let (progress, protocol) = (Arc::clone(&progress), s.protocol);
        tasks.spawn(async move {
            let _ = client::run_node(channel, i, protocol, marker, epoch.at, &progress[i]).await;
        });
    }
    wait(&label, "configured", s.timeout, &progress, |p| {
        p.configured_ns.load(Ordering::Relaxed) > 0
    })
    .await;
    let initial_samples: Vec<f64> = progress
        .iter()
        .filter_map(|p| {
            let (o, c) = (
                p.opened_ns.load(Ordering::Relaxed),
                p.configured_ns.load(Ordering::Relaxed),
            );
            (c > 0).then(|| (c.saturating_sub(o)) as f64 / 1e6)
        })
        .collect();
    let last = progress
        .iter()
        .map(|p| p.configured_ns.load(Ordering::Relaxed))
        .max();
    let initial = Initial {
        all_configured_ms: last.unwrap_or(0) as f64 / 1e6,
        connect_ms,
        per_node: Summary::of(&initial_samples),
        configured: initial_samples.len(),
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = server.rss();
    let server_cpu_connect_s = server.cpu() - cpu0;

    let mut updates = Vec::new();
    let mut update_samples = Vec::new();
    for k in 1..=s.updates {
        let plugin_file = watched
            .as_ref()
            .map(|(file, versions)| (file.as_path(), versions.as_slice()));
        let (update, samples) = timed_change(
            &mut server,
            &label,
            k,
            plugin_file,
            &progress,
            epoch,
            s.update_timeout,
        )
        .await?;
        updates.push(update);
        update_samples.extend(samples);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let failed_streams = progress
        .iter()
        .filter(|p| p.failed.load(Ordering::Relaxed))
        .count();
    // The server closes first, so that TIME_WAIT stays on its side and the next run's
    // thousands of connections still find free ephemeral ports.
    let setup_bytes = server.setup_bytes;
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    tasks.abort_all();
    drop(channels);
    if let Some((file, _)) = &watched {
        if let Some(dir) = file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    Ok(RunResult {
        implementation: s.implementation,
        protocol: s.protocol,
        nodes: s.nodes,
        streams_per_conn: s.streams_per_conn,
        update_path: update_path(s).to_owned(),
        grouping: s.grouping,
        reload: match s.change {
            Change::Inputs => None,
            Change::PluginFile {
                interval_ms,
                settle_ms,
                ..
            } => Some(ReloadWatch {
                interval_ms,
                settle_ms,
            }),
        },
        initial,
        rss_idle,
        rss_connected,
        bytes_per_node: rss_connected.saturating_sub(rss_idle) as f64 / s.nodes.max(1) as f64,
        setup_bytes,
        server_cpu_connect_s,
        update_all: Summary::of(&update_samples),
        updates,
        update_samples,
        initial_samples,
        failed_streams,
    })
}

fn grouping_arg(g: Grouping) -> &'static str {
    match g {
        Grouping::Cluster => "cluster",
        Grouping::Node => "node",
    }
}

fn update_path(s: &Scenario) -> &'static str {
    if let Change::PluginFile { .. } = s.change {
        return "policy.wasm rewritten -> file event (close or rename) -> compile -> contract check -> canary over every group -> swap -> the canary's results published -> push";
    }
    match (s.implementation, &s.plugin) {
        (Impl::Ours, Some(_)) => {
            "inputs file renamed into place -> directory watch (file event; timed from its announcement, not from the write) -> input store -> pipeline -> mesh.wasm -> cache -> push"
        }
        (Impl::Ours, None) => "Cache::set -> push",
        (Impl::Seed, _) => "set_snapshot per node; the seed's server never pushes (as is)",
        (Impl::SeedPush, _) => {
            "set_snapshot per node -> cache watch -> the seed's handler re-run (added push path)"
        }
    }
}
