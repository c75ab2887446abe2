//! The server's config file (TOML): where to listen, how nodes group, which plugins run in
//! which order with which limits, where inputs come from. Unknown keys are errors that name
//! the key; relative paths are relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::inputs::{InputLimits, DEFAULT_MAX_VALUE_BYTES};
use crate::plugins::PluginLimits;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The xDS port.
    #[serde(default)]
    pub xds: XdsConfig,
    /// The admin HTTP API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Hot reload of plugin files.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Coalescing of input changes.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Where input documents come from.
    #[serde(default)]
    pub inputs: InputsConfig,
    /// The plugin chain, in order.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
}

/// `[xds]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdsConfig {
    /// Listen address (default `127.0.0.1:18000`).
    pub listen: SocketAddr,
    /// `identity` (default: nodes with identical identity share one computation),
    /// `node-id`, or `cluster`.
    pub group_by: GroupBy,
    /// Most names one stream may subscribe to per type (default 50,000).
    pub max_names_per_type: usize,
    /// Most resource types one aggregated stream may subscribe to (default 64).
    pub max_types: Option<usize>,
    /// Longest resource name, type URL or announced version a request may carry, in bytes
    /// (default 4,096).
    pub max_name_bytes: Option<usize>,
    /// Most bytes of names one stream may make the server hold, over all its types and
    /// requests (default 8 MiB).
    pub max_names_bytes: Option<usize>,
    /// Largest node (id, metadata, …, encoded) a stream or fetch may carry, in bytes (default
    /// 64 KiB).
    pub max_node_bytes: Option<usize>,
    /// Types the server does not serve that one stream may wait for (default 4); requests
    /// for more are left unanswered and not stored.
    pub max_unserved_types: Option<usize>,
    /// Heartbeat period for resources with a TTL, in ms (default 10,000).
    pub heartbeat_ms: u64,
    /// TLS (and mutual TLS) on the xDS port; plaintext when absent.
    pub tls: Option<crate::xds::TlsSettings>,
    /// Most connections at once; the next get `RESOURCE_EXHAUSTED` (default: no limit).
    pub max_connections: Option<usize>,
    /// Most concurrent streams per connection (default: no limit).
    pub max_streams_per_connection: Option<u32>,
    /// Largest request decoded / response encoded, in bytes (default 16 MiB).
    pub max_message_bytes: usize,
    /// HTTP/2 keepalive ping interval, in ms (default 30,000): dead peers are noticed.
    pub keepalive_ms: u64,
    /// How long a keepalive ping may go unanswered before the connection is closed, in ms
    /// (default 10,000).
    pub keepalive_timeout_ms: u64,
    /// On SIGTERM/SIGINT: how long open streams may drain after clients were told to go
    /// elsewhere (HTTP/2 GOAWAY), in ms (default 5,000). Then the server exits.
    pub drain_ms: u64,
    /// A connection that has opened no stream this long after it was accepted (TLS handshake
    /// and HTTP/2 preface included) is closed, in ms (default 10,000).
    pub first_request_timeout_ms: Option<u64>,
    /// A connection with no open stream for this long is closed, in ms (default 300,000;
    /// keepalive pings are not activity).
    pub idle_timeout_ms: Option<u64>,
    /// Connections older than this (± 10 %, drawn per connection) are told to go away so that
    /// clients rebalance across replicas, in ms (default: no limit).
    pub max_connection_age_ms: Option<u64>,
    /// How long a connection told to go away may finish its streams, in ms (default 10,000).
    pub go_away_grace_ms: Option<u64>,
    /// Streams a client may open and reset before they are accepted until its connection is
    /// closed (HTTP/2 rapid reset; default 20).
    pub max_pending_reset_streams: Option<usize>,
    /// Streams the server may reset for a client's errors until its connection is closed
    /// (default 1,024).
    pub max_local_error_reset_streams: Option<usize>,
    /// Connections accepted per second after `accept_burst` (default 2,000): a reconnect storm
    /// waits in the backlog, it is never refused for it.
    pub accept_rate: Option<u32>,
    /// Connections accepted at once before `accept_rate` applies (default 10,000).
    pub accept_burst: Option<u32>,
    /// Who may call CSDS on this port: `auto` (default: only on a loopback listener, or under
    /// mutual TLS with node authorization, where each client sees the nodes its certificate
    /// allows), `on` (every client; still filtered under node authorization) or `off`. The
    /// admin port's `/debug/csds` always answers.
    pub csds: crate::xds::CsdsAccess,
    /// Whether CSDS shows the bodies of `Secret` resources (default false: names and versions
    /// only).
    pub csds_secrets: bool,
}

