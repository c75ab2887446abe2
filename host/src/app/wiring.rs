//! From config sections to parts: the plugins, the inputs, the pipeline's and the xDS
//! server's options, and the adapter that tells the pipeline when a group's nodes come and go.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds_proto::envoy::config::core::v3::Node;

use super::AppError;
use crate::config::{Config, GroupBy};
use crate::inputs::{DirSource, DocumentFileError, InputLimits, InputStore};
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::plugins::{NodeView, Plugin, PluginChain, PluginEngine, SlotSpec};
use crate::xds::{
    ByCluster, ByIdentity, ByNodeId, NodeObserver, StreamLimits, Transport, XdsServer,
    XdsServerBuilder, DEFAULT_ACCEPT_BURST, DEFAULT_ACCEPT_RATE,
};
use crate::Cache;

/// The xDS server tells the pipeline when a group's nodes come and go: the pipeline computes a
/// group when it is first needed and forgets it a grace period after its last stream.
impl NodeObserver for Pipeline {
    fn node_connected(
        &self,
        group: &str,
        node: &Node,
        transport: Transport,
    ) -> Result<(), tonic::Status> {
        let transport = crate::plugins::Transport {
            aggregated: transport.aggregated,
            incremental: transport.incremental,
        };
        self.stream_opened(group, NodeView::new(node.clone(), transport))
            .map_err(|e| tonic::Status::resource_exhausted(e.to_string()))
    }

    fn node_disconnected(&self, group: &str) {
        self.stream_closed(group);
    }
}

/// Loads every plugin of the config, in order; the first that fails stops everything with
/// its name, file and reason.
pub fn load_plugins(config: &Config, engine: &PluginEngine) -> Result<Vec<SlotSpec>, AppError> {
    let mut plugins = Vec::new();
    for p in &config.plugins {
        let wasm = std::fs::read(&p.path).map_err(|source| AppError::PluginFile {
            name: p.name.clone(),
            path: p.path.clone(),
            source,
        })?;
        let plugin =
            Plugin::load(engine, &p.name, &wasm, &p.config_json(), p.limits).map_err(|source| {
                AppError::Plugin {
                    name: p.name.clone(),
                    path: p.path.clone(),
                    source,
                }
            })?;
        tracing::info!(plugin = %p.name, hash = plugin.hash(), "plugin loaded");
        plugins.push(SlotSpec {
            name: p.name.clone(),
            path: p.path.clone(),
            config: p.config_json(),
            limits: p.limits,
            plugin: Arc::new(plugin),
        });
    }
    Ok(plugins)
}

/// The config's plugins as a chain.
pub fn load_chain(config: &Config, engine: &PluginEngine) -> Result<PluginChain, AppError> {
    Ok(PluginChain::new(
        load_plugins(config, engine)?
            .into_iter()
            .map(|s| s.plugin)
            .collect(),
    ))
}

/// Reads an inputs directory once with the default [`InputLimits`]; returns the store and the
/// source to keep watching.
pub fn load_inputs(
    dir: Option<&Path>,
) -> Result<(Arc<InputStore>, Option<DirSource>), DocumentFileError> {
    load_inputs_with(dir, InputLimits::default())
}

/// Reads an inputs directory once within `limits`, waiting out the settle window of files
/// still being written (blocking: call it off the async runtime's workers); returns the store
/// and the source to keep watching.
pub fn load_inputs_with(
    dir: Option<&Path>,
    limits: InputLimits,
) -> Result<(Arc<InputStore>, Option<DirSource>), DocumentFileError> {
    let store = Arc::new(InputStore::new());
    let Some(dir) = dir else {
        return Ok((store, None));
    };
    let mut source = DirSource::with_limits(dir, Arc::clone(&store), limits)?;
    let (_, errors) = source.scan_settled();
    for e in errors {
        tracing::warn!(error = %e, "input file skipped until it is fixed");
    }
    Ok((store, Some(source)))
}

/// [`load_inputs_with`] on a blocking thread, for `App::build`.
pub(super) async fn read_inputs_off_the_runtime(
    dir: Option<PathBuf>,
    limits: InputLimits,
) -> Result<(Arc<InputStore>, Option<DirSource>), DocumentFileError> {
    let at = dir.clone().unwrap_or_default();
    tokio::task::spawn_blocking(move || load_inputs_with(dir.as_deref(), limits))
        .await
        .unwrap_or_else(|e| {
            Err(DocumentFileError {
                path: at,
                reason: format!("reading the directory failed: {e}"),
            })
        })
}

/// The pipeline's options from the config.
pub fn pipeline_options(config: &Config) -> PipelineOptions {
    PipelineOptions {
        debounce: Duration::from_millis(config.pipeline.debounce_ms),
        max_delay: Duration::from_millis(config.pipeline.max_delay_ms),
        group_grace: Duration::from_millis(config.pipeline.group_grace_ms),
        max_groups: config.pipeline.max_groups,
        ..PipelineOptions::default()
    }
}

/// The xDS server's options from the config.
pub fn server_builder(config: &Config, cache: Cache) -> XdsServerBuilder {
    let x = &config.xds;
    let defaults = StreamLimits::default();
    let mut builder = XdsServer::builder(cache)
        .limits(StreamLimits {
            max_names_per_type: x.max_names_per_type,
            max_types: x.max_types.unwrap_or(defaults.max_types),
            max_name_bytes: x.max_name_bytes.unwrap_or(defaults.max_name_bytes),
            max_names_bytes: x.max_names_bytes.unwrap_or(defaults.max_names_bytes),
            max_node_bytes: x.max_node_bytes.unwrap_or(defaults.max_node_bytes),
            max_unserved_types: x.max_unserved_types.unwrap_or(defaults.max_unserved_types),
        })
        .heartbeat_interval(Duration::from_millis(x.heartbeat_ms))
        .max_message_bytes(x.max_message_bytes)
        .keepalive(
            Duration::from_millis(x.keepalive_ms),
            Duration::from_millis(x.keepalive_timeout_ms),
        );
    if let Some(tls) = &x.tls {
        builder = builder.tls(tls.clone());
    }
    if let Some(max) = x.max_connections {
        builder = builder.max_connections(max);
    }
    if let Some(max) = x.max_streams_per_connection {
        builder = builder.max_streams_per_connection(max);
    }
    builder = builder.csds(x.csds).csds_secrets(x.csds_secrets);
    let ms = Duration::from_millis;
    if let Some(t) = x.first_request_timeout_ms {
        builder = builder.first_request_timeout(ms(t));
    }
    if let Some(t) = x.idle_timeout_ms {
        builder = builder.idle_timeout(ms(t));
    }
    if let Some(t) = x.max_connection_age_ms {
        builder = builder.max_connection_age(Some(ms(t)));
    }
    if let Some(t) = x.go_away_grace_ms {
        builder = builder.go_away_grace(ms(t));
    }
    if let Some(max) = x.max_pending_reset_streams {
        builder = builder.max_pending_reset_streams(max);
    }
    if let Some(max) = x.max_local_error_reset_streams {
        builder = builder.max_local_error_reset_streams(max);
    }
    if x.accept_rate.is_some() || x.accept_burst.is_some() {
        builder = builder.accept_rate(
            x.accept_rate.unwrap_or(DEFAULT_ACCEPT_RATE),
            x.accept_burst.unwrap_or(DEFAULT_ACCEPT_BURST),
        );
    }
    match x.group_by {
        GroupBy::Identity => builder.grouping(ByIdentity),
        GroupBy::NodeId => builder.grouping(ByNodeId),
        GroupBy::Cluster => builder.grouping(ByCluster),
    }
}
