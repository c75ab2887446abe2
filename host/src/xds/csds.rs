//! Client Status Discovery Service: what each connected client was sent and whether it
//! accepted it, per resource, for `grpcurl`-style and Envoy-ecosystem tools.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use nebucloud_xds_proto::envoy::service::status::v3::client_config::GenericXdsConfig;
use nebucloud_xds_proto::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryService;
use nebucloud_xds_proto::envoy::service::status::v3::{
    ClientConfig, ClientConfigStatus, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use tonic::{Request, Response, Status, Streaming};

use nebucloud_xds_proto::type_url::SECRET;

use super::shared::{CsdsAccess, Shared};
use super::status::{DeliveryState, NodeStatus};
use super::tls::{PeerIdentity, TlsSettings};

/// The CSDS service over the server's node records and cache, on the xDS port.
#[derive(Clone)]
pub(crate) struct Csds {
    shared: Arc<Shared>,
    /// Whether this port answers at all (see [`CsdsAccess`]).
    open: bool,
}

impl Csds {
    /// CSDS as `shared` configures it, on a port that only this machine can reach (`loopback`)
    /// or not.
    pub(crate) fn new(shared: Arc<Shared>, loopback: bool) -> Self {
        let authorized = shared
            .tls
            .as_ref()
            .is_some_and(TlsSettings::authorizes_node_ids);
        let open = match shared.csds {
            CsdsAccess::On => true,
            CsdsAccess::Off => false,
            CsdsAccess::Auto => loopback || authorized,
        };
        Csds { shared, open }
    }

    /// The answer for the peer of `req`, or why it gets none.
    fn serve<T>(
        &self,
        req: &Request<T>,
        body: &ClientStatusRequest,
    ) -> Result<ClientStatusResponse, Status> {
        if !self.open {
            metrics::counter!("csds_requests_refused_total").increment(1);
            return Err(Status::permission_denied(
                "CSDS is off on this port: it can be reached from other machines without mutual \
                 TLS node authorization, and would show every node's configuration. Read \
                 /debug/csds or /debug/nodes on the admin port, or set xds.csds = \"on\"",
            ));
        }
        let peer = PeerIdentity::of(self.shared.tls.as_ref(), req);
        Ok(answer(&self.shared, body, &peer))
    }
}

/// What CSDS answers `req`: the nodes it matches that `peer` may see (under node
/// authorization, the ones its certificate allows), each with what it was sent; `Secret`
/// bodies only when configured.
pub(crate) fn answer(
    shared: &Shared,
    req: &ClientStatusRequest,
    peer: &PeerIdentity,
) -> ClientStatusResponse {
    let config = shared
        .nodes
        .list()
        .into_iter()
        .filter(|n| matches(req, &n.node_id) && peer.authorize(&n.node_id).is_ok())
        .map(|n| client_config(shared, &n, req.exclude_resource_contents))
        .collect();
    ClientStatusResponse { config }
}

fn client_config(shared: &Shared, n: &NodeStatus, exclude_contents: bool) -> ClientConfig {
    let set = shared.cache.get(&n.group);
    let mut generic = Vec::new();
    for (type_url, t) in &n.types {
        let (config_status, client_status) = match t.state {
            None => (ConfigStatus::NotSent, ClientConfigStatus::ClientRequested),
            Some(DeliveryState::Sent) => (ConfigStatus::Stale, ClientConfigStatus::ClientRequested),
            Some(DeliveryState::Acked) => (ConfigStatus::Synced, ClientConfigStatus::ClientAcked),
            Some(DeliveryState::Nacked) => (ConfigStatus::Error, ClientConfigStatus::ClientNacked),
        };
        let error_state = t
            .last_nack
            .as_ref()
            .filter(|_| t.state == Some(DeliveryState::Nacked))
            .map(
                |nack| nebucloud_xds_proto::envoy::admin::v3::UpdateFailureState {
                    details: nack.message.clone(),
                    version_info: nack.rejected_version.clone().unwrap_or_default(),
                    ..Default::default()
                },
            );
        let Some(of_type) = set.as_ref().and_then(|s| s.of_type(type_url)) else {
            continue;
        };
        let show = !exclude_contents && (type_url != SECRET || shared.csds_secrets);
        for r in of_type.iter() {
            generic.push(GenericXdsConfig {
                type_url: type_url.clone(),
                name: r.name().to_owned(),
                version_info: t.sent_version.clone().unwrap_or_default(),
                xds_config: show.then(|| r.to_any()),
                config_status: config_status as i32,
                client_status: client_status as i32,
                error_state: error_state.clone(),
                ..Default::default()
            });
        }
    }
    ClientConfig {
        node: Some(Node {
            id: n.node_id.clone(),
            cluster: n.cluster.clone(),
            user_agent_name: n.user_agent.clone(),
            ..Node::default()
        }),
        generic_xds_configs: generic,
        ..ClientConfig::default()
    }
}

/// Whether a node id passes the request's matchers (none: every node).
fn matches(req: &ClientStatusRequest, id: &str) -> bool {
    if req.node_matchers.is_empty() {
        return true;
    }
    req.node_matchers.iter().any(|m| {
        let Some(pattern) = m.node_id.as_ref().and_then(|s| s.match_pattern.as_ref()) else {
            return true;
        };
        match pattern {
            MatchPattern::Exact(e) => id == e,
            MatchPattern::Prefix(p) => id.starts_with(p.as_str()),
            MatchPattern::Suffix(s) => id.ends_with(s.as_str()),
            MatchPattern::Contains(c) => id.contains(c.as_str()),
            _ => false,
        }
    })
}

#[tonic::async_trait]
impl ClientStatusDiscoveryService for Csds {
    type StreamClientStatusStream =
        Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

    async fn stream_client_status(
        &self,
        req: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        // Refused before anything is read; the peer is fixed for the stream.
        let probe = ClientStatusRequest::default();
        self.serve(&req, &probe)?;
        let peer = PeerIdentity::of(self.shared.tls.as_ref(), &req);
        let mut requests = req.into_inner();
        let shared = Arc::clone(&self.shared);
        Ok(Response::new(Box::pin(async_stream::stream! {
            while let Ok(Some(r)) = requests.message().await {
                yield Ok(answer(&shared, &r, &peer));
            }
        })))
    }

    async fn fetch_client_status(
        &self,
        req: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        Ok(Response::new(self.serve(&req, req.get_ref())?))
    }
}
