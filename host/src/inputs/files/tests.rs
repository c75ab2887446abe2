//! The directory source: settling, caps, and last good documents.

use super::*;
use crate::inputs::InputView;

fn source(dir: &Path, limits: InputLimits) -> (DirSource, Arc<InputStore>) {
    let store = Arc::new(InputStore::new());
    let src = DirSource::with_limits(dir, Arc::clone(&store), limits).unwrap();
    (src, store)
}

fn at_once() -> InputLimits {
    InputLimits {
        settle: Duration::ZERO,
        ..InputLimits::default()
    }
}

fn svc(name: &str, port: u16) -> String {
    format!("kind: Service\nname: {name}\nport: {port}\n")
}

fn port(store: &InputStore, name: &str) -> Option<String> {
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
    let (listed, over) = src.list();
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

/// How long a change may take to be published when events work: generous, against 60 s
/// intervals and settle windows that polling alone would have to wait out.
const BOUND: Duration = Duration::from_secs(5);

/// Waits (checking every 10 ms) until `holds`, at most [`BOUND`]; whether it held.
async fn until(holds: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !holds() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// A source for `dir` within `limits`, watched by `watch`: returned once the watch is set up
/// (its first scan comes after that), so that what the test does next raises events.
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

/// A minute to settle: only an event that says a file is whole publishes it in time.
fn slow() -> InputLimits {
    InputLimits {
        settle: Duration::from_secs(60),
        ..InputLimits::default()
    }
}

/// A scan interval polling alone could not publish anything within [`BOUND`] with.
const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_renamed_or_deleted_file_is_published_at_once_whatever_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (store, task) = watched(dir.path(), slow(), |src| {
        tokio::spawn(watch_dir(src, MINUTE, |_| {}))
    })
    .await;
    let f = dir.path().join("web.yaml");
    std::fs::write(&f, svc("web", 1)).unwrap();
    let has = |p: u16| port(&store, "web").is_some_and(|j| j.contains(&format!("\"port\":{p}")));
    assert!(until(|| has(1)).await, "closed after writing: published");
    let tmp = dir.path().join(".web.yaml.tmp");
    std::fs::write(&tmp, svc("web", 2)).unwrap();
    std::fs::rename(&tmp, &f).unwrap();
    assert!(until(|| has(2)).await, "renamed into place: published");
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
    let published = Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
    let recorder = Arc::clone(&published);
    let (store, task) = watched(dir.path(), slow(), |src| {
        let store = Arc::clone(&src.store);
        tokio::spawn(watch_dir(src, MINUTE, move |_| {
            let names = store.list("Service").into_iter().map(|d| d.name).collect();
            recorder.lock().unwrap().push(names);
        }))
    })
    .await;
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
async fn lost_events_make_the_directory_scanned_in_full_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Events come from the test alone: nothing watches the directory.
    let (sink, events) = events::FileEvents::channel("test", 16);
    let (store, task) = watched(dir.path(), at_once(), |src| {
        tokio::spawn(watch::follow(src, Some(events), MINUTE, |_| {}))
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
    let roots = [(dir.path().to_owned(), notify::RecursiveMode::Recursive)];
    let events = events::FileEvents::polling("test", &roots, every).unwrap();
    let limits = InputLimits {
        settle,
        ..InputLimits::default()
    };
    let (store, task) = watched(dir.path(), limits, |src| {
        tokio::spawn(watch::follow(src, Some(events), every, |_| {}))
    })
    .await;
    let written = tokio::time::Instant::now();
    std::fs::write(dir.path().join("a.yaml"), svc("a", 1)).unwrap();
    assert!(
        until(|| store.get("Service", "a").is_some()).await,
        "never published"
    );
    assert!(written.elapsed() >= settle, "published before it settled");
    task.abort();
}
