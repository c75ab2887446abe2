//! Which `Host` names this admin API: its address, loopback with its port, the address a
//! request arrived at, or a name in `[admin] allowed_hosts` (no DNS rebinding).

use std::net::{IpAddr, SocketAddr};

use super::AdminAccess;

/// A `Host` that may name this server: from `[admin] allowed_hosts`, with or without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AllowedHost {
    name: String,
    port: Option<u16>,
}

impl AllowedHost {
    /// An `[admin] allowed_hosts` entry, lowercased; `None` for one that is not a host.
    pub(super) fn parse(host: &str) -> Option<Self> {
        let host = host.to_ascii_lowercase();
        let (name, port) = split_host(&host)?;
        Some(AllowedHost {
            name: name.to_owned(),
            port,
        })
    }
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

impl AdminAccess {
    /// Whether a `Host` (or request authority) names this server, for a request that arrived
    /// at `arrived`. A browser sends the name it resolved, so a page that rebinds its own
    /// name to 127.0.0.1 still sends its own name, and is refused here.
    pub(super) fn names_this_server(&self, host: &str, arrived: Option<SocketAddr>) -> bool {
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
