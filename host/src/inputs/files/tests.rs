//! The directory source (settling, caps, last good documents) and the file events that tell
//! it what changed (what an event says, the quiet window, the bounds on what is held).

use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind};
use notify::event::{Flag, RemoveKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode};
use tokio::time::Instant as TokioInstant;

use super::changes::Seen;
use super::events::{Changes, FileEvents, MAX_HELD_BYTES};
use super::*;
use crate::inputs::InputView;

pub(super) fn source(dir: &Path, limits: InputLimits) -> (DirSource, Arc<InputStore>) {
    let store = Arc::new(InputStore::new());
    let src = DirSource::with_limits(dir, Arc::clone(&store), limits).unwrap();
    (src, store)
}

pub(super) fn at_once() -> InputLimits {
    InputLimits {
        settle: Duration::ZERO,
        ..InputLimits::default()
    }
}

pub(super) fn svc(name: &str, port: u16) -> String {
    format!("kind: Service\nname: {name}\nport: {port}\n")
}

pub(super) fn port(store: &InputStore, name: &str) -> Option<String> {
    Some(store.get("Service", name)?.json.to_string())
}

/// Some filesystems keep whole-second mtimes: make sure a rewrite looks modified.
fn set_mtime(p: &Path, shift: Duration, later: bool) {
    let f = std::fs::File::options().append(true).open(p).unwrap();
    let now = SystemTime::now();
    f.set_modified(if later { now + shift } else { now - shift })
        .unwrap();
}

#[test]
fn a_broken_file_keeps_its_last_documents_and_deleting_a_file_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut src, store) = source(dir.path(), at_once());
    let f = dir.path().join("a.yaml");
    std::fs::write(&f, svc("a", 1)).unwrap();
    assert_eq!(src.scan().0.len(), 1);
    std::fs::write(&f, "kind: Service\nname: a\nport: [\n").unwrap();
    set_mtime(&f, Duration::from_secs(2), true);
    let (changed, errors) = src.scan();
    assert!(changed.is_empty());
    assert!(errors[0].to_string().contains("a.yaml"));
    assert!(src
        .health()
        .status()
        .invalid
        .keys()
        .any(|k| k.ends_with("a.yaml")));
    assert!(port(&store, "a").unwrap().contains("\"port\":1"));
    assert!(src.scan().1.is_empty(), "not read again until it changes");
    std::fs::remove_file(&f).unwrap();
    assert_eq!(src.scan().0.len(), 1);
    assert!(store.get("Service", "a").is_none());
    assert!(src.health().status().invalid.is_empty());
}

#[test]
fn a_file_is_published_only_once_it_has_stopped_changing() {
    let dir = tempfile::tempdir().unwrap();
    let settle = Duration::from_millis(300);
    let limits = InputLimits {
        settle,
        ..InputLimits::default()
    };
    let (mut src, store) = source(dir.path(), limits);
    let old = dir.path().join("old.yaml");
    std::fs::write(&old, svc("old", 1)).unwrap();
    set_mtime(&old, Duration::from_secs(60), false);
    let f = dir.path().join("a.yaml");
    std::fs::write(&f, svc("a", 1)).unwrap();
    let (changed, _) = src.scan();
    assert_eq!(
        changed,
        [DocKey::new("Service", "old")],
        "at start a file untouched for the window is read at once"
    );
    std::thread::sleep(settle / 2);
    std::fs::write(&f, format!("{}---\n{}", svc("a", 2), svc("b", 2))).unwrap();
    set_mtime(&f, Duration::from_secs(2), true);
    std::thread::sleep(settle / 2);
    assert!(src.scan().0.is_empty(), "still changing: not published");
    assert!(store.get("Service", "a").is_none());
    std::thread::sleep(settle);
    assert_eq!(src.scan().0.len(), 2, "settled: published whole");
    assert!(port(&store, "a").unwrap().contains("\"port\":2"));
    std::fs::remove_file(&f).unwrap();
    assert!(src.scan().0.is_empty(), "a deletion settles too");
    std::thread::sleep(settle);
    assert_eq!(src.scan().0.len(), 2);
}

