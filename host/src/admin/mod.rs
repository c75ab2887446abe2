//! The admin HTTP API (loopback by default): health and readiness, Prometheus metrics, what
//! every node was sent/ACKed/NACKed and holds, the node groups, and plugin status, reload and
//! rollback — each request checked by [`AdminAccess`] (`Host`, JSON changes, token).

mod access;
mod readiness;
mod routes;

pub(crate) use access::valid_allowed_host;
pub use access::{AdminAccess, AdminAccessError, AdminToken};
pub use readiness::Readiness;
pub use routes::{router, serve, AdminState};