impl Default for XdsConfig {
    fn default() -> Self {
        XdsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 18000)),
            group_by: GroupBy::Identity,
            max_names_per_type: crate::xds::StreamLimits::default().max_names_per_type,
            max_types: None,
            max_name_bytes: None,
            max_names_bytes: None,
            max_node_bytes: None,
            max_unserved_types: None,
            heartbeat_ms: millis(crate::xds::DEFAULT_HEARTBEAT_INTERVAL),
            drain_ms: 5_000,
            tls: None,
            max_connections: None,
            max_streams_per_connection: None,
            max_message_bytes: crate::xds::DEFAULT_MAX_MESSAGE_BYTES,
            keepalive_ms: millis(crate::xds::DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout_ms: millis(crate::xds::DEFAULT_KEEPALIVE_TIMEOUT),
            first_request_timeout_ms: None,
            idle_timeout_ms: None,
            max_connection_age_ms: None,
            go_away_grace_ms: None,
            max_pending_reset_streams: None,
            max_local_error_reset_streams: None,
            accept_rate: None,
            accept_burst: None,
            csds: crate::xds::CsdsAccess::default(),
            csds_secrets: false,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address of the admin HTTP API (default `127.0.0.1:18001`). It has no TLS: an
    /// address that is not loopback is refused at start unless `token_file` is set (and then
    /// put TLS in front of it). See `docs/security.md`.
    pub listen: SocketAddr,
    /// A file holding the bearer token every request but `/healthz` and `/readyz` must carry
    /// (`Authorization: Bearer <token>`), relative to this file; read once at start, trimmed.
    /// An empty or unreadable file stops start-up (default: no token, loopback only).
    pub token_file: Option<PathBuf>,
    /// Names besides the listen address that requests may carry in `Host`, e.g.
    /// `["admin.example.internal"]` (any port) or `["admin.example.internal:8443"]` (that
    /// port). Requests naming anything else are refused with 421 (DNS rebinding), except
    /// `/healthz` and `/readyz` (default: none).
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 18001)),
            token_file: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[reload]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload a plugin when its file changes (default true).
    pub watch: bool,
    /// How often plugin files are checked, in ms (default 250).
    pub interval_ms: u64,
    /// How long a changed file must stay unchanged before it is loaded, in ms (default
    /// 1000): a file still being written is never loaded.
    pub settle_ms: u64,
    /// The directories a reload may read plugin files from, relative to this file (default:
    /// the directories of the configured plugin files). A file is read only if it is a
    /// regular file inside one of them once symlinks are resolved, whether it is named by
    /// `POST /plugins/{name}/reload {"path": …}` or watched.
    pub plugin_dirs: Vec<PathBuf>,
    /// The largest plugin file a reload reads, in bytes (default 64 MiB).
    pub max_plugin_bytes: u64,
    /// How long reading a plugin file for a reload may take, in ms (default 10,000).
    pub read_timeout_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            interval_ms: 250,
            settle_ms: 1000,
            plugin_dirs: Vec::new(),
            max_plugin_bytes: crate::plugins::PluginSlots::DEFAULT_MAX_PLUGIN_BYTES,
            read_timeout_ms: millis(crate::plugins::PluginSlots::DEFAULT_READ_TIMEOUT),
        }
    }
}

/// How nodes map to groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupBy {
    /// Everything a plugin can see of the node.
    Identity,
    /// `node.id`.
    NodeId,
    /// `node.cluster`.
    Cluster,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Quiet time that ends a burst of input changes, in ms (default 100).
    pub debounce_ms: u64,
    /// Longest a change waits for its burst to end, in ms (default 1000).
    pub max_delay_ms: u64,
    /// How long a node group is kept after its last stream closed, in ms (default 300,000:
    /// five minutes). Then its record, cache entry and results are forgotten, and a node that
    /// comes back is computed afresh. `0` forgets a group as its last stream closes (then
    /// clients that only make unary fetches are never served).
    pub group_grace_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            debounce_ms: 100,
            max_delay_ms: 1000,
            group_grace_ms: millis(crate::pipeline::DEFAULT_GROUP_GRACE),
        }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `[inputs]`: where documents come from, and what one source may hold. A `(kind, name)`
