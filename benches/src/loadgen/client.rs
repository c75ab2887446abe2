//! One simulated node: an ADS stream (SotW or Delta) that subscribes to clusters, endpoints,
//! listeners and routes, and ACKs every response as Envoy does, recording when it was
//! configured and when it ACKed each new content of one watched resource (the [`Marker`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use nebucloud_xds_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use nebucloud_xds_proto::google::protobuf::Any;
use nebucloud_xds_proto::type_url;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::fixtures::{envoy_node, MARKER_SERVICE};

/// The four types every node subscribes to, in Envoy's order.
pub const TYPES: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];
const ALL_TYPES: u32 = (1 << TYPES.len()) - 1;

/// The protocol variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// State of the World over ADS.
    Sotw,
    /// Incremental (Delta) over ADS.
    Delta,
}

/// The resource whose every new content a node records: a change is "ACKed" by a node when it
/// has ACKed a response carrying a new body of this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Its type.
    pub type_url: &'static str,
    /// Its name: field 1 of both `ClusterLoadAssignment` (`cluster_name`) and
    /// `RouteConfiguration` (`name`), which protobuf encodes first.
    pub name: &'static str,
}

impl Marker {
    /// The endpoints of the first service: what an input change alters.
    pub const INPUTS: Marker = Marker {
        type_url: type_url::ENDPOINT,
        name: MARKER_SERVICE,
    };

    /// The mesh plugin's route table, which the reload benchmark's policy plugin stamps with
    /// its version: what a plugin reload alters.
    pub const ROUTES: Marker = Marker {
        type_url: type_url::ROUTE,
        name: mesh::INGRESS,
    };

    /// The body of this resource among `resources`, found by its leading name field without
    /// decoding the rest.
    fn body<'a>(self, resources: impl IntoIterator<Item = &'a Any>) -> Option<&'a [u8]> {
        let name = self.name.as_bytes();
        resources.into_iter().find_map(|a| {
            let v: &[u8] = &a.value;
            (v.len() > name.len() + 2
                && v[0] == 0x0a
                && usize::from(v[1]) == name.len()
                && &v[2..2 + name.len()] == name)
                .then_some(v)
        })
    }
}

/// What one node has seen, readable while it runs. Times are nanoseconds since the run's
/// epoch; 0 means "not yet".
#[derive(Debug, Default)]
pub struct NodeProgress {
    /// When the stream was opened.
    pub opened_ns: AtomicU64,
    /// When the node had ACKed a response of every type.
    pub configured_ns: AtomicU64,
    acked_types: AtomicU32,
    /// How many distinct contents of the watched resource the node has ACKed.
    pub marker_versions: AtomicU32,
    /// When it ACKed the latest of them.
    pub marker_ack_ns: AtomicU64,
    /// Set when the stream failed or ended.
    pub failed: AtomicBool,
}

impl NodeProgress {
    fn ns(epoch: Instant) -> u64 {
        u64::try_from(epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn acked(&self, epoch: Instant, type_index: usize) {
        let bit = 1 << type_index;
        let before = self.acked_types.fetch_or(bit, Ordering::Relaxed);
        if before != ALL_TYPES && before | bit == ALL_TYPES {
            self.configured_ns.store(Self::ns(epoch), Ordering::Relaxed);
        }
    }

    fn marker_acked(&self, epoch: Instant) {
        self.marker_ack_ns.store(Self::ns(epoch), Ordering::Relaxed);
        self.marker_versions.fetch_add(1, Ordering::Relaxed);
    }
}

/// The two protocol variants' messages, as one node's loop needs them.
trait Exchange: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;

    /// The first request for type `type_url`, carrying `node` if given.
    fn subscribe(type_url: &str, node: Option<Node>) -> Self::Request;
    /// Opens the stream.
    async fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        requests: ReceiverStream<Self::Request>,
    ) -> Result<Streaming<Self::Response>, tonic::Status>;
    /// The response's type.
    fn type_url(response: &Self::Response) -> &str;
    /// The resources it carries.
    fn resources(response: &Self::Response) -> impl Iterator<Item = &Any>;
    /// The ACK Envoy sends for it.
    fn ack(response: Self::Response) -> Self::Request;
}

struct Sotw;

