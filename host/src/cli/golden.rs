//! `plugin test`: golden files. Each node file of a directory is a case: the config's chain
//! runs once for it and its resources must equal those stored in the expected file beside it.

mod diff;
mod file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nebucloud_xds::plugins::EngineOptions;
use nebucloud_xds::schema::Schema;

use self::diff::Diff;
use self::file::Golden;
use super::dry_run::{read_bounded, resource_json, DryRun};

/// What an expected file's name adds to its node file's stem: `envoy.yaml` →
/// `envoy.expected.json`.
const EXPECTED_SUFFIX: &str = ".expected.json";
/// The largest expected file read, in bytes: room for a chain's output at the default plugin
/// output limit (16 MiB of protobuf) as JSON, several times over.
const MAX_EXPECTED_BYTES: u64 = 64 << 20;
/// The most differences printed per case; a count says how many more there were.
const MAX_DIFF_LINES: usize = 40;

/// Runs the chain of the config at `config` (on `inputs`, else the config's inputs) for each
/// case in `cases` (a directory of node files, or one node file) and compares, or with
/// `update` writes, each expected file. Prints one line per case (and a bounded diff for a
/// mismatch); any case that does not pass is the error.
pub(crate) fn test(
    config: &Path,
    cases: &Path,
    inputs: Option<&Path>,
    update: bool,
) -> anyhow::Result<()> {
    let (cases, orphans) = find_cases(cases)?;
    let dry = DryRun::load(config, inputs, EngineOptions::once())?;
    if !dry.skipped.is_empty() {
        let skipped: Vec<String> = dry.skipped.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "input files that do not load: {}; fix them first (a case run without them would \
             compare the wrong resources)",
            skipped.join("; ")
        );
    }
    let schema = Schema::envoy()?;
    let (mut failed, mut written) = (0, 0);
    let mut stale = false;
    for case in &cases {
        let outcome = case
            .run(&dry, schema, update)
            .unwrap_or_else(Outcome::Failed);
        stale |= matches!(outcome, Outcome::Differs(_) | Outcome::NoExpectedFile);
        failed += usize::from(outcome.failed());
        written += usize::from(matches!(outcome, Outcome::Created | Outcome::Updated(_)));
        outcome.print(case);
    }
    for orphan in &orphans {
        println!(
            "FAILED: {}: no node file beside it (NAME.yaml, .yml or .json): remove it, or add \
             its node",
            orphan.display()
        );
    }
    let total = cases.len();
    match (failed, orphans.len()) {
        (0, 0) if update => println!(
            "{}: {} written, {} unchanged",
            count(total, "case"),
            count(written, "expected file"),
            total - written
        ),
        (0, 0) => println!("{} passed", count(total, "case")),
        (failed, orphans) => {
            let mut message = format!("{failed} of {} failed", count(total, "case"));
            if orphans > 0 {
                let orphans = count(orphans, "expected file");
                message.push_str(&format!(", and {orphans} without a node file"));
            }
            if stale {
                message.push_str("; if the new resources are right, accept them with --update");
            }
            anyhow::bail!(message);
        }
    }
    Ok(())
}

/// One golden case: a node file and the expected file beside it.
struct Case {
    node: PathBuf,
    expected: PathBuf,
}

/// How one case came out.
enum Outcome {
    /// The resources are the expected ones.
    Passed,
    /// They are not.
    Differs(Diff),
    /// There is no expected file to compare with.
    NoExpectedFile,
    /// The node file, the chain or the expected file failed.
    Failed(anyhow::Error),
    /// `--update` wrote an expected file where there was none.
    Created,
    /// `--update` rewrote the expected file: with this many differences, `None` when the old
    /// one did not parse.
    Updated(Option<usize>),
    /// `--update` found the expected file as it would write it.
    Unchanged,
}

impl Case {
    /// The case of the node file `node`.
    fn of(node: PathBuf) -> Self {
        let stem = node.file_stem().unwrap_or_default().to_string_lossy();
        let expected = node.with_file_name(format!("{stem}{EXPECTED_SUFFIX}"));
        Case { node, expected }
    }

    /// Runs the chain for this case's node and compares with, or writes, its expected file.
    fn run(&self, dry: &DryRun, schema: &Schema, update: bool) -> anyhow::Result<Outcome> {
        let node = dry.read_node(&self.node)?;
        let out = dry.run(&node)?;
        let got = Golden::new(
            node.id(),
            out.resources.iter().map(|r| resource_json(schema, r)),
        );
        let old = self.read_expected()?;
        if update {
            let text = got.render()?;
            let outcome = match &old {
                None => Outcome::Created,
                Some(old) if *old == text => return Ok(Outcome::Unchanged),
                Some(old) => Outcome::Updated(
                    Golden::parse(old)
                        .ok()
                        .map(|old| Diff::between(&old, &got, 0).total()),
                ),
            };
            self.write_expected(&text)?;
            return Ok(outcome);
        }
        let Some(old) = old else {
            return Ok(Outcome::NoExpectedFile);
        };
        let expected = Golden::parse(&old).with_context(|| self.expected.display().to_string())?;
        let diff = Diff::between(&expected, &got, MAX_DIFF_LINES);
        Ok(if diff.total() == 0 {
            Outcome::Passed
        } else {
            Outcome::Differs(diff)
        })
    }