/// that several sources define is resolved by precedence — the directory, then etcd, then
/// Kubernetes, a later one winning; within one, the greatest file path or etcd key — and is
/// listed as a conflict (see `docs/architecture.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputsConfig {
    /// A directory of YAML/JSON documents, each with `kind` and `name`.
    pub dir: Option<PathBuf>,
    /// An etcd prefix whose keys each hold such documents.
    pub etcd: Option<EtcdConfig>,
    /// A Kubernetes cluster's objects, as `k8s/<Kind>` documents plus mesh `Service`s.
    pub kubernetes: Option<KubernetesConfig>,
    /// How often the directory is scanned, in ms (default 250).
    pub interval_ms: u64,
    /// How long a changed, added or deleted file must stay unchanged before the store sees
    /// it, in ms (default 200): a file still being written is never published. `0` publishes
    /// what each scan sees.
    pub settle_ms: u64,
    /// Largest document file, in bytes (default 4 MiB); a larger one is refused and keeps its
    /// last good documents.
    pub max_file_bytes: u64,
    /// Most document files read from the directory (default 10,000); past it only the first
    /// ones by path are read.
    pub max_files: usize,
    /// Most documents one source — the directory, the etcd prefix — holds (default 100,000);
    /// a file or key that would exceed it is refused and keeps its last good documents.
    pub max_documents: usize,
}

impl Default for InputsConfig {
    fn default() -> Self {
        let limits = InputLimits::default();
        InputsConfig {
            dir: None,
            etcd: None,
            kubernetes: None,
            interval_ms: 250,
            settle_ms: millis(limits.settle),
            max_file_bytes: limits.max_file_bytes,
            max_files: limits.max_files,
            max_documents: limits.max_documents,
        }
    }
}

impl InputsConfig {
    /// The limits every source is built with.
    pub fn limits(&self) -> InputLimits {
        InputLimits {
            settle: std::time::Duration::from_millis(self.settle_ms),
            max_file_bytes: self.max_file_bytes,
            max_files: self.max_files,
            max_documents: self.max_documents,
            max_value_bytes: self
                .etcd
                .as_ref()
                .map_or(DEFAULT_MAX_VALUE_BYTES, |e| e.max_value_bytes),
        }
    }
}

/// `[inputs.etcd]`: `etcd = { endpoints = ["127.0.0.1:2379"], prefix = "/nebucloud-xds/" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// The cluster's client endpoints, `host:port` or `http://host:port`; at least one.
    pub endpoints: Vec<String>,
    /// Every key under this prefix is read (required: an empty one would read all of etcd).
    pub prefix: String,
    /// Largest value decoded, in bytes (default 1.5 MiB, etcd's own default request limit); a
    /// larger one is refused unread and its key keeps its last good documents.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
}

fn default_max_value_bytes() -> usize {
    DEFAULT_MAX_VALUE_BYTES
}

/// `[inputs.kubernetes]`: `kubernetes = { namespaces = ["shop"], default_namespace = "default",
/// custom = [{ group = "example.com", version = "v1", kind = "Widget", plural = "widgets" }] }`.
/// The client comes from the environment: in-cluster service account, or `KUBECONFIG`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The namespaces to watch; empty (the default) watches every namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Services in this namespace get bare mesh names (`greeter`); those elsewhere are
    /// `<namespace>.<name>` (default `default`).
    #[serde(default = "default_namespace")]
    pub default_namespace: String,
    /// Custom resource kinds to watch besides Services, EndpointSlices and ConfigMaps.
    #[serde(default)]
    pub custom: Vec<CustomResourceKind>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespaces: Vec::new(),
            default_namespace: default_namespace(),
            custom: Vec::new(),
        }
    }
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// A custom resource kind to watch, as its CRD names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomResourceKind {
    /// API group, e.g. `gateway.networking.k8s.io` (empty for the core group).
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `HTTPRoute`; documents are `k8s/<kind>`.
    pub kind: String,
    /// Plural resource name in URLs, e.g. `httproutes`.
    pub plural: String,
    /// Whether objects live in namespaces (default true); cluster-scoped kinds are watched
    /// cluster-wide whatever `namespaces` says.
    #[serde(default = "yes")]
    pub namespaced: bool,
}