impl Exchange for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn subscribe(type_url: &str, node: Option<Node>) -> DiscoveryRequest {
        DiscoveryRequest {
            node,
            type_url: type_url.to_owned(),
            ..DiscoveryRequest::default()
        }
    }

    async fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        requests: ReceiverStream<DiscoveryRequest>,
    ) -> Result<Streaming<DiscoveryResponse>, tonic::Status> {
        Ok(client
            .stream_aggregated_resources(requests)
            .await?
            .into_inner())
    }

    fn type_url(response: &DiscoveryResponse) -> &str {
        &response.type_url
    }

    fn resources(response: &DiscoveryResponse) -> impl Iterator<Item = &Any> {
        response.resources.iter()
    }

    fn ack(response: DiscoveryResponse) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: response.version_info,
            response_nonce: response.nonce,
            type_url: response.type_url,
            ..DiscoveryRequest::default()
        }
    }
}

struct Delta;

impl Exchange for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn subscribe(type_url: &str, node: Option<Node>) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node,
            type_url: type_url.to_owned(),
            ..DeltaDiscoveryRequest::default()
        }
    }

    async fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        requests: ReceiverStream<DeltaDiscoveryRequest>,
    ) -> Result<Streaming<DeltaDiscoveryResponse>, tonic::Status> {
        Ok(client
            .delta_aggregated_resources(requests)
            .await?
            .into_inner())
    }

    fn type_url(response: &DeltaDiscoveryResponse) -> &str {
        &response.type_url
    }

    fn resources(response: &DeltaDiscoveryResponse) -> impl Iterator<Item = &Any> {
        response
            .resources
            .iter()
            .filter_map(|r| r.resource.as_ref())
    }

    fn ack(response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            response_nonce: response.nonce,
            type_url: response.type_url,
            ..DeltaDiscoveryRequest::default()
        }
    }
}

/// Runs node `index` on `channel` until the stream ends, recording new contents of `marker`.
/// Failures are recorded in `progress`.
pub async fn run_node(
    channel: Channel,
    index: usize,
    protocol: Protocol,
    marker: Marker,
    epoch: Instant,
    progress: &NodeProgress,
) -> Result<(), tonic::Status> {
    let result = match protocol {
        Protocol::Sotw => node_loop::<Sotw>(channel, index, marker, epoch, progress).await,
        Protocol::Delta => node_loop::<Delta>(channel, index, marker, epoch, progress).await,
    };
    progress.failed.store(true, Ordering::Relaxed);
    result
}

async fn node_loop<E: Exchange>(
    channel: Channel,
    index: usize,
    marker: Marker,
    epoch: Instant,
    progress: &NodeProgress,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    for (i, t) in TYPES.iter().enumerate() {
        let _ = tx
            .send(E::subscribe(t, (i == 0).then(|| envoy_node(index))))
            .await;
    }
    progress
        .opened_ns
        .store(NodeProgress::ns(epoch), Ordering::Relaxed);
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = E::open(&mut client, ReceiverStream::new(rx)).await?;
    let mut seen: Option<Vec<u8>> = None;
    while let Some(resp) = responses.message().await? {
        let Some(type_index) = TYPES.iter().position(|t| *t == E::type_url(&resp)) else {
            continue;
        };
        let new_marker = (E::type_url(&resp) == marker.type_url)
            .then(|| marker.body(E::resources(&resp)))
            .flatten()
            .filter(|body| seen.as_deref() != Some(*body))
            .map(<[u8]>::to_vec);
        if tx.send(E::ack(resp)).await.is_err() {
            break;
        }
        progress.acked(epoch, type_index);
        if let Some(body) = new_marker {
            seen = Some(body);
            progress.marker_acked(epoch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found_and_expected(marker: Marker) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let resources =
            crate::fixtures::mesh_resources(&crate::fixtures::services(3, 0)).unwrap_or_default();
        let anys: Vec<Any> = resources
            .iter()
            .filter(|r| r.type_url() == marker.type_url)
            .map(|r| Any {
                type_url: r.type_url().to_owned(),
                value: r.body().clone(),
            })
            .collect();
        let found = marker.body(&anys).map(<[u8]>::to_vec);
        let expected = resources
            .iter()
            .find(|r| r.type_url() == marker.type_url && r.name() == marker.name)
            .map(|r| r.body().to_vec());
        (found, expected)
    }

    #[test]
    fn the_endpoint_marker_is_found_by_its_leading_name() {
        let (found, expected) = found_and_expected(Marker::INPUTS);
        assert!(found.is_some());
        assert_eq!(found, expected);
    }

    #[test]
    fn the_route_marker_is_found_by_its_leading_name() {
        let (found, expected) = found_and_expected(Marker::ROUTES);
        assert!(found.is_some());
        assert_eq!(found, expected);
    }
}
