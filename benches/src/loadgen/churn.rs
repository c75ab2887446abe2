//! Pod churn: a set of live nodes stays connected while rounds of short-lived nodes, each with
//! a node id never seen before, connect, get configured and go away. The live nodes' input
//! change is timed before the churn and again once the server's grace period has passed; the
//! server's node groups and memory are read at each step.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::{self, Marker, NodeProgress, Protocol};
use super::server::ServerProcess;
use super::steps::{connect, ms, timed_change, wait, Epoch};
use super::Update;
use crate::servers::{GroupCount, Impl};
use crate::stats::Summary;

/// One churn run: one server, one protocol.
#[derive(Debug, Clone)]
pub struct ChurnScenario {
    /// Ours (built by `App`) or the seed with a push path.
    pub implementation: Impl,
    /// SotW or Delta.
    pub protocol: Protocol,
    /// Nodes connected throughout, whose input change is timed.
    pub live_nodes: usize,
    /// Rounds of short-lived nodes.
    pub rounds: usize,
    /// Distinct new nodes per round.
    pub nodes_per_round: usize,
    /// ADS streams per HTTP/2 connection.
    pub streams_per_conn: usize,
    /// Input changes timed before the churn, and as many after it.
    pub updates: u32,
    /// Services in the mesh.
    pub services: usize,
    /// Ours: the mesh plugin.
    pub plugin: PathBuf,
    /// Ours: the pipeline's debounce, in ms (at least 1 in a config file).
    pub debounce_ms: u64,
    /// Ours: how long a group outlives its last stream, in ms.
    pub grace_ms: u64,
    /// How long to wait for a set of nodes to be configured, for a change to reach every live
    /// node, and (beyond the grace period) for the groups to be back at their baseline.
    pub timeout: Duration,
}

/// One round of short-lived nodes.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnRound {
    /// Nodes configured (of `nodes_per_round`).
    pub configured: usize,
    /// From the first connection attempt to the last node configured.
    pub all_configured_ms: f64,
    /// Groups (or snapshots) the server held with the round's nodes all connected.
    pub groups: Option<usize>,
    /// Server resident memory then, in bytes.
    pub rss: u64,
}

/// The timed input changes of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    /// Each change.
    pub updates: Vec<Update>,
    /// Every change's per-node latencies together.
    pub all: Summary,
}

/// Everything one churn run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnResult {
    /// `ours` or `seed-push`.
    pub implementation: Impl,
    /// `sotw` or `delta`.
    pub protocol: Protocol,
    /// Nodes connected throughout.
    pub live_nodes: usize,
    /// Rounds of short-lived nodes.
    pub rounds: usize,
    /// New nodes per round.
    pub nodes_per_round: usize,
    /// Streams per HTTP/2 connection.
    pub streams_per_conn: usize,
    /// Ours: the group grace period, in ms; the seed forgets nothing.
    pub grace_ms: Option<u64>,
    /// What the server did on a change (a description for the results).
    pub update_path: String,
    /// What the server holds per group with only the live nodes connected; `None` where it
    /// cannot tell.
    pub groups_baseline: GroupCount,
    /// The most groups seen at the end of a round.
    pub groups_peak: Option<usize>,
    /// What it holds once the grace period has passed after the last round.
    pub groups_after: GroupCount,
    /// From the last round's nodes gone to the groups back at the baseline, in ms; `None`
    /// if they never came back within the timeout (or cannot be read).
    pub back_to_baseline_ms: Option<f64>,
    /// Server resident memory before any client, in bytes.
    pub rss_idle: u64,
    /// ... with the live nodes connected.
    pub rss_baseline: u64,
    /// ... at the end of the round that used the most.
    pub rss_peak: u64,
    /// ... once the grace period has passed after the last round.
    pub rss_after: u64,
    /// Live nodes configured (of `live_nodes`).
    pub live_configured: usize,
    /// Each round.
    pub churn_rounds: Vec<ChurnRound>,
    /// The live nodes' changes before the churn.
    pub before: Changes,
    /// ... and after it.
    pub after: Changes,
    /// Live streams that failed during the run.
    pub failed_live_streams: usize,
}

