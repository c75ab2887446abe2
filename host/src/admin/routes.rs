//! The admin routes.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use super::Readiness;
use crate::pipeline::Pipeline;
use crate::plugins::{PluginSlots, ReloadError};
use crate::schema::Schema;
use crate::XdsServer;

/// What the admin API reads and drives.
#[derive(Clone)]
pub struct AdminState {
    /// The xDS server (node records, cache).
    pub server: XdsServer,
    /// The pipeline, when plugins compute the config.
    pub pipeline: Option<Pipeline>,
    /// The plugin slots, when plugins compute the config.
    pub plugins: Option<PluginSlots>,
    /// The Prometheus recorder's handle, when one is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Readiness checks.
    pub readiness: Arc<Readiness>,
}

/// The admin API.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/nodes", get(nodes))
        .route("/debug/nodes/{id}", get(node))
        .route("/debug/nodes/{id}/config", get(node_config))
        .route("/debug/groups", get(groups))
        .route("/debug/plugins", get(plugins))
        .route("/plugins/{name}/reload", post(reload))
        .route("/plugins/{name}/rollback", post(rollback))
        .with_state(state)
}

fn not_found(what: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": what })),
    )
        .into_response()
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let pending = s.readiness.pending();
    if pending.is_empty() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", pending.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    match &s.metrics {
        Some(h) => ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder is installed\n").into_response(),
    }
}

async fn nodes(State(s): State<AdminState>) -> Response {
    Json(s.server.nodes().list()).into_response()
}

async fn node(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    match s.server.nodes().get(&id) {
        Some(n) => Json(n).into_response(),
        None => not_found(format!("node {id:?} is not connected")),
    }
}

/// The node's resources, decoded to JSON: what it is served now.
async fn node_config(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(status) = s.server.nodes().get(&id) else {
        return not_found(format!("node {id:?} is not connected"));
    };
    let Some(set) = s.server.cache().get(&status.group) else {
        return not_found(format!(
            "group {:?} of node {id:?} has no resources yet",
            status.group
        ));
    };
    let schema = match Schema::envoy() {
        Ok(s) => s,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let resources: Vec<serde_json::Value> = set
        .iter()
        .map(|r| {
            let body = schema.to_json(r.type_url(), r.body()).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
            serde_json::json!({ "type_url": r.type_url(), "name": r.name(), "version": r.version(), "resource": body })
        })
        .collect();
    Json(serde_json::json!({ "node": id, "group": status.group, "version": set.version(), "resources": resources })).into_response()
}

/// Every group with its streams and idle time, and the lifecycle's totals.
async fn groups(State(s): State<AdminState>) -> Response {
    let Some(p) = s.pipeline else {
        return Json(serde_json::json!({ "count": 0, "evicted": 0, "groups": [] })).into_response();
    };
    Json(serde_json::json!({
        "count": p.group_count(),
        "evicted": p.evicted_groups(),
        "grace_ms": u64::try_from(p.group_grace().as_millis()).unwrap_or(u64::MAX),
        "groups": p.groups(),
    }))
    .into_response()
}

async fn plugins(State(s): State<AdminState>) -> Response {
    Json(s.plugins.map(|p| p.status()).unwrap_or_default()).into_response()
}

/// The optional body of a reload: a new path for the plugin file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    path: Option<PathBuf>,
}

async fn reload(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    body: Option<Json<ReloadBody>>,
) -> Response {
    let Some(slots) = s.plugins else {
        return not_found("this server runs no plugins".into());
    };
    let path = body.and_then(|Json(b)| b.path);
    reload_response(slots.reload(&name, path.as_deref()).await)
}

async fn rollback(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    let Some(slots) = s.plugins else {
        return not_found("this server runs no plugins".into());
    };
    reload_response(slots.rollback(&name))
}

fn reload_response(result: Result<crate::plugins::ReloadOutcome, ReloadError>) -> Response {
    match result {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e @ ReloadError::UnknownPlugin(_)) => not_found(e.to_string()),
        Err(e @ ReloadError::Unavailable) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e @ ReloadError::Busy) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}
