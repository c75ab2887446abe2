//! What the directory source reads when file events say what changed: the document files
//! they name (and those under a directory moved away), at once when an event says they are
//! whole; the whole directory when a directory or a link to one changed, or events were lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::disk::{document, hidden};
use super::events::Changes;
use super::{DirSource, Stamp};
use crate::inputs::{DocKey, DocumentFileError};

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
    /// Falls back to a full scan when it alone can be right: events were lost or it is time
    /// for the periodic scan (`changes.rescan`), a directory or a link to one changed, or the
    /// directory holds more files than `max_files`. Blocking file I/O: run it off the async
    /// runtime's workers.
    pub(crate) fn scan_changes(
        &mut self,
        changes: &Changes,
    ) -> (Vec<DocKey>, Vec<DocumentFileError>) {
        let now = Instant::now();
        // Each file to look at, and whether an event says it is whole.
        let mut targets: BTreeMap<PathBuf, bool> = BTreeMap::new();
        let mut full = changes.rescan || self.over_cap;
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
        if self.files.len() + new.count() > self.limits.max_files {
            full = true;
        }
        if full {
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
            let (listed, over) = self.list();
            return self.scan_listed(listed, over, &whole);
        }
        let listed = targets
            .keys()
            .filter_map(|p| Some((p.clone(), Stamp::at(p)?)))
            .collect();
        let whole = |p: &Path| targets.get(p).copied().unwrap_or(false);
        self.apply(targets.keys().cloned(), &listed, false, &whole)
    }

    /// When the first file still settling is due to be looked at again.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let settle = self.limits.settle;
        self.files
            .values()
            .filter_map(|t| t.pending.map(|(_, since)| since + settle))
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

    use super::super::events::Seen;
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
        let (changed, _) = src.scan_changes(&changes(&[(&f, Seen::Written)]));
        assert!(changed.is_empty(), "maybe half written: it waits");
        assert!(src.next_due().is_some(), "to settle, if no close comes");
        let (changed, _) = src.scan_changes(&changes(&[(&f, Seen::Whole)]));
        assert_eq!(changed.len(), 1, "closed: read at once");
        assert_eq!(port(&store, "a"), Some(1));
        assert!(src.next_due().is_none());
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
        let (changed, _) = src.scan_changes(&changes(&events));
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(port(&store, "a"), Some(2));
    }

    #[test]
    fn a_directory_moved_away_takes_its_files_and_other_names_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/b.yaml"), svc("b", 1)).unwrap();
        let (mut src, store) = source(d);
        let (changed, _) = src.scan_changes(&changes(&[(&d.join("sub/b.yaml"), Seen::Whole)]));
        assert_eq!(changed.len(), 1);
        for other in [".a.yaml.swp", "a.yaml~", "notes.txt"] {
            std::fs::write(d.join(other), svc("x", 1)).unwrap();
            let (changed, _) = src.scan_changes(&changes(&[(&d.join(other), Seen::Whole)]));
            assert!(changed.is_empty(), "{other}");
        }
        let outside = tempfile::tempdir().unwrap();
        std::fs::rename(d.join("sub"), outside.path().join("sub")).unwrap();
        let (changed, _) = src.scan_changes(&changes(&[(&d.join("sub"), Seen::Whole)]));
        assert_eq!(changed.len(), 1);
        assert!(
            store.get("Service", "b").is_none(),
            "gone with its directory"
        );
    }
}
