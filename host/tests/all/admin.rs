//! The production surface of the real binary: `/readyz`, `/metrics` (parsed as Prometheus
//! text) moving with a real Envoy's ACKs and NACKs, `/debug/nodes` showing the NACK's error,
//! the `nodes`/`dump` commands, and SIGTERM with Envoy keeping its config.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::support::backend::HttpBackend;
use crate::support::envoy::{Envoy, XdsMode};
use crate::support::http::http_get;
use crate::support::{free_port, plugin_wasm, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_nebucloud-xds");
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

pub(crate) fn services(address: &str, port: u16) -> String {
    format!("kind: Service\nname: web\nprotocol: http\nendpoints:\n  - {{ address: \"{address}\", port: {port} }}\n")
}

pub(crate) fn write_config(dir: &Path, listener_port: u16) {
    let p = |n: &str| plugin_wasm(n).display().to_string();
    let config = format!(
        "[pipeline]\ndebounce_ms = 20\n[inputs]\ndir = \"inputs\"\n[xds]\ndrain_ms = 1000\n\
         [[plugins]]\nname = \"mesh\"\npath = \"{}\"\nconfig = {{ listener_port = {listener_port} }}\n\
         [[plugins]]\nname = \"cluster-guard\"\npath = \"{}\"\n",
        p("mesh"),
        p("cluster-guard")
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
}

pub(crate) fn metric(text: &str, name: &str, type_label: &str) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && s.labels.get("type") == Some(type_label))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

pub(crate) async fn admin(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    // The admin API refuses a `Host` that does not name it (DNS rebinding): name it.
    let r = http_get(port, path, &format!("127.0.0.1:{port}")).await?;
    Ok((r.status, r.body))
}

pub(crate) async fn start(dir: &Path, xds: u16, admin_port: u16) -> Child {
    start_logging(dir, xds, admin_port, Stdio::null()).await
}

/// The real binary serving `dir/config.toml`, its log going to `stderr`.
pub(crate) async fn start_logging(dir: &Path, xds: u16, admin_port: u16, stderr: Stdio) -> Child {
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join("config.toml"))
        .args([
            "--listen",
            &format!("127.0.0.1:{xds}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn metrics_and_debug_nodes_follow_a_real_envoys_acks_and_nacks_and_sigterm_leaves_envoy_configured(
) {
    let web = HttpBackend::start("web").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("inputs")).unwrap();
    std::fs::write(
        dir.path().join("inputs/services.yaml"),
        services("127.0.0.1", web.port()),
    )
    .unwrap();
    let (xds, admin_port, listener) = (free_port(), free_port(), free_port());
    write_config(dir.path(), listener);
    let mut server = start(dir.path(), xds, admin_port).await;
    let ready = wait_until(WAIT, POLL, async || {
        Ok(admin(admin_port, "/readyz")
            .await
            .ok()
            .filter(|(s, _)| *s == 200))
    })
    .await;
    assert!(ready.is_ok(), "/readyz never said ready");
    assert_eq!(admin(admin_port, "/healthz").await.unwrap().0, 200);

    let envoy = Envoy::start(xds, "envoy-admin", XdsMode::SotwAds)
        .await
        .unwrap();
    let body = wait_until(WAIT, POLL, async || {
        Envoy::ok_body(listener, "/web/").await.map(Some)
    })
    .await;
    assert_eq!(
        body.unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail())),
        "web"
    );
    let (_, text) = admin(admin_port, "/metrics").await.unwrap();
    let acks = metric(&text, "xds_acks_total", "ClusterLoadAssignment");
    assert!(acks >= 1.0, "no EDS ACK counted:\n{text}");
    assert_eq!(
        metric(&text, "xds_nacks_total", "ClusterLoadAssignment"),
        0.0
    );
    assert!(metric(&text, "xds_responses_total", "Listener") >= 1.0);

    // An endpoint address Envoy cannot parse: the plugins accept it, Envoy NACKs it.
    std::fs::write(
        dir.path().join("inputs/services.yaml"),
        services("not-an-ip", web.port()),
    )
    .unwrap();
    let nack = wait_until(WAIT, POLL, async || {
        let (_, nodes) = admin(admin_port, "/debug/nodes").await?;
        let nodes: serde_json::Value = serde_json::from_str(&nodes)?;
        let eds = &nodes[0]["types"]
            ["type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"];
        Ok((eds["state"] == "nacked").then(|| {
            eds["last_nack"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }))
    })
    .await
    .unwrap();
    assert!(nack.contains("not-an-ip"), "the NACK's error text: {nack}");
    let (_, text) = admin(admin_port, "/metrics").await.unwrap();
    assert_eq!(
        metric(&text, "xds_nacks_total", "ClusterLoadAssignment"),
        1.0,
        "exactly one NACK, never re-sent"
    );

    // The command line reads the same records.
    let out = Command::new(BIN)
        .args(["nodes", "--admin", &format!("127.0.0.1:{admin_port}")])
        .output()
        .await
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("envoy-admin") && listing.contains("last NACK"),
        "{listing}"
    );
    let out = Command::new(BIN)
        .args([
            "dump",
            "envoy-admin",
            "--admin",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .output()
        .await
        .unwrap();
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(dump["resources"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["name"] == "ingress")));

    // SIGTERM: the server exits within its drain deadline; Envoy keeps its last config.
    let pid = server.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .expect("exited within the deadline")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let r = Envoy::http_get(listener, "/web/", "example.com")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "web"),
        "Envoy keeps serving its config after the server left"
    );
}

#[tokio::test]
async fn config_check_names_the_bad_key_and_a_missing_plugin_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[xds]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(dir.path().join("config.toml"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    std::fs::write(
        dir.path().join("config.toml"),
        "[[plugins]]\nname = \"gone\"\npath = \"gone.wasm\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("config.toml"))
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("plugin gone") && err.contains("gone.wasm"),
        "{err}"
    );
}

/// A plugin that declares its config type (`export_plugin!(f, config = T)`) is refused at load
/// when its config in the server's file does not decode: `config check` names the plugin and
/// the field, before anything serves.
#[tokio::test]
async fn config_check_names_a_typo_in_a_plugins_config() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = plugin_wasm("mesh").display().to_string();
    let write = |key: &str| {
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[[plugins]]\nname = \"mesh\"\npath = \"{mesh}\"\nconfig = {{ {key} = 10001 }}\n"
            ),
        )
        .unwrap();
    };
    let check = async || {
        Command::new(BIN)
            .args(["config", "check"])
            .arg(dir.path().join("config.toml"))
            .output()
            .await
            .unwrap()
    };
    write("listenr_port");
    let out = check().await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("mesh")
            && err.contains("unknown field `listenr_port`"),
        "{err}"
    );
    write("listener_port");
    let out = check().await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
