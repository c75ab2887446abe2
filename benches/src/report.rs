//! The load generator's results: a JSON file, a Markdown table (the README's), and SVG plots,
//! with ours-to-seed ratios and the targets marked met or missed; [`churn`] reports the
//! churn runs.

pub mod churn;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::loadgen::client::Protocol;
use crate::loadgen::RunResult;
use crate::plot::{bar_chart, cdf_chart, Series};
use crate::servers::{Grouping, Impl};
use crate::stats::cdf;

/// The targets of issue #7 (reported, not asserted).
pub const TARGET_INITIAL_MS: f64 = 500.0;
/// One input change to all ACKed, p99.
pub const TARGET_UPDATE_P99_MS: f64 = 150.0;
/// Server memory per connected node.
pub const TARGET_BYTES_PER_NODE: f64 = 10.0 * 1024.0;

/// What the run was.
#[derive(Debug, Serialize)]
pub struct Context {
    /// The command line.
    pub command: String,
    /// CPUs available.
    pub cpus: usize,
    /// The open-file limit in force.
    pub fd_limit: u64,
    /// Load generator CPU seconds over the whole run.
    pub loadgen_cpu_s: f64,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
}

#[derive(Serialize)]
struct Document<'a> {
    context: &'a Context,
    runs: &'a [RunResult],
}

fn find(runs: &[RunResult], i: Impl, p: Protocol, spc: usize) -> Option<&RunResult> {
    runs.iter()
        .find(|r| r.implementation == i && r.protocol == p && r.streams_per_conn == spc)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

/// "p50 / p99 / max" of every change's per-node latency, or "never delivered".
fn change_cell(r: &RunResult) -> String {
    let u = &r.update_all;
    if u.count == 0 {
        "never delivered".to_owned()
    } else {
        format!("{:.1} / {:.1} / {:.1}", u.p50_ms, u.p99_ms, u.max_ms)
    }
}

/// The server's name in results: ours grouped by node says so.
fn server_label(r: &RunResult) -> String {
    match (r.implementation, r.grouping) {
        (Impl::Ours, Grouping::Node) => "ours (a group per node)".to_owned(),
        (i, _) => i.name().to_owned(),
    }
}

/// The Markdown report: one row per run, then ratios and targets (reload runs: their own
/// table).
pub fn markdown(runs: &[RunResult], ctx: &Context) -> String {
    if runs.iter().any(|r| r.reload.is_some()) {
        return reload_markdown(runs, ctx);
    }
    let mut md = String::new();
    let _ = writeln!(md, "### ADS load generator: ours against the seed, same run\n\n`{}` ({} CPUs shared by the server and the load generator, loopback, server in its own process; loadgen CPU {:.1} s over {:.0} s).\n", ctx.command, ctx.cpus, ctx.loadgen_cpu_s, ctx.wall_s);
    md.push_str("| server | protocol | nodes | streams/conn | all configured (ms) | per node p50 / p99 (ms) | change → all ACKed p50 / p99 / max (ms) | ACKed | server memory per node | server CPU: connect / per change (s) | loadgen CPU per change (s) |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        let acked: usize = r.updates.iter().map(|u| u.acked).min().unwrap_or(0);
        let per_change = |f: fn(&crate::loadgen::Update) -> f64| {
            r.updates.iter().map(f).sum::<f64>() / r.updates.len().max(1) as f64
        };
        let _ =
            writeln!(
            md,
            "| {} | {:?} | {} | {} | {:.0} | {:.1} / {:.1} | {} | {} | {:.1} KB | {:.2} / {:.3} | {:.3} |",
            server_label(r),
            r.protocol,
            r.nodes,
            r.streams_per_conn,
            r.initial.all_configured_ms,
            r.initial.per_node.p50_ms,
            r.initial.per_node.p99_ms,
            change_cell(r),
            if r.updates.is_empty() { "-".to_owned() } else { format!("{acked}/{}", r.nodes) },
            r.bytes_per_node / 1024.0,
            r.server_cpu_connect_s,
            per_change(|u| u.server_cpu_s),
            per_change(|u| u.loadgen_cpu_s),
        );
    }
    md.push_str("\nUpdate paths: ");
    let mut paths: Vec<String> = Vec::new();
    for r in runs {
        let path = format!("**{}**: {}", r.implementation.name(), r.update_path);
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    md.push_str(&paths.join("; "));
    md.push_str(".\n\nOurs against the seed, same run (ratio < 1: ours is smaller/faster), and the targets:\n\n");
    for r in runs.iter().filter(|r| r.implementation == Impl::Ours) {
        let (p, spc) = (r.protocol, r.streams_per_conn);
        let _ = write!(
            md,
            "- {:?}, {} nodes, {} streams/conn: initial {:.0} ms ({} ≤ {TARGET_INITIAL_MS} ms)",
            p,
            r.nodes,
            spc,
            r.initial.all_configured_ms,
            met(r.initial.all_configured_ms <= TARGET_INITIAL_MS && r.initial.configured == r.nodes)
        );
        if let Some(s) = find(runs, Impl::Seed, p, spc) {
            let _ = write!(
                md,
                ", ×{:.2} the seed's",
                r.initial.all_configured_ms / s.initial.all_configured_ms.max(1e-9)
            );
        }
        let _ = write!(
            md,
            "; memory {:.1} KB/node ({} ≤ 10 KB)",
            r.bytes_per_node / 1024.0,
            met(r.bytes_per_node <= TARGET_BYTES_PER_NODE)
        );
        if let Some(s) = find(runs, Impl::Seed, p, spc) {
            let _ = write!(
                md,
                ", ×{:.2} the seed's {:.1} KB",
                r.bytes_per_node / s.bytes_per_node.max(1e-9),
                s.bytes_per_node / 1024.0
            );
        }
        if !r.updates.is_empty() {
            let all = r.updates.iter().all(|u| u.acked == r.nodes);
            let _ = write!(
                md,
                "; change → all ACKed p99 {:.1} ms ({} ≤ {TARGET_UPDATE_P99_MS} ms)",
                r.update_all.p99_ms,
                met(all && r.update_all.p99_ms <= TARGET_UPDATE_P99_MS)
            );
            if let Some(s) = find(runs, Impl::SeedPush, p, spc).filter(|s| s.update_all.count > 0) {
                let _ = write!(
                    md,
                    ", ×{:.2} the seed with a push path ({:.1} ms)",
                    r.update_all.p99_ms / s.update_all.p99_ms.max(1e-9),
                    s.update_all.p99_ms
                );
            }
        }
        md.push_str(".\n");
    }
    md
}

/// The reload benchmark's table: plugin file written → every node ACKed the new config.
fn reload_markdown(runs: &[RunResult], ctx: &Context) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "### Plugin hot reload: file change → every node ACKed\n\n`{}` ({} CPUs shared by the server and the load generator, loopback, server in its own process; loadgen CPU {:.1} s over {:.0} s).\n", ctx.command, ctx.cpus, ctx.loadgen_cpu_s, ctx.wall_s);
    md.push_str("| grouping | protocol | nodes | streams/conn | file check / settle (ms) | reloads | file change → all ACKed p50 / p99 / max (ms) | ACKed (worst reload) | server CPU per reload (s) |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        let Some(watch) = r.reload else { continue };
        let acked: usize = r.updates.iter().map(|u| u.acked).min().unwrap_or(0);
        let cpu =
            r.updates.iter().map(|u| u.server_cpu_s).sum::<f64>() / r.updates.len().max(1) as f64;
        let grouping = match r.grouping {
            Grouping::Cluster => "by cluster: 1 group",
            Grouping::Node => "by node: a group per node",
        };
        let _ = writeln!(
            md,
            "| {grouping} | {:?} | {} | {} | {} / {} | {} | {} | {acked}/{} | {cpu:.3} |",
            r.protocol,
            r.nodes,
            r.streams_per_conn,
            watch.interval_ms,
            watch.settle_ms,
            r.updates.len(),
            change_cell(r),
            r.nodes,
        );
    }
    if let Some(r) = runs.first() {
        let _ = writeln!(md, "\nPath: {}. The file is picked up when it is closed after writing or renamed into place (inotify); `file check / settle` apply only to the polling fallback.", r.update_path);
    }
    md
}

