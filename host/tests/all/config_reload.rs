//! The config file reloads while serving: a changed plugin `config` table reaches a connected
//! real Envoy on the stream it has (no restart, no reconnect); a chain that breaks a group
//! that works now is refused by the trial and the running chain keeps serving; a file that
//! does not parse is refused and changes nothing.

use std::time::Duration;

use crate::real_plugins::{mesh_config, service, services};
use crate::scripted::TestServer;
use crate::support::app::{plugin_entry, ConfigDir};
use crate::support::backend::HttpBackend;
use crate::support::envoy::{Envoy, XdsMode};
use crate::support::{free_port, plugin_wasm, wait_until};

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// Writes `config.toml` whole, as an editor saves: a hidden file renamed over it.
fn save(dir: &ConfigDir, text: &str) {
    let hidden = dir.path().join(".config.toml.tmp");
    std::fs::write(&hidden, text).unwrap();
    std::fs::rename(&hidden, dir.path().join("config.toml")).unwrap();
}

/// The retry count Envoy holds on its routes, once it holds routes.
async fn num_retries(envoy: &Envoy) -> anyhow::Result<Option<u64>> {
    let dump = envoy.config_dump().await?;
    let text = dump.to_string();
    let Some(at) = text.find("\"num_retries\":") else {
        return Ok(None);
    };
    let digits: String = text[at + "\"num_retries\":".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Ok(digits.parse().ok())
}

/// Waits until Envoy's routes carry `n` retries.
async fn wait_for_retries(envoy: &Envoy, n: u64) {
    wait_until(WAIT, POLL, async || {
        Ok((num_retries(envoy).await? == Some(n)).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_plugin_config_reaches_a_connected_envoy_and_a_chain_the_trial_breaks_is_refused()
{
    let web = HttpBackend::start("web").await.unwrap();
    let dir = ConfigDir::new();
    dir.write_input(
        "services.json",
        &services(&[service("web", "http", web.port())]),
    );
    let port = free_port();
    let config = mesh_config(port, "");
    let app = dir.build(&config).await;
    let server = TestServer::app(app.watch_config(dir.path().join("config.toml"))).await;
    // A node the bad plugin below breaks (it panics on node ids with `canary-fail`).
    let envoy = Envoy::start(server.addr.port(), "canary-fail-envoy", XdsMode::SotwAds)
        .await
        .unwrap();
    let got = wait_until(WAIT, POLL, async || num_retries(&envoy).await).await;
    assert_eq!(
        got.unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail())),
        2
    );
    let connections = envoy.xds_connections().await;

    // The retries plugin's table changes: Envoy gets it on the stream it has.
    let edited = config.replace("num_retries = 2", "num_retries = 5");
    assert_ne!(edited, config);
    save(&dir, &edited);
    wait_for_retries(&envoy, 5).await;
    assert_eq!(envoy.xds_connections().await, connections, "no reconnect");
    assert_eq!(Envoy::ok_body(port, "/web/x").await.unwrap(), "web");

    // A chain that panics on this node: the trial refuses it, the running chain serves on.
    let breaking = format!(
        "{edited}{}",
        plugin_entry("breaker", &plugin_wasm("bad_panic_on_canary"), "{}")
    );
    save(&dir, &breaking);
    let slots = server.slots().clone();
    let refusal = wait_until(WAIT, POLL, async || Ok(slots.chain_rejected()))
        .await
        .unwrap();
    assert!(
        refusal.error.contains("canary on group canary-fail-envoy")
            && refusal.error.contains("plugin breaker"),
        "{}",
        refusal.error
    );
    let names: Vec<String> = slots.status().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["mesh", "retries", "cluster-guard"]);

    // A file emptied (as an in-place write starts) names no plugins: refused, never served.
    save(&dir, "");
    let refusal = wait_until(WAIT, POLL, async || {
        Ok(slots
            .chain_rejected()
            .filter(|r| r.error.contains("names no plugins")))
    })
    .await
    .unwrap();
    assert!(
        refusal.error.contains("serve every node nothing"),
        "{}",
        refusal.error
    );
    assert_eq!(num_retries(&envoy).await.unwrap(), Some(5));

    // A rollback puts back the version before, with the config it was loaded with.
    slots.rollback("retries").unwrap();
    wait_for_retries(&envoy, 2).await;

    // A file that does not parse changes nothing either; the next good one applies.
    save(&dir, "[[plugins]\nname = ");
    save(&dir, &edited.replace("num_retries = 5", "num_retries = 3"));
    wait_for_retries(&envoy, 3).await;
    assert_eq!(
        envoy.xds_connections().await,
        connections,
        "still no reconnect"
    );
    assert!(slots.chain_rejected().is_none(), "a chain serves again");
}
