//! The load generator: `loadgen --nodes 10000` runs N simulated Envoys over ADS (SotW and
//! Delta) against our server, the seed's server as published, and the seed with a push path,
//! each in its own process; prints progress on stderr and writes JSON, Markdown and SVG plots
//! under `target/bench-results/`. With `--reload v1.wasm,v2.wasm,…` it times plugin file
//! changes instead of input changes: file written → every node ACKed the new config. With
//! `--churn ROUNDS:NODES` it times live nodes' input change before and after rounds of
//! short-lived nodes, and reads what the server keeps of them.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use nebucloud_xds::config::ReloadConfig;
use nx_bench::fixtures::{plugin_dir, results_dir};
use nx_bench::loadgen::churn::{self, ChurnScenario};
use nx_bench::loadgen::client::Protocol;
use nx_bench::loadgen::{run, server::default_server_bin, Change, Scenario};
use nx_bench::report::{self, Context};
use nx_bench::servers::{Grouping, Impl};
use nx_bench::stats::{cpu_seconds, raise_fd_limit};

#[derive(Parser)]
#[command(about = "ADS load generator: ours side by side with the seed library")]
struct Cli {
    /// Simulated nodes per run.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Protocols to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["sotw", "delta"])]
    protocols: Vec<Protocol>,
    /// Servers to run.
    #[arg(long = "impls", value_enum, value_delimiter = ',', default_values = ["ours", "seed", "seed-push"])]
    implementations: Vec<Impl>,
    /// ADS streams per HTTP/2 connection; several values run each scenario once per value.
    /// Real fleets open one connection per node (1); sharing connections keeps descriptors
    /// and the load generator's own cost down.
    #[arg(long, value_delimiter = ',', default_values = ["50"])]
    streams_per_conn: Vec<usize>,
    /// Input changes timed per run.
    #[arg(long, default_value_t = 5)]
    updates: u32,
    /// Services in the mesh (10 clusters, 10 assignments, a listener and a route table).
    #[arg(long, default_value_t = 10)]
    services: usize,
    /// The mesh plugin for our server (default: $NX_PLUGIN_DIR or build/plugins, mesh.wasm).
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Serve our server's resources from the cache directly, without the plugin pipeline.
    #[arg(long)]
    static_resources: bool,
    /// Our pipeline's debounce window in ms (serving default: 100; 0 measures the path).
    #[arg(long, default_value_t = 0)]
    debounce_ms: u64,
    /// Seconds to wait for all nodes in one phase.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Output directory (default: target/bench-results, under $CARGO_TARGET_DIR if set).
    #[arg(long)]
    out: Option<PathBuf>,
    /// File name stem of the results (default: `loadgen`, with --churn `churn`).
    #[arg(long)]
    name: Option<String>,
    /// The bench-server binary (default: beside this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// How our server groups nodes (with the plugin; by default as the quickstart ships it);
    /// several values run each scenario once per value.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["node"])]
    grouping: Vec<Grouping>,
    /// Time plugin reloads instead of input changes: our server runs the mesh plugin followed
    /// by a policy plugin whose file it watches; each change copies the next of these files
    /// over it (the first is loaded at start). Only our server has plugins: the seed is not run.
    #[arg(long, value_delimiter = ',')]
    reload: Vec<PathBuf>,
    /// With --reload: how often the server checks plugin files, in ms (the serving default).
    #[arg(long, default_value_t = ReloadConfig::default().interval_ms)]
    reload_interval_ms: u64,
    /// With --reload: how long a changed plugin file must stay unchanged before it is loaded,
    /// in ms (the serving default).
    #[arg(long, default_value_t = ReloadConfig::default().settle_ms)]
    reload_settle_ms: u64,
    /// Churn instead: ROUNDS rounds of NODES new node ids each connect, get configured and
    /// leave, while --live-nodes stay connected; their input change is timed before the churn
    /// and after the grace period. Runs ours (as `serve` builds it: mesh.wasm, a group per node)
    /// and the seed with a push path; the seed as published never pushes and is skipped.
    #[arg(long, value_name = "ROUNDS:NODES", value_parser = parse_churn)]
    churn: Option<(usize, usize)>,
    /// With --churn: nodes connected throughout, whose input change is timed.
    #[arg(long, default_value_t = 100)]
    live_nodes: usize,
    /// With --churn: how long our server keeps a group after its last stream, in ms (the
    /// serving default is five minutes; short here so that the run is).
    #[arg(long, default_value_t = 2_000)]
    grace_ms: u64,
    /// Fail unless every node was configured and every change reached every node of the
    /// servers that push (the smoke test); with --churn, also unless our server's groups came
    /// back to their baseline.
    #[arg(long)]
    check: bool,
}

