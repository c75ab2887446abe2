//! The watch over the input directory: file events (or, without them, the interval) say when
//! the [`DirSource`] looks and at what; it looks on a blocking thread, never on the runtime's
//! workers.

use std::time::Duration;

use notify::RecursiveMode;
use tokio::time::Instant;

use super::events::{Changes, FileEvents, MIN_WAIT, SAFETY_NET};
use super::DirSource;
use crate::inputs::DocKey;

/// Watches `source`'s directory and calls `on_change` with the keys that changed.
///
/// With file events (inotify on Linux) a file is read as soon as it is whole — closed after
/// writing, renamed into place, or removed — so a change reaches the store in milliseconds; a
/// file still being written is not read until its writer closes it, or, for a writer that
/// never does, until it has stopped changing for the settle window (`settle_ms`). A burst of
/// events is read in one look at the paths they name. The whole directory is still scanned
/// every 10 s (or every `interval`, if longer), and at once when events were lost
/// (the kernel's queue or ours overflowed).
///
/// Where the system's watcher cannot be had (inotify's limits reached, say), `notify`'s
/// polling watcher looks every `interval` and every change settles first, as before events;
/// and if even that fails, the directory is scanned every `interval`. Which one is in use is
/// logged.
pub async fn watch_dir(
    source: DirSource,
    interval: Duration,
    on_change: impl Fn(Vec<DocKey>) + Send + 'static,
) {
    let roots = [(source.dir.clone(), RecursiveMode::Recursive)];
    let started =
        tokio::task::spawn_blocking(move || FileEvents::start("inputs", &roots, interval)).await;
    let events = match started {
        Ok(Ok(events)) => Some(events),
        Ok(Err(e)) => {
            tracing::warn!(
                dir = %source.dir.display(),
                error = %e,
                "cannot watch the input directory: scanning it every inputs.interval_ms instead"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "setting up the input directory watch failed");
            None
        }
    };
    follow(source, events, interval, on_change).await;
}

/// The loop of [`watch_dir`] over `events` (`None`: a full scan every `interval`).
pub(super) async fn follow(
    mut source: DirSource,
    mut events: Option<FileEvents>,
    interval: Duration,
    on_change: impl Fn(Vec<DocKey>) + Send + 'static,
) {
    let full_every = match events {
        Some(_) => interval.max(SAFETY_NET),
        None => interval,
    };
    // At once: a change made while the watch was being set up raised no event.
    let mut next_full = Instant::now();
    loop {
        let settling = source.next_due().map(Instant::from_std);
        let due = settling
            .map_or(next_full, |d| d.min(next_full))
            .max(Instant::now() + MIN_WAIT);
        let mut changes = match &mut events {
            Some(events) => events.next(due).await,
            None => {
                tokio::time::sleep_until(due).await;
                Changes::default()
            }
        };
        let now = Instant::now();
        if now >= next_full {
            changes.rescan = true;
        }
        if changes.rescan {
            next_full = now + full_every;
        }
        if changes.is_empty() && settling.is_none_or(|d| d > now) {
            continue;
        }
        let scanned = tokio::task::spawn_blocking(move || {
            let (changed, _errors) = source.scan_changes(&changes);
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
