//! Plugin file rules: what is read, what is refused and why.

use super::*;

fn rules(dir: &Path, max: u64) -> PluginFileRules {
    PluginFileRules::new([dir.to_path_buf()], max, Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn a_regular_file_inside_is_read_and_everything_else_is_refused_by_its_rule() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.wasm"), b"wasm").unwrap();
    std::fs::write(root.path().join("outside.wasm"), b"x").unwrap();
    std::os::unix::fs::symlink(root.path().join("outside.wasm"), dir.join("link.wasm")).unwrap();
    std::os::unix::fs::symlink(dir.join("a.wasm"), root.path().join("in.wasm")).unwrap();
    let r = rules(&dir, 10);
    assert_eq!(r.read(&dir.join("a.wasm")).await.unwrap(), b"wasm");
    assert_eq!(
        r.read(&root.path().join("in.wasm")).await.unwrap(),
        b"wasm",
        "a link from outside to a file inside is judged by where it leads"
    );
    for p in [
        root.path().join("outside.wasm"),
        dir.join("link.wasm"),
        dir.join("../outside.wasm"),
        root.path().join("missing.wasm"),
        PathBuf::from("/dev/zero"),
    ] {
        let e = r.read(&p).await.unwrap_err();
        assert!(matches!(e, FileRefusal::OutsideDirs { .. }), "{p:?}: {e}");
        assert!(
            e.to_string().contains("outside the plugin directories"),
            "{e}"
        );
    }
    let e = r.read(&dir.join("missing.wasm")).await.unwrap_err();
    assert!(matches!(e, FileRefusal::Io { .. }), "{e}");
    std::fs::create_dir(dir.join("sub")).unwrap();
    let e = r.read(&dir.join("sub")).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("not a regular file (it is a directory)"),
        "{e}"
    );
    std::fs::write(dir.join("big.wasm"), [0u8; 11]).unwrap();
    let e = r.read(&dir.join("big.wasm")).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("larger than max_plugin_bytes (10 bytes"),
        "{e}"
    );
}

#[tokio::test]
async fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let e = tokio::time::timeout(Duration::from_secs(2), rules(dir.path(), 10).read(&fifo))
        .await
        .expect("no hang on a FIFO")
        .unwrap_err();
    assert!(
        e.to_string().contains("not a regular file (it is a FIFO)"),
        "{e}"
    );
}

#[tokio::test]
async fn a_file_whose_size_lies_is_cut_one_byte_past_the_cap() {
    // /proc files say they are empty; this one holds more than 64 bytes.
    let r = rules(Path::new("/proc"), 64);
    let e = r.read(Path::new("/proc/self/status")).await.unwrap_err();
    assert!(matches!(e, FileRefusal::TooLarge { max: 64, .. }), "{e}");
}

#[test]
fn a_read_past_its_deadline_says_which_limit() {
    let e = rules(Path::new("/tmp"), 1).timed_out(Path::new("/tmp/a.wasm"));
    assert!(e.to_string().contains("timed out after 5s"), "{e}");
}

#[test]
fn a_filesystem_root_is_refused_as_a_plugin_directory() {
    let dir = tempfile::tempdir().unwrap();
    for root in ["/", "/..", "/tmp/../.."] {
        let e = PluginFileRules::new(
            [dir.path().to_path_buf(), PathBuf::from(root)],
            1,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            matches!(e, ReloadError::RootPluginDir { .. }),
            "{root}: {e}"
        );
        let e = e.to_string();
        assert!(
            e.contains("filesystem root") && e.contains("reload.plugin_dirs"),
            "{e}"
        );
    }
    assert!(PluginFileRules::new([dir.path().to_path_buf()], 1, Duration::from_secs(1)).is_ok());
}

#[tokio::test]
async fn a_read_is_refused_at_once_while_an_earlier_one_is_still_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.wasm");
    std::fs::write(&file, b"wasm").unwrap();
    let r = rules(dir.path(), 10);
    // What the thread of a read stuck on a hung file system holds, past its timeout.
    let stuck = ReadSlot::take(&r.reading).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(1), r.read(&file))
        .await
        .expect("refused at once, not queued")
        .unwrap_err();
    assert!(matches!(e, FileRefusal::ReadInFlight { .. }), "{e}");
    assert!(e.to_string().contains("still blocked"), "{e}");
    drop(stuck);
    assert_eq!(
        r.read(&file).await.unwrap(),
        b"wasm",
        "free once it returns"
    );
    assert!(
        ReadSlot::take(&r.reading).is_some(),
        "a read that ended frees the slot"
    );
}

#[test]
fn a_file_opened_through_a_directory_become_a_link_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("plugins");
    let outside = root.path().join("outside");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("x.wasm"), b"x").unwrap();
    std::fs::write(dir.join("a.wasm"), b"a").unwrap();
    let r = rules(&dir, 10);
    let deadline = Instant::now() + Duration::from_secs(5);
    let inside = r.admit(&dir.join("a.wasm")).unwrap();
    assert_eq!(r.read_admitted(&inside, &inside, deadline).unwrap(), b"a");
    // `sub` was a directory inside when the path was admitted; a link out when it is opened.
    std::os::unix::fs::symlink(&outside, dir.join("sub")).unwrap();
    let swapped = dir.join("sub/x.wasm");
    let e = r.read_admitted(&swapped, &swapped, deadline).unwrap_err();
    assert!(matches!(e, FileRefusal::OutsideDirs { .. }), "{e}");
    assert!(e.to_string().contains("outside/x.wasm"), "{e}");
}
