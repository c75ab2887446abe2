//! The churn benchmark's results: `<name>.json` and a Markdown table of groups, memory and the
//! live nodes' change latency before and after the churn, per server.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Context;
use crate::loadgen::churn::{Changes, ChurnResult};
use crate::servers::Impl;

#[derive(Serialize)]
struct Document<'a> {
    context: &'a Context,
    runs: &'a [ChurnResult],
}

fn count(c: Option<usize>) -> String {
    c.map_or_else(|| "n/a".to_owned(), |c| c.to_string())
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn latency(c: &Changes) -> String {
    if c.all.count == 0 {
        "never delivered".to_owned()
    } else {
        format!("{:.1} / {:.1}", c.all.p50_ms, c.all.p99_ms)
    }
}

fn acked(c: &Changes) -> usize {
    c.updates.iter().map(|u| u.acked).min().unwrap_or(0)
}

fn cpu(c: &Changes) -> f64 {
    c.updates.iter().map(|u| u.server_cpu_s).sum::<f64>() / c.updates.len().max(1) as f64
}

/// The Markdown report: one row per run, then what each server kept.
pub fn markdown(runs: &[ChurnResult], ctx: &Context) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "### Churn: live nodes' input change before and after rounds of short-lived nodes\n\n`{}` ({} CPUs shared by the server and the load generator, loopback, server in its own process; loadgen CPU {:.1} s over {:.0} s).\n", ctx.command, ctx.cpus, ctx.loadgen_cpu_s, ctx.wall_s);
    md.push_str("| server | protocol | live nodes | churn (rounds × new nodes) | groups: baseline / peak / after grace | evicted | back at baseline after | server RSS: baseline / peak / after grace (MB) | change → all live ACKed p50 / p99 (ms), before churn | … after grace | live ACKed before / after | server CPU per change before / after (s) |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        let back = match (r.back_to_baseline_ms, r.groups_after.evicted) {
            (Some(t), _) => format!("{:.1} s", t / 1e3),
            (None, Some(_)) => "never (timeout)".to_owned(),
            (None, None) => "never (nothing is freed)".to_owned(),
        };
        let server = match (r.implementation, r.grace_ms) {
            (Impl::Ours, Some(g)) => format!("ours (grace {:.1} s)", g as f64 / 1e3),
            (i, _) => i.name().to_owned(),
        };
        let _ = writeln!(
            md,
            "| {server} | {:?} | {} | {} × {} | {} / {} / {} | {} | {back} | {} / {} / {} | {} | {} | {}/{} / {}/{} | {:.3} / {:.3} |",
            r.protocol,
            r.live_nodes,
            r.rounds,
            r.nodes_per_round,
            count(r.groups_baseline.count),
            count(r.groups_peak),
            count(r.groups_after.count),
            r.groups_after
                .evicted
                .map_or_else(|| "n/a".to_owned(), |e| e.to_string()),
            mb(r.rss_baseline),
            mb(r.rss_peak),
            mb(r.rss_after),
            latency(&r.before),
            latency(&r.after),
            acked(&r.before),
            r.live_nodes,
            acked(&r.after),
            r.live_nodes,
            cpu(&r.before),
            cpu(&r.after),
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
    md.push_str(".\n\n");
    md.push_str("Ours is built by `App` from a config file as `serve` is (mesh.wasm, `group_by = \"identity\"`: every node its own group); a change rewrites a file of its inputs directory and is timed from when the server's directory watch announced it. The seed with a push path counts snapshots, one per node id it ever served: it has no groups and never forgets a node.\n\n");
    for r in runs {
        let _ = write!(
            md,
            "- {} {:?}: {} new nodes over {} rounds; ",
            r.implementation.name(),
            r.protocol,
            r.rounds * r.nodes_per_round,
            r.rounds
        );
        let what = match r.implementation {
            Impl::Ours => "groups",
            _ => "snapshots",
        };
        match (r.groups_baseline.count, r.groups_after.count) {
            (Some(b), Some(a)) if a <= b => {
                let _ = write!(md, "held {a} {what} after the grace period, its baseline");
                let (before, after) = (&r.groups_baseline, &r.groups_after);
                if let (Some(cb), Some(ca), Some(nb), Some(na)) = (
                    before.cache_entries,
                    after.cache_entries,
                    before.node_records,
                    after.node_records,
                ) {
                    let _ = write!(
                        md,
                        " (cache entries {ca}, node records {na}; at the baseline {cb} and {nb})"
                    );
                }
            }
            (Some(b), Some(a)) => {
                let _ = write!(
                    md,
                    "held {a} {what} after the grace period, {} over its baseline of {b}",
                    a - b
                );
            }
            _ => md.push_str("what it holds per node cannot be read"),
        }
        let by_round: Vec<String> = r.churn_rounds.iter().map(|c| mb(c.rss)).collect();
        let _ = write!(
            md,
            "; RSS {:+.1} MB after the grace period against the baseline (at the end of each round: {} MB)",
            (r.rss_after as f64 - r.rss_baseline as f64) / (1024.0 * 1024.0),
            by_round.join(" / ")
        );
        if r.before.all.count > 0 && r.after.all.count > 0 {
            let _ = write!(
                md,
                "; change → all live ACKed after / before: p50 ×{:.2}, p99 ×{:.2}",
                r.after.all.p50_ms / r.before.all.p50_ms.max(1e-9),
                r.after.all.p99_ms / r.before.all.p99_ms.max(1e-9)
            );
        }
        md.push_str(".\n");
    }
    md
}

/// Writes `<name>.json` and `<name>.md` into `dir`; returns the paths written.
pub fn write(
    dir: &Path,
    name: &str,
    runs: &[ChurnResult],
    ctx: &Context,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join(format!("{name}.json"));
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&Document { context: ctx, runs })?,
    )?;
    let md = dir.join(format!("{name}.md"));
    std::fs::write(&md, markdown(runs, ctx))?;
    Ok(vec![json, md])
}
