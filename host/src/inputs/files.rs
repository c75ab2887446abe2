//! The default input source: a directory of YAML/JSON files, each holding documents with a
//! `kind` and a `name`. A changed file is read once it is whole (closed after writing, renamed
//! into place) or has stopped changing, within size and count limits; a file that does not
//! parse or is over a limit keeps its last good documents.

pub(crate) mod changes;
pub(crate) mod disk;
pub(crate) mod events;
mod watch;

pub use watch::watch_dir;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::limits::DocumentBudget;
use super::store::FILE_SOURCE;
use super::{
    parse_documents, DocKey, Document, DocumentFileError, InputLimits, InputStore, SourceHealth,
};
use changes::Deferred;
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

    /// The stamp of the file `path` leads to (links followed); `None` if there is none.
    /// Blocking.
    fn at(path: &Path) -> Option<Stamp> {
        Stamp::of(&std::fs::metadata(path).ok()?)
    }
}

/// One file the source knows.
#[derive(Debug, Default)]
struct Tracked {
    /// The stamp the store reflects (read, or refused for its content); `None` before.
    applied: Option<Stamp>,
    /// A different stamp (`None`: the file is gone), not known whole, and since when it has
    /// been seen: it is read once it has stayed so for the settle window.
    pending: Option<(Option<Stamp>, Instant)>,
}

/// A watched directory feeding an [`InputStore`]. Each file is its own store source
/// (`file:<path under the directory>`). [`watch_dir`] says when to look and at what.
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
    /// Whether the last full scan found more files than `max_files`: then only a full scan
    /// knows which are the first ones by path.
    over_cap: bool,
    /// Why the directory itself could not be listed at the last look, until it can again.
    root_error: Option<String>,
    /// When events last made a full scan: at most one a second (see
    /// [`changes::FULL_SCAN_GAP`]).
    last_event_scan: Option<Instant>,
    /// A full scan events asked for since, made once the second has passed.
    deferred: Option<Deferred>,
}

impl DirSource {
    /// A source for `dir`, which must exist, with the default [`InputLimits`].
    pub fn new(dir: &Path, store: Arc<InputStore>) -> Result<Self, DocumentFileError> {
        Self::with_limits(dir, store, InputLimits::default())
    }

    /// A source for `dir`, which must exist, within `limits`. A relative `dir` is taken from
    /// the current directory now, as the watcher names the paths of its events.
    pub fn with_limits(
        dir: &Path,
        store: Arc<InputStore>,
        limits: InputLimits,
    ) -> Result<Self, DocumentFileError> {
        let refused = |reason: String| DocumentFileError {
            path: dir.to_owned(),
            reason,
        };
        if !dir.is_dir() {
            return Err(refused("not a directory".into()));
        }
        let dir = std::path::absolute(dir).map_err(|e| refused(e.to_string()))?;
        Ok(DirSource {
            dir,
            store,
            limits,
            health: SourceHealth::new("files"),
            files: BTreeMap::new(),
            budget: DocumentBudget::new(limits.max_documents),
            primed: false,
            over_cap: false,
            root_error: None,
            last_event_scan: None,
            deferred: None,
        })
    }

    /// The source's health: the files refused and why (connected after the first scan).
    pub fn health(&self) -> SourceHealth {
        self.health.clone()
    }

    /// Reads into the store every file that changed (or went) and has since stayed unchanged
    /// for the settle window — at two scans that far apart, or, at the first scan, by its
    /// modification time. With no event to say a file is whole, that is the only sign it is.
    /// Blocking file I/O: run it off the async runtime's workers. Returns the changed keys and
    /// the errors of files refused (their last documents stay). A directory that cannot be
    /// listed (deleted, or unreadable) is an error, and every file keeps its documents.
    pub fn scan(&mut self) -> (Vec<DocKey>, Vec<DocumentFileError>) {
        match self.list() {
            Ok((listed, over)) => self.scan_listed(listed, over, &|_| false),
            Err(e) => self.root_unreadable(&e),
        }
    }

    /// The directory cannot be listed: an ambient error, in the health (and metered) once per
    /// reason. Nothing is read or removed until it can be again.
    fn root_unreadable(&mut self, error: &std::io::Error) -> (Vec<DocKey>, Vec<DocumentFileError>) {
        let reason = format!("cannot list the directory: {error}");
        if self.root_error.as_ref() != Some(&reason) {
            self.health
                .lost(&format!("{}: {reason}", self.dir.display()));
            self.root_error = Some(reason.clone());
        }
        let path = self.dir.clone();
        (Vec::new(), vec![DocumentFileError { path, reason }])
    }

    /// Whether the directory could not be listed at the last look: no event comes for it
    /// meanwhile, and once it is back its watch must be made again.
    pub(crate) fn root_lost(&self) -> bool {
        self.root_error.is_some()
    }

