//! Our server under load: with a plugin, the whole data path (input store → pipeline → mesh
//! plugin in wasm → cache → streams); without one, static resources set on the cache.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nebucloud_xds::inputs::InputStore;
use nebucloud_xds::pipeline::{Pipeline, PipelineOptions};
use nebucloud_xds::plugins::{
    Document, EngineOptions, InputView, Plugin, PluginChain, PluginEngine, PluginLimits,
};
use nebucloud_xds::xds::{ByCluster, NodeObserver};
use nebucloud_xds::{Cache, XdsServer};

use super::{ServerArgs, Updater};
use crate::fixtures::{envoy_node, mesh_set, service_json, services, CLUSTER};

/// Applies input changes to our server.
pub(super) enum OursUpdater {
    /// Through the input store and the pipeline.
    Pipeline {
        store: Arc<InputStore>,
        pipeline: Pipeline,
        services: usize,
    },
    /// Straight onto the cache.
    Static { cache: Cache, services: usize },
}

impl Updater for OursUpdater {
    fn update(&mut self, revision: u32) -> anyhow::Result<()> {
        match self {
            OursUpdater::Pipeline {
                store,
                pipeline,
                services,
            } => {
                let changed = store.replace_source("bench", documents(*services, revision));
                pipeline.inputs_changed(changed);
            }
            OursUpdater::Static { cache, services } => {
                cache.set_shared(CLUSTER, mesh_set(*services, revision)?);
            }
        }
        Ok(())
    }
}

fn documents(n: usize, revision: u32) -> Vec<Document> {
    services(n, revision)
        .into_iter()
        .map(|(name, svc)| Document {
            kind: "Service".to_owned(),
            name,
            json: service_json(&svc).into(),
        })
        .collect()
}

/// Starts our server on a free loopback port. Every node is in one group (its cluster), as
/// the replicas of one service are: one computation, one copy of the resources.
pub(super) async fn start(args: &ServerArgs) -> anyhow::Result<(SocketAddr, OursUpdater)> {
    let cache = Cache::new();
    let (builder, updater) = match &args.plugin {
        Some(path) => {
            let wasm = std::fs::read(path).with_context(|| path.display().to_string())?;
            let engine = PluginEngine::new(EngineOptions::default())
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let plugin = Plugin::load(
                &engine,
                "mesh",
                &wasm,
                &serde_json::json!({}),
                PluginLimits::default(),
            )?;
            let store = Arc::new(InputStore::new());
            store.replace_source("bench", documents(args.services, 0));
            let debounce = Duration::from_millis(args.debounce_ms);
            let pipeline = Pipeline::start(
                cache.clone(),
                PluginChain::new(vec![Arc::new(plugin)]),
                Arc::clone(&store) as Arc<dyn InputView>,
                PipelineOptions {
                    debounce,
                    max_delay: debounce.max(Duration::from_millis(1)) * 10,
                    ..PipelineOptions::default()
                },
            );
            // Computed before any client comes, so that the memory baseline includes it.
            pipeline.node_connected(CLUSTER, &envoy_node(0));
            wait_for_group(&cache).await?;
            let builder = XdsServer::builder(cache.clone())
                .grouping(ByCluster)
                .observer(pipeline.clone());
            let updater = OursUpdater::Pipeline {
                store,
                pipeline,
                services: args.services,
            };
            (builder, updater)
        }
        None => {
            cache.set_shared(CLUSTER, mesh_set(args.services, 0)?);
            let builder = XdsServer::builder(cache.clone()).grouping(ByCluster);
            let updater = OursUpdater::Static {
                cache,
                services: args.services,
            };
            (builder, updater)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = builder.build();
    tokio::spawn(async move {
        if let Err(e) = server
            .serve_with_shutdown(listener, std::future::pending())
            .await
        {
            eprintln!("bench-server: {e}");
        }
    });
    Ok((addr, updater))
}

async fn wait_for_group(cache: &Cache) -> anyhow::Result<()> {
    let started = Instant::now();
    while cache.get(CLUSTER).is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the mesh plugin produced no resources in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
