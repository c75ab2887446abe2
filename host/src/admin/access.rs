//! Who may use the admin API: a request must name this server in `Host` (no DNS rebinding), a
//! change must be a JSON request (never a cross-origin "simple" one), and with a token
//! configured every request but the probes must carry it.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use axum::Json;
use tokio::net::TcpListener;

/// The longest token file read: a token is a line, not a document.
const MAX_TOKEN_BYTES: u64 = 4096;

/// The bearer token of the admin API, read once at start. Never shown, not even by `Debug`.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8]>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

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

impl AdminToken {
    /// Reads a token file: trimmed, at most 4 KiB, printable ASCII without spaces (what an
    /// `Authorization` header carries; `openssl rand -hex 32` makes one).
    pub fn read(path: &Path) -> Result<Self, AdminAccessError> {
        let err = |reason: String| AdminAccessError::TokenFile {
            path: path.to_owned(),
            reason,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKEN_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| err(format!("cannot read it: {e}")))?;
        if bytes.len() as u64 > MAX_TOKEN_BYTES {
            return Err(err(format!("larger than {MAX_TOKEN_BYTES} bytes")));
        }
        AdminToken::new(&bytes).map_err(err)
    }

    /// A token from its text, trimmed.
    pub fn new(token: &[u8]) -> Result<Self, String> {
        let token = token.trim_ascii();
        if token.is_empty() {
            return Err("it is empty".into());
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            return Err("a token is printable ASCII without spaces".into());
        }
        Ok(AdminToken(token.into()))
    }

    /// Whether `offered` is the token, in a time that depends on `offered`'s length only.
    fn matches(&self, offered: &[u8]) -> bool {
        let secret = &self.0;
        let mut diff = u8::from(offered.len() != secret.len());
        for (i, b) in offered.iter().enumerate() {
            diff |= b ^ secret[i % secret.len()];
        }
        std::hint::black_box(diff) == 0
    }
}

/// A `Host` that may name this server: from `[admin] allowed_hosts`, with or without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    name: String,
    port: Option<u16>,
}

/// Whether `host` is a name `[admin] allowed_hosts` can hold (`name`, `name:port`,
/// `[v6]:port`).
pub(crate) fn valid_allowed_host(host: &str) -> bool {
    !host.contains(|c: char| c.is_whitespace() || c.is_control() || "/@?#,\\".contains(c))
        && split_host(host).is_some_and(|(name, _)| !name.is_empty())
}

/// `name[:port]` or `[v6][:port]`; `None` for a port that is not one.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        match &host[end + 1..] {
            "" => (&host[..=end], None),
            rest => (&host[..=end], Some(rest.strip_prefix(':')?)),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = port.map(str::parse).transpose().ok()?;
    Some((name, port))
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
            .filter_map(|h| {
                let h = h.to_ascii_lowercase();
                let (name, port) = split_host(&h)?;
                Some(AllowedHost {
                    name: name.to_owned(),
                    port,
                })
            })
            .collect();
        AdminAccess {
            listen,
            allowed_hosts,
            token,
        }
    }

    /// Whether a `Host` (or request authority) names this server, for a request that arrived
    /// at `arrived`. A browser sends the name it resolved, so a page that rebinds its own
    /// name to 127.0.0.1 still sends its own name, and is refused here.
    fn names_this_server(&self, host: &str, arrived: Option<SocketAddr>) -> bool {
        let host = host.to_ascii_lowercase();
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        if self
            .allowed_hosts
            .iter()
            .any(|a| a.name == name && (a.port.is_none() || a.port == port))
        {
            return true;
        }
        let Some(port) = port else { return false };
        let ip = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name)
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
        let ours = |addr: SocketAddr| {
            addr.port() == port
                && (name == "localhost"
                    || ip.is_some_and(|ip| ip.is_loopback() || ip == addr.ip().to_canonical()))
        };
        ours(self.listen) || arrived.is_some_and(ours)
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

/// The credentials of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, credentials) = value.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| credentials.trim_ascii())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(addr: &str) -> AdminAccess {
        AdminAccess::new(
            addr.parse().unwrap(),
            &["Admin.Example".to_owned(), "ops.example:8443".to_owned()],
            None,
        )
    }

    #[test]
    fn a_host_must_name_the_listen_address_loopback_with_its_port_or_an_allowed_name() {
        let a = at("127.0.0.1:18001");
        for ok in [
            "127.0.0.1:18001",
            "localhost:18001",
            "LOCALHOST:18001",
            "[::1]:18001",
            "admin.example",
            "admin.example:9999",
            "ops.example:8443",
        ] {
            assert!(a.names_this_server(ok, None), "{ok}");
        }
        for refused in [
            "evil.example:18001",
            "127.0.0.1:18002",
            "127.0.0.1",
            "localhost",
            "ops.example",
            "ops.example:18001",
            "127.0.0.1:x",
            "[::1",
            "",
            "localhost.evil.example:18001",
        ] {
            assert!(!a.names_this_server(refused, None), "{refused}");
        }
        let wildcard = at("0.0.0.0:18001");
        let arrived = Some("10.1.2.3:18001".parse().unwrap());
        assert!(wildcard.names_this_server("10.1.2.3:18001", arrived));
        assert!(!wildcard.names_this_server("10.9.9.9:18001", arrived));
        let v6 = at("[::1]:18001");
        assert!(v6.names_this_server("[::1]:18001", None));
        assert!(v6.names_this_server("127.0.0.1:18001", None));
    }

    #[test]
    fn a_token_is_compared_whole_and_is_never_shown() {
        let t = AdminToken::new(b"  s3cret\n").unwrap();
        assert!(t.matches(b"s3cret"));
        for wrong in [&b"s3cre"[..], b"s3cret!", b"S3cret", b"", b"s3crets3cret"] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{t:?}"), "AdminToken(…)");
        assert!(AdminToken::new(b" \n").is_err());
        assert!(AdminToken::new(b"two words").is_err());
    }

    #[test]
    fn only_a_bearer_credential_and_a_json_content_type_count() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h).is_none() && !is_json(&h));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(bearer(&h).is_none() && !is_json(&h));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        h.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        assert!(is_json(&h));
    }

    #[test]
    fn off_loopback_needs_a_token_and_the_error_says_why() {
        let token = AdminToken::new(b"t").unwrap();
        let lo = "127.0.0.1:1".parse().unwrap();
        let any = "0.0.0.0:1".parse().unwrap();
        assert!(AdminAccess::check_listen(lo, None).is_ok());
        assert!(AdminAccess::check_listen("[::1]:1".parse().unwrap(), None).is_ok());
        assert!(AdminAccess::check_listen(any, Some(&token)).is_ok());
        let e = AdminAccess::check_listen(any, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a loopback address")
                && e.contains("token_file")
                && e.contains("no TLS"),
            "{e}"
        );
        assert!(valid_allowed_host("a.example:1") && valid_allowed_host("[::1]:2"));
        assert!(
            !valid_allowed_host("http://a")
                && !valid_allowed_host("a:b")
                && !valid_allowed_host("")
        );
    }
}