/// Runs one churn scenario against a fresh server process.
pub async fn run(s: &ChurnScenario, server_bin: &Path) -> anyhow::Result<ChurnResult> {
    let label = format!("churn {} {:?}", s.implementation.name(), s.protocol);
    let spc = s.streams_per_conn.max(1);
    let mut args: Vec<String> = [
        "--impl",
        s.implementation.name(),
        "--nodes",
        &s.live_nodes.to_string(),
        "--services",
        &s.services.to_string(),
        "--debounce-ms",
        &s.debounce_ms.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    match s.implementation {
        Impl::Ours => args.extend(
            [
                "--grouping",
                "node",
                "--grace-ms",
                &s.grace_ms.to_string(),
                "--plugin",
                &s.plugin.display().to_string(),
            ]
            .map(str::to_owned),
        ),
        Impl::SeedPush => {}
        Impl::Seed => anyhow::bail!("the seed as published never pushes: churn runs seed-push"),
    }
    let mut server = ServerProcess::spawn(server_bin, &args).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = server.rss();

    let epoch = Epoch::now();
    let live = Nodes::start(&server, s, 0..s.live_nodes, epoch).await?;
    wait(&label, "live configured", s.timeout, &live.progress, |p| {
        p.configured_ns.load(Ordering::Relaxed) > 0
    })
    .await;
    let live_configured = live.configured();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_baseline = server.rss();
    let groups_baseline = server.groups().await?;
    let before = changes(&mut server, &label, 1..=s.updates, &live, epoch, s).await?;

    let mut churn_rounds = Vec::new();
    for round in 0..s.rounds {
        let first = s.live_nodes + round * s.nodes_per_round;
        let started = Instant::now();
        let nodes = Nodes::start(&server, s, first..first + s.nodes_per_round, epoch).await?;
        wait(
            &label,
            &format!("round {} configured", round + 1),
            s.timeout,
            &nodes.progress,
            |p| p.configured_ns.load(Ordering::Relaxed) > 0,
        )
        .await;
        churn_rounds.push(ChurnRound {
            configured: nodes.configured(),
            all_configured_ms: ms(started.elapsed()),
            groups: server.groups().await?.count,
            rss: server.rss(),
        });
        nodes.leave().await;
    }
    let (groups_after, back_to_baseline_ms) =
        await_grace(&mut server, &label, groups_baseline, s).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = server.rss();
    let after = changes(
        &mut server,
        &label,
        s.updates + 1..=2 * s.updates,
        &live,
        epoch,
        s,
    )
    .await?;
    let failed_live_streams = live
        .progress
        .iter()
        .filter(|p| p.failed.load(Ordering::Relaxed))
        .count();
    // The server closes first, so that TIME_WAIT stays on its side.
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    live.leave().await;
    Ok(ChurnResult {
        implementation: s.implementation,
        protocol: s.protocol,
        live_nodes: s.live_nodes,
        rounds: s.rounds,
        nodes_per_round: s.nodes_per_round,
        streams_per_conn: spc,
        grace_ms: (s.implementation == Impl::Ours).then_some(s.grace_ms),
        update_path: update_path(s.implementation).to_owned(),
        groups_baseline,
        groups_peak: churn_rounds.iter().filter_map(|r| r.groups).max(),
        groups_after,
        back_to_baseline_ms,
        rss_idle,
        rss_baseline,
        rss_peak: churn_rounds
            .iter()
            .map(|r| r.rss)
            .max()
            .unwrap_or(rss_baseline),
        rss_after,
        live_configured,
        churn_rounds,
        before,
        after,
        failed_live_streams,
    })
}

fn update_path(i: Impl) -> &'static str {
    match i {
        Impl::Ours => "inputs file renamed into place -> directory watch (file event; timed from its announcement, not from the write) -> input store -> pipeline -> mesh.wasm -> cache -> push",
        _ => "set_snapshot for every node the cache holds -> cache watch -> the seed's handler re-run (added push path)",
    }
}

/// Simulated nodes on their own connections, until they leave.
struct Nodes {
    progress: Arc<Vec<NodeProgress>>,
    tasks: tokio::task::JoinSet<()>,
    channels: Vec<tonic::transport::Channel>,
}

