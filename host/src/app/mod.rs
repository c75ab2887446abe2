//! The composition root: a [`Config`] becomes a running server — inputs → pipeline → plugins
//! → cache → xDS → admin — in this one place, which the binary, the tests and the benches use.
//! `wiring.rs` turns each config section into its part; `resources.rs` reads a static
//! resource directory for `serve --resources`.

mod config_watch;
mod resources;
mod sources;
mod wiring;

pub use config_watch::{plugin_plans, watch_config_file};
pub use resources::{load_resource_dir, ResourceFileError};
use wiring::read_inputs_off_the_runtime;
pub use wiring::{
    load_chain, load_inputs, load_inputs_with, load_plugins, pipeline_options, server_builder,
};

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin::{AdminAccess, AdminAccessError, AdminState, AdminToken, Readiness};
use crate::config::Config;
use crate::inputs::{watch_dir, DocumentFileError, InputStore, InputView};
use crate::pipeline::Pipeline;
use crate::plugins::{
    watch_plugin_files, EngineOptions, PluginChain, PluginEngine, PluginLoadError, PluginSlots,
    ReloadError,
};
use crate::schema::Schema;
use crate::xds::{ByNodeId, ServeError, XdsServer};
use crate::Cache;

/// Why the server could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The plugin engine could not be created.
    #[error("plugin engine: {0:#}")]
    Engine(#[source] wasmtime::Error),
    /// A plugin file could not be read.
    #[error("plugin {name}: cannot read {}: {source}", path.display())]
    PluginFile {
        /// The plugin.
        name: String,
        /// Its file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A plugin file was refused.
    #[error("plugin {name} ({}): {source}", path.display())]
    Plugin {
        /// The plugin.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        #[source]
        source: PluginLoadError,
    },
    /// A configured plugin file is outside `[reload] plugin_dirs`: its reloads would all be
    /// refused.
    #[error("reload.plugin_dirs: {0}")]
    PluginDirs(#[source] ReloadError),
    /// The admin API's token cannot be read, or its address needs one.
    #[error(transparent)]
    Admin(#[from] AdminAccessError),
    /// The inputs directory cannot be read.
    #[error(transparent)]
    Inputs(#[from] DocumentFileError),
    /// The Kubernetes API server cannot be reached.
    #[cfg(feature = "kubernetes")]
    #[error(transparent)]
    Kubernetes(#[from] crate::inputs::KubernetesConnectError),
    /// A static resource directory does not load.
    #[error("loading resources: {0}")]
    Resources(#[from] ResourceFileError),
    /// A port cannot be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// `xds` or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The xDS server stopped with an error.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Everything the server is made of, built from a [`Config`] and not yet serving.
pub struct App {
    config: Config,
    server: XdsServer,
    pipeline: Option<Pipeline>,
    plugins: Option<PluginSlots>,
    inputs: Option<Arc<InputStore>>,
    readiness: Arc<Readiness>,
    metrics: Option<PrometheusHandle>,
    /// Input sources and watches, started by [`App::spawn`].
    tasks: Vec<Task>,
}

impl App {
    /// Loads the config's plugins, reads its inputs once and wires the pipeline between them
    /// and the xDS server. Nothing listens yet; input sources start with [`App::spawn`].
    pub async fn build(config: Config) -> Result<App, AppError> {
        let cache = Cache::new();
        let readiness = Arc::new(Readiness::new());
        let engine = PluginEngine::new(EngineOptions::default()).map_err(AppError::Engine)?;
        let specs = load_plugins(&config, &engine)?;
        let chain = PluginChain::new(specs.iter().map(|s| Arc::clone(&s.plugin)).collect());
        // The chain checks every body against the Envoy schema: decoded now (about 90 ms),
        // not on the first node's run. A schema that cannot decode fails every run, by name.
        let _ = tokio::task::spawn_blocking(|| Schema::envoy().is_ok()).await;
        let limits = config.inputs.limits();
        let (store, dir_source) =
            read_inputs_off_the_runtime(config.inputs.dir.clone(), limits).await?;
        let pipeline = Pipeline::start(
            cache.clone(),
            chain,
            Arc::clone(&store) as Arc<dyn InputView>,
            pipeline_options(&config),
        );
        let mut tasks: Vec<Task> = Vec::new();
        if let Some(source) = dir_source {
            let p = pipeline.clone();
            tasks.push(Box::pin(watch_dir(
                source,
                Duration::from_millis(config.inputs.interval_ms),
                move |keys| p.inputs_changed(keys),
            )));
        }
        tasks.extend(sources::start(&config, &store, limits, &pipeline, &readiness).await?);
        let slots = PluginSlots::new(engine, pipeline.clone(), specs)
            .with_file_rules(
                &config.reload.plugin_dirs,
                config.reload.max_plugin_bytes,
                Duration::from_millis(config.reload.read_timeout_ms),
            )
            .map_err(AppError::PluginDirs)?;
        if config.reload.watch {
            tasks.push(Box::pin(watch_plugin_files(
                slots.clone(),
                Duration::from_millis(config.reload.interval_ms),
                Duration::from_millis(config.reload.settle_ms),
            )));
        }
        let server = server_builder(&config, cache)
            .observer(pipeline.clone())
            .build();
        Ok(App {
            config,
            server,
            pipeline: Some(pipeline),
            plugins: Some(slots),
            inputs: Some(store),
            readiness,
            metrics: None,
            tasks,
        })
    }

    /// Serves the resources of a directory (`DIR/<group>/*.{yaml,json}`) without plugins,
    /// one group per node id.
    pub fn with_resources(config: Config, dir: &Path) -> Result<App, AppError> {
        let cache = Cache::new();
        for (group, set) in load_resource_dir(dir)? {
            tracing::info!(%group, resources = set.len(), version = set.version(), "serving group");
            cache.set(&group, set);
        }
        let server = server_builder(&config, cache).grouping(ByNodeId).build();
        Ok(App {
            config,
            server,
            pipeline: None,
            plugins: None,
            inputs: None,
            readiness: Arc::new(Readiness::new()),
            metrics: None,
            tasks: Vec::new(),
        })
    }

    /// Watches the config file this app was built from, at `path`, and applies each new
    /// version's plugin chain (plugins, order, configs, limits) through a trial over the live
    /// groups, as a plugin reload does (see [`watch_config_file`]). Only with plugins and
    /// `[reload] watch` (the default).
    #[must_use]
    pub fn watch_config(self, path: PathBuf) -> Self {
        let baseline = self.config.clone();
        self.watch_config_against(path, baseline)
    }

    /// As [`App::watch_config`], comparing each new version with `baseline` (the file as it
    /// was loaded) rather than with the config the app was built from, which a caller may
    /// have adjusted (as `dev` does): only what the file changed is reported.
    #[must_use]
    pub fn watch_config_against(mut self, path: PathBuf, baseline: Config) -> Self {
        if let (Some(slots), true) = (&self.plugins, self.config.reload.watch) {
            let task = watch_config_file(path, baseline, slots.clone());
            self.tasks.push(Box::pin(task));
        }
        self
    }

    /// Serves `/metrics` from this Prometheus recorder.
    #[must_use]
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// The xDS server.
    pub fn server(&self) -> &XdsServer {
        &self.server
    }

    /// The pipeline, when plugins compute the config.
    pub fn pipeline(&self) -> Option<&Pipeline> {
        self.pipeline.as_ref()
    }

    /// The plugin slots, when plugins compute the config.
    pub fn plugins(&self) -> Option<&PluginSlots> {
        self.plugins.as_ref()
    }

    /// Binds the config's xDS and admin addresses (or the given overrides), starts the input
    /// sources and serves until [`Running::shutdown`] or the returned handle is dropped.
    pub async fn spawn(
        self,
        xds: Option<SocketAddr>,
        admin: Option<SocketAddr>,
    ) -> Result<Running, AppError> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind { what, addr, source })
        };
        let admin_at = admin.unwrap_or(self.config.admin.listen);
        let token = self
            .config
            .admin
            .token_file
            .as_deref()
            .map(AdminToken::read)
            .transpose()?;
        AdminAccess::check_listen(admin_at, token.as_ref())?;
        let admin_listener = bind("admin", admin_at).await?;
        let xds_listener = bind("xds", xds.unwrap_or(self.config.xds.listen)).await?;
        let local = |l: &TcpListener, what, addr| {
            l.local_addr()
                .map_err(|source| AppError::Bind { what, addr, source })
        };
        let admin_addr = local(&admin_listener, "admin", self.config.admin.listen)?;
        let xds_addr = local(&xds_listener, "xds", self.config.xds.listen)?;
        let mut tasks: Vec<JoinHandle<()>> = self.tasks.into_iter().map(tokio::spawn).collect();
        let state = AdminState {
            server: self.server.clone(),
            pipeline: self.pipeline.clone(),
            plugins: self.plugins.clone(),
            inputs: self.inputs.clone(),
            metrics: self.metrics,
            readiness: self.readiness,
            access: Arc::new(AdminAccess::new(
                admin_addr,
                &self.config.admin.allowed_hosts,
                token,
            )),
        };
        tracing::info!(addr = %admin_addr, "serving the admin API");
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::admin::serve(admin_listener, state).await {
                tracing::error!(error = %e, "admin API stopped");
            }
        }));
        tracing::info!(addr = %xds_addr, "serving xDS");
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let server = self.server.clone();
        let serving = tokio::spawn(server.serve_with_shutdown(xds_listener, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        Ok(Running {
            xds_addr,
            admin_addr,
            server: self.server,
            pipeline: self.pipeline,
            plugins: self.plugins,
            inputs: self.inputs,
            drain: Duration::from_millis(self.config.xds.drain_ms),
            stop,
            serving: Some(serving),
            tasks,
        })
    }
}

/// A serving [`App`]. Dropping it stops everything it started.
pub struct Running {
    /// Where xDS is served.
    pub xds_addr: SocketAddr,
    /// Where the admin API is served.
    pub admin_addr: SocketAddr,
    server: XdsServer,
    pipeline: Option<Pipeline>,
    plugins: Option<PluginSlots>,
    inputs: Option<Arc<InputStore>>,
    drain: Duration,
    stop: tokio::sync::watch::Sender<bool>,
    serving: Option<JoinHandle<Result<(), ServeError>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The xDS server.
    pub fn server(&self) -> &XdsServer {
        &self.server
    }

    /// The pipeline, when plugins compute the config.
    pub fn pipeline(&self) -> Option<&Pipeline> {
        self.pipeline.as_ref()
    }

    /// The plugin slots, when plugins compute the config.
    pub fn plugins(&self) -> Option<&PluginSlots> {
        self.plugins.as_ref()
    }

    /// The input store, when plugins compute the config: a source of one's own writes it, then
    /// tells [`Pipeline::inputs_changed`] what changed.
    pub fn inputs(&self) -> Option<&Arc<InputStore>> {
        self.inputs.as_ref()
    }

    /// Tells clients to go elsewhere (HTTP/2 GOAWAY); open streams may finish.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Serves until `signal` completes, then shuts down and gives open streams the config's
    /// drain time (`xds.drain_ms`) before returning. An error of the xDS server ends it early.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), AppError> {
        let Some(mut serving) = self.serving.take() else {
            return Ok(());
        };
        tokio::select! {
            r = &mut serving => return flatten(r),
            () = signal => {}
        }
        self.shutdown();
        match tokio::time::timeout(self.drain, &mut serving).await {
            Ok(r) => flatten(r),
            Err(_) => {
                tracing::info!(drain = ?self.drain, "drain deadline reached; exiting");
                serving.abort();
                Ok(())
            }
        }
    }
}

fn flatten(r: Result<Result<(), ServeError>, tokio::task::JoinError>) -> Result<(), AppError> {
    match r {
        Ok(r) => Ok(r?),
        // Aborted by us, or the server task panicked: either way it is over.
        Err(e) => {
            tracing::error!(error = %e, "xDS server task ended");
            Ok(())
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(serving) = &self.serving {
            serving.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}