    /// [`DirSource::scan`] with the listing made: its files and stamps, and how many there are
    /// when over the cap. A file is read only if it is still as listed when read; one that
    /// `whole` says is whole is read without settling.
    fn scan_listed(
        &mut self,
        listed: BTreeMap<PathBuf, Stamp>,
        over: Option<usize>,
        whole: &dyn Fn(&Path) -> bool,
    ) -> (Vec<DocKey>, Vec<DocumentFileError>) {
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
        self.over_cap = over.is_some();
        if self.root_error.take().is_some() && self.primed {
            tracing::info!(dir = %self.dir.display(), "the input directory is back");
            self.health.synced();
        }
        let paths: BTreeSet<PathBuf> = self.files.keys().chain(listed.keys()).cloned().collect();
        let (changed, refused) = self.apply(paths, &listed, over.is_some(), whole);
        errors.extend(refused);
        if !self.primed {
            self.primed = true;
            self.health.synced();
        }
        (changed, errors)
    }

    /// Reads into the store each of `paths` that is not as the store reflects it and is whole
    /// (by `whole`) or has settled, as `listed` shows it (absent: gone). `over_cap`: the
    /// listing stopped at `max_files`, and a file it left out keeps what it had.
    fn apply(
        &mut self,
        paths: impl IntoIterator<Item = PathBuf>,
        listed: &BTreeMap<PathBuf, Stamp>,
        over_cap: bool,
        whole: &dyn Fn(&Path) -> bool,
    ) -> (Vec<DocKey>, Vec<DocumentFileError>) {
        let now = Instant::now();
        let mut errors = Vec::new();
        let mut changed = Vec::new();
        for path in paths {
            // Past the file cap a file is neither read nor forgotten: it keeps what it had,
            // and is not due to be looked at again.
            if over_cap && !listed.contains_key(&path) && path.exists() {
                if let Some(t) = self.files.get_mut(&path) {
                    t.pending = None;
                }
                continue;
            }
            let seen = listed.get(&path).copied();
            if !self.settled(&path, seen, now, whole(&path)) {
                continue;
            }
            let entry = path.display().to_string();
            let Some(stamp) = seen else {
                // Not there, or not to be looked at (a permission taken away): kept.
                if let Some(reason) = not_gone(&path) {
                    self.health.invalid(&entry, &reason);
                    if let Some(t) = self.files.get_mut(&path) {
                        t.pending = None;
                    }
                    errors.push(DocumentFileError { path, reason });
                    continue;
                }
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
                // Retried at the next event for it or the next full scan: a permission or a
                // mount may come back.
                Err(Refusal::Io(reason)) => {
                    self.health.invalid(&entry, &reason);
                    if let Some(t) = self.files.get_mut(&path) {
                        t.pending = None;
                    }
                    errors.push(DocumentFileError { path, reason });
                }
                // Rewritten since it was listed (what was read may be half of it): it settles
                // again from now, as it is now, unless its writer's close comes first.
                Err(Refusal::Changed(now_as)) => {
                    if let Some(t) = self.files.get_mut(&path) {
                        t.pending = Some((Some(now_as), now));
                    }
                }
            }
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
    pub fn scan_settled(&mut self) -> (Vec<DocKey>, Vec<DocumentFileError>) {
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

    /// Whether `path`, now seen as `seen`, differs from what the store reflects and is
    /// `whole` or has stayed so for the settle window.
    fn settled(&mut self, path: &Path, seen: Option<Stamp>, now: Instant, whole: bool) -> bool {
        let (first_scan, settle) = (!self.primed, self.limits.settle);
        let tracked = self.files.entry(path.to_owned()).or_default();
        // Whole: read even if its stamp is the one applied. A rewrite of the same length
        // within one tick of the file system's clock leaves the stamp as it was.
        if whole {
            return true;
        }
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
    /// path; and how many there are when that is more. An error if the directory itself
    /// cannot be listed.
    fn list(&self) -> std::io::Result<(BTreeMap<PathBuf, Stamp>, Option<usize>)> {
        let mut all = files_under(&self.dir)?;
        let over = (all.len() > self.limits.max_files).then_some(all.len());
        all.truncate(self.limits.max_files);
        let listed = all
            .into_iter()
            .filter_map(|p| Some((p.clone(), Stamp::at(&p)?)))
            .collect();
        Ok((listed, over))
    }

    fn source(&self, path: &Path) -> String {
        let relative = path.strip_prefix(&self.dir).unwrap_or(path);
        format!("{FILE_SOURCE}{}", relative.display())
    }
}

/// Why a file that was not listed cannot be taken as gone, if it cannot: it is there but
/// cannot be looked at (a permission on its directory was taken away, say).
fn not_gone(path: &Path) -> Option<String> {
    use std::io::ErrorKind::{NotADirectory, NotFound};
    match std::fs::metadata(path) {
        Err(e) if matches!(e.kind(), NotFound | NotADirectory) => None,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => None,
        Err(e) => Some(format!("cannot be looked at: {e}")),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests;
