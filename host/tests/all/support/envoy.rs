//! A real Envoy 1.40 pointed at our xDS server, with its admin API and listeners reachable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use super::http::{http_get, HttpResponse};
use super::{envoy_bin, file_tail, wait_until};

/// How Envoy talks to the control plane: state of the world or delta, one ADS stream or one
/// stream per type (on one HTTP/2 connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XdsMode {
    /// `ads_config.api_type: GRPC`, node on the first message only.
    SotwAds,
    /// `ads_config.api_type: DELTA_GRPC`, node on the first message only.
    DeltaAds,
    /// `api_config_source.api_type: GRPC` for LDS and CDS, node on every request.
    SotwPerType,
    /// `api_config_source.api_type: DELTA_GRPC` for LDS and CDS, node on every request.
    DeltaPerType,
}

impl XdsMode {
    /// Every mode, for tests that must hold in all four.
    pub(crate) const ALL: [XdsMode; 4] = [
        Self::SotwAds,
        Self::DeltaAds,
        Self::SotwPerType,
        Self::DeltaPerType,
    ];

    fn api_type(self) -> &'static str {
        match self {
            Self::SotwAds | Self::SotwPerType => "GRPC",
            Self::DeltaAds | Self::DeltaPerType => "DELTA_GRPC",
        }
    }

    fn is_ads(self) -> bool {
        matches!(self, Self::SotwAds | Self::DeltaAds)
    }
}

/// What to put in Envoy's bootstrap beyond the xDS server and mode.
#[derive(Debug, Clone)]
pub(crate) struct EnvoyOptions {
    /// Port of the xDS server on 127.0.0.1.
    pub(crate) xds_port: u16,
    /// `node.id`.
    pub(crate) node_id: String,
    /// `node.cluster`.
    pub(crate) node_cluster: String,
    /// `node.metadata` (a JSON object).
    pub(crate) metadata: Value,
    /// Protocol variant.
    pub(crate) mode: XdsMode,
    /// `initial_fetch_timeout` of the bootstrap's LDS and CDS sources. Envoy waits this long for
    /// an unanswered first CDS/LDS response before going on; 15 s by default, 2 s here. The EDS
    /// and RDS ones come from the server's own Cluster and Listener resources: an unanswered EDS
    /// there still holds LDS back for its timeout (15 s unless the server sets one).
    pub(crate) initial_fetch_timeout: Duration,
    /// Mutual TLS to the xDS server: (CA, client certificate, client key) PEM files.
    pub(crate) xds_tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl EnvoyOptions {
    /// Defaults: `node.cluster` "test", no metadata, 2 s initial fetch timeout.
    pub(crate) fn new(xds_port: u16, node_id: &str, mode: XdsMode) -> Self {
        Self {
            xds_port,
            node_id: node_id.to_owned(),
            node_cluster: "test".to_owned(),
            metadata: json!({}),
            mode,
            initial_fetch_timeout: Duration::from_secs(2),
            xds_tls: None,
        }
    }

    /// The bootstrap, as JSON (which Envoy reads as YAML).
    pub(crate) fn bootstrap(&self) -> Value {
        let grpc_services = json!([{
            "envoy_grpc": {
                "cluster_name": "xds_cluster",
                // Reconnect within a second when the server restarts (default: up to 30 s).
                "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}}
            }
        }]);
        let fetch = format!("{}s", self.initial_fetch_timeout.as_secs_f64());
        let source = if self.mode.is_ads() {
            json!({"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": fetch})
        } else {
            json!({
                "resource_api_version": "V3",
                "initial_fetch_timeout": fetch,
                "api_config_source": {
                    "api_type": self.mode.api_type(),
                    "transport_api_version": "V3",
                    "grpc_services": grpc_services,
                }
            })
        };
        let mut dynamic = json!({"lds_config": source, "cds_config": source});
        if self.mode.is_ads() {
            dynamic["ads_config"] = json!({
                "api_type": self.mode.api_type(),
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": grpc_services,
            });
        }
        let mut bootstrap = json!({
            "node": {
                "id": self.node_id,
                "cluster": self.node_cluster,
                "locality": {"region": "local", "zone": "a"},
                "metadata": self.metadata,
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "dynamic_resources": dynamic,
            "static_resources": {"clusters": [{
                "name": "xds_cluster",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": self.xds_port
                    }}}
                }]}]},
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                }
            }]}
        });
        if let Some((ca, cert, key)) = &self.xds_tls {
            bootstrap["static_resources"]["clusters"][0]["transport_socket"] = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": "localhost",
                    "common_tls_context": {
                        "alpn_protocols": ["h2"],
                        "tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
                        "validation_context": {"trusted_ca": {"filename": ca}}
                    }
                }
            });
        }
        bootstrap
    }
}

