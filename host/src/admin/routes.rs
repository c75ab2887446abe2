//! The admin routes, behind [`AdminAccess`].

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio::net::TcpListener;

use super::access::{guard, ArrivedAt};
use super::{AdminAccess, Readiness};
use crate::inputs::InputStore;
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
    /// The input documents, when plugins compute the config.
    pub inputs: Option<Arc<InputStore>>,
    /// The Prometheus recorder's handle, when one is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Readiness checks.
    pub readiness: Arc<Readiness>,
    /// Who may use it.
    pub access: Arc<AdminAccess>,
}

/// Serves the admin API on `listener` until the task is dropped; each request is checked
/// against the address its connection arrived at.
pub async fn serve(listener: TcpListener, state: AdminState) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<ArrivedAt>(),
    )
    .await
}

/// The admin API: every route behind [`AdminAccess`] (the probes behind nothing).
pub fn router(state: AdminState) -> Router {
    let access = Arc::clone(&state.access);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/nodes", get(nodes))
        .route("/debug/nodes/{id}", get(node))
        .route("/debug/nodes/{id}/config", get(node_config))
        .route("/debug/groups", get(groups))
        .route("/debug/inputs", get(inputs))
        .route("/debug/csds", get(csds))
        .route("/debug/plugins", get(plugins))
        .route("/plugins/{name}/reload", post(reload))
        .route("/plugins/{name}/rollback", post(rollback))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(access, guard))
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

/// The input documents and the keys defined by more than one source (which definition wins).
async fn inputs(State(s): State<AdminState>) -> Response {
    let Some(store) = s.inputs else {
        return Json(serde_json::json!({ "documents": 0, "conflicts": [] })).into_response();
    };
    Json(serde_json::json!({ "documents": store.len(), "conflicts": store.conflicts() }))
        .into_response()
}

/// What CSDS answers for every node, as JSON: the operator's view, always served here.
async fn csds(State(s): State<AdminState>) -> Response {
    let answer = s.server.client_status(&Default::default());
    let bytes = prost::Message::encode_to_vec(&answer);
    match Schema::envoy().and_then(|schema| schema.to_json(CLIENT_STATUS_RESPONSE, &bytes)) {
        Ok(json) => Json(json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

const CLIENT_STATUS_RESPONSE: &str =
    "type.googleapis.com/envoy.service.status.v3.ClientStatusResponse";

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

/// The optional body of a reload: a file to load this once, or (`persist`) from then on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    path: Option<PathBuf>,
    #[serde(default)]
    persist: bool,
}

/// A reload: the JSON content type is checked before (see `access`), so an empty body is the
/// plugin's own file and anything else must be a [`ReloadBody`].
async fn reload(State(s): State<AdminState>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(slots) = s.plugins else {
        return not_found("this server runs no plugins".into());
    };
    let body = if body.trim_ascii().is_empty() {
        ReloadBody::default()
    } else {
        match serde_json::from_slice::<ReloadBody>(&body) {
            Ok(b) => b,
            Err(e) => {
                let error = format!("the body is not {{\"path\": \"…\", \"persist\": false}}: {e}");
                let body = Json(serde_json::json!({ "error": error }));
                return (StatusCode::BAD_REQUEST, body).into_response();
            }
        }
    };
    match (body.path, body.persist) {
        (Some(path), true) => reload_response(slots.reload_and_persist(&name, &path).await),
        (None, true) => {
            let error = "persist needs a path: {\"path\": \"…\", \"persist\": true}";
            let body = Json(serde_json::json!({ "error": error }));
            (StatusCode::BAD_REQUEST, body).into_response()
        }
        (path, false) => reload_response(slots.reload(&name, path.as_deref()).await),
    }
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
        Err(e @ ReloadError::OutsidePluginDirs { .. }) => (
            StatusCode::FORBIDDEN,
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
