//! One simulated node: an ADS stream (SotW or Delta) that subscribes to clusters, endpoints,
//! listeners and routes, and ACKs every response as Envoy does, recording when it was
//! configured and when it ACKed each new version of the watched endpoint assignment.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use nebucloud_xds_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use nebucloud_xds_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use nebucloud_xds_proto::google::protobuf::Any;
use nebucloud_xds_proto::type_url;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

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

/// What one node has seen, readable while it runs. Times are nanoseconds since the run's
/// epoch; 0 means "not yet".
#[derive(Debug, Default)]
pub struct NodeProgress {
    /// When the stream was opened.
    pub opened_ns: AtomicU64,
    /// When the node had ACKed a response of every type.
    pub configured_ns: AtomicU64,
    acked_types: AtomicU32,
    /// How many distinct contents of the watched assignment the node has ACKed.
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

/// The body of the watched `ClusterLoadAssignment` among endpoint `resources`, found by its
/// leading `cluster_name` field (field 1, encoded first) without decoding the rest.
fn marker_body<'a>(resources: impl IntoIterator<Item = &'a Any>) -> Option<&'a [u8]> {
    let name = MARKER_SERVICE.as_bytes();
    resources.into_iter().find_map(|a| {
        let v: &[u8] = &a.value;
        (v.len() > name.len() + 2
            && v[0] == 0x0a
            && usize::from(v[1]) == name.len()
            && &v[2..2 + name.len()] == name)
            .then_some(v)
    })
}

/// Runs node `index` on `channel` until the stream ends. Failures are recorded in `progress`.
pub async fn run_node(
    channel: Channel,
    index: usize,
    protocol: Protocol,
    epoch: Instant,
    progress: &NodeProgress,
) -> Result<(), tonic::Status> {
    let result = match protocol {
        Protocol::Sotw => sotw(channel, index, epoch, progress).await,
        Protocol::Delta => delta(channel, index, epoch, progress).await,
    };
    progress.failed.store(true, Ordering::Relaxed);
    result
}

async fn sotw(
    channel: Channel,
    index: usize,
    epoch: Instant,
    progress: &NodeProgress,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    for (i, t) in TYPES.iter().enumerate() {
        let request = DiscoveryRequest {
            node: (i == 0).then(|| envoy_node(index)),
            type_url: (*t).to_owned(),
            ..DiscoveryRequest::default()
        };
        let _ = tx.send(request).await;
    }
    progress
        .opened_ns
        .store(NodeProgress::ns(epoch), Ordering::Relaxed);
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut marker: Option<Vec<u8>> = None;
    while let Some(resp) = responses.message().await? {
        let Some(type_index) = TYPES.iter().position(|t| *t == resp.type_url) else {
            continue;
        };
        let new_marker = (resp.type_url == type_url::ENDPOINT)
            .then(|| marker_body(&resp.resources))
            .flatten()
            .filter(|body| marker.as_deref() != Some(*body))
            .map(<[u8]>::to_vec);
        let ack = DiscoveryRequest {
            version_info: resp.version_info,
            response_nonce: resp.nonce,
            type_url: resp.type_url,
            ..DiscoveryRequest::default()
        };
        if tx.send(ack).await.is_err() {
            break;
        }
        progress.acked(epoch, type_index);
        if let Some(body) = new_marker {
            marker = Some(body);
            progress.marker_acked(epoch);
        }
    }
    Ok(())
}

async fn delta(
    channel: Channel,
    index: usize,
    epoch: Instant,
    progress: &NodeProgress,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    for (i, t) in TYPES.iter().enumerate() {
        let request = DeltaDiscoveryRequest {
            node: (i == 0).then(|| envoy_node(index)),
            type_url: (*t).to_owned(),
            ..DeltaDiscoveryRequest::default()
        };
        let _ = tx.send(request).await;
    }
    progress
        .opened_ns
        .store(NodeProgress::ns(epoch), Ordering::Relaxed);
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut marker: Option<Vec<u8>> = None;
    while let Some(resp) = responses.message().await? {
        let Some(type_index) = TYPES.iter().position(|t| *t == resp.type_url) else {
            continue;
        };
        let new_marker = (resp.type_url == type_url::ENDPOINT)
            .then(|| marker_body(resp.resources.iter().filter_map(|r| r.resource.as_ref())))
            .flatten()
            .filter(|body| marker.as_deref() != Some(*body))
            .map(<[u8]>::to_vec);
        let ack = DeltaDiscoveryRequest {
            response_nonce: resp.nonce,
            type_url: resp.type_url,
            ..DeltaDiscoveryRequest::default()
        };
        if tx.send(ack).await.is_err() {
            break;
        }
        progress.acked(epoch, type_index);
        if let Some(body) = new_marker {
            marker = Some(body);
            progress.marker_acked(epoch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_found_by_its_leading_name() {
        let resources =
            crate::fixtures::mesh_resources(&crate::fixtures::services(3, 0)).unwrap_or_default();
        let anys: Vec<Any> = resources
            .iter()
            .filter(|r| r.type_url() == type_url::ENDPOINT)
            .map(|r| Any {
                type_url: r.type_url().to_owned(),
                value: r.body().clone(),
            })
            .collect();
        let found = marker_body(&anys).map(<[u8]>::to_vec);
        let expected = resources
            .iter()
            .find(|r| r.type_url() == type_url::ENDPOINT && r.name() == MARKER_SERVICE)
            .map(|r| r.body().to_vec());
        assert!(found.is_some());
        assert_eq!(found, expected);
    }
}