/// A running Envoy, killed on drop. Its bootstrap, admin address file and log (stderr, level
/// warning) live in a temporary directory that lives as long as it does.
pub(crate) struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    admin_port: u16,
}

impl Envoy {
    /// Starts Envoy against `127.0.0.1:xds_port` and returns once its admin API answers. It does
    /// not wait for any xDS resource: use [`Envoy::wait_live`] or poll [`Envoy::config_dump`].
    pub(crate) async fn start(xds_port: u16, node_id: &str, mode: XdsMode) -> anyhow::Result<Self> {
        Self::start_with(EnvoyOptions::new(xds_port, node_id, mode)).await
    }

    /// [`Envoy::start`] with a bootstrap built from `options`.
    pub(crate) async fn start_with(options: EnvoyOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("envoy-").tempdir()?;
        let bootstrap = dir.path().join("bootstrap.yaml");
        std::fs::write(
            &bootstrap,
            serde_json::to_string_pretty(&options.bootstrap())?,
        )?;
        let admin_file = dir.path().join("admin-address");
        let log = std::fs::File::create(dir.path().join("envoy.log"))?;
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&bootstrap)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--base-id", &unique_base_id().to_string()])
            // Killed Envoys leave no shared memory behind to trip a later one.
            .arg("--disable-hot-restart")
            .args(["--concurrency", "1", "-l", "warning"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawning envoy")?;
        let mut envoy = Self {
            child,
            dir,
            admin_port: 0,
        };
        let started = wait_until(
            Duration::from_secs(20),
            Duration::from_millis(50),
            async || {
                if let Some(status) = envoy.child.try_wait()? {
                    bail!("envoy exited with {status}");
                }
                let text = std::fs::read_to_string(&admin_file).unwrap_or_default();
                Ok(text
                    .trim()
                    .rsplit_once(':')
                    .and_then(|(_, port)| port.parse::<u16>().ok()))
            },
        )
        .await;
        match started {
            Ok(port) => envoy.admin_port = port,
            Err(e) => return Err(e.context(format!("envoy did not start:\n{}", envoy.log_tail()))),
        }
        Ok(envoy)
    }

    /// Port of the admin API on 127.0.0.1.
    pub(crate) fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Envoy's stderr and stdout (log level warning): NACK reasons show up here.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    /// The bootstrap Envoy was started with.
    pub(crate) fn bootstrap_path(&self) -> PathBuf {
        self.dir.path().join("bootstrap.yaml")
    }

    /// The last 40 lines of the log, for assertion messages.
    pub(crate) fn log_tail(&self) -> String {
        file_tail(&self.log_path(), 40)
    }

    /// Kills Envoy now (rather than on drop) and waits for it to exit.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET path` on the admin API: status code and (de-chunked) body.
    pub(crate) async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = http_get(self.admin_port, path, "127.0.0.1").await?;
        Ok((response.status, response.body))
    }

