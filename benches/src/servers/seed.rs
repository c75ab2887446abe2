//! The seed's server (nebucloud-xds 0.1.0), as published and with the smallest push path.
//!
//! As published: its `ShardedCache` keyed by node id, one snapshot per node, served by its own
//! `XdsServer` with SotW and Delta enabled. It answers requests and never looks at its cache
//! watches, so a snapshot set for a node with an open stream reaches it only if the node asks
//! again.
//!
//! With a push path (`PushAds`): each stream also holds `ShardedCache::create_watch` for its
//! node; when the watch fires, the stream re-runs the seed's own handler for every type it
//! subscribed to, as if the client had re-sent its last request, and sends what the handler
//! returns. Everything else (versions, nonces, encoding, delta bookkeeping) is the seed's code.
//! A node the cache has no snapshot for is given the current one when it connects, as an
//! application over the seed would (the churn benchmark's new nodes); nothing is ever removed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use seed_tonic::{Request, Response, Status, Streaming};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::{free_port, GroupCount, ServerArgs, Updater};
use crate::fixtures::{mesh_resources, seed_snapshot, services};
use crate::seed::cache::{Cache as _, ShardedCache, Snapshot};
use crate::seed::core::{NodeHash, ResourceRegistry, TypeUrl};
use crate::seed::server::services::ads::{
    AdsService, AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use crate::seed::server::services::ServiceState;
use crate::seed::server::{ServerConfig, StreamContext};
use crate::seed::types::envoy::service::discovery::v3::Resource as DeltaResource;
use crate::seed::types::google::protobuf::Any;

/// The seed's cache and the current snapshot: what an application over the seed keeps, since
/// its cache is keyed by node id and a change must be set for every node.
struct SeedNodes {
    cache: Arc<ShardedCache>,
    /// Held while a change is set for every node, so that a node admitted meanwhile gets the
    /// new snapshot or is included in the change.
    current: Mutex<Snapshot>,
}

impl SeedNodes {
    /// Sets `snapshot` for every node the cache holds.
    fn set_all(&self, snapshot: Snapshot) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        for node in self.cache.nodes() {
            self.cache.set_snapshot(node, snapshot.clone());
        }
        *current = snapshot;
    }

    /// Gives a node the cache has never seen the current snapshot.
    fn admit(&self, node: NodeHash) {
        if self.cache.has_snapshot(node) {
            return;
        }
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.cache.has_snapshot(node) {
            self.cache.set_snapshot(node, current.clone());
        }
    }
}

/// Sets a new snapshot for every node, as the seed's API asks: its cache is keyed by node id.
pub(super) struct SeedUpdater {
    nodes: Arc<SeedNodes>,
    services: usize,
    /// Keeps the server running until the process ends (dropping it stops the seed's server).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Updater for SeedUpdater {
    fn update(&mut self, revision: u32) -> anyhow::Result<Option<u64>> {
        let resources = mesh_resources(&services(self.services, revision))?;
        self.nodes
            .set_all(seed_snapshot(&resources, &format!("v{revision}")));
        Ok(None)
    }

    fn groups(&self) -> GroupCount {
        GroupCount {
            count: Some(self.nodes.cache.snapshot_count()),
            ..GroupCount::default()
        }
    }
}

/// The seed's cache with the revision-0 snapshot set for nodes `node-0` … `node-{n-1}`.
fn seeded_cache(args: &ServerArgs) -> anyhow::Result<SeedUpdater> {
    let cache = Arc::new(ShardedCache::with_capacity(args.nodes));
    let snapshot = seed_snapshot(&mesh_resources(&services(args.services, 0))?, "v0");
    for i in 0..args.nodes {
        cache.set_snapshot(NodeHash::from_id(&format!("node-{i}")), snapshot.clone());
    }
    Ok(SeedUpdater {
        nodes: Arc::new(SeedNodes {
            cache,
            current: Mutex::new(snapshot),
        }),
        services: args.services,
        stop: None,
    })
}

/// Starts the seed's server as published. Its default limit of 100 concurrent requests per
/// connection would stall streams beyond the 100th on a connection: it is raised past the
/// HTTP/2 server's own (200), which then applies as it does to ours.
pub(super) async fn start_as_is(args: &ServerArgs) -> anyhow::Result<(SocketAddr, SeedUpdater)> {
    let mut updater = seeded_cache(args)?;
    let server = crate::seed::server::XdsServer::builder()
        .cache(Arc::clone(&updater.nodes.cache))
        .enable_sotw()
        .enable_delta()
        .max_concurrent_streams(1_000)
        .build()
        .map_err(|e| anyhow::anyhow!("seed server: {e}"))?;
    let addr = free_port()?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    updater.stop = Some(stop);
    tokio::spawn(async move {
        if let Err(e) = server.serve_with_shutdown(addr, stopped).await {
            eprintln!("bench-server (seed): {e}");
        }
    });
    Ok((addr, updater))
}

/// The seed's handlers plus a cache watch per stream.
#[derive(Clone)]
struct PushAds {
    sotw: AdsService,
    state: ServiceState,
    nodes: Arc<SeedNodes>,
}

type Out<T> = ReceiverStream<Result<T, Status>>;

