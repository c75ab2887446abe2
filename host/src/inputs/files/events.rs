//! File-system events for the input directory and the plugin files: a `notify` watcher
//! (inotify on Linux; its polling watcher where that cannot be had) whose callback hands each
//! event to the async side through a bounded channel, never blocking and never growing.
//!
//! The callback runs on `notify`'s own thread. When the channel is full it drops the event and
//! marks "look at everything" instead, as the kernel does when its own queue overflows; the
//! async side takes whatever is queued at once, so a burst of events becomes one look at the
//! paths they name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, Flag, ModifyKind};
use notify::{Event, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Events queued for the async side; past this the callback asks for a full look instead.
pub(crate) const QUEUE: usize = 1024;

/// With file events, everything is still looked at this often (or every interval, if that is
/// longer): the safety net for events lost without a word, and for changes no event reports
/// (a network file system's remote writes, the target of a link to a file outside the
/// watched directories).
pub(crate) const SAFETY_NET: Duration = Duration::from_secs(10);

/// The shortest wait for a look no event asked for (a file due to settle, a retry): a file
/// that keeps changing as it is read cannot make a watch spin.
pub(crate) const MIN_WAIT: Duration = Duration::from_millis(10);

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
    fn of(kind: &EventKind) -> Option<Seen> {
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

/// What changed since the last look.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Each path events named, with what its last event says.
    pub(crate) paths: BTreeMap<PathBuf, Seen>,
    /// Events were lost (the kernel's queue or ours overflowed, the watcher failed), or it is
    /// time for the periodic scan: anything may have changed.
    pub(crate) rescan: bool,
}

impl Changes {
    /// Whether there is nothing to look at.
    pub(crate) fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.rescan
    }
}

/// One event as queued: the paths it names and their class, or a loss.
#[derive(Debug)]
enum Message {
    Paths(Seen, Vec<PathBuf>),
    Lost(String),
}

/// What the callback sets when it could not queue an event, and how it wakes the async side.
#[derive(Debug, Default)]
struct Overflow {
    lost: AtomicBool,
    wake: Notify,
}

/// The watcher's end: called on `notify`'s thread, it never blocks.
#[derive(Debug, Clone)]
pub(crate) struct EventSink {
    tx: mpsc::Sender<Message>,
    overflow: Arc<Overflow>,
}

impl EventSink {
    /// Queues `event`, or, if the queue is full, marks that everything must be looked at.
    pub(crate) fn handle(&self, event: notify::Result<Event>) {
        let message = match event {
            Ok(e) if e.flag() == Some(Flag::Rescan) => {
                Message::Lost("the kernel's event queue overflowed".into())
            }
            Ok(e) => match Seen::of(&e.kind) {
                Some(seen) if !e.paths.is_empty() => Message::Paths(seen, e.paths),
                _ => return,
            },
            Err(e) => Message::Lost(format!("the watcher failed: {e}")),
        };
        if self.tx.try_send(message).is_err() {
            self.overflow.lost.store(true, Ordering::Release);
            self.overflow.wake.notify_one();
        }
    }
}

/// The async end of a file watch: what changed, as it happens.
#[derive(Debug)]
pub(crate) struct FileEvents {
    rx: mpsc::Receiver<Message>,
    overflow: Arc<Overflow>,
    /// Kept for its thread: dropping it ends the watch.
    watcher: Option<Box<dyn WatcherDebug>>,
    /// What is watched, for logs and metrics ("inputs", "plugin files").
    what: &'static str,
    /// The last loss logged, so a watcher failing the same way at every poll logs it once.
    last_loss: Option<String>,
}

/// A watcher that can be kept in a struct that derives `Debug`.
trait WatcherDebug: Watcher + Send + std::fmt::Debug {}
impl<W: Watcher + Send + std::fmt::Debug> WatcherDebug for W {}

impl FileEvents {
    /// A watch fed by hand through the returned sink, with room for `capacity` events.
    pub(crate) fn channel(what: &'static str, capacity: usize) -> (EventSink, FileEvents) {
        let (tx, rx) = mpsc::channel(capacity);
        let overflow = Arc::new(Overflow::default());
        let sink = EventSink {
            tx,
            overflow: Arc::clone(&overflow),
        };
        let events = FileEvents {
            rx,
            overflow,
            watcher: None,
            what,
            last_loss: None,
        };
        (sink, events)
    }

    /// Watches `roots` with the system's watcher (inotify on Linux), or, if that cannot be
    /// had (inotify's instance or watch limits reached, say), with [`FileEvents::polling`];
    /// logs which. Blocking (adding watches walks the tree): call it off the async runtime's
    /// workers.
    pub(crate) fn start(
        what: &'static str,
        roots: &[(PathBuf, RecursiveMode)],
        poll_every: Duration,
    ) -> notify::Result<FileEvents> {
        let (sink, mut events) = Self::channel(what, QUEUE);
        let recommended = RecommendedWatcher::new(move |e| sink.handle(e), config())
            .and_then(|w| watching(w, roots));
        match recommended {
            Ok(w) => {
                let kind = <RecommendedWatcher as Watcher>::kind();
                tracing::info!(watch = what, watcher = ?kind, "watching files for changes");
                events.watcher = Some(Box::new(w));
                Ok(events)
            }
            Err(e) => {
                tracing::warn!(
                    watch = what,
                    error = %e,
                    every = ?poll_every,
                    "no file events to be had: polling for changes instead"
                );
                Self::polling(what, roots, poll_every)
            }
        }
    }