/// Writes `<name>.json`, `<name>.md` and the plots into `dir`; returns the paths written.
pub fn write(
    dir: &Path,
    name: &str,
    runs: &[RunResult],
    ctx: &Context,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut put = |file: String, text: String| -> anyhow::Result<()> {
        let path = dir.join(file);
        std::fs::write(&path, text)?;
        written.push(path);
        Ok(())
    };
    put(
        format!("{name}.json"),
        serde_json::to_string_pretty(&Document { context: ctx, runs })?,
    )?;
    put(format!("{name}.md"), markdown(runs, ctx))?;
    let style = |r: &RunResult| -> &'static str {
        match (r.implementation, r.protocol) {
            (Impl::Ours, Protocol::Sotw) if r.grouping == Grouping::Node => "#6a1b9a",
            (Impl::Ours, Protocol::Delta) if r.grouping == Grouping::Node => "#ba68c8",
            (Impl::Ours, Protocol::Sotw) => "#1f5fb4",
            (Impl::Ours, Protocol::Delta) => "#6baed6",
            (Impl::Seed, Protocol::Sotw) => "#c62828",
            (Impl::Seed, Protocol::Delta) => "#f08a80",
            (Impl::SeedPush, Protocol::Sotw) => "#2e7d32",
            (Impl::SeedPush, Protocol::Delta) => "#8bc98a",
        }
    };
    let label = |r: &RunResult| {
        format!(
            "{} {:?} ×{}",
            server_label(r),
            r.protocol,
            r.streams_per_conn
        )
    };
    let updates: Vec<Series> = runs
        .iter()
        .filter(|r| !r.update_samples.is_empty())
        .map(|r| Series {
            label: label(r),
            points: cdf(&r.update_samples, 200),
            color: Some(style(r)),
            dashed: r.streams_per_conn == 1,
        })
        .collect();
    let nodes = runs.first().map_or(0, |r| r.nodes);
    let reload = runs.iter().any(|r| r.reload.is_some());
    put(
        format!("{name}-updates.svg"),
        cdf_chart(
            &if reload {
                format!("One plugin file change → ACKed, {nodes} nodes")
            } else {
                format!("One input change → ACKed, {nodes} nodes")
            },
            "ms after the change",
            &updates,
            (!reload).then_some((TARGET_UPDATE_P99_MS, "target p99")),
        ),
    )?;
    let initial: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            label: label(r),
            points: cdf(&r.initial_samples, 200),
            color: Some(style(r)),
            dashed: r.streams_per_conn == 1,
        })
        .collect();
    put(
        format!("{name}-initial.svg"),
        cdf_chart(
            &format!("Initial configuration, {nodes} nodes connecting at once"),
            "ms from a node's first request to its last ACK",
            &initial,
            None,
        ),
    )?;
    let memory: Vec<(String, f64, &'static str)> = runs
        .iter()
        .map(|r| (label(r), r.bytes_per_node / 1024.0, style(r)))
        .collect();
    put(
        format!("{name}-memory.svg"),
        bar_chart(
            "Server memory per connected node",
            "KB",
            &memory,
            Some(TARGET_BYTES_PER_NODE / 1024.0),
        ),
    )?;
    Ok(written)
}
