//! What file events say changed, and what the directory source reads for it: the document
//! files they name (and those under a directory moved away), at once when an event says they
//! are whole; the whole directory when a directory or a link to one changed, or events were
//! lost, at most once a second.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::EventKind;

use super::disk::{document, hidden};
use super::events::Changes;
use super::{DirSource, Stamp};
use crate::inputs::{DocKey, DocumentFileError};

/// The shortest time between two full scans that events ask for (a directory made or
/// removed, events lost): a loop of `mkdir x; rmdir x` in the directory, or a watcher failing
/// at every new directory, cannot make the source scan back to back. A later request is
/// merged into the next scan allowed.
pub(crate) const FULL_SCAN_GAP: Duration = Duration::from_secs(1);

/// What a path's last event says of the file there now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Closed after writing, renamed into place or away, or removed: what is there is whole.
    Whole,
    /// Created: whole if it is a link (made in one step); a regular file is still being
    /// written, and its close will say when it is done.
    Created,
    /// Written to, its status changed, or seen changed by the polling watcher: it may be half
    /// written. It waits for its close, or, for a writer that never closes, to settle.
    Written,
}

impl Seen {
    /// The class of an event; `None` for one that changes nothing (an open, a read).
    pub(super) fn of(kind: &EventKind) -> Option<Seen> {
        match kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Seen::Whole),
            EventKind::Access(_) => None,
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => Some(Seen::Whole),
            EventKind::Create(_) => Some(Seen::Created),
            EventKind::Modify(_) | EventKind::Any | EventKind::Other => Some(Seen::Written),
        }
    }

    /// Whether the file at `path` may be read as whole now. Blocking: a created path is
    /// looked at (a link is whole; a regular file waits for its close).
    pub(crate) fn whole(self, path: &Path) -> bool {
        match self {
            Seen::Whole => true,
            Seen::Created => {
                std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
            }
            Seen::Written => false,
        }
    }
}

/// A full scan events asked for within [`FULL_SCAN_GAP`] of the last one, to be made once
/// the gap has passed.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    /// Whether a directory or a link to one was swapped in whole (see `scan_changes`).
    swapped: bool,
    /// Files events named that were not read meanwhile (past the file cap), and whether whole.
    targets: BTreeMap<PathBuf, bool>,
}

/// What an event's path is to the source.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A document file (or where one was): read it alone.
    Document,
    /// The directory, one under it, or a link to one: what its files hold may have changed
    /// wholesale (a directory moved in, a Kubernetes ConfigMap volume's `..data` link swapped).
    Tree,
    /// Nothing the source reads: a hidden file, an editor's backup, a file of another kind.
    Other,
}

impl DirSource {
    /// Reads what `changes` name, as [`DirSource::scan`] would but looking only at those files
    /// and at files whose settle window has passed: a file an event says is whole is read at
    /// once; one still being written waits for its close (or, if none comes, to settle).
    /// Falls back to a full scan when it alone can be right: it is time for the `periodic`
    /// one, or the directory is back after it could not be listed; and, at most once every
    /// [`FULL_SCAN_GAP`], when events were lost (`changes.rescan`), a directory or a link to
    /// one changed, or the directory holds more files than `max_files`. A directory that
    /// cannot be listed is an error, and nothing is read or removed. Blocking file I/O: run it
    /// off the async runtime's workers.
    pub(crate) fn scan_changes(
        &mut self,
        changes: &Changes,
        periodic: bool,
    ) -> (Vec<DocKey>, Vec<DocumentFileError>) {
        if let Err(e) = std::fs::read_dir(&self.dir) {
            return self.root_unreadable(&e);
        }
        let now = Instant::now();
        // Each file to look at, and whether an event says it is whole.
        let mut targets: BTreeMap<PathBuf, bool> = BTreeMap::new();
        let mut full = changes.rescan;
        let mut swapped = false;
        for (path, seen) in &changes.paths {
            let whole = seen.whole(path);
            // What the source had there or under it: a file removed, a directory moved away.
            // (A file's own event, later in path order, says more than its directory's.)
            let under = self.files.range(path.clone()..).map(|(p, _)| p);
            for known in under.take_while(|p| p.starts_with(path)) {
                targets.insert(known.clone(), whole);
            }
            match self.target(path) {
                Target::Document => {
                    targets.insert(path.clone(), whole);
                }
                Target::Tree => {
                    full = true;
                    swapped |= whole;
                }
                Target::Other => {}
            }
        }
        let settle = self.limits.settle;
        for (path, tracked) in &self.files {
            if tracked
                .pending
                .is_some_and(|(_, since)| since + settle <= now)
            {
                targets.entry(path.clone()).or_insert(false);
            }
        }
        let new = targets.keys().filter(|p| !self.files.contains_key(*p));
        let past_cap = self.over_cap || self.files.len() + new.count() > self.limits.max_files;
        full |= past_cap;
        let allowed = self
            .last_event_scan
            .is_none_or(|at| now >= at + FULL_SCAN_GAP);
        let forced = periodic || self.root_lost();
        if forced || (allowed && (full || self.deferred.is_some())) {
            if !forced {
                self.last_event_scan = Some(now);
            }
            let deferred = self.deferred.take().unwrap_or_default();
            swapped |= deferred.swapped;
            for (path, whole) in deferred.targets {
                targets.entry(path).or_insert(whole);
            }
            return self.scan_full(&targets, swapped);
        }
        if full {
            // Asked for too soon after the last one: made once the gap has passed.
            let deferred = self.deferred.get_or_insert_default();
            deferred.swapped |= swapped;
            // Which files are the first ones by path is for that scan to say.
            if past_cap {
                deferred.targets.append(&mut targets);
            }
        }
        let listed = targets
            .keys()
            .filter_map(|p| Some((p.clone(), Stamp::at(p)?)))
            .collect();
        let whole = |p: &Path| targets.get(p).copied().unwrap_or(false);
        self.apply(targets.keys().cloned(), &listed, false, &whole)
    }

