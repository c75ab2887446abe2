//! File-system events for the input directory and the plugin files: a `notify` watcher
//! (inotify on Linux; its polling watcher where that cannot be had) whose callback hands each
//! event to the async side through a bounded channel, never blocking and never growing.
//!
//! The callback runs on `notify`'s own thread. When the channel is full it drops the event and
//! marks "look at everything" instead, as the kernel does when its own queue overflows; the
//! async side takes whatever is queued at once, so a burst of events becomes one look at the
//! paths they name, each once its writer has been quiet for [`QUIET`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::event::Flag;
use notify::{Event, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::changes::Seen;
use super::disk::hidden;

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

/// How long a path must go without another event before an event that says its file is whole
/// is acted on. A close is no promise that the writer is done: `: > f; render >> f` and
/// `echo a > f; echo b >> f` close the file after each step, so steps made in quick
/// succession are read once, after the last. The counterpart of the settle window
/// (`settle_ms`), which a change no close marks whole waits for, and never longer than it.
pub(crate) const QUIET: Duration = Duration::from_millis(50);

/// The most bytes of paths held for the async side at once: past it they are dropped, and
/// everything is looked at instead.
pub(crate) const MAX_HELD_BYTES: usize = 1 << 20;

/// How often losses of one kind are logged (each is counted).
const LOSS_LOG_EVERY: Duration = Duration::from_secs(60);

/// What changed since the last look.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Each path events named, with what its last event says.
    pub(crate) paths: BTreeMap<PathBuf, Seen>,
    /// Events were lost (the kernel's queue or ours overflowed, the watcher failed): anything
    /// may have changed.
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
    Lost(Loss),
}

/// Why events were lost: the kind losses are told apart by in the log (a watcher out of
/// inotify watches fails once per directory, each naming its own path), and what happened.
#[derive(Debug)]
struct Loss {
    kind: &'static str,
    reason: String,
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
    /// The roots watched recursively (absolute, as the watcher names paths).
    recursive: Arc<[PathBuf]>,
}

impl EventSink {
    /// Queues `event`, or, if the queue is full, marks that everything must be looked at.
    pub(crate) fn handle(&self, event: notify::Result<Event>) {
        let message = match event {
            Ok(e) if e.flag() == Some(Flag::Rescan) => Message::Lost(Loss {
                kind: "kernel queue overflow",
                reason: "the kernel's event queue overflowed".into(),
            }),
            Ok(e) => {
                let Some(seen) = Seen::of(&e.kind) else {
                    return;
                };
                let paths: Vec<PathBuf> = e.paths.into_iter().filter(|p| self.matters(p)).collect();
                if paths.is_empty() {
                    return;
                }
                Message::Paths(seen, paths)
            }
            Err(e) => Message::Lost(Loss {
                kind: error_kind(&e.kind),
                reason: format!("the watcher failed: {e}"),
            }),
        };
        if self.tx.try_send(message).is_err() {
            self.overflow.lost.store(true, Ordering::Release);
            self.overflow.wake.notify_one();
        }
    }

    /// Whether what happens at `path` may matter: not if it is inside a hidden directory
    /// below a root watched recursively (a git checkout's `.git`, a Kubernetes ConfigMap
    /// volume's `..2024_…` directories), which the directory source never reads. A hidden
    /// name itself is kept: renaming a ConfigMap's `..data` link changes its visible files.
    fn matters(&self, path: &Path) -> bool {
        let in_hidden = |root: &PathBuf| {
            path.strip_prefix(root).is_ok_and(|below| {
                let mut names = below.iter();
                names.next_back();
                names.any(hidden)
            })
        };
        !self.recursive.iter().any(in_hidden)
    }
}

/// What losses of a watcher's error are told apart by.
fn error_kind(kind: &notify::ErrorKind) -> &'static str {
    match kind {
        notify::ErrorKind::Generic(_) => "watcher error",
        notify::ErrorKind::Io(_) => "I/O error",
        notify::ErrorKind::PathNotFound => "path not found",
        notify::ErrorKind::WatchNotFound => "watch not found",
        notify::ErrorKind::InvalidConfig(_) => "invalid watcher config",
        notify::ErrorKind::MaxFilesWatch => "inotify watch limit",
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
    /// The most messages taken at once: the channel's capacity.
    capacity: usize,
    /// How long a whole event waits for another on its path ([`QUIET`], or less).
    quiet: Duration,
    /// Each path named and not handed out yet, with its last event and when it is due: at
    /// once for a write (it only starts the settle window), once quiet for the others.
    held: BTreeMap<PathBuf, (Seen, Instant)>,
    /// The bytes of the paths in `held`.
    held_bytes: usize,
    /// When each kind of loss was last logged.
    logged: BTreeMap<&'static str, Instant>,
}

/// A watcher that can be kept in a struct that derives `Debug`.
trait WatcherDebug: Watcher + Send + std::fmt::Debug {}
impl<W: Watcher + Send + std::fmt::Debug> WatcherDebug for W {}

