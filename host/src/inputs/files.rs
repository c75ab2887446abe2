//! The default input source: a directory of YAML/JSON files, each holding documents with a
//! `kind` and a `name`. A changed file is read once it has stopped changing, within size and
//! count limits; a file that does not parse or is over a limit keeps its last good documents.

pub(crate) mod disk;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::limits::DocumentBudget;
use super::store::FILE_SOURCE;
use super::{parse_documents, DocumentFileError, InputLimits, InputStore, SourceHealth};
use crate::plugins::Document;
use disk::{files_under, read_listed, Refusal};

/// What a scan sees of a file: a rewrite changes one or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: SystemTime,
    len: u64,
}

impl Stamp {
    /// The stamp of a file of status `meta`; `None` if it has no modification time.
    fn of(meta: &Metadata) -> Option<Stamp> {
        Some(Stamp {
            modified: meta.modified().ok()?,
            len: meta.len(),
        })
    }
}

/// One file the source knows.
#[derive(Debug, Default)]
struct Tracked {
    /// The stamp the store reflects (read, or refused for its content); `None` before.
    applied: Option<Stamp>,
    /// A different stamp (`None`: the file is gone) and since when it has been seen.
    pending: Option<(Option<Stamp>, Instant)>,
}

/// A watched directory feeding an [`InputStore`]. Each file is its own store source
/// (`file:<path under the directory>`).
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    store: Arc<InputStore>,
    limits: InputLimits,
    health: SourceHealth,
    files: BTreeMap<PathBuf, Tracked>,
    budget: DocumentBudget,
    /// Whether a scan has run: the first one trusts modification times (see `scan`).
    primed: bool,
}

impl DirSource {
    /// A source for `dir`, which must exist, with the default [`InputLimits`].
    pub fn new(dir: &Path, store: Arc<InputStore>) -> Result<Self, DocumentFileError> {
        Self::with_limits(dir, store, InputLimits::default())
    }

    /// A source for `dir`, which must exist, within `limits`.
    pub fn with_limits(
        dir: &Path,
        store: Arc<InputStore>,
        limits: InputLimits,
    ) -> Result<Self, DocumentFileError> {
        if !dir.is_dir() {
            return Err(DocumentFileError {
                path: dir.to_owned(),
                reason: "not a directory".into(),
            });
        }
        Ok(DirSource {
            dir: dir.to_owned(),
            store,
            limits,
            health: SourceHealth::new("files"),
            files: BTreeMap::new(),
            budget: DocumentBudget::new(limits.max_documents),
            primed: false,
        })
    }

    /// The source's health: the files refused and why (connected after the first scan).
    pub fn health(&self) -> SourceHealth {
        self.health.clone()
    }

    /// Reads into the store every file that changed (or went) and has since stayed unchanged
    /// for the settle window — at two scans that far apart, or, at the first scan, by its
    /// modification time. Blocking file I/O: run it off the async runtime's workers. Returns
    /// the changed keys and the errors of files refused (their last documents stay).
    pub fn scan(&mut self) -> (Vec<(String, String)>, Vec<DocumentFileError>) {
        let (listed, over) = self.list();
        self.scan_listed(listed, over)
    }

    /// [`DirSource::scan`] with the listing made: its files and stamps, and how many there are
    /// when over the cap. A file is read only if it is still as listed when read.
    fn scan_listed(
        &mut self,
        listed: BTreeMap<PathBuf, Stamp>,
        over: Option<usize>,
    ) -> (Vec<(String, String)>, Vec<DocumentFileError>) {
        let now = Instant::now();
        let mut errors = Vec::new();
        let dir_entry = self.dir.display().to_string();
        match over {
            Some(n) => {
                let reason = format!(
                    "holds {n} document files, over inputs.max_files = {}; only the first {} \
                     by path are read",
                    self.limits.max_files, self.limits.max_files
                );
                self.health.invalid(&dir_entry, &reason);
                errors.push(DocumentFileError {
                    path: self.dir.clone(),
                    reason,
                });
            }
            None => self.health.valid(&dir_entry),
        }
        let paths: BTreeSet<PathBuf> = self.files.keys().chain(listed.keys()).cloned().collect();
        let mut changed = Vec::new();
        for path in paths {
            // Past the file cap a file is neither read nor forgotten: it keeps what it had.
            if over.is_some() && !listed.contains_key(&path) && path.exists() {
                continue;
            }
            let seen = listed.get(&path).copied();
            if !self.settled(&path, seen, now) {
                continue;
            }
            let entry = path.display().to_string();
            let Some(stamp) = seen else {
                changed.extend(self.store.replace_source(&self.source(&path), Vec::new()));
                self.budget.release(&entry);
                self.health.valid(&entry);
                self.files.remove(&path);
                continue;
            };
            match self.read(&path, stamp) {
                Ok(docs) => {
                    changed.extend(self.store.replace_source(&self.source(&path), docs));
                    self.health.valid(&entry);
                    self.applied(&path, stamp);
                }
                Err(Refusal::Content(reason)) => {
                    self.health.invalid(&entry, &reason);
                    errors.push(DocumentFileError {
                        path: path.clone(),
                        reason,
                    });
                    self.applied(&path, stamp);
                }
                // Retried at the next scan: a permission or a mount may come back.
                Err(Refusal::Io(reason)) => {
                    self.health.invalid(&entry, &reason);
                    errors.push(DocumentFileError { path, reason });
                }
                // Rewritten since it was listed (what was read may be half of it): it settles
                // again from now, as it is now.
                Err(Refusal::Changed(now_as)) => {
                    if let Some(t) = self.files.get_mut(&path) {
                        t.pending = Some((Some(now_as), now));
                    }
                }
            }
        }
        if !self.primed {
            self.primed = true;
            self.health.synced();
        }
        if !changed.is_empty() {
            metrics::counter!("input_events_total", "source" => "files").increment(1);
        }
        changed.sort();
        changed.dedup();
        (changed, errors)
    }