impl Nodes {
    /// Connects nodes `indices` (node ids `node-<i>`), `streams_per_conn` to a connection.
    async fn start(
        server: &ServerProcess,
        s: &ChurnScenario,
        indices: std::ops::Range<usize>,
        epoch: Epoch,
    ) -> anyhow::Result<Self> {
        let spc = s.streams_per_conn.max(1);
        let progress: Arc<Vec<NodeProgress>> =
            Arc::new(indices.clone().map(|_| NodeProgress::default()).collect());
        let channels = connect(server.addr, indices.len().div_ceil(spc)).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for (k, i) in indices.enumerate() {
            let channel = channels[k / spc].clone();
            let (progress, protocol) = (Arc::clone(&progress), s.protocol);
            tasks.spawn(async move {
                let p = &progress[k];
                let _ = client::run_node(channel, i, protocol, Marker::INPUTS, epoch.at, p).await;
            });
        }
        Ok(Nodes {
            progress,
            tasks,
            channels,
        })
    }

    fn configured(&self) -> usize {
        self.progress
            .iter()
            .filter(|p| p.configured_ns.load(Ordering::Relaxed) > 0)
            .count()
    }

    /// Ends every stream (as a proxy that goes away resets it) and closes the connections.
    async fn leave(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        drop(self.channels);
    }
}

/// Times input changes `revisions` at the live nodes.
async fn changes(
    server: &mut ServerProcess,
    label: &str,
    revisions: std::ops::RangeInclusive<u32>,
    live: &Nodes,
    epoch: Epoch,
    s: &ChurnScenario,
) -> anyhow::Result<Changes> {
    let mut updates = Vec::new();
    let mut samples = Vec::new();
    for k in revisions {
        let (u, v) = timed_change(server, label, k, None, &live.progress, epoch, s.timeout).await?;
        updates.push(u);
        samples.extend(v);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(Changes {
        updates,
        all: Summary::of(&samples),
    })
}

/// After the last round: a server that forgets groups is polled until it holds no more than
/// at the baseline (within the grace period plus the timeout); one that cannot forget is given
/// the grace period. Returns what it holds then, and when it got back to the baseline.
async fn await_grace(
    server: &mut ServerProcess,
    label: &str,
    baseline: GroupCount,
    s: &ChurnScenario,
) -> anyhow::Result<(GroupCount, Option<f64>)> {
    let started = Instant::now();
    let grace = Duration::from_millis(s.grace_ms);
    let forgets = server.groups().await?.evicted.is_some();
    let Some(target) = baseline.count.filter(|_| forgets) else {
        tokio::time::sleep(grace + Duration::from_secs(1)).await;
        return Ok((server.groups().await?, None));
    };
    let mut last_print = Instant::now();
    loop {
        let now = server.groups().await?;
        let count = now.count.unwrap_or(usize::MAX);
        if count <= target {
            return Ok((now, Some(ms(started.elapsed()))));
        }
        if started.elapsed() > grace + s.timeout {
            eprintln!("[{label}] groups never came back to {target}: {count} held");
            return Ok((now, None));
        }
        if last_print.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "[{label}] waiting for the grace period: {count} groups (baseline {target}) after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails unless every node was configured, every change reached every live node before and
/// after the churn, and a server that forgets groups came back to its baseline.
pub fn check(results: &[ChurnResult]) -> anyhow::Result<()> {
    for r in results {
        let name = format!("churn {} {:?}", r.implementation.name(), r.protocol);
        anyhow::ensure!(
            r.live_configured == r.live_nodes,
            "{name}: {}/{} live nodes configured",
            r.live_configured,
            r.live_nodes
        );
        anyhow::ensure!(
            r.failed_live_streams == 0,
            "{name}: {} live streams failed",
            r.failed_live_streams
        );
        for (k, round) in r.churn_rounds.iter().enumerate() {
            anyhow::ensure!(
                round.configured == r.nodes_per_round,
                "{name}: round {}: {}/{} nodes configured",
                k + 1,
                round.configured,
                r.nodes_per_round
            );
        }
        for (phase, c) in [("before", &r.before), ("after", &r.after)] {
            for (k, u) in c.updates.iter().enumerate() {
                anyhow::ensure!(
                    u.acked == r.live_nodes,
                    "{name}: change {} {phase} the churn reached {}/{} live nodes",
                    k + 1,
                    u.acked,
                    r.live_nodes
                );
            }
        }
        if r.groups_after.evicted.is_some() {
            anyhow::ensure!(
                r.back_to_baseline_ms.is_some(),
                "{name}: groups {:?} after the grace period, {:?} at the baseline",
                r.groups_after.count,
                r.groups_baseline.count
            );
        }
    }
    Ok(())
}