impl FileEvents {
    /// A watch fed by hand through the returned sink, with room for `capacity` events; events
    /// inside hidden directories below the `roots` watched recursively are dropped. Whole
    /// events are handed out at once (see [`FileEvents::quiet`]).
    pub(crate) fn channel(
        what: &'static str,
        capacity: usize,
        roots: &[(PathBuf, RecursiveMode)],
    ) -> (EventSink, FileEvents) {
        let (tx, rx) = mpsc::channel(capacity);
        let overflow = Arc::new(Overflow::default());
        let recursive = roots
            .iter()
            .filter(|(_, mode)| *mode == RecursiveMode::Recursive)
            .map(|(root, _)| std::path::absolute(root).unwrap_or_else(|_| root.clone()))
            .collect();
        let sink = EventSink {
            tx,
            overflow: Arc::clone(&overflow),
            recursive,
        };
        let events = FileEvents {
            rx,
            overflow,
            watcher: None,
            what,
            capacity,
            quiet: Duration::ZERO,
            held: BTreeMap::new(),
            held_bytes: 0,
            logged: BTreeMap::new(),
        };
        (sink, events)
    }

    /// Hands out a path named by a whole event only once no other event named it for `quiet`.
    pub(crate) fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
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
        let (sink, mut events) = Self::channel(what, QUEUE, roots);
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
        let (sink, mut events) = Self::channel(what, QUEUE, roots);
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

    /// Watches `root` afresh: after it was removed (its watch went with it) or moved away (its
    /// watch followed it) and is back. Blocking, as [`FileEvents::start`].
    pub(crate) fn rewatch(&mut self, root: &Path, mode: RecursiveMode) -> notify::Result<()> {
        match &mut self.watcher {
            Some(w) => {
                // Nothing to remove if the watch went with the directory.
                let _ = w.unwatch(root);
                w.watch(root, mode)
            }
            None => Ok(()),
        }
    }

    /// What `events` hand out by `until` ([`FileEvents::next`]); without events (no watcher
    /// could be had), nothing, at `until`: the caller's periodic look is all there is.
    pub(crate) async fn next_or_sleep(events: &mut Option<FileEvents>, until: Instant) -> Changes {
        match events {
            Some(events) => events.next(until).await,
            None => {
                tokio::time::sleep_until(until).await;
                Changes::default()
            }
        }
    }

    /// Waits for an event, for a path held to be due, or for `until`, whichever comes first;
    /// then takes what is queued (at most a queue's worth: a watcher that keeps it full cannot
    /// hold the caller) and hands out the paths due. Empty [`Changes`] when nothing was.
    pub(crate) async fn next(&mut self, until: Instant) -> Changes {
        let mut changes = Changes::default();
        let due = self.held.values().map(|(_, at)| *at).min();
        let wake = due.map_or(until, |d| d.min(until));
        let mut taken = 0;
        tokio::select! {
            Some(m) = self.rx.recv() => {
                self.take(m, &mut changes);
                taken = 1;
            }
            () = self.overflow.wake.notified() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
        while taken < self.capacity {
            let Ok(m) = self.rx.try_recv() else { break };
            self.take(m, &mut changes);
            taken += 1;
        }
        if self.overflow.lost.swap(false, Ordering::AcqRel) {
            let reason = format!("more than {} events were queued", self.capacity);
            let kind = "queue full";
            self.lose(Loss { kind, reason }, &mut changes);
        }
        let now = Instant::now();
        let bytes = &mut self.held_bytes;
        self.held.retain(|path, (seen, at)| {
            if *at > now {
                return true;
            }
            *bytes -= path.as_os_str().len();
            changes.paths.insert(path.clone(), *seen);
            false
        });
        changes
    }

    fn take(&mut self, message: Message, changes: &mut Changes) {
        let paths = match message {
            Message::Paths(seen, paths) => paths.into_iter().map(move |p| (p, seen)),
            Message::Lost(loss) => return self.lose(loss, changes),
        };
        let now = Instant::now();
        for (path, seen) in paths {
            let at = match seen {
                Seen::Written => now,
                Seen::Whole | Seen::Created => now + self.quiet,
            };
            let len = path.as_os_str().len();
            if self.held.insert(path, (seen, at)).is_none() {
                self.held_bytes += len;
            }
        }
        if self.held_bytes > MAX_HELD_BYTES {
            self.held.clear();
            self.held_bytes = 0;
            let reason = format!("events named over {MAX_HELD_BYTES} bytes of paths");
            let kind = "too many paths";
            self.lose(Loss { kind, reason }, changes);
        }
    }

    fn lose(&mut self, loss: Loss, changes: &mut Changes) {
        changes.rescan = true;
        metrics::counter!("file_events_lost_total", "watch" => self.what).increment(1);
        if self.log_now(loss.kind, Instant::now()) {
            let (watch, kind, reason) = (self.what, loss.kind, loss.reason);
            tracing::warn!(watch, kind, %reason, "file events lost: looking at every file");
        }
    }

    /// Whether a loss of `kind` at `now` is logged: the first of its kind in a minute is.
    pub(super) fn log_now(&mut self, kind: &'static str, now: Instant) -> bool {
        let last = self.logged.get(kind);
        if last.is_some_and(|at| now < *at + LOSS_LOG_EVERY) {
            return false;
        }
        self.logged.insert(kind, now);
        true
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