    /// Watches `roots` with `notify`'s polling watcher, which looks every `every` and reports
    /// changes with no close or rename to say a file is whole: they settle first. Blocking.
    pub(crate) fn polling(
        what: &'static str,
        roots: &[(PathBuf, RecursiveMode)],
        every: Duration,
    ) -> notify::Result<FileEvents> {
        let (sink, mut events) = Self::channel(what, QUEUE);
        let config = config().with_poll_interval(every);
        let w = watching(PollWatcher::new(move |e| sink.handle(e), config)?, roots)?;
        events.watcher = Some(Box::new(w));
        Ok(events)
    }

    /// Watches one more root with the watcher in use. Blocking, as [`FileEvents::start`].
    pub(crate) fn add(&mut self, root: &Path, mode: RecursiveMode) -> notify::Result<()> {
        match &mut self.watcher {
            Some(w) => w.watch(root, mode),
            None => Ok(()),
        }
    }

    /// Waits for an event or for `until`, whichever comes first, then takes every event
    /// queued: empty [`Changes`] when the time came first.
    pub(crate) async fn next(&mut self, until: Instant) -> Changes {
        let mut changes = Changes::default();
        tokio::select! {
            Some(m) = self.rx.recv() => self.take(m, &mut changes),
            () = self.overflow.wake.notified() => {}
            () = tokio::time::sleep_until(until) => {}
        }
        while let Ok(m) = self.rx.try_recv() {
            self.take(m, &mut changes);
        }
        if self.overflow.lost.swap(false, Ordering::AcqRel) {
            self.take(
                Message::Lost(format!("more than {QUEUE} events were queued")),
                &mut changes,
            );
        }
        changes
    }

    fn take(&mut self, message: Message, changes: &mut Changes) {
        match message {
            Message::Paths(seen, paths) => {
                for p in paths {
                    changes.paths.insert(p, seen);
                }
            }
            Message::Lost(reason) => {
                changes.rescan = true;
                metrics::counter!("file_events_lost_total", "watch" => self.what).increment(1);
                if self.last_loss.as_ref() != Some(&reason) {
                    tracing::warn!(watch = self.what, %reason, "file events lost: looking at every file");
                    self.last_loss = Some(reason);
                }
            }
        }
    }
}

/// How every watcher is set: links to directories are not followed, as the directory
/// source does not walk them.
fn config() -> notify::Config {
    notify::Config::default().with_follow_symlinks(false)
}

/// `watcher`, watching every root.
fn watching<W: Watcher>(mut watcher: W, roots: &[(PathBuf, RecursiveMode)]) -> notify::Result<W> {
    for (root, mode) in roots {
        watcher.watch(root, *mode)?;
    }
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

    use super::*;

    fn event(kind: EventKind, path: &str) -> notify::Result<Event> {
        Ok(Event::new(kind).add_path(PathBuf::from(path)))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(20)
    }

    #[tokio::test]
    async fn a_path_keeps_its_last_event_and_opens_and_reads_are_not_changes() {
        let (sink, mut events) = FileEvents::channel("test", 16);
        let written = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        sink.handle(event(EventKind::Create(CreateKind::File), "/d/new.yaml"));
        sink.handle(event(written, "/d/a.yaml"));
        sink.handle(event(closed, "/d/a.yaml"));
        sink.handle(event(written, "/d/b.yaml"));
        sink.handle(event(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/d/c.yaml",
        ));
        sink.handle(event(EventKind::Remove(RemoveKind::File), "/d/gone.yaml"));
        sink.handle(event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "/d/r.yaml",
        ));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        sink.handle(event(read, "/d/r.yaml"));
        let changes = events.next(soon()).await;
        let got: Vec<(&str, Seen)> = changes
            .paths
            .iter()
            .map(|(p, s)| (p.to_str().unwrap(), *s))
            .collect();
        assert_eq!(
            got,
            [
                ("/d/a.yaml", Seen::Whole),
                ("/d/b.yaml", Seen::Written),
                ("/d/c.yaml", Seen::Whole),
                ("/d/gone.yaml", Seen::Whole),
                ("/d/new.yaml", Seen::Created),
            ]
        );
        assert!(!changes.rescan);
        assert!(events.next(soon()).await.is_empty(), "taken once");
    }

    #[tokio::test]
    async fn a_full_queue_drops_events_without_blocking_and_asks_for_a_full_look() {
        let (sink, mut events) = FileEvents::channel("test", 2);
        let written = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        // Nobody takes them meanwhile: a blocking callback would never return here.
        for i in 0..100 {
            sink.handle(event(written, &format!("/d/{i}.yaml")));
        }
        let changes = events.next(soon()).await;
        assert_eq!(changes.paths.len(), 2, "what fitted is kept");
        assert!(changes.rescan, "what did not is looked for in full");
        assert!(events.next(soon()).await.is_empty(), "asked once");
    }

    #[tokio::test]
    async fn the_kernels_overflow_and_a_failed_watcher_ask_for_a_full_look() {
        let (sink, mut events) = FileEvents::channel("test", 16);
        sink.handle(Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan)));
        let changes = events.next(soon()).await;
        assert!(changes.rescan && changes.paths.is_empty(), "{changes:?}");
        sink.handle(Err(notify::Error::generic("inotify watch limit reached")));
        assert!(events.next(soon()).await.rescan);
    }

    #[test]
    fn a_created_link_is_whole_and_a_created_file_waits_for_its_close() {
        let dir = tempfile::tempdir().unwrap();
        let (file, link) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&file, "").unwrap();
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(!Seen::Created.whole(&file));
        assert!(Seen::Created.whole(&link));
        assert!(Seen::Whole.whole(&file) && !Seen::Written.whole(&file));
    }
}
