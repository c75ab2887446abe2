//! The admin HTTP API (loopback by default): health and readiness, Prometheus metrics, what
//! every node was sent/ACKed/NACKed and holds, the node groups, and plugin status, reload and
//! rollback.

mod readiness;
mod routes;

pub use readiness::Readiness;
pub use routes::{router, AdminState};