fn yes() -> bool {
    true
}

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Its name in logs, metrics and the admin API.
    pub name: String,
    /// The `.wasm` component.
    pub path: PathBuf,
    /// Handed to the plugin's `init` as JSON.
    #[serde(default = "empty_table")]
    pub config: toml::Value,
    /// Per-call limits.
    #[serde(default)]
    pub limits: PluginLimits,
}

fn empty_table() -> toml::Value {
    toml::Value::Table(toml::Table::new())
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (with the key and line for TOML errors).
    pub reason: String,
}

impl Config {
    /// Reads and checks a config file; relative paths in it become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |reason: String| ConfigError {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut names = std::collections::BTreeSet::new();
        for p in &mut config.plugins {
            if !names.insert(p.name.clone()) {
                return Err(err(format!("two plugins are named {:?}", p.name)));
            }
            p.path = base.join(&p.path);
        }
        if let Some(tls) = &mut config.xds.tls {
            tls.cert = base.join(&tls.cert);
            tls.key = base.join(&tls.key);
            if let Some(ca) = &mut tls.client_ca {
                *ca = base.join(&*ca);
            }
        }
        if let Some(dir) = &mut config.inputs.dir {
            *dir = base.join(&*dir);
        }
        if let Some(token) = &mut config.admin.token_file {
            *token = base.join(&*token);
        }
        for dir in &mut config.reload.plugin_dirs {
            // Joined, an empty entry would silently mean the config file's directory.
            if dir.as_os_str().is_empty() {
                return Err(err("reload.plugin_dirs has an empty entry".into()));
            }
            *dir = base.join(&*dir);
        }
        config.check().map_err(err)?;
        Ok(config)
    }

    /// Checks values that parse but cannot work (a zero interval, an empty prefix, a limit of
    /// nothing); the error names the key.
    pub fn check(&self) -> Result<(), String> {
        let positive = |key: &str, value: u64| {
            if value == 0 {
                Err(format!("{key} is 0: it must be at least 1"))
            } else {
                Ok(())
            }
        };
        let x = &self.xds;
        positive("xds.max_names_per_type", x.max_names_per_type as u64)?;
        positive("xds.heartbeat_ms", x.heartbeat_ms)?;
        positive("xds.max_message_bytes", x.max_message_bytes as u64)?;
        positive("xds.keepalive_ms", x.keepalive_ms)?;
        positive("xds.keepalive_timeout_ms", x.keepalive_timeout_ms)?;
        if let Some(max) = x.max_connections {
            positive("xds.max_connections", max as u64)?;
        }
        if let Some(max) = x.max_streams_per_connection {
            positive("xds.max_streams_per_connection", u64::from(max))?;
        }
        for (key, value) in [
            ("xds.max_types", x.max_types.map(|v| v as u64)),
            ("xds.max_name_bytes", x.max_name_bytes.map(|v| v as u64)),
            ("xds.max_names_bytes", x.max_names_bytes.map(|v| v as u64)),
            ("xds.max_node_bytes", x.max_node_bytes.map(|v| v as u64)),
            ("xds.first_request_timeout_ms", x.first_request_timeout_ms),
            ("xds.idle_timeout_ms", x.idle_timeout_ms),
            ("xds.max_connection_age_ms", x.max_connection_age_ms),
            ("xds.go_away_grace_ms", x.go_away_grace_ms),
            (
                "xds.max_pending_reset_streams",
                x.max_pending_reset_streams.map(|v| v as u64),
            ),
            (
                "xds.max_local_error_reset_streams",
                x.max_local_error_reset_streams.map(|v| v as u64),
            ),
            ("xds.accept_rate", x.accept_rate.map(u64::from)),
            ("xds.accept_burst", x.accept_burst.map(u64::from)),
        ] {
            if let Some(v) = value {
                positive(key, v)?;
            }
        }
        positive("reload.interval_ms", self.reload.interval_ms)?;
        positive("reload.max_plugin_bytes", self.reload.max_plugin_bytes)?;
        positive("reload.read_timeout_ms", self.reload.read_timeout_ms)?;
        if self
            .reload
            .plugin_dirs
            .iter()
            .any(|d| d.as_os_str().is_empty())
        {
            return Err("reload.plugin_dirs has an empty entry".into());
        }
        self.check_admin()?;
        positive("pipeline.debounce_ms", self.pipeline.debounce_ms)?;
        positive("pipeline.max_delay_ms", self.pipeline.max_delay_ms)?;
        if self.pipeline.debounce_ms > self.pipeline.max_delay_ms {
            return Err(format!(
                "pipeline.debounce_ms ({}) is longer than pipeline.max_delay_ms ({}): a burst \
                 could never end before its deadline",
                self.pipeline.debounce_ms, self.pipeline.max_delay_ms
            ));
        }
        let i = &self.inputs;
        positive("inputs.interval_ms", i.interval_ms)?;
        positive("inputs.max_file_bytes", i.max_file_bytes)?;
        positive("inputs.max_files", i.max_files as u64)?;
        positive("inputs.max_documents", i.max_documents as u64)?;
        if let Some(etcd) = &self.inputs.etcd {
            positive("inputs.etcd.max_value_bytes", etcd.max_value_bytes as u64)?;
            if etcd.endpoints.is_empty() {
                return Err("inputs.etcd.endpoints is empty: give at least one".into());
            }
            if etcd.endpoints.iter().any(|e| e.trim().is_empty()) {
                return Err("inputs.etcd.endpoints has an empty endpoint".into());
            }
            if etcd.prefix.is_empty() {
                return Err("inputs.etcd.prefix is empty: it would read all of etcd".into());
            }
        }
        for p in &self.plugins {
            if p.name.trim().is_empty() {
                return Err("plugins.name is empty: every plugin needs a name".into());
            }
            let key = |field: &str| format!("plugins.{}.limits.{field}", p.name);
            positive(&key("deadline_ms"), p.limits.deadline_ms)?;
            positive(&key("memory_bytes"), p.limits.memory_bytes as u64)?;
            positive(&key("max_input_bytes"), p.limits.max_input_bytes as u64)?;
            positive(&key("max_output_bytes"), p.limits.max_output_bytes as u64)?;
            positive(&key("max_reads"), p.limits.max_reads as u64)?;
            positive(&key("max_read_bytes"), p.limits.max_read_bytes as u64)?;
            positive(
                &key("max_document_bytes"),
                p.limits.max_document_bytes as u64,
            )?;
        }
        Ok(())
    }
}

