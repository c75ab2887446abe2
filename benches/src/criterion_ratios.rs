//! Ratios between criterion benchmarks of one run (ours against the seed, wasm against
//! native), read back from criterion's own estimates, printed and written to the results.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use crate::fixtures::{results_dir, target_dir};

/// Where the benches tell criterion to write, so that its estimates can be read back.
pub fn criterion_dir() -> PathBuf {
    target_dir().join("criterion")
}

/// Criterion's estimate of one benchmark's time per iteration, in nanoseconds: the slope
/// where it fitted one, else the mean. Only estimates written after `since` count, so that a
/// filtered run never reports a stale number.
pub fn estimate_ns(group: &str, function: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join("new/estimates.json");
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= since);
    if !fresh {
        return None;
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    ["slope", "mean"]
        .iter()
        .find_map(|k| json.get(k)?.get("point_estimate")?.as_f64())
}

/// One line of a ratio table.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// What was measured.
    pub name: String,
    /// The measured side, in ns per iteration.
    pub ours_ns: f64,
    /// The baseline, in ns per iteration.
    pub baseline_ns: f64,
    /// `ours_ns / baseline_ns`.
    pub ratio: f64,
    /// A published number for the baseline, when there is one, in ns.
    pub published_ns: Option<f64>,
}

impl Ratio {
    /// The ratio of two benchmarks of one group, if both ran in this run.
    pub fn of(
        name: &str,
        group: &str,
        (ours, baseline): (&str, &str),
        since: SystemTime,
    ) -> Option<Ratio> {
        let ours_ns = estimate_ns(group, ours, since)?;
        let baseline_ns = estimate_ns(group, baseline, since)?;
        Some(Ratio {
            name: name.to_owned(),
            ours_ns,
            baseline_ns,
            ratio: ours_ns / baseline_ns,
            published_ns: None,
        })
    }
}

/// Formats nanoseconds for people.
pub fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Prints a ratio table and writes it as `<stem>.md` and `<stem>.json` under the results
/// directory. `columns` names the two sides and the ratio.
pub fn report(title: &str, stem: &str, columns: [&str; 3], rows: &[Ratio], notes: &str) {
    let mut md = format!(
        "### {title}\n\n| | {} | {} | {} |",
        columns[0], columns[1], columns[2]
    );
    let published = rows.iter().any(|r| r.published_ns.is_some());
    md.push_str(if published {
        " seed's published table |\n|---|---:|---:|---:|---:|\n"
    } else {
        "\n|---|---:|---:|---:|\n"
    });
    for r in rows {
        let _ = write!(
            md,
            "| {} | {} | {} | {:.2} |",
            r.name,
            human(r.ours_ns),
            human(r.baseline_ns),
            r.ratio
        );
        if published {
            let _ = write!(md, " {} |", r.published_ns.map(human).unwrap_or_default());
        }
        md.push('\n');
    }
    if !notes.is_empty() {
        let _ = write!(md, "\n{notes}\n");
    }
    println!("\n{md}");
    let dir = results_dir();
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(dir.join(format!("{stem}.md")), &md)?;
        let json =
            serde_json::to_string_pretty(&serde_json::json!({ "title": title, "rows": rows }))
                .unwrap_or_default();
        std::fs::write(dir.join(format!("{stem}.json")), json)
    });
    match written {
        Ok(()) => println!("wrote {}", dir.join(format!("{stem}.md")).display()),
        Err(e) => eprintln!("cannot write {}: {e}", dir.display()),
    }
}