    async fn admin_json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.admin_get(path).await?;
        if status != 200 {
            bail!("admin {path}: HTTP {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("admin {path}: not JSON: {body}"))
    }

    /// `/config_dump` as JSON: what Envoy accepted (rejected updates appear as `error_state`).
    pub(crate) async fn config_dump(&self) -> anyhow::Result<Value> {
        self.admin_json("/config_dump").await
    }

    /// `/config_dump?include_eds`: as [`Envoy::config_dump`] plus the endpoints it holds.
    pub(crate) async fn config_dump_with_eds(&self) -> anyhow::Result<Value> {
        self.admin_json("/config_dump?include_eds").await
    }

    /// Names of dynamic listeners Envoy has accepted (active or warming; not rejected-only).
    pub(crate) async fn listener_names(&self) -> anyhow::Result<Vec<String>> {
        let dump = self.config_dump().await?;
        let mut names: Vec<String> = sections(&dump, "dynamic_listeners")
            .filter(|l| l.get("active_state").is_some() || l.get("warming_state").is_some())
            .filter_map(|l| l["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Names of dynamic clusters Envoy has accepted (active or warming).
    pub(crate) async fn cluster_names(&self) -> anyhow::Result<Vec<String>> {
        let dump = self.config_dump().await?;
        let mut names: Vec<String> = sections(&dump, "dynamic_active_clusters")
            .chain(sections(&dump, "dynamic_warming_clusters"))
            .filter_map(|c| c["cluster"]["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The port a listener is bound to (a Listener may ask for port 0), or `None` if Envoy has no
    /// such listener yet.
    pub(crate) async fn listener_port(&self, listener: &str) -> anyhow::Result<Option<u16>> {
        let status = self.admin_json("/listeners?format=json").await?;
        let entries = status["listener_statuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(entries
            .iter()
            .find(|l| l["name"] == listener)
            .and_then(|l| {
                let port = &l["local_address"]["socket_address"]["port_value"];
                port.as_u64().and_then(|p| u16::try_from(p).ok())
            }))
    }

    /// Counters and gauges from `/stats` (histograms left out), e.g.
    /// `control_plane.connected_state` or `cluster_manager.cds.update_rejected`.
    pub(crate) async fn stats(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let (status, body) = self.admin_get("/stats").await?;
        if status != 200 {
            bail!("admin /stats: HTTP {status}");
        }
        Ok(body
            .lines()
            .filter_map(|line| line.split_once(": "))
            .filter_map(|(name, value)| Some((name.to_owned(), value.trim().parse().ok()?)))
            .collect())
    }

    /// One stat by full name; `None` if Envoy has not created it.
    pub(crate) async fn stat(&self, name: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.stats().await?.get(name).copied())
    }

    /// How many times Envoy connected to the xDS server (`cluster.xds_cluster.upstream_cx_total`):
    /// unchanged across an update that arrived on the open stream.
    pub(crate) async fn xds_connections(&self) -> Option<u64> {
        self.stat("cluster.xds_cluster.upstream_cx_total")
            .await
            .unwrap()
    }

    /// Waits for `/ready` to say LIVE, which Envoy does once its initial LDS/CDS fetches are
    /// done (or timed out after `initial_fetch_timeout`).
    pub(crate) async fn wait_live(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_until(timeout, Duration::from_millis(100), async || {
            Ok((self.admin_get("/ready").await?.0 == 200).then_some(()))
        })
        .await
        .with_context(|| format!("envoy never became LIVE:\n{}", self.log_tail()))
    }

    /// `GET path` with `Host: host` through a listener on 127.0.0.1:`port`.
    pub(crate) async fn http_get(
        port: u16,
        path: &str,
        host: &str,
    ) -> anyhow::Result<HttpResponse> {
        http_get(port, path, host).await
    }

    /// The body of `GET path` (`Host: example.com`) through a listener on 127.0.0.1:`port`
    /// when it answers 200; any other answer is an error naming its status and body (which
    /// `wait_until` reports if it never turns 200).
    pub(crate) async fn ok_body(port: u16, path: &str) -> anyhow::Result<String> {
        let r = http_get(port, path, "example.com").await?;
        anyhow::ensure!(r.status == 200, "status {}: {}", r.status, r.body);
        Ok(r.body)
    }
}

/// Entries of `section` (e.g. `dynamic_listeners`) across the config dump's `configs`.
fn sections<'a>(dump: &'a Value, section: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    let configs = dump["configs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    configs
        .iter()
        .flat_map(move |c| c[section].as_array().map(Vec::as_slice).unwrap_or_default())
}

/// Envoy's `--base-id` keys its shared memory and domain sockets: unique per process and test.
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 100_000) * 1_000 + NEXT.fetch_add(1, Ordering::Relaxed) % 1_000
}