impl Config {
    /// `[admin]`: an address off loopback needs a token, and `allowed_hosts` holds host names
    /// (with an optional port), nothing else.
    fn check_admin(&self) -> Result<(), String> {
        let a = &self.admin;
        if !a.listen.ip().to_canonical().is_loopback() && a.token_file.is_none() {
            return Err(format!(
                "admin.listen {} is not a loopback address and admin.token_file is not set: \
                 the admin API reloads plugins and shows every node's config, and has no TLS; \
                 set admin.token_file (and put TLS in front of it) or listen on 127.0.0.1",
                a.listen
            ));
        }
        for h in &a.allowed_hosts {
            if !crate::admin::valid_allowed_host(h) {
                return Err(format!(
                    "admin.allowed_hosts has {h:?}: give host names, e.g. \"admin.example\" or \
                     \"admin.example:8443\""
                ));
            }
        }
        Ok(())
    }

    /// The defaults, for serving a static resource directory (no plugins).
    pub fn default_for_resources() -> Self {
        Config {
            xds: XdsConfig::default(),
            admin: AdminConfig::default(),
            reload: ReloadConfig::default(),
            pipeline: PipelineConfig::default(),
            inputs: InputsConfig::default(),
            plugins: Vec::new(),
        }
    }
}

impl PluginConfig {
    /// The plugin's config as JSON, for its `init`.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_input_takes_namespaces_a_default_namespace_and_custom_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&p, text).unwrap();
            Config::load(&p).map_err(|e| e.to_string())
        };
        assert!(load("").unwrap().inputs.kubernetes.is_none());
        assert_eq!(
            load("[inputs.kubernetes]\n").unwrap().inputs.kubernetes,
            Some(KubernetesConfig::default())
        );
        let c = load(concat!(
            "[inputs]\nkubernetes = { namespaces = [\"shop\", \"default\"], default_namespace = \"shop\", ",
            "custom = [{ group = \"example.com\", version = \"v1\", kind = \"Widget\", plural = \"widgets\" }] }\n",
        ))
        .unwrap();
        let k = c.inputs.kubernetes.unwrap();
        assert_eq!(k.namespaces, ["shop", "default"]);
        assert_eq!(k.default_namespace, "shop");
        let widget = CustomResourceKind {
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            namespaced: true,
        };
        assert_eq!(k.custom, [widget]);
        let e = load("[inputs.kubernetes]\nnamespace = [\"a\"]\n").unwrap_err();
        assert!(e.contains("namespace"), "{e}");
        let e =
            load("[[inputs.kubernetes.custom]]\ngroup = \"g\"\nversion = \"v1\"\nkind = \"K\"\n")
                .unwrap_err();
        assert!(e.contains("plural"), "{e}");
    }

    #[test]
    fn values_that_cannot_work_are_errors_that_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&p, text).unwrap();
            Config::load(&p).map_err(|e| e.to_string())
        };
        for (text, key) in [
            ("[reload]\ninterval_ms = 0\n", "reload.interval_ms"),
            ("[xds]\nheartbeat_ms = 0\n", "xds.heartbeat_ms"),
            ("[xds]\nkeepalive_ms = 0\n", "xds.keepalive_ms"),
            ("[xds]\nmax_connections = 0\n", "xds.max_connections"),
            ("[xds]\nmax_names_per_type = 0\n", "xds.max_names_per_type"),
            ("[pipeline]\nmax_delay_ms = 0\n", "pipeline.max_delay_ms"),
            (
                "[pipeline]\ndebounce_ms = 500\nmax_delay_ms = 100\n",
                "pipeline.debounce_ms",
            ),
            (
                "[inputs]\netcd = { endpoints = [\"a:1\"], prefix = \"\" }\n",
                "inputs.etcd.prefix",
            ),
            (
                "[[plugins]]\nname = \"m\"\npath = \"m.wasm\"\nlimits = { deadline_ms = 0 }\n",
                "plugins.m.limits.deadline_ms",
            ),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(key), "{text:?}: {e}");
        }
        let c = load("[pipeline]\ngroup_grace_ms = 0\n").unwrap();
        assert_eq!(
            c.pipeline.group_grace_ms, 0,
            "a zero grace is allowed: forget at once"
        );
        assert_eq!(
            load("").unwrap().pipeline.group_grace_ms,
            300_000,
            "five minutes by default"
        );
    }

    #[test]
    fn admin_and_plugin_file_keys_resolve_against_the_file_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&p, text).unwrap();
            Config::load(&p).map_err(|e| e.to_string())
        };
        let c = load("").unwrap();
        assert_eq!((c.admin.token_file, c.admin.allowed_hosts.len()), (None, 0));
        assert!(
            c.reload.plugin_dirs.is_empty(),
            "default: the plugin files' directories"
        );
        assert_eq!(
            (c.reload.max_plugin_bytes, c.reload.read_timeout_ms),
            (64 << 20, 10_000)
        );
        let c = load(concat!(
            "[admin]\nlisten = \"0.0.0.0:18001\"\ntoken_file = \"secret/token\"\n",
            "allowed_hosts = [\"admin.example\", \"[fd00::1]:8443\"]\n",
            "[reload]\nplugin_dirs = [\"plugins\", \"/opt/wasm\"]\nmax_plugin_bytes = 1024\n",
            "read_timeout_ms = 50\n",
        ))
        .unwrap();
        assert_eq!(c.admin.token_file, Some(dir.path().join("secret/token")));
        assert_eq!(
            c.reload.plugin_dirs,
            [dir.path().join("plugins"), PathBuf::from("/opt/wasm")]
        );
        assert_eq!(
            (c.reload.max_plugin_bytes, c.reload.read_timeout_ms),
            (1024, 50)
        );
        for (text, key) in [
            ("[admin]\nlisten = \"0.0.0.0:18001\"\n", "admin.token_file"),
            (
                "[admin]\nlisten = \"[::]:18001\"\n",
                "not a loopback address",
            ),
            (
                "[admin]\nallowed_hosts = [\"http://a\"]\n",
                "admin.allowed_hosts",
            ),
            (
                "[admin]\nallowed_hosts = [\"a:port\"]\n",
                "admin.allowed_hosts",
            ),
            ("[admin]\ntoken = \"x\"\n", "token"),
            (
                "[reload]\nmax_plugin_bytes = 0\n",
                "reload.max_plugin_bytes",
            ),
            ("[reload]\nread_timeout_ms = 0\n", "reload.read_timeout_ms"),
            ("[reload]\nplugin_dirs = [\"\"]\n", "reload.plugin_dirs"),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[xds]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("lisen") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn plugin_paths_are_relative_to_the_file_and_config_becomes_json() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[[plugins]]\nname = \"mesh\"\npath = \"mesh.wasm\"\nconfig = { listener_port = 10000 }\nlimits = { deadline_ms = 50 }\n").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.plugins[0].path, dir.path().join("mesh.wasm"));
        assert_eq!(c.plugins[0].config_json()["listener_port"], 10000);
        assert_eq!(c.plugins[0].limits.deadline_ms, 50);
        assert_eq!(
            c.plugins[0].limits.memory_bytes,
            PluginLimits::default().memory_bytes
        );
        assert_eq!(c.xds.group_by, GroupBy::Identity);
    }

    #[test]
    fn an_etcd_input_needs_endpoints_and_a_prefix_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&p, text).unwrap();
            Config::load(&p).map_err(|e| e.to_string())
        };
        let c = load("[inputs]\netcd = { endpoints = [\"127.0.0.1:2379\"], prefix = \"/nx/\" }\n")
            .unwrap();
        let etcd = c.inputs.etcd.unwrap();
        assert_eq!(
            (etcd.endpoints, etcd.prefix),
            (vec!["127.0.0.1:2379".to_owned()], "/nx/".to_owned())
        );
        assert!(load("").unwrap().inputs.etcd.is_none());
        let e =
            load("[inputs.etcd]\nendpoints = [\"a:1\"]\nprefix = \"/\"\nprefx = 1\n").unwrap_err();
        assert!(e.contains("prefx"), "{e}");
        let e = load("[inputs.etcd]\nendpoints = [\"a:1\"]\n").unwrap_err();
        assert!(e.contains("prefix"), "{e}");
        let e = load("[inputs.etcd]\nendpoints = []\nprefix = \"/\"\n").unwrap_err();
        assert!(e.contains("inputs.etcd.endpoints"), "{e}");
    }

    #[test]
    fn input_limits_have_defaults_reach_the_sources_and_zero_is_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&p, text).unwrap();
            Config::load(&p).map_err(|e| e.to_string())
        };
        let c = load("").unwrap();
        assert_eq!(c.inputs.interval_ms, 250);
        assert_eq!(c.inputs.limits(), InputLimits::default());
        assert_eq!(InputLimits::default().max_file_bytes, 4 << 20);
        let c = load(concat!(
            "[inputs]\nsettle_ms = 0\nmax_file_bytes = 10\nmax_files = 2\nmax_documents = 3\n",
            "etcd = { endpoints = [\"a:1\"], prefix = \"/\", max_value_bytes = 5 }\n",
        ))
        .unwrap();
        let limits = c.inputs.limits();
        assert_eq!(limits.settle, std::time::Duration::ZERO, "0 is allowed");
        let caps = (limits.max_file_bytes, limits.max_files);
        assert_eq!((caps, limits.max_documents), ((10, 2), 3));
        assert_eq!(limits.max_value_bytes, 5);
        for key in [
            "interval_ms",
            "max_file_bytes",
            "max_files",
            "max_documents",
        ] {
            let e = load(&format!("[inputs]\n{key} = 0\n")).unwrap_err();
            assert!(e.contains(&format!("inputs.{key}")), "{e}");
        }
        let e = load("[inputs.etcd]\nendpoints = [\"a:1\"]\nprefix = \"/\"\nmax_value_bytes = 0\n")
            .unwrap_err();
        assert!(e.contains("inputs.etcd.max_value_bytes"), "{e}");
        let e = load("[inputs]\nsettle = 1\n").unwrap_err();
        assert!(e.contains("settle"), "{e}");
    }
}