#[async_trait::async_trait]
impl AggregatedDiscoveryService for PushAds {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    // The seed's handler returns `tonic::Status` by value; its results are passed on as is.
    #[allow(clippy::result_large_err)]
    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let mut node = StreamNode::new();
            // Per type: the names asked for and the version last sent.
            let mut subscribed: HashMap<String, (Vec<String>, String)> = HashMap::new();
            loop {
                let replies = tokio::select! {
                    req = incoming.next() => {
                        let Some(Ok(req)) = req else { break };
                        let Some(hash) = node.learn(req.node.as_ref().map(|n| n.id.as_str()), &this) else {
                            continue;
                        };
                        let entry = subscribed.entry(req.type_url.clone()).or_default();
                        entry.0.clone_from(&req.resource_names);
                        let error = req.error_detail.as_ref().map(|e| e.message.as_str());
                        vec![this.sotw.process_sotw_request(
                            &node.ctx, &req.type_url, &req.version_info, &req.resource_names, hash,
                            &req.response_nonce, error,
                        )]
                    }
                    Some(_) = next_snapshot(&mut node.watch) => {
                        let Some(hash) = node.hash else { continue };
                        subscribed
                            .iter()
                            .map(|(t, (names, sent))| {
                                this.sotw.process_sotw_request(&node.ctx, t, sent, names, hash, "", None)
                            })
                            .collect()
                    }
                };
                for reply in replies {
                    match reply {
                        Ok(Some(resp)) => {
                            if let Some(s) = subscribed.get_mut(&resp.type_url) {
                                s.1.clone_from(&resp.version_info);
                            }
                            if tx.send(Ok(resp)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let mut node = StreamNode::new();
            // Per type: the seed's own record of what this client has.
            let mut states = HashMap::new();
            loop {
                let replies = tokio::select! {
                    req = incoming.next() => {
                        let Some(Ok(req)) = req else { break };
                        let Some(hash) = node.learn(req.node.as_ref().map(|n| n.id.as_str()), &this) else {
                            continue;
                        };
                        let state = states.entry(req.type_url.clone()).or_default();
                        vec![this.state.delta.process_request(
                            &node.ctx, TypeUrl::new(req.type_url.clone()), state,
                            req.resource_names_subscribe, req.resource_names_unsubscribe, hash,
                        )]
                    }
                    Some(_) = next_snapshot(&mut node.watch) => {
                        let Some(hash) = node.hash else { continue };
                        states
                            .iter_mut()
                            .map(|(t, state)| {
                                this.state.delta.process_request(
                                    &node.ctx, TypeUrl::new(t.clone()), state, vec![], vec![], hash,
                                )
                            })
                            .collect()
                    }
                };
                for reply in replies {
                    let resp = match reply {
                        Ok(Some(r)) => r,
                        Ok(None) => continue,
                        Err(e) => {
                            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                            return;
                        }
                    };
                    let mut resources = Vec::with_capacity(resp.resources.len());
                    for r in resp.resources {
                        let any = match r.resource.encode() {
                            Ok(a) => a,
                            Err(e) => {
                                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                                return;
                            }
                        };
                        resources.push(DeltaResource {
                            name: r.name,
                            version: r.version,
                            resource: Some(Any {
                                type_url: any.type_url,
                                value: any.value,
                            }),
                            ..DeltaResource::default()
                        });
                    }
                    let out = DeltaDiscoveryResponse {
                        system_version_info: resp.system_version_info,
                        resources,
                        type_url: resp.type_url.to_string(),
                        removed_resources: resp.removed_resources,
                        nonce: resp.nonce,
                        ..DeltaDiscoveryResponse::default()
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A stream's node, learnt from the first request that names one, and the seed cache's watch
/// for it.
struct StreamNode {
    ctx: StreamContext,
    hash: Option<NodeHash>,
    watch: Option<crate::seed::cache::Watch>,
}

impl StreamNode {
    fn new() -> Self {
        StreamNode {
            ctx: StreamContext::new(),
            hash: None,
            watch: None,
        }
    }

    /// The node's hash once known; the first request naming a node (`id`) makes it known,
    /// gives it a snapshot if it has none, and opens its watch.
    fn learn(&mut self, id: Option<&str>, ads: &PushAds) -> Option<NodeHash> {
        if let (None, Some(id)) = (self.hash, id) {
            let hash = NodeHash::from_id(id);
            self.ctx.set_node(id.to_owned(), hash);
            ads.nodes.admit(hash);
            self.watch = Some(ads.state.cache.create_watch(hash));
            self.hash = Some(hash);
        }
        self.hash
    }
}

/// The next snapshot the stream's watch delivers; pending until the node is known.
async fn next_snapshot(
    watch: &mut Option<crate::seed::cache::Watch>,
) -> Option<Arc<crate::seed::cache::Snapshot>> {
    match watch {
        Some(w) => w.recv().await,
        None => std::future::pending().await,
    }
}

/// Starts the seed's cache and handlers behind the push path, on tonic 0.12 as the seed is.
pub(super) async fn start_push(args: &ServerArgs) -> anyhow::Result<(SocketAddr, SeedUpdater)> {
    let updater = seeded_cache(args)?;
    let registry = Arc::new(ResourceRegistry::new());
    let cache = &updater.nodes.cache;
    let ads = PushAds {
        sotw: AdsService::new(Arc::clone(cache), Arc::clone(&registry)),
        state: ServiceState::new(Arc::clone(cache), registry, ServerConfig::default()),
        nodes: Arc::clone(&updater.nodes),
    };
    let addr = free_port()?;
    tokio::spawn(async move {
        // gRPC health, as the seed's own server has: the load generator paces connections by it.
        let (_reporter, health) = seed_tonic_health::server::health_reporter();
        let served = seed_tonic::transport::Server::builder()
            .add_service(health)
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve(addr)
            .await;
        if let Err(e) = served {
            eprintln!("bench-server (seed-push): {e}");
        }
    });
    Ok((addr, updater))
}