#[test]
fn an_oversized_file_is_refused_naming_the_limit_and_keeps_its_documents() {
    let dir = tempfile::tempdir().unwrap();
    let limits = InputLimits {
        max_file_bytes: 100,
        ..at_once()
    };
    let (mut src, store) = source(dir.path(), limits);
    let f = dir.path().join("web.yaml");
    std::fs::write(&f, svc("web", 1)).unwrap();
    src.scan();
    std::fs::write(&f, format!("{}# {}\n", svc("web", 2), "x".repeat(100))).unwrap();
    set_mtime(&f, Duration::from_secs(2), true);
    let (changed, errors) = src.scan();
    assert!(changed.is_empty());
    let e = errors[0].to_string();
    assert!(
        e.contains("web.yaml") && e.contains("over inputs.max_file_bytes = 100"),
        "{e}"
    );
    assert!(port(&store, "web").unwrap().contains("\"port\":1"));
    std::fs::write(&f, svc("web", 3)).unwrap();
    set_mtime(&f, Duration::from_secs(4), true);
    assert_eq!(src.scan().0.len(), 1, "back under the cap: read");
}

#[test]
fn past_the_file_and_document_caps_files_are_refused_and_keep_what_they_had() {
    let dir = tempfile::tempdir().unwrap();
    let limits = InputLimits {
        max_files: 2,
        // c.yaml keeps its one past the file cap: a (1) + b (2) + c (1) fit, a second in a does not.
        max_documents: 4,
        ..at_once()
    };
    let (mut src, store) = source(dir.path(), limits);
    let file = |n: &str| dir.path().join(n);
    std::fs::write(file("a.yaml"), svc("a", 1)).unwrap();
    std::fs::write(file("c.yaml"), svc("c", 1)).unwrap();
    src.scan();
    std::fs::write(
        file("b.yaml"),
        format!("{}---\n{}", svc("b", 1), svc("b2", 1)),
    )
    .unwrap();
    let (changed, errors) = src.scan();
    assert_eq!(changed.len(), 2, "b.yaml is among the first two by path");
    assert!(
        errors[0].to_string().contains("inputs.max_files = 2"),
        "{errors:?}"
    );
    assert!(
        store.get("Service", "c").is_some(),
        "c.yaml, past the cap, keeps its documents"
    );
    std::fs::write(
        file("a.yaml"),
        format!("{}---\n{}", svc("a", 2), svc("a2", 2)),
    )
    .unwrap();
    set_mtime(&file("a.yaml"), Duration::from_secs(2), true);
    let (_, errors) = src.scan();
    let e = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        e.contains("a.yaml") && e.contains("inputs.max_documents = 4"),
        "{e}"
    );
    assert!(port(&store, "a").unwrap().contains("\"port\":1"));
}

#[test]
fn a_file_rewritten_between_the_listing_and_the_read_is_not_published_until_it_settles() {
    let dir = tempfile::tempdir().unwrap();
    let (mut src, store) = source(dir.path(), at_once());
    let f = dir.path().join("a.yaml");
    let both = |p| format!("{}---\n{}", svc("a", p), svc("b", p));
    std::fs::write(&f, both(1)).unwrap();
    assert_eq!(src.scan().0.len(), 2);
    std::fs::write(&f, both(2)).unwrap();
    set_mtime(&f, Duration::from_secs(2), true);
    let (listed, over) = src.list().unwrap();
    // A writer truncates and starts again after the listing saw the file settled.
    std::fs::write(&f, svc("a", 3)).unwrap();
    set_mtime(&f, Duration::from_secs(4), true);
    let (changed, errors) = src.scan_listed(listed, over, &|_| false);
    assert!(
        changed.is_empty() && errors.is_empty(),
        "{changed:?} {errors:?}"
    );
    assert!(port(&store, "a").unwrap().contains("\"port\":1"));
    assert!(
        store.get("Service", "b").is_some(),
        "half a file is not published"
    );
    std::fs::write(&f, both(3)).unwrap();
    set_mtime(&f, Duration::from_secs(6), true);
    assert_eq!(src.scan().0.len(), 2, "read once it is as listed");
    assert!(port(&store, "b").unwrap().contains("\"port\":3"));
}