fn parse_churn(text: &str) -> Result<(usize, usize), String> {
    let parse = |s: &str| s.trim().parse::<usize>().ok().filter(|n| *n > 0);
    match text.split_once(':').map(|(r, n)| (parse(r), parse(n))) {
        Some((Some(rounds), Some(nodes))) => Ok((rounds, nodes)),
        _ => Err(format!(
            "{text:?}: expected ROUNDS:NODES, two positive numbers (e.g. 5:2000)"
        )),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let fd_limit = raise_fd_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_all(cli, fd_limit))
}

async fn run_all(cli: Cli, fd_limit: u64) -> anyhow::Result<()> {
    if let Some((rounds, nodes)) = cli.churn {
        return run_churn(cli, rounds, nodes, fd_limit).await;
    }
    let started = Instant::now();
    let needed = cli.nodes.div_ceil(
        cli.streams_per_conn
            .iter()
            .copied()
            .min()
            .unwrap_or(1)
            .max(1),
    );
    if (needed as u64) + 64 > fd_limit {
        anyhow::bail!("{needed} connections need more open files than the limit of {fd_limit}: raise `ulimit -n` or --streams-per-conn");
    }
    let plugin = if cli.static_resources {
        None
    } else {
        let p = cli
            .plugin
            .clone()
            .unwrap_or_else(|| plugin_dir().join("mesh.wasm"));
        anyhow::ensure!(
            p.exists(),
            "{} is missing: run `make plugins`, or pass --static-resources",
            p.display()
        );
        Some(p)
    };
    let server_bin = cli.server_bin.clone().unwrap_or_else(default_server_bin);
    let change = if cli.reload.is_empty() {
        Change::Inputs
    } else {
        anyhow::ensure!(
            plugin.is_some() && cli.reload.len() >= 2,
            "--reload needs the mesh plugin (no --static-resources) and two policy files or more"
        );
        let contents = cli
            .reload
            .iter()
            .map(|f| {
                std::fs::read(f).map_err(|e| {
                    anyhow::anyhow!("{}: {e} (run `make reload-plugins`)", f.display())
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Change k installs version k mod n over version k-1 mod n: equal neighbours would be
        // no change at all, and the run would wait for an ACK that never comes.
        for (k, v) in contents.iter().enumerate() {
            let next = (k + 1) % contents.len();
            anyhow::ensure!(
                *v != contents[next],
                "{} and {} are the same file: a reload between them changes nothing",
                cli.reload[k].display(),
                cli.reload[next].display()
            );
        }
        Change::PluginFile {
            versions: cli.reload.clone(),
            interval_ms: cli.reload_interval_ms,
            settle_ms: cli.reload_settle_ms,
        }
    };
    let implementations: Vec<Impl> = match change {
        Change::Inputs => cli.implementations.clone(),
        Change::PluginFile { .. } => vec![Impl::Ours],
    };
    // Grouping is ours with a plugin only: other servers run once.
    let groupings = |implementation: Impl| match (implementation, &plugin) {
        (Impl::Ours, Some(_)) => cli.grouping.clone(),
        _ => vec![Grouping::Cluster],
    };
    let mut results = Vec::new();
    for &spc in &cli.streams_per_conn {
        for &protocol in &cli.protocols {
            for implementation in implementations.iter().copied() {
                for grouping in groupings(implementation) {
                    // The seed as published never pushes: one change, briefly, shows it.
                    let (updates, update_timeout) = match implementation {
                        Impl::Seed => (cli.updates.min(1), Duration::from_secs(3)),
                        _ => (cli.updates, Duration::from_secs(cli.timeout_s)),
                    };
                    let scenario = Scenario {
                        implementation,
                        protocol,
                        nodes: cli.nodes,
                        streams_per_conn: spc.max(1),
                        updates,
                        services: cli.services,
                        plugin: plugin.clone(),
                        debounce_ms: cli.debounce_ms,
                        timeout: Duration::from_secs(cli.timeout_s),
                        update_timeout,
                        grouping,
                        change: change.clone(),
                    };
                    let r = run(&scenario, &server_bin).await.map_err(|e| {
                        anyhow::anyhow!("{} {protocol:?}: {e:#}", implementation.name())
                    })?;
                    eprintln!(
                    "[{} {:?} {} {grouping:?}] initial {:.0} ms, change p99 {:.1} ms, {:.1} KB/node",
                    implementation.name(),
                    protocol,
                    cli.nodes,
                    r.initial.all_configured_ms,
                    r.update_all.p99_ms,
                    r.bytes_per_node / 1024.0
                );
                    results.push(r);
                }
            }
        }
    }
    let ctx = Context {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        fd_limit,
        loadgen_cpu_s: cpu_seconds(std::process::id()).unwrap_or(0.0),
        wall_s: started.elapsed().as_secs_f64(),
    };
    let out = cli.out.clone().unwrap_or_else(results_dir);
    let name = cli.name.as_deref().unwrap_or("loadgen");
    for path in report::write(&out, name, &results, &ctx)? {
        eprintln!("wrote {}", path.display());
    }
    println!("{}", report::markdown(&results, &ctx));
    if cli.check {
        check(&results)?;
    }
    Ok(())
}

/// `--churn`: ours and the seed with a push path, once per protocol and streams-per-connection.
async fn run_churn(cli: Cli, rounds: usize, nodes: usize, fd_limit: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let spc_min = cli
        .streams_per_conn
        .iter()
        .copied()
        .min()
        .unwrap_or(1)
        .max(1);
    let needed = cli.live_nodes.div_ceil(spc_min) + nodes.div_ceil(spc_min);
    if (needed as u64) + 64 > fd_limit {
        anyhow::bail!("{needed} connections need more open files than the limit of {fd_limit}: raise `ulimit -n` or --streams-per-conn");
    }
    anyhow::ensure!(
        !cli.static_resources && cli.reload.is_empty(),
        "--churn runs our server as it ships (with the mesh plugin): no --static-resources or --reload"
    );
    let plugin = cli
        .plugin
        .clone()
        .unwrap_or_else(|| plugin_dir().join("mesh.wasm"));
    anyhow::ensure!(
        plugin.exists(),
        "{} is missing: run `make plugins`",
        plugin.display()
    );
    if cli.implementations.contains(&Impl::Seed) {
        eprintln!("--churn: the seed as published never pushes; skipped (seed-push runs)");
    }
    let implementations: Vec<Impl> = cli
        .implementations
        .iter()
        .copied()
        .filter(|i| *i != Impl::Seed)
        .collect();
    anyhow::ensure!(
        !implementations.is_empty(),
        "--churn runs ours and seed-push"
    );
    let server_bin = cli.server_bin.clone().unwrap_or_else(default_server_bin);
    let mut results = Vec::new();
    for &spc in &cli.streams_per_conn {
        for &protocol in &cli.protocols {
            for &implementation in &implementations {
                let scenario = ChurnScenario {
                    implementation,
                    protocol,
                    live_nodes: cli.live_nodes,
                    rounds,
                    nodes_per_round: nodes,
                    streams_per_conn: spc.max(1),
                    updates: cli.updates,
                    services: cli.services,
                    plugin: plugin.clone(),
                    debounce_ms: cli.debounce_ms,
                    grace_ms: cli.grace_ms,
                    timeout: Duration::from_secs(cli.timeout_s),
                };
                let r = churn::run(&scenario, &server_bin).await.map_err(|e| {
                    anyhow::anyhow!("churn {} {protocol:?}: {e:#}", implementation.name())
                })?;
                eprintln!(
                    "[churn {} {protocol:?}] groups {:?} -> {:?} -> {:?}; change p99 {:.1} -> {:.1} ms",
                    implementation.name(),
                    r.groups_baseline.count,
                    r.groups_peak,
                    r.groups_after.count,
                    r.before.all.p99_ms,
                    r.after.all.p99_ms
                );
                results.push(r);
            }
        }
    }
    let ctx = Context {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        fd_limit,
        loadgen_cpu_s: cpu_seconds(std::process::id()).unwrap_or(0.0),
        wall_s: started.elapsed().as_secs_f64(),
    };
    let out = cli.out.clone().unwrap_or_else(results_dir);
    let name = cli.name.as_deref().unwrap_or("churn");
    for path in report::churn::write(&out, name, &results, &ctx)? {
        eprintln!("wrote {}", path.display());
    }
    println!("{}", report::churn::markdown(&results, &ctx));
    if cli.check {
        churn::check(&results)?;
    }
    Ok(())
}

fn check(results: &[nx_bench::loadgen::RunResult]) -> anyhow::Result<()> {
    for r in results {
        let name = format!("{} {:?}", r.implementation.name(), r.protocol);
        anyhow::ensure!(
            r.initial.configured == r.nodes,
            "{name}: {}/{} nodes configured",
            r.initial.configured,
            r.nodes
        );
        anyhow::ensure!(
            r.failed_streams == 0,
            "{name}: {} streams failed",
            r.failed_streams
        );
        if r.implementation != Impl::Seed {
            for (k, u) in r.updates.iter().enumerate() {
                anyhow::ensure!(
                    u.acked == r.nodes,
                    "{name}: change {} reached {}/{} nodes",
                    k + 1,
                    u.acked,
                    r.nodes
                );
            }
        }
    }
    Ok(())
}
