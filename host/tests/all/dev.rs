//! `nebucloud-xds dev`: a replaced plugin file and an edited config file each reach a
//! connected node at once, and the command prints which node's resources changed.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use crate::real_plugins::{service, services};
use crate::scripted::{node, Sotw, T_CLUSTER};
use crate::support::app::{plugin_entry, ConfigDir};
use crate::support::{channel_when_up, free_port, plugin_wasm};

const BIN: &str = env!("CARGO_BIN_EXE_nebucloud-xds");
const WAIT: Duration = Duration::from_secs(30);

/// Reads stdout lines until one contains every one of `parts`; returns it.
async fn line_with(lines: &mut Lines<BufReader<ChildStdout>>, parts: &[&str]) -> String {
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if parts.iter().all(|p| line.contains(p)) {
                return line;
            }
        }
        panic!("stdout ended before a line with {parts:?}");
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("no line with {parts:?} within {WAIT:?}"))
}

/// Replaces `path` whole, as a build's copy or an editor's save does.
fn replace(path: &std::path::Path, bytes: &[u8]) {
    let hidden = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&hidden, bytes).unwrap();
    std::fs::rename(&hidden, path).unwrap();
}

#[tokio::test]
async fn dev_reloads_a_plugin_file_and_the_config_file_at_once_and_prints_what_changed() {
    let dir = ConfigDir::new();
    dir.write_input("services.json", &services(&[service("web", "http", 8080)]));
    let tagger = dir.path().join("tagger.wasm");
    std::fs::copy(plugin_wasm("tagger_v1"), &tagger).unwrap();
    let config = format!(
        "[inputs]\ndir = \"inputs\"\n\n{}{}{}",
        plugin_entry("mesh", &plugin_wasm("mesh"), "{ listener_port = 10000 }"),
        plugin_entry("tagger", &tagger, "{}"),
        plugin_entry("retries", &plugin_wasm("retries"), "{ num_retries = 2 }"),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["dev", "--config"])
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    line_with(&mut lines, &["dev: serving xDS on"]).await;
    let channel = channel_when_up(port, WAIT).await;
    let mut envoy = Sotw::open_on(channel, node("dev-envoy")).await;
    envoy.request(T_CLUSTER, &[], "", "").await;
    let first = envoy.recv().await;
    envoy.ack(&first, &[]).await;
    line_with(&mut lines, &["dev: dev-envoy (ADS SotW): ", "+Cluster/web"]).await;

    // A new build of a plugin: the route table it stamps changes.
    replace(&tagger, &std::fs::read(plugin_wasm("tagger_v2")).unwrap());
    line_with(
        &mut lines,
        &["dev: dev-envoy", "~RouteConfiguration/ingress"],
    )
    .await;

    // The config file: another retry count, the same route table changes again.
    replace(
        &path,
        config
            .replace("num_retries = 2", "num_retries = 4")
            .as_bytes(),
    );
    line_with(
        &mut lines,
        &["dev: dev-envoy", "~RouteConfiguration/ingress"],
    )
    .await;
    let _ = child.kill().await;
}