    /// Scans, and if a file is still settling, waits out the window once and scans again: the
    /// first read of a directory at start. A file still changing after that waits for the watch.
    pub fn scan_settled(&mut self) -> (Vec<(String, String)>, Vec<DocumentFileError>) {
        let (mut changed, mut errors) = self.scan();
        if self.files.values().any(|t| t.pending.is_some()) {
            std::thread::sleep(self.limits.settle + Duration::from_millis(10));
            let (more, more_errors) = self.scan();
            changed.extend(more);
            changed.sort();
            changed.dedup();
            let new = |e: &DocumentFileError| errors.iter().all(|known| known.path != e.path);
            let more_errors: Vec<_> = more_errors.into_iter().filter(new).collect();
            errors.extend(more_errors);
        }
        (changed, errors)
    }

    /// Whether `path`, now seen as `seen`, differs from what the store reflects and has stayed
    /// so for the settle window.
    fn settled(&mut self, path: &Path, seen: Option<Stamp>, now: Instant) -> bool {
        let (first_scan, settle) = (!self.primed, self.limits.settle);
        let tracked = self.files.entry(path.to_owned()).or_default();
        if seen == tracked.applied {
            tracked.pending = None;
            if seen.is_none() {
                self.files.remove(path);
            }
            return false;
        }
        let since = match tracked.pending {
            Some((pending, since)) if pending == seen => since,
            _ => {
                // At start, a file untouched for the whole window is complete. (Backdated by
                // at most the window: an `Instant` cannot go back before the machine booted.)
                let age = seen
                    .filter(|_| first_scan)
                    .and_then(|s| SystemTime::now().duration_since(s.modified).ok());
                let since = age
                    .and_then(|a| now.checked_sub(a.min(settle)))
                    .unwrap_or(now);
                tracked.pending = Some((seen, since));
                since
            }
        };
        now.duration_since(since) >= settle
    }

    fn applied(&mut self, path: &Path, stamp: Stamp) {
        if let Some(t) = self.files.get_mut(path) {
            t.applied = Some(stamp);
            t.pending = None;
        }
    }

    /// Reads (if it is still as `listed`) and parses one file within the limits, and counts
    /// its documents in the budget.
    fn read(&mut self, path: &Path, listed: Stamp) -> Result<Vec<Document>, Refusal> {
        let text = read_listed(path, listed, self.limits.max_file_bytes)?;
        let docs = parse_documents(path, &text).map_err(|e| Refusal::Content(e.reason))?;
        self.budget
            .admit(&path.display().to_string(), docs.len())
            .map_err(Refusal::Content)?;
        Ok(docs)
    }

    /// The document files under the directory with their stamps, the first `max_files` by
    /// path; and how many there are when that is more.
    fn list(&self) -> (BTreeMap<PathBuf, Stamp>, Option<usize>) {
        let mut all = files_under(&self.dir);
        let over = (all.len() > self.limits.max_files).then_some(all.len());
        all.truncate(self.limits.max_files);
        let listed = all
            .into_iter()
            .filter_map(|p| {
                let stamp = Stamp::of(&std::fs::metadata(&p).ok()?)?;
                Some((p, stamp))
            })
            .collect();
        (listed, over)
    }

    fn source(&self, path: &Path) -> String {
        let relative = path.strip_prefix(&self.dir).unwrap_or(path);
        format!("{FILE_SOURCE}{}", relative.display())
    }
}

/// Scans `source` every `interval` on a blocking thread (never on the runtime's workers) and
/// calls `on_change` with the keys that changed. Polling (not inotify) so that editors'
/// rename-into-place saves and network filesystems behave the same; the interval plus the
/// settle window bound the latency.
pub async fn watch_dir(
    mut source: DirSource,
    interval: Duration,
    on_change: impl Fn(Vec<(String, String)>) + Send + 'static,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let scanned = tokio::task::spawn_blocking(move || {
            let (changed, _errors) = source.scan();
            (source, changed)
        })
        .await;
        let Ok((back, changed)) = scanned else {
            tracing::error!(
                "the input directory scan panicked; the directory is no longer watched"
            );
            return;
        };
        source = back;
        if !changed.is_empty() {
            on_change(changed);
        }
    }
}

#[cfg(test)]
mod tests;
