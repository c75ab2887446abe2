//! `[xds]` and `[admin]`: the two ports, how nodes group, and the bounds on what a client may
//! make the server hold.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{millis, positive, InvalidValue};

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

impl XdsConfig {
    /// Values that parse but cannot work, naming the key.
    pub(super) fn check(&self) -> Result<(), InvalidValue> {
        let x = self;
        let authorizes = x.tls.as_ref().is_some_and(|t| t.authorize_node_ids);
        if authorizes && x.group_by == GroupBy::Cluster {
            return Err(InvalidValue::new(
                "xds.group_by",
                "xds.group_by = \"cluster\" with xds.tls.authorize_node_ids: a node may claim \
                 any cluster, and a group is computed for its first node, so one node would be \
                 served another's config; group by \"identity\" or \"node-id\"",
            ));
        }
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
        Ok(())
    }
}
impl AdminConfig {
    /// `[admin]`: an address off loopback needs a token, and `allowed_hosts` holds host names
    /// (with an optional port), nothing else.
    pub(super) fn check(&self) -> Result<(), InvalidValue> {
        let a = self;
        if !a.listen.ip().to_canonical().is_loopback() && a.token_file.is_none() {
            return Err(InvalidValue::new(
                "admin.listen",
                format!(
                    "admin.listen {} is not a loopback address and admin.token_file is not set: \
                 the admin API reloads plugins and shows every node's config, and has no TLS; \
                 set admin.token_file (and put TLS in front of it) or listen on 127.0.0.1",
                    a.listen
                ),
            ));
        }
        for h in &a.allowed_hosts {
            if !crate::admin::valid_allowed_host(h) {
                return Err(InvalidValue::new(
                    "admin.allowed_hosts",
                    format!(
                        "admin.allowed_hosts has {h:?}: give host names, e.g. \"admin.example\" \
                         or \"admin.example:8443\""
                    ),
                ));
            }
        }
        Ok(())
    }
}