#[test]
fn a_fifo_at_a_document_path_is_refused_without_blocking_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (mut src, store) = source(dir.path(), at_once());
    std::fs::write(dir.path().join("a.yaml"), svc("a", 1)).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path().join("pipe.yaml"))
        .status()
        .unwrap();
    assert!(made.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(src.scan()));
    let (changed, errors) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the scan does not wait for a writer to the FIFO");
    assert_eq!(changed.len(), 1, "the other files are read");
    assert!(store.get("Service", "a").is_some());
    let e = errors[0].to_string();
    assert!(
        e.contains("pipe.yaml") && e.contains("not a regular file (it is a FIFO)"),
        "{e}"
    );
}

fn event(kind: EventKind, path: &str) -> notify::Result<Event> {
    Ok(Event::new(kind).add_path(PathBuf::from(path)))
}

/// Far longer than any of these tests takes.
const BOUND: Duration = Duration::from_secs(5);

fn soon() -> TokioInstant {
    TokioInstant::now() + Duration::from_millis(20)
}

const WRITTEN: EventKind = EventKind::Modify(ModifyKind::Data(DataChange::Any));
const CLOSED: EventKind = EventKind::Access(AccessKind::Close(AccessMode::Write));

fn seen(changes: &Changes) -> Vec<(&str, Seen)> {
    let paths = changes.paths.iter();
    paths.map(|(p, s)| (p.to_str().unwrap(), *s)).collect()
}

