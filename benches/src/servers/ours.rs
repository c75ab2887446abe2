//! Our server under load: with a plugin, the whole data path (input store → pipeline → mesh
//! plugin in wasm → cache → streams), optionally followed by a policy plugin that is reloaded
//! when its file changes; without one, static resources set on the cache.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nebucloud_xds::inputs::InputStore;
use nebucloud_xds::pipeline::{Pipeline, PipelineOptions};
use nebucloud_xds::plugins::{
    watch_plugin_files, Document, EngineOptions, InputView, Plugin, PluginChain, PluginEngine,
    PluginLimits, PluginSlots, SlotSpec,
};
use nebucloud_xds::xds::{ByCluster, ByIdentity};
use nebucloud_xds::{Cache, XdsServer};

use super::{GroupCount, Grouping, ServerArgs, Updater};
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
    fn update(&mut self, revision: u32) -> anyhow::Result<Option<u64>> {
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
        Ok(None)
    }

    fn groups(&self) -> GroupCount {
        match self {
            OursUpdater::Pipeline { pipeline, .. } => GroupCount {
                count: Some(pipeline.group_count()),
                evicted: Some(pipeline.evicted_groups()),
                ..GroupCount::default()
            },
            OursUpdater::Static { .. } => GroupCount::default(),
        }
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

/// Starts our server on a free loopback port. Grouped by cluster, every node is in one group,
/// as the replicas of one service are: one computation, one copy of the resources; grouped by
/// identity, every node is computed on its own.
pub(super) async fn start(args: &ServerArgs) -> anyhow::Result<(SocketAddr, OursUpdater)> {
    let cache = Cache::new();
    let (builder, updater) = match &args.plugin {
        Some(path) => {
            let engine = PluginEngine::new(EngineOptions::default())
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let mut specs = vec![slot_spec(&engine, "mesh", path)?];
            if let Some(policy) = &args.policy {
                specs.push(slot_spec(&engine, "policy", policy)?);
            }
            let chain = PluginChain::new(specs.iter().map(|s| Arc::clone(&s.plugin)).collect());
            let store = Arc::new(InputStore::new());
            store.replace_source("bench", documents(args.services, 0));
            let debounce = Duration::from_millis(args.debounce_ms);
            let pipeline = Pipeline::start(
                cache.clone(),
                chain,
                Arc::clone(&store) as Arc<dyn InputView>,
                PipelineOptions {
                    debounce,
                    max_delay: debounce.max(Duration::from_millis(1)) * 10,
                    ..PipelineOptions::default()
                },
            );
            if args.policy.is_some() {
                let slots = PluginSlots::new(engine, pipeline.clone(), specs);
                tokio::spawn(watch_plugin_files(
                    slots,
                    Duration::from_millis(args.reload_interval_ms),
                    Duration::from_millis(args.reload_settle_ms),
                ));
            }
            let builder = match args.grouping {
                Grouping::Cluster => {
                    // Computed before any client comes, so that the memory baseline includes it.
                    pipeline.stream_opened(CLUSTER, &envoy_node(0))?;
                    wait_for_group(&cache).await?;
                    XdsServer::builder(cache.clone()).grouping(ByCluster)
                }
                Grouping::Node => XdsServer::builder(cache.clone()).grouping(ByIdentity),
            }
            .observer(pipeline.clone());
            let updater = OursUpdater::Pipeline {
                store,
                pipeline,
                services: args.services,
            };
            (builder, updater)
        }
        None => {
            anyhow::ensure!(
                args.grouping == Grouping::Cluster && args.policy.is_none(),
                "static resources are one shared set: --grouping node and --policy need --plugin"
            );
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

/// Loads the plugin `name` from `path` with an empty config and the default limits.
fn slot_spec(engine: &PluginEngine, name: &str, path: &Path) -> anyhow::Result<SlotSpec> {
    let wasm = std::fs::read(path).with_context(|| path.display().to_string())?;
    let config = serde_json::json!({});
    let plugin = Plugin::load(engine, name, &wasm, &config, PluginLimits::default())?;
    Ok(SlotSpec {
        name: name.to_owned(),
        path: path.to_path_buf(),
        config,
        limits: PluginLimits::default(),
        plugin: Arc::new(plugin),
    })
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