    /// Scans the whole directory. `targets`: files events named, and whether they are whole;
    /// `swapped`: a directory or a link to one was swapped in whole.
    fn scan_full(
        &mut self,
        targets: &BTreeMap<PathBuf, bool>,
        swapped: bool,
    ) -> (Vec<DocKey>, Vec<DocumentFileError>) {
        // After a directory or a link to one was swapped in whole, a file that changed
        // with no event of its own, and was not already being written, changed with it.
        let writing: BTreeSet<PathBuf> = self
            .files
            .iter()
            .filter(|(_, t)| swapped && t.pending.is_some())
            .map(|(p, _)| p.clone())
            .collect();
        let whole = |p: &Path| {
            targets
                .get(p)
                .copied()
                .unwrap_or(swapped && !writing.contains(p))
        };
        match self.list() {
            Ok((listed, over)) => self.scan_listed(listed, over, &whole),
            Err(e) => self.root_unreadable(&e),
        }
    }

    /// When the first file still settling is due to be looked at again, or the full scan
    /// events asked for is allowed.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let settle = self.limits.settle;
        let deferred = self.deferred.as_ref().and(self.last_event_scan);
        let settling = self.files.values().filter_map(|t| t.pending);
        settling
            .map(|(_, since)| since + settle)
            .chain(deferred.map(|at| at + FULL_SCAN_GAP))
            .min()
    }

    /// What `path`, named by an event, is to the source. Blocking (it is looked at), and
    /// judged as [`super::disk::files_under`] lists: hidden names and what is under them are
    /// skipped, links to files are followed, links to directories are not walked.
    fn target(&self, path: &Path) -> Target {
        let Ok(relative) = path.strip_prefix(&self.dir) else {
            return Target::Other;
        };
        if relative.as_os_str().is_empty() {
            return Target::Tree;
        }
        let in_hidden = relative.iter().any(hidden);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() && path.is_dir() => Target::Tree,
            Ok(m) if m.is_dir() && !in_hidden => Target::Tree,
            Ok(m) if m.is_dir() => Target::Other,
            _ if !in_hidden && document(path) => Target::Document,
            _ => Target::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::inputs::{InputLimits, InputStore, InputView};

    /// A source whose files settle only after a minute: only events can make them publish.
    fn source(dir: &Path) -> (DirSource, Arc<InputStore>) {
        let store = Arc::new(InputStore::new());
        let limits = InputLimits {
            settle: Duration::from_secs(60),
            ..InputLimits::default()
        };
        let mut src = DirSource::with_limits(dir, Arc::clone(&store), limits).unwrap();
        src.scan();
        (src, store)
    }

    fn svc(name: &str, port: u16) -> String {
        format!("kind: Service\nname: {name}\nport: {port}\n")
    }

    fn changes(events: &[(&Path, Seen)]) -> Changes {
        Changes {
            paths: events.iter().map(|(p, s)| (p.to_path_buf(), *s)).collect(),
            rescan: false,
        }
    }

    fn port(store: &InputStore, name: &str) -> Option<u16> {
        let doc: serde_json::Value =
            serde_json::from_str(&store.get("Service", name)?.json).ok()?;
        u16::try_from(doc["port"].as_u64()?).ok()
    }

    #[test]
    fn a_file_an_event_says_is_whole_is_read_at_once_and_one_being_written_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (mut src, store) = source(dir.path());
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, svc("a", 1)).unwrap();
        let (changed, _) = src.scan_changes(&changes(&[(&f, Seen::Written)]), false);
        assert!(changed.is_empty(), "maybe half written: it waits");
        assert!(src.next_due().is_some(), "to settle, if no close comes");
        let (changed, _) = src.scan_changes(&changes(&[(&f, Seen::Whole)]), false);
        assert_eq!(changed.len(), 1, "closed: read at once");
        assert_eq!(port(&store, "a"), Some(1));
        assert!(src.next_due().is_none());
    }

    #[test]
    fn a_file_rewritten_in_the_same_mtime_tick_at_the_same_length_is_read_at_its_close() {
        let dir = tempfile::tempdir().unwrap();
        let (mut src, store) = source(dir.path());
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, svc("a", 1)).unwrap();
        src.scan_changes(&changes(&[(&f, Seen::Whole)]), false);
        assert_eq!(port(&store, "a"), Some(1));
        let tick = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::fs::write(&f, svc("a", 2)).unwrap();
        // Two saves within one tick of a coarse clock: the stamp says nothing changed.
        let file = std::fs::File::options().append(true).open(&f).unwrap();
        file.set_modified(tick).unwrap();
        let (changed, _) = src.scan_changes(&changes(&[(&f, Seen::Whole)]), false);
        assert_eq!(changed.len(), 1, "closed: read, whatever its stamp");
        assert_eq!(port(&store, "a"), Some(2));
    }

    #[test]
    fn files_linked_through_a_directory_link_swapped_in_are_read_at_once() {
        // A Kubernetes ConfigMap volume: `a.yaml -> ..data/a.yaml`, `..data -> ..v1`.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/a.yaml"), svc("a", 1)).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        let f = std::fs::File::options()
            .append(true)
            .open(d.join("..v1/a.yaml"));
        f.unwrap().set_modified(old).unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/a.yaml", d.join("a.yaml")).unwrap();
        let (mut src, store) = source(d);
        assert_eq!(port(&store, "a"), Some(1));
        // The update: a new hidden directory, a new link to it, renamed over `..data`.
        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/a.yaml"), svc("a", 2)).unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        let events = [
            (d.join("..v2/a.yaml"), Seen::Whole),
            (d.join("..data_tmp"), Seen::Whole),
            (d.join("..data"), Seen::Whole),
        ];
        let events: Vec<(&Path, Seen)> = events.iter().map(|(p, s)| (p.as_path(), *s)).collect();
        let (changed, _) = src.scan_changes(&changes(&events), false);
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(port(&store, "a"), Some(2));
    }

    #[test]
    fn full_scans_events_ask_for_are_made_at_most_once_a_second_and_none_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (mut src, store) = source(d);
        // A directory moved in: its files are whole, and only a full scan finds them.
        let moved_in = |n: &str| {
            std::fs::create_dir(d.join(n)).unwrap();
            std::fs::write(d.join(n).join("s.yaml"), svc(n, 1)).unwrap();
            changes(&[(&d.join(n), Seen::Whole)])
        };
        let (changed, _) = src.scan_changes(&moved_in("a"), false);
        assert_eq!(changed.len(), 1, "the first is made at once");
        for n in ["b", "c"] {
            let (changed, _) = src.scan_changes(&moved_in(n), false);
            assert!(
                changed.is_empty() && port(&store, n).is_none(),
                "{n}: not yet"
            );
        }
        let due = src.next_due().expect("a full scan is due");
        assert!(due <= Instant::now() + FULL_SCAN_GAP);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let (changed, _) = src.scan_changes(&Changes::default(), false);
        assert_eq!(changed.len(), 2, "both asked for, in one scan: {changed:?}");
        assert!(src.next_due().is_none());
    }

    #[test]
    fn a_directory_moved_away_takes_its_files_and_other_names_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/b.yaml"), svc("b", 1)).unwrap();
        let (mut src, store) = source(d);
        let (changed, _) =
            src.scan_changes(&changes(&[(&d.join("sub/b.yaml"), Seen::Whole)]), false);
        assert_eq!(changed.len(), 1);
        for other in [".a.yaml.swp", "a.yaml~", "notes.txt"] {
            std::fs::write(d.join(other), svc("x", 1)).unwrap();
            let (changed, _) = src.scan_changes(&changes(&[(&d.join(other), Seen::Whole)]), false);
            assert!(changed.is_empty(), "{other}");
        }
        let outside = tempfile::tempdir().unwrap();
        std::fs::rename(d.join("sub"), outside.path().join("sub")).unwrap();
        let (changed, _) = src.scan_changes(&changes(&[(&d.join("sub"), Seen::Whole)]), false);
        assert_eq!(changed.len(), 1);
        assert!(
            store.get("Service", "b").is_none(),
            "gone with its directory"
        );
    }
}
