//! The seed's own server, as published (nebucloud-xds 0.1.0): its `ShardedCache` keyed by
//! node id, one snapshot per node, served by its `XdsServer` with SotW and Delta enabled.

use std::net::SocketAddr;
use std::sync::Arc;

use seed::cache::{Cache as _, ShardedCache};
use seed::core::NodeHash;

use super::{free_port, ServerArgs, Updater};
use crate::fixtures::{mesh_resources, seed_snapshot, services};

/// Sets a new snapshot for every node, as the seed's API asks: its cache is keyed by node id.
pub(super) struct SeedUpdater {
    pub(super) cache: Arc<ShardedCache>,
    pub(super) nodes: Vec<NodeHash>,
    pub(super) services: usize,
    /// Keeps the server running until the process ends (dropping it stops the seed's server).
    pub(super) stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Updater for SeedUpdater {
    fn update(&mut self, revision: u32) -> anyhow::Result<()> {
        let resources = mesh_resources(&services(self.services, revision))?;
        let snapshot = seed_snapshot(&resources, &format!("v{revision}"));
        for node in &self.nodes {
            self.cache.set_snapshot(*node, snapshot.clone());
        }
        Ok(())
    }
}

/// The seed's cache with the revision-0 snapshot set for nodes `node-0` … `node-{n-1}`.
pub(super) fn seeded_cache(args: &ServerArgs) -> anyhow::Result<SeedUpdater> {
    let cache = Arc::new(ShardedCache::with_capacity(args.nodes));
    let nodes: Vec<NodeHash> = (0..args.nodes)
        .map(|i| NodeHash::from_id(&format!("node-{i}")))
        .collect();
    let mut updater = SeedUpdater {
        cache,
        nodes,
        services: args.services,
        stop: None,
    };
    updater.update(0)?;
    Ok(updater)
}

/// Starts the seed's server. Its default of 100 concurrent requests per connection would
/// stall streams beyond the 100th on a connection, so it is raised to HTTP/2's own limit.
pub(super) async fn start(args: &ServerArgs) -> anyhow::Result<(SocketAddr, SeedUpdater)> {
    let mut updater = seeded_cache(args)?;
    let server = seed::server::XdsServer::builder()
        .cache(Arc::clone(&updater.cache))
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
