//! File events drive the server as `serve` builds it: an input file saved and a plugin file
//! renamed into place or written in two halves are each picked up as soon as they are whole,
//! under a 60 s interval and settle window that polling alone would have to wait out; a torn
//! plugin file is refused and the next whole one serves, and one rewritten within a tick of
//! the clock is not missed. The input directory's watch alone (`watch_dir`, wired by hand): a
//! directory given relative to the current one, and one deleted and made again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds::inputs::{watch_dir, DirSource, InputLimits, InputStore, InputView};
use nebucloud_xds::plugins::PluginStatus;
use tokio::time::Instant;

use crate::scripted::TestServer;
use crate::support::app::{plugin_entry, ConfigDir};
use crate::support::{plugin_wasm, wait_until};

/// Generous against the milliseconds events take, and far below the 60 s of [`SLOW`].
const BOUND: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);
/// An interval and a settle window that polling alone cannot beat [`BOUND`] with.
const SLOW: &str = "interval_ms = 60000\nsettle_ms = 60000\n";

/// The server with the tagger plugin loaded from `tagger.wasm` (v1) in `dir`, watching its
/// inputs directory and plugin files with [`SLOW`] timings.
async fn server(dir: &ConfigDir) -> (TestServer, PathBuf) {
    let tagger = dir.path().join("tagger.wasm");
    std::fs::copy(plugin_wasm("tagger_v1"), &tagger).unwrap();
    let config = format!(
        "[inputs]\ndir = \"inputs\"\n{SLOW}\n[reload]\n{SLOW}\n{}",
        plugin_entry("tagger", &tagger, "{}")
    );
    (dir.serve(&config).await, tagger)
}

fn tagger(server: &TestServer) -> PluginStatus {
    server.slots().status().remove(0)
}

