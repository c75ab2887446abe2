//! The watch over the input directory: file events (or, without them, the interval) say when
//! the [`DirSource`] looks and at what; it looks on a blocking thread, never on the runtime's
//! workers.

use std::time::Duration;

use notify::RecursiveMode;
use tokio::time::Instant;

use super::changes::Seen;
use super::events::{FileEvents, MIN_WAIT, QUIET, SAFETY_NET};
use super::DirSource;
use crate::inputs::DocKey;

/// Watches `source`'s directory and calls `on_change` with the keys that changed.
///
/// With file events (inotify on Linux) a file is read as soon as it is whole — closed after
/// writing, renamed into place, or removed — and no other event came for it for 50 ms (or
/// `settle_ms`, if shorter), so a change reaches the store in milliseconds, and a file
/// written in quick steps (`: > f; render >> f`) is read once; a file still being written is
/// not read until its writer closes it, or, for a writer that never does, until it has
/// stopped changing for the settle window (`settle_ms`). A burst of events is read in one look
/// at the paths they name. The whole directory is still scanned every 10 s (or every
/// `interval`, if longer), and when events were lost (the kernel's queue or ours overflowed)
/// or a directory changed, at most once a second. If the directory itself goes (or cannot be
/// read), its documents stay, the source's health says why, and it is looked for every
/// `interval` and watched again when it is back.
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
    let quiet = QUIET.min(source.limits.settle);
    let started = tokio::task::spawn_blocking(move || {
        FileEvents::start("inputs", &roots, interval).map(|events| events.quiet(quiet))
    })
    .await;
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
        let changes = FileEvents::next_or_sleep(&mut events, due).await;
        let now = Instant::now();
        let periodic = now >= next_full;
        if periodic {
            next_full = now + full_every;
        }
        if changes.is_empty() && !periodic && settling.is_none_or(|d| d > now) {
            continue;
        }
        // The directory itself removed or moved away: its watch went with it.
        let moved = changes.paths.get(&source.dir) == Some(&Seen::Whole);
        let scanned = tokio::task::spawn_blocking(move || {
            // Back (or made again at once): watched afresh before it is looked at, so that
            // nothing written from then on goes unseen.
            if (moved || source.root_lost()) && std::fs::read_dir(&source.dir).is_ok() {
                rewatch(&source, events.as_mut());
            }
            let (changed, _errors) = source.scan_changes(&changes, periodic);
            (source, events, changed)
        })
        .await;
        let Ok((back, back_events, changed)) = scanned else {
            tracing::error!(
                "the input directory scan panicked; the directory is no longer watched"
            );
            return;
        };
        (source, events) = (back, back_events);
        if !changed.is_empty() {
            on_change(changed);
        }
        // While the directory cannot be listed no event comes for it.
        if source.root_lost() {
            next_full = next_full.min(Instant::now() + interval);
        }
    }
}

