//! The watch that reloads a plugin when its file changed and is whole: closed after writing
//! or renamed into place, seen through file events in milliseconds. A file still being written
//! is not offered (and a torn one fails the checks every reload makes, and is retried at the
//! next event); only a writer that never closes, and the polling fallback, wait for it to settle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use notify::RecursiveMode;
use tokio::time::Instant;

use crate::inputs::files::changes::Seen;
use crate::inputs::files::events::{FileEvents, MIN_WAIT, QUIET, SAFETY_NET};
use crate::plugins::{PluginSlots, ReloadError};

/// How soon a whole file's reload is tried again when another reload was running.
const RETRY: Duration = Duration::from_millis(100);

/// What a file looked like when looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    /// Blocking.
    fn at(path: &std::path::Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

/// A changed plugin file not loaded yet.
#[derive(Debug)]
struct Pending {
    stamp: Stamp,
    /// Since when it has looked so.
    since: Instant,
    /// When to try again a whole file whose reload found another one running.
    retry_at: Option<Instant>,
}

/// The plugin files watched and the paths events name them by.
#[derive(Debug, Default)]
struct Watched {
    /// Each plugin's file, as [`PluginSlots::paths`] gave them (a reload from another path
    /// changes them).
    paths: Vec<(String, PathBuf)>,
    /// Plugin names by the paths events may name their files by: as configured (made
    /// absolute), and where links lead.
    by_path: BTreeMap<PathBuf, Vec<String>>,
    /// The directories holding those paths, each watched (not recursively).
    dirs: BTreeSet<PathBuf>,
}

impl Watched {
    /// Resolves `paths`. Blocking: links are followed.
    fn resolve(paths: Vec<(String, PathBuf)>) -> Watched {
        let mut w = Watched::default();
        for (name, path) in &paths {
            let given = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let real = std::fs::canonicalize(path).ok().filter(|r| *r != given);
            for p in std::iter::once(given).chain(real) {
                if let Some(dir) = p.parent() {
                    w.dirs.insert(dir.to_owned());
                }
                w.by_path.entry(p).or_default().push(name.clone());
            }
        }
        w.paths = paths;
        w
    }
}

/// Watches every plugin file of `slots` and reloads a plugin when its file changed and is
/// whole (which reads it under the plugin-file rules, then compiles, checks and canaries it
/// before it serves). Whole: closed after writing, renamed into place, or changed with a
/// directory or link swapped in beside it (a Kubernetes ConfigMap update); or, for a writer
/// that never closes, unchanged for `settle`. A file that is whole but broken is refused once,
/// with its reason in the plugin's status, and tried again at its next change.
///
/// The files are still looked at every 10 s (or every `interval`, if longer), in case an
/// event was lost. Where no file events can be had, `notify`'s polling watcher looks every
/// `interval` and every change settles first; if even that fails, the files are looked at
/// every `interval`.
pub async fn watch_plugin_files(slots: PluginSlots, interval: Duration, settle: Duration) {
    // Before the watch starts: a change made while it is being set up is then seen as one.
    let mut known: BTreeMap<String, Stamp> = look(&slots.paths(), BTreeMap::new())
        .await
        .into_iter()
        .map(|(name, stamp, _)| (name, stamp))
        .collect();
    let (mut watched, mut events) =
        rewatch(slots.paths(), Watched::default(), None, interval, settle).await;
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let full_every = |events: &Option<FileEvents>| match events {
        Some(_) => interval.max(SAFETY_NET),
        None => interval,
    };
    // At once: a change made while the watch was being set up raised no event.
    let mut next_full = Instant::now();
    loop {
        let due = pending
            .values()
            .map(|p| p.retry_at.unwrap_or(p.since + settle))
            .min()
            .map_or(next_full, |d| d.min(next_full))
            .max(Instant::now() + MIN_WAIT);
        let changes = FileEvents::next_or_sleep(&mut events, due).await;
        let now = Instant::now();
        let full = changes.rescan || now >= next_full;
        if full {
            next_full = now + full_every(&events);
        }
        // What the events say of each plugin's file. A whole event on another path (a link
        // or a directory swapped in) may have changed any of them.
        let mut named: BTreeMap<String, Seen> = BTreeMap::new();
        let mut swapped = false;
        for (path, seen) in &changes.paths {
            match watched.by_path.get(path) {
                Some(names) => named.extend(names.iter().map(|n| (n.clone(), *seen))),
                None => swapped |= *seen == Seen::Whole,
            }
        }
        let settling = pending
            .values()
            .any(|p| p.retry_at.unwrap_or(p.since + settle) <= now);
        if !full && !swapped && named.is_empty() && !settling {
            continue;
        }
        let paths = slots.paths();
        if paths != watched.paths {
            (watched, events) = rewatch(paths, watched, events, interval, settle).await;
        }
        let looked = look(&watched.paths, named.clone()).await;
        // A file gone is not reloaded: it has nothing left to settle.
        pending.retain(|name, _| looked.iter().any(|(n, _, _)| n == name));
        for (name, stamp, whole_event) in looked {
            // A whole file is reloaded even if its stamp is the one loaded: a rewrite of the
            // same length within one tick of the clock leaves it so. (The reload compares the
            // bytes: the same file is not loaded again.)
            if known.get(&name) == Some(&stamp) && !whole_event {
                pending.remove(&name);
                continue;
            }
            let p = pending.entry(name.clone()).or_insert(Pending {
                stamp,
                since: now,
                retry_at: None,
            });
            if p.stamp != stamp {
                *p = Pending {
                    stamp,
                    since: now,
                    retry_at: None,
                };
            }
            let changed_with_swap = swapped && !named.contains_key(&name) && p.since == now;
            let whole = whole_event || changed_with_swap || p.retry_at.is_some();
            let settled = now.duration_since(p.since) >= settle;
            if p.retry_at.is_some_and(|at| at > now) || !(whole || settled) {
                continue;
            }
            match slots.reload(&name, None).await {
                // An admin reload or rollback is running, or a read of a plugin file is still
                // blocked: try again soon.
                Err(ReloadError::Busy | ReloadError::ReadInFlight { .. }) => {
                    if let Some(p) = pending.get_mut(&name) {
                        p.retry_at = Some(Instant::now() + RETRY);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "plugin file change refused");
                }
                Ok(_) => {}
            }
            pending.remove(&name);
            known.insert(name, stamp);
        }
    }
}

/// Each plugin's file as it is now (those that exist), and whether an event in `named` says it
/// is whole. On a blocking thread: a stat on a hung network file system holds no async worker.
async fn look(
    paths: &[(String, PathBuf)],
    named: BTreeMap<String, Seen>,
) -> Vec<(String, Stamp, bool)> {
    let paths = paths.to_vec();
    tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .filter_map(|(name, path)| {
                let stamp = Stamp::at(&path)?;
                let whole = named.get(&name).is_some_and(|seen| seen.whole(&path));
                Some((name, stamp, whole))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Resolves `paths` and watches the directories they need: starts the watch (whole events
/// taken once quiet, see [`QUIET`]), or adds to it the directories `old` did not have. On a
/// blocking thread.
async fn rewatch(
    paths: Vec<(String, PathBuf)>,
    old: Watched,
    events: Option<FileEvents>,
    interval: Duration,
    settle: Duration,
) -> (Watched, Option<FileEvents>) {
    let fallback = Watched {
        paths: paths.clone(),
        ..Watched::default()
    };
    let task = tokio::task::spawn_blocking(move || {
        let watched = Watched::resolve(paths);
        let events = match events {
            Some(mut events) => {
                for dir in watched.dirs.difference(&old.dirs) {
                    if let Err(e) = events.add(dir, RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e,
                            "cannot watch a plugin directory: its files are looked at every 10 s");
                    }
                }
                Some(events)
            }
            None => {
                let roots: Vec<_> = (watched.dirs.iter().cloned())
                    .map(|d| (d, RecursiveMode::NonRecursive))
                    .collect();
                FileEvents::start("plugin files", &roots, interval)
                    .map(|events| events.quiet(QUIET.min(settle)))
                    .inspect_err(|e| {
                        tracing::warn!(error = %e,
                            "cannot watch plugin files: looking at them every reload.interval_ms");
                    })
                    .ok()
            }
        };
        (watched, events)
    });
    task.await.unwrap_or((fallback, None))
}