#[tokio::test]
async fn a_path_keeps_its_last_event_and_opens_and_reads_are_not_changes() {
    let (sink, mut events) = FileEvents::channel("test", 16, &[]);
    sink.handle(event(EventKind::Create(CreateKind::File), "/d/new.yaml"));
    sink.handle(event(WRITTEN, "/d/a.yaml"));
    sink.handle(event(CLOSED, "/d/a.yaml"));
    sink.handle(event(WRITTEN, "/d/b.yaml"));
    let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    sink.handle(event(renamed, "/d/c.yaml"));
    sink.handle(event(EventKind::Remove(RemoveKind::File), "/d/gone.yaml"));
    let opened = EventKind::Access(AccessKind::Open(AccessMode::Any));
    sink.handle(event(opened, "/d/r.yaml"));
    let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
    sink.handle(event(read, "/d/r.yaml"));
    let changes = events.next(soon()).await;
    assert_eq!(
        seen(&changes),
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
async fn a_whole_event_is_handed_out_once_no_other_came_for_its_path_for_the_quiet_window() {
    let (sink, events) = FileEvents::channel("test", 16, &[]);
    let quiet = Duration::from_millis(100);
    let mut events = events.quiet(quiet);
    sink.handle(event(CLOSED, "/d/a.yaml"));
    sink.handle(event(WRITTEN, "/d/b.yaml"));
    // A write at once (it only starts the settle window); a close once quiet.
    let changes = events.next(soon()).await;
    assert_eq!(seen(&changes), [("/d/b.yaml", Seen::Written)]);
    // `echo b >> f`: closed again, and the wait starts over.
    sink.handle(event(CLOSED, "/d/a.yaml"));
    let again = TokioInstant::now();
    assert!(events.next(soon()).await.is_empty(), "not quiet yet");
    let changes = events.next(again + Duration::from_secs(5)).await;
    assert!(again.elapsed() >= quiet, "handed out early");
    assert_eq!(seen(&changes), [("/d/a.yaml", Seen::Whole)]);
}

#[tokio::test]
async fn events_inside_hidden_directories_below_a_watched_tree_are_dropped() {
    let roots = [(PathBuf::from("/d"), RecursiveMode::Recursive)];
    let (sink, mut events) = FileEvents::channel("test", 16, &roots);
    let hidden = ["/d/.git/index", "/d/..2024_1/a.yaml", "/d/s/.c/b.yaml"];
    // A hidden name itself is kept: a ConfigMap's `..data` link is swapped by a rename.
    let kept = ["/d/..data", "/d/.a.swp", "/d/s/a.yaml", "/e/.x/a.yaml"];
    for path in hidden.iter().chain(&kept) {
        sink.handle(event(CLOSED, path));
    }
    let changes = events.next(soon()).await;
    let got: Vec<&str> = seen(&changes).into_iter().map(|(p, _)| p).collect();
    assert_eq!(got, kept);
}

#[tokio::test]
async fn a_full_queue_drops_events_without_blocking_and_asks_for_a_full_look() {
    let (sink, mut events) = FileEvents::channel("test", 2, &[]);
    // Nobody takes them meanwhile: a blocking callback would never return here.
    for i in 0..100 {
        sink.handle(event(WRITTEN, &format!("/d/{i}.yaml")));
    }
    let changes = events.next(soon()).await;
    assert_eq!(changes.paths.len(), 2, "what fitted is kept");
    assert!(changes.rescan, "what did not is looked for in full");
    assert!(events.next(soon()).await.is_empty(), "asked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_look_takes_at_most_a_queue_of_events_while_more_keep_coming() {
    let (sink, mut events) = FileEvents::channel("test", 16, &[]);
    // Sent as they are taken, of four paths each: however many keep coming, one look takes
    // a queue of them at most.
    let four = |i| (0..4).map(move |j| PathBuf::from(format!("/{i}/{j}")));
    let burst: Vec<_> = (0..30_000)
        .map(|i| Ok(four(i).fold(Event::new(WRITTEN), Event::add_path)))
        .collect();
    let writer = std::thread::spawn(move || burst.into_iter().for_each(|e| sink.handle(e)));
    let changes = events.next(TokioInstant::now() + BOUND).await;
    writer.join().unwrap();
    let taken = changes.paths.len();
    assert!(taken <= 16 * 4, "{taken} paths");
}

#[tokio::test]
async fn paths_held_past_their_byte_cap_are_dropped_for_a_full_look() {
    let (sink, events) = FileEvents::channel("test", 64, &[]);
    // Never quiet in the test's time: every path is held.
    let mut events = events.quiet(Duration::from_secs(3600));
    let long = "x".repeat(4000);
    let mut rescan = false;
    for batch in 0..(MAX_HELD_BYTES / (64 * 4000) + 1) {
        for i in 0..64 {
            sink.handle(event(CLOSED, &format!("/d/{batch}/{i}/{long}")));
        }
        rescan |= events.next(soon()).await.rescan;
    }
    assert!(rescan, "over the cap: everything is looked at instead");
    assert!(events.next(soon()).await.is_empty(), "and nothing is held");
}

#[tokio::test]
async fn the_kernels_overflow_and_a_failed_watcher_ask_for_a_full_look_logged_once_per_kind() {
    let (sink, mut events) = FileEvents::channel("test", 16, &[]);
    sink.handle(Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan)));
    let changes = events.next(soon()).await;
    assert!(changes.rescan && changes.paths.is_empty(), "{changes:?}");
    // Out of inotify watches: one error per directory, each naming its own.
    for dir in ["/d/a", "/d/b"] {
        let full = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        sink.handle(Err(full.add_path(PathBuf::from(dir))));
    }
    assert!(events.next(soon()).await.rescan);
    let now = TokioInstant::now();
    assert!(!events.log_now("inotify watch limit", now), "logged once");
    assert!(events.log_now("another kind", now));
    let later = now + Duration::from_secs(60);
    assert!(events.log_now("inotify watch limit", later), "a minute on");
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
