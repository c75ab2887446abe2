//! The `nebucloud-xds` binary: serves a resource directory and stops cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::scripted::*;

const BIN: &str = env!("CARGO_BIN_EXE_nebucloud-xds");

#[tokio::test]
async fn serve_resource_directory_then_exit_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("edge")).unwrap();
    std::fs::write(
        dir.path().join("edge/cluster.yaml"),
        "'@type': type.googleapis.com/envoy.config.cluster.v3.Cluster\nname: backend\nconnect_timeout: 1s\n",
    )
    .unwrap();
    let port = crate::support::free_port();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--resources",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let channel = crate::support::channel_when_up(port, Duration::from_secs(30)).await;
    let mut ads = nebucloud_xds_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = ads
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(
        nebucloud_xds_proto::envoy::service::discovery::v3::DiscoveryRequest {
            node: Some(node("edge")),
            type_url: T_CLUSTER.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = stream.message().await.unwrap().unwrap();
    assert_eq!(r.resources.len(), 1);
    drop(stream);
    drop(tx);

    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn check_resources_names_the_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("g")).unwrap();
    std::fs::write(
        dir.path().join("g/broken.yaml"),
        "'@type': type.googleapis.com/envoy.config.cluster.v3.Cluster\nname: [x\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-resources")
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.yaml") && err.contains("line 2"),
        "{err}"
    );
}

/// `println!`, `eprintln!` and a trailing `print!` in a plugin become log lines of that plugin
/// and node (info for stdout, warning for stderr); the run succeeds.
#[tokio::test]
async fn a_plugins_stdout_and_stderr_go_to_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let printer = crate::support::plugin_wasm("printer").display().to_string();
    std::fs::write(
        dir.path().join("config.toml"),
        format!("[[plugins]]\nname = \"printer\"\npath = \"{printer}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("node.yaml"),
        "id: envoy-printing\ncluster: test\nuser_agent_name: envoy\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["plugin", "run", "--config"])
        .arg(dir.path().join("config.toml"))
        .arg("--node")
        .arg(dir.path().join("node.yaml"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = |text: &str| {
        err.lines()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no log line with {text:?} in:\n{err}"))
            .to_owned()
    };
    for (text, level) in [
        ("printer: 0 resources for a test node", "INFO"),
        ("printer: a warning on stderr", "WARN"),
        ("printer: one line 3", "WARN"),
        ("printer: no newline", "INFO"),
    ] {
        let l = line(text);
        assert!(
            l.contains(level)
                && l.contains("plugin=\"printer\"")
                && l.contains("node=\"envoy-printing\""),
            "{l}"
        );
    }
}

/// `config check` prints both ports; logs written to a pipe (not a terminal) carry no colour
/// codes, even when the environment does not ask for that.
#[tokio::test]
async fn config_check_prints_both_ports_and_logs_to_a_pipe_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let printer = crate::support::plugin_wasm("printer").display().to_string();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[xds]\nlisten = \"127.0.0.1:18500\"\n[admin]\nlisten = \"127.0.0.1:18501\"\n\
             [[plugins]]\nname = \"printer\"\npath = \"{printer}\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(dir.path().join("config.toml"))
        .env_remove("NO_COLOR")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("xds: 127.0.0.1:18500"), "{stdout}");
    assert!(stdout.contains("admin: 127.0.0.1:18501"), "{stdout}");

    // TLS files are read and parsed as serving reads them.
    std::fs::write(
        dir.path().join("tls.toml"),
        "[xds.tls]\ncert = \"missing-cert.pem\"\nkey = \"missing-key.pem\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(dir.path().join("tls.toml"))
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("missing-cert.pem"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("node.yaml"),
        "id: envoy-printing\ncluster: test\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["plugin", "run", "--config"])
        .arg(dir.path().join("config.toml"))
        .arg("--node")
        .arg(dir.path().join("node.yaml"))
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("printer:"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in piped logs:\n{err}"
    );
}

/// `plugin run --profile` writes a Firefox profiler profile of the plugin's calls, whose
/// functions carry the plugin's own (demangled) names, and says where it is and how to open it.
#[tokio::test]
async fn plugin_run_profile_writes_a_firefox_profile_naming_the_plugins_functions() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = crate::support::plugin_wasm("mesh").display().to_string();
    std::fs::create_dir_all(dir.path().join("inputs")).unwrap();
    std::fs::write(
        dir.path().join("inputs/services.yaml"),
        "kind: Service\nname: hello\nprotocol: http\nendpoints:\n  - { address: 127.0.0.1, port: 8080 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!("[[plugins]]\nname = \"mesh\"\npath = \"{mesh}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("node.yaml"),
        "id: envoy-1\nuser_agent_name: envoy\n",
    )
    .unwrap();
    let profile = dir.path().join("out.json");
    let out = Command::new(BIN)
        .args(["plugin", "run", "--config"])
        .arg(dir.path().join("config.toml"))
        .arg("--node")
        .arg(dir.path().join("node.yaml"))
        .arg("--inputs")
        .arg(dir.path().join("inputs"))
        .arg("--profile")
        .arg(&profile)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // The run's own output is unchanged: the resources, as JSON on stdout.
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!run["resources"].as_array().unwrap().is_empty(), "{run}");
    assert!(
        err.contains(&format!("written to {}", profile.display()))
            && err.contains("https://profiler.firefox.com"),
        "{err}"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
    assert!(
        json["meta"]["version"].is_number(),
        "not a processed profile"
    );
    let thread = &json["threads"][0];
    assert!(thread["samples"]["length"].as_u64().unwrap() > 0);
    let names: Vec<&str> = thread["stringArray"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("mesh::")),
        "no function of the mesh plugin in {names:?}"
    );
}
