//! Who may use the admin API: a request must name this server in `Host` (no DNS rebinding), a
//! change must be a JSON request (never a cross-origin "simple" one), and with a token
//! configured every request but the probes must carry it.

mod host;
mod token;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use axum::Json;
use tokio::net::TcpListener;

pub(crate) use host::valid_allowed_host;
use host::AllowedHost;
use token::bearer;
pub use token::AdminToken;

/// Why the admin API does not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminAccessError {
    /// `[admin] token_file` is unreadable, empty or not a token.
    #[error("admin.token_file {}: {reason}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An address off loopback and no token: anyone who reaches the port could change plugins
    /// and read every node's config.
    #[error(
        "admin address {addr} (admin.listen or --admin-listen) is not a loopback address and \
         admin.token_file is not set: the admin API reloads plugins and shows every node's \
         config, and has no TLS; set admin.token_file (and put TLS in front of it) or listen \
         on 127.0.0.1"
    )]
    ExposedWithoutToken {
        /// The address.
        addr: SocketAddr,
    },
}

/// The rules every admin request passes.
#[derive(Debug)]
pub struct AdminAccess {
    listen: SocketAddr,
    allowed_hosts: Vec<AllowedHost>,
    token: Option<AdminToken>,
}

impl AdminAccess {
    /// Refuses to serve the admin API at `addr` off loopback without a token: it has no TLS.
    pub fn check_listen(
        addr: SocketAddr,
        token: Option<&AdminToken>,
    ) -> Result<(), AdminAccessError> {
        if addr.ip().to_canonical().is_loopback() {
            return Ok(());
        }
        if token.is_none() {
            return Err(AdminAccessError::ExposedWithoutToken { addr });
        }
        tracing::warn!(%addr, "the admin API listens off loopback without TLS: the token crosses the network in clear unless a TLS proxy fronts it");
        Ok(())
    }

    /// The rules of an admin API bound at `listen`: `Host` must be that address,
    /// `localhost`/`127.0.0.1`/`[::1]` with its port, the address the request arrived at, or
    /// one of `allowed_hosts`; with a `token`, every request but the probes carries it.
    pub fn new(listen: SocketAddr, allowed_hosts: &[String], token: Option<AdminToken>) -> Self {
        let allowed_hosts = allowed_hosts
            .iter()
            .filter_map(|h| AllowedHost::parse(h))
            .collect();
        AdminAccess {
            listen,
            allowed_hosts,
            token,
        }
    }
}

/// The local address a connection arrived at, kept with each of its requests: with a
/// wildcard listen address, the address clients actually dialled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArrivedAt(Option<SocketAddr>);

impl Connected<IncomingStream<'_, TcpListener>> for ArrivedAt {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        ArrivedAt(stream.io().local_addr().ok())
    }
}

/// Why a request was refused; the `reason` label of `admin_requests_refused_total`.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Host,
    ContentType,
    TokenMissing,
    TokenWrong,
}

/// Applies [`AdminAccess`] to every request: `Host`, then (for anything but GET/HEAD) the
/// JSON content type, then the token. `/healthz` and `/readyz` pass untouched: probes
/// (kubelets, load balancers) send neither this server's name nor a token.
pub(super) async fn guard(
    State(access): State<Arc<AdminAccess>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/readyz") {
        return next.run(request).await;
    }
    let arrived = request
        .extensions()
        .get::<ConnectInfo<ArrivedAt>>()
        .and_then(|c| c.0 .0);
    if let Err(refusal) = check(&access, &request, arrived) {
        return refuse(refusal);
    }
    next.run(request).await
}

fn check(
    access: &AdminAccess,
    request: &Request,
    arrived: Option<SocketAddr>,
) -> Result<(), Refusal> {
    let headers = request.headers();
    let mut hosts = headers.get_all(header::HOST).iter().peekable();
    let authority = request.uri().authority().map(|a| a.as_str());
    if hosts.peek().is_none() && authority.is_none() {
        return Err(Refusal::Host);
    }
    let named = hosts
        .map(|h| h.to_str().ok())
        .chain(authority.map(Some))
        .all(|h| h.is_some_and(|h| access.names_this_server(h, arrived)));
    if !named {
        return Err(Refusal::Host);
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) && !is_json(headers) {
        return Err(Refusal::ContentType);
    }
    if let Some(token) = &access.token {
        match bearer(headers) {
            None => return Err(Refusal::TokenMissing),
            Some(offered) if !token.matches(offered) => return Err(Refusal::TokenWrong),
            Some(_) => {}
        }
    }
    Ok(())
}

/// `Content-Type: application/json` (parameters allowed): a type no HTML form can send, so a
/// browser asks the server first (CORS preflight), which this API never allows.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

fn refuse(refusal: Refusal) -> Response {
    let (status, reason, message) = match refusal {
        Refusal::Host => (
            StatusCode::MISDIRECTED_REQUEST,
            "host",
            "the Host header does not name this admin API: use its listen address (or \
             localhost/127.0.0.1/[::1] with its port) or a name in [admin] allowed_hosts",
        ),
        Refusal::ContentType => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "a change through the admin API must be a JSON request (Content-Type: \
             application/json)",
        ),
        Refusal::TokenMissing => (
            StatusCode::UNAUTHORIZED,
            "token",
            "this admin API needs a token: Authorization: Bearer <the token in [admin] token_file>",
        ),
        Refusal::TokenWrong => (
            StatusCode::FORBIDDEN,
            "token",
            "the bearer token is not this admin API's",
        ),
    };
    metrics::counter!("admin_requests_refused_total", "reason" => reason).increment(1);
    let body = Json(serde_json::json!({ "error": message }));
    if matches!(refusal, Refusal::TokenMissing) {
        return (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
    }
    (status, body).into_response()
}