    /// The expected file's text, `None` when there is none.
    fn read_expected(&self) -> anyhow::Result<Option<String>> {
        match std::fs::metadata(&self.expected) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => {
                let limit = format!("the {MAX_EXPECTED_BYTES} bytes an expected file may have");
                read_bounded(&self.expected, MAX_EXPECTED_BYTES, &limit).map(Some)
            }
        }
    }

    /// Replaces the expected file with `text` whole: written beside it, then renamed over it.
    fn write_expected(&self, text: &str) -> anyhow::Result<()> {
        let name = self
            .expected
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let temporary = self.expected.with_file_name(format!(".{name}.tmp"));
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &self.expected))
            .with_context(|| format!("cannot write {}", self.expected.display()))
    }
}

impl Outcome {
    /// Whether the case counts as failed.
    fn failed(&self) -> bool {
        matches!(
            self,
            Outcome::Differs(_) | Outcome::NoExpectedFile | Outcome::Failed(_)
        )
    }

    /// The case's line, and the differences under it.
    fn print(&self, case: &Case) {
        let (node, expected) = (case.node.display(), case.expected.display());
        match self {
            Outcome::Passed => println!("ok: {node}"),
            Outcome::Differs(diff) => {
                let n = count(diff.total(), "difference");
                println!("FAILED: {node}: {n} from {expected}");
                for line in diff.shown() {
                    println!("  {line}");
                }
                if diff.hidden() > 0 {
                    println!(
                        "  … and {} not shown",
                        count(diff.hidden(), "more difference")
                    );
                }
            }
            Outcome::NoExpectedFile => println!(
                "FAILED: {node}: {expected} does not exist: run with --update to create it"
            ),
            Outcome::Failed(e) => println!("FAILED: {node}: {e:#}"),
            Outcome::Created => println!("created: {expected}"),
            Outcome::Updated(Some(n)) => {
                println!("updated: {expected} ({})", count(*n, "difference"))
            }
            Outcome::Updated(None) => println!("updated: {expected} (the old file did not parse)"),
            Outcome::Unchanged => println!("unchanged: {expected}"),
        }
    }
}

/// `1 case`, `2 cases`.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// The cases at `path` (a directory of node files, or one node file) in name order, and the
/// expected files in it that no node file has.
fn find_cases(path: &Path) -> anyhow::Result<(Vec<Case>, Vec<PathBuf>)> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        anyhow::ensure!(
            !name.ends_with(EXPECTED_SUFFIX),
            "{} is an expected file: give its node file, or the directory",
            path.display()
        );
        return Ok((vec![Case::of(path.to_owned())], Vec::new()));
    }
    let cannot = || format!("cannot read {}", path.display());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).with_context(cannot)? {
        let entry = entry.with_context(cannot)?;
        if let (Ok(name), true) = (entry.file_name().into_string(), entry.path().is_file()) {
            names.push(name);
        }
    }
    names.sort();
    let mut nodes: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut expected = Vec::new();
    for name in names.iter().filter(|n| !n.starts_with('.')) {
        if let Some(stem) = name.strip_suffix(EXPECTED_SUFFIX) {
            expected.push((stem, path.join(name)));
            continue;
        }
        let Some((stem, "yaml" | "yml" | "json")) = name.rsplit_once('.') else {
            continue;
        };
        if let Some(other) = nodes.insert(stem.to_owned(), path.join(name)) {
            anyhow::bail!(
                "{} and {name} in {} are both the node file of {stem}{EXPECTED_SUFFIX}: rename one",
                other.file_name().unwrap_or_default().to_string_lossy(),
                path.display()
            );
        }
    }
    anyhow::ensure!(
        !nodes.is_empty(),
        "no node files in {}: a case is a node file (NAME.yaml, .yml or .json, in Envoy's Node \
         form) with the resources expected for it in NAME{EXPECTED_SUFFIX} beside it",
        path.display()
    );
    let orphans = expected
        .into_iter()
        .filter(|(stem, _)| !nodes.contains_key(*stem))
        .map(|(_, path)| path)
        .collect();
    Ok((nodes.into_values().map(Case::of).collect(), orphans))
}