/// Watches the directory of `source` afresh. Blocking.
fn rewatch(source: &DirSource, events: Option<&mut FileEvents>) {
    let Some(events) = events else { return };
    if let Err(e) = events.rewatch(&source.dir, RecursiveMode::Recursive) {
        tracing::warn!(
            dir = %source.dir.display(),
            error = %e,
            "cannot watch the input directory again: it is scanned every 10 s"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use super::super::tests::{at_once, port, source, svc};
    use super::super::{events, InputLimits, InputStore};
    use super::*;
    use crate::inputs::InputView;

    /// How long a change may take to be published when events work: generous, against 60 s
    /// intervals and settle windows that polling alone would have to wait out.
    const BOUND: Duration = Duration::from_secs(5);

    /// Waits (checking every 10 ms) until `holds`, at most [`BOUND`]; whether it held.
    async fn until(holds: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + BOUND;
        while !holds() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// A source for `dir` within `limits`, watched by `watch`: returned once the watch is set
    /// up (its first scan comes after that), so that what the test does next raises events.
    async fn watched(
        dir: &Path,
        limits: InputLimits,
        watch: impl FnOnce(DirSource) -> tokio::task::JoinHandle<()>,
    ) -> (Arc<InputStore>, tokio::task::JoinHandle<()>) {
        let (src, store) = source(dir, limits);
        let mut health = src.health().subscribe();
        let task = watch(src);
        let first_scan = tokio::time::timeout(BOUND, health.wait_for(|s| s.connected)).await;
        assert!(first_scan.is_ok(), "the watch never scanned");
        (store, task)
    }

    /// [`watched`] with a 60 s interval, and what the store held each time it was published.
    async fn recorded(
        dir: &Path,
    ) -> (
        Arc<InputStore>,
        Arc<Mutex<Vec<Vec<String>>>>,
        tokio::task::JoinHandle<()>,
    ) {
        let published = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
        let recorder = Arc::clone(&published);
        let (store, task) = watched(dir, slow(), |src| {
            let store = Arc::clone(&src.store);
            tokio::spawn(watch_dir(src, MINUTE, move |_| {
                let names = store.list("Service").into_iter().map(|d| d.name).collect();
                recorder.lock().unwrap().push(names);
            }))
        })
        .await;
        (store, published, task)
    }

    /// A minute to settle: only an event that says a file is whole publishes it in time.
    fn slow() -> InputLimits {
        InputLimits {
            settle: Duration::from_secs(60),
            ..InputLimits::default()
        }
    }

    /// A scan interval polling alone could not publish anything within [`BOUND`] with.
    const MINUTE: Duration = Duration::from_secs(60);

    fn has(store: &InputStore, name: &str, p: u16) -> bool {
        port(store, name).is_some_and(|j| j.contains(&format!("\"port\":{p}")))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_saved_renamed_or_deleted_file_is_published_at_once_whatever_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (store, task) = watched(dir.path(), slow(), |src| {
            tokio::spawn(watch_dir(src, MINUTE, |_| {}))
        })
        .await;
        let f = dir.path().join("web.yaml");
        std::fs::write(&f, svc("web", 1)).unwrap();
        assert!(
            until(|| has(&store, "web", 1)).await,
            "closed after writing: published"
        );
        let tmp = dir.path().join(".web.yaml.tmp");
        std::fs::write(&tmp, svc("web", 2)).unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert!(
            until(|| has(&store, "web", 2)).await,
            "renamed into place: published"
        );
        std::fs::remove_file(&f).unwrap();
        assert!(
            until(|| store.get("Service", "web").is_none()).await,
            "deleted: withdrawn"
        );
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_written_through_one_handle_is_published_at_its_close_and_not_before() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let (store, published, task) = recorded(dir.path()).await;
        let whole = format!("{}---\n{}", svc("api", 1), svc("web", 1));
        let (first, rest) = whole.split_at(whole.find("---").unwrap());
        let mut file = std::fs::File::create(dir.path().join("shop.yaml")).unwrap();
        file.write_all(first.as_bytes()).unwrap();
        file.flush().unwrap();
        // The writer pauses: what is there parses, and is half of the file.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            store.list("Service").is_empty(),
            "half a file is not published"
        );
        file.write_all(rest.as_bytes()).unwrap();
        drop(file);
        assert!(
            until(|| store.list("Service").len() == 2).await,
            "closed: published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            *published.lock().unwrap(),
            [["api", "web"]],
            "published once, whole"
        );
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_written_in_quick_steps_each_closing_it_is_published_once_whole() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let (store, published, task) = recorded(dir.path()).await;
        // `render a > f; render b >> f; render c >> f`: each step closes the file.
        let f = dir.path().join("shop.yaml");
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let mut file = (std::fs::File::options().create(true).append(true))
                .open(&f)
                .unwrap();
            let separator = if i == 0 { "" } else { "---\n" };
            write!(file, "{separator}{}", svc(name, 1)).unwrap();
            drop(file);
            std::thread::sleep(Duration::from_millis(3));
        }
        assert!(until(|| store.list("Service").len() == 3).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let once = [["a", "b", "c"]];
        assert_eq!(*published.lock().unwrap(), once, "published once, whole");
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_directory_removed_and_made_again_at_once_is_watched_again() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("inputs");
        std::fs::create_dir(&dir).unwrap();
        let (store, task) = watched(&dir, slow(), |src| {
            tokio::spawn(watch_dir(src, MINUTE, |_| {}))
        })
        .await;
        std::fs::remove_dir(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), svc("a", 1)).unwrap();
        assert!(
            until(|| has(&store, "a", 1)).await,
            "the new directory is read"
        );
        // Watched again before it was read: only an event can publish this in time.
        std::fs::write(dir.join("a.yaml"), svc("a", 2)).unwrap();
        assert!(until(|| has(&store, "a", 2)).await, "not watched again");
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_events_make_the_directory_scanned_in_full_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // Events come from the test alone: nothing watches the directory.
        let (sink, events) = events::FileEvents::channel("test", 16, &[]);
        let (store, task) = watched(dir.path(), at_once(), |src| {
            tokio::spawn(follow(src, Some(events), MINUTE, |_| {}))
        })
        .await;
        std::fs::write(dir.path().join("a.yaml"), svc("a", 1)).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(store.get("Service", "a").is_none(), "no event, no scan");
        // What the kernel sends when its event queue overflowed.
        let overflow =
            notify::Event::new(notify::EventKind::Other).set_flag(notify::event::Flag::Rescan);
        sink.handle(Ok(overflow));
        assert!(
            until(|| store.get("Service", "a").is_some()).await,
            "scanned in full"
        );
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_the_polling_fallback_a_change_is_published_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let every = Duration::from_millis(50);
        let settle = Duration::from_millis(300);
        let roots = [(dir.path().to_owned(), RecursiveMode::Recursive)];
        let events = events::FileEvents::polling("test", &roots, every).unwrap();
        let limits = InputLimits {
            settle,
            ..InputLimits::default()
        };
        let (store, task) = watched(dir.path(), limits, |src| {
            tokio::spawn(follow(src, Some(events), every, |_| {}))
        })
        .await;
        let written = Instant::now();
        std::fs::write(dir.path().join("a.yaml"), svc("a", 1)).unwrap();
        assert!(
            until(|| store.get("Service", "a").is_some()).await,
            "never published"
        );
        assert!(written.elapsed() >= settle, "published before it settled");
        task.abort();
    }
}