/// The version a plugin file's bytes serve as.
fn version(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// Does `act` until `holds`, again every second, within [`BOUND`]: the watches start on their
/// own tasks with the server, and what is done before they watch raises no event for them.
async fn act_until(mut act: impl FnMut(), holds: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + BOUND;
    loop {
        act();
        let again = (Instant::now() + Duration::from_secs(1)).min(deadline);
        while Instant::now() < again {
            if holds() {
                return true;
            }
            tokio::time::sleep(POLL).await;
        }
        if Instant::now() >= deadline {
            return holds();
        }
    }
}

/// Copies `from` beside `to` under a hidden name, then renames it over `to`, as editors and
/// deployment tools save.
fn rename_into_place(from: &Path, to: &Path) {
    let tmp = to.with_file_name(".incoming.tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// Waits until the tagger serves `expected`, within [`BOUND`].
async fn serves(server: &TestServer, expected: &str) -> anyhow::Result<()> {
    wait_until(BOUND, POLL, async || {
        Ok((tagger(server).version == expected).then_some(()))
    })
    .await
}

/// Renames tagger v2 into place until it serves: the plugin watch is watching from then on.
async fn v2_serving(server: &TestServer, path: &Path) -> String {
    let v2 = version(&std::fs::read(plugin_wasm("tagger_v2")).unwrap());
    let served = act_until(
        || rename_into_place(&plugin_wasm("tagger_v2"), path),
        || tagger(server).version == v2,
    )
    .await;
    assert!(served, "v2 never served: {:?}", tagger(server));
    v2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_file_saved_reaches_the_store_without_waiting_for_the_interval() {
    let dir = ConfigDir::new();
    let (server, _) = server(&dir).await;
    let store = server.inputs();
    let web = |port: u16| format!("kind: Service\nname: web\nport: {port}\n");
    let at = |port: u16| {
        store
            .get("Service", "web")
            .is_some_and(|d| d.json.contains(&format!("\"port\":{port}")))
    };
    let renamed = act_until(|| dir.write_input("web.yaml", &web(1)), || at(1)).await;
    assert!(renamed, "a file renamed into place was not published");
    // Written in place: published at its close.
    std::fs::write(dir.input("web.yaml"), web(2)).unwrap();
    let written = wait_until(BOUND, POLL, async || Ok(at(2).then_some(()))).await;
    assert!(written.is_ok(), "a file written in place was not published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_file_renamed_into_place_serves_without_waiting_for_the_interval() {
    let dir = ConfigDir::new();
    let (server, path) = server(&dir).await;
    v2_serving(&server, &path).await;
    let status = tagger(&server);
    assert_eq!(status.loads, 2, "loaded once after the first load");
    assert!(status.rejected.is_none(), "{:?}", status.rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_file_written_in_two_halves_is_loaded_at_its_close_and_its_half_never() {
    let dir = ConfigDir::new();
    let (server, path) = server(&dir).await;
    let v2 = v2_serving(&server, &path).await;
    let v3 = std::fs::read(plugin_wasm("tagger_v3")).unwrap();
    let (first, rest) = v3.split_at(v3.len() / 2);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(first).unwrap();
    file.flush().unwrap();
    // The writer pauses, its file open: no close, no load (and no settle window to wait out).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tagger(&server);
    assert_eq!(status.version, v2, "the old version serves meanwhile");
    assert!(
        status.rejected.is_none(),
        "the half was offered: {status:?}"
    );
    file.write_all(rest).unwrap();
    drop(file);
    serves(&server, &version(&v3)).await.unwrap();
    let status = tagger(&server);
    assert_eq!(status.loads, 3, "v3 loaded once");
    assert!(
        status.rejected.is_none(),
        "the half was offered: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_plugin_file_is_refused_and_the_next_whole_write_serves() {
    let dir = ConfigDir::new();
    let (server, path) = server(&dir).await;
    let v2 = v2_serving(&server, &path).await;
    let v3 = std::fs::read(plugin_wasm("tagger_v3")).unwrap();
    // Closed half-way (a copy cut short): whole as far as events can tell, and refused.
    std::fs::write(&path, &v3[..v3.len() / 2]).unwrap();
    let refused = wait_until(BOUND, POLL, async || {
        Ok(tagger(&server).rejected.is_some().then_some(()))
    })
    .await;
    assert!(refused.is_ok(), "never refused: {:?}", tagger(&server));
    assert_eq!(tagger(&server).version, v2, "the old version keeps serving");
    std::fs::write(&path, &v3).unwrap();
    serves(&server, &version(&v3)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_file_rewritten_in_the_same_mtime_tick_at_the_same_length_serves() {
    let dir = ConfigDir::new();
    let (server, path) = server(&dir).await;
    v2_serving(&server, &path).await;
    // v3 with a one-byte custom section: two files of one length that differ.
    let v3 = |mark: u8| {
        let mut wasm = std::fs::read(plugin_wasm("tagger_v3")).unwrap();
        wasm.extend([0, 3, 1, b'm', mark]);
        wasm
    };
    std::fs::write(&path, v3(b'a')).unwrap();
    serves(&server, &version(&v3(b'a'))).await.unwrap();
    let tick = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, v3(b'b')).unwrap();
    // Two saves within one tick of a coarse clock: the stamp says nothing changed.
    let file = std::fs::File::options().append(true).open(&path).unwrap();
    file.set_modified(tick).unwrap();
    drop(file);
    serves(&server, &version(&v3(b'b'))).await.unwrap();
}

/// Whether `store` holds the Service `name` with `port`.
fn has(store: &InputStore, name: &str, port: u16) -> bool {
    (store.get("Service", name)).is_some_and(|d| d.json.contains(&format!("\"port\":{port}")))
}

fn svc(name: &str, port: u16) -> String {
    format!("kind: Service\nname: {name}\nport: {port}\n")
}

/// Waits until `holds`, within [`BOUND`]; whether it held.
async fn until(holds: impl Fn() -> bool) -> bool {
    wait_until(BOUND, POLL, async || Ok(holds().then_some(())))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_directory_given_relative_to_the_current_one_is_watched_as_its_files() {
    let dir = tempfile::tempdir().unwrap();
    // Up to the root, then down: relative, as `serve --config config.toml` gives `inputs`.
    let up = std::env::current_dir()
        .unwrap()
        .components()
        .skip(1)
        .count();
    let mut relative: PathBuf = std::iter::repeat_n("..", up).collect();
    relative.push(dir.path().strip_prefix("/").unwrap());
    assert!(relative.is_relative() && relative.is_dir(), "{relative:?}");
    let store = Arc::new(InputStore::new());
    let limits = InputLimits {
        settle: Duration::from_secs(60),
        ..InputLimits::default()
    };
    let source = DirSource::with_limits(&relative, Arc::clone(&store), limits).unwrap();
    let mut health = source.health().subscribe();
    let task = tokio::spawn(watch_dir(source, Duration::from_secs(60), |_| {}));
    let first_scan = tokio::time::timeout(BOUND, health.wait_for(|s| s.connected)).await;
    assert!(first_scan.is_ok(), "the watch never scanned");
    std::fs::write(dir.path().join("web.yaml"), svc("web", 1)).unwrap();
    assert!(
        until(|| has(&store, "web", 1)).await,
        "the file's event was not taken for the file's"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_input_directory_keeps_its_documents_and_is_watched_again_once_back() {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("inputs");
    std::fs::create_dir(&dir).unwrap();
    let store = Arc::new(InputStore::new());
    let source = DirSource::new(&dir, Arc::clone(&store)).unwrap();
    let health = source.health();
    // While the directory is gone no event can come: it is looked for every interval.
    let task = tokio::spawn(watch_dir(source, Duration::from_millis(50), |_| {}));
    std::fs::write(dir.join("a.yaml"), svc("a", 1)).unwrap();
    assert!(until(|| has(&store, "a", 1)).await);
    std::fs::remove_dir_all(&dir).unwrap();
    let status = || health.status();
    assert!(
        until(|| status().last_error.is_some()).await,
        "{:?}",
        status()
    );
    assert!(
        !status().connected && has(&store, "a", 1),
        "its documents stay"
    );
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), svc("a", 2)).unwrap();
    assert!(until(|| health.is_connected() && has(&store, "a", 2)).await);
    std::fs::write(dir.join("b.yaml"), svc("b", 1)).unwrap();
    assert!(
        until(|| has(&store, "b", 1)).await,
        "watched again: published without waiting for the 10 s scan"
    );
    task.abort();
}
