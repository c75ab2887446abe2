//! Our server under load. With a plugin, as it ships: built by `nebucloud_xds::app::App` from a
//! generated config file and inputs directory, as `serve --config` builds it (the mesh plugin,
//! optionally followed by a policy plugin reloaded when its file changes); an input change
//! rewrites a file in that directory, which the server reads on its own timer. Without one,
//! static resources set on the cache of a bare xDS server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use nebucloud_xds::app::{App, Running};
use nebucloud_xds::config::Config;
use nebucloud_xds::pipeline::Pipeline;
use nebucloud_xds::xds::ByCluster;
use nebucloud_xds::{Cache, XdsServer};

use super::{GroupCount, Grouping, ServerArgs, Updater};
use crate::fixtures::{envoy_node, mesh_set, services, CLUSTER};
use crate::stats::unix_ns;

/// The inputs file the server watches, in the generated inputs directory.
const SERVICES_FILE: &str = "services.json";

/// Starts our server on free loopback ports: built by `App` with `--plugin`, else serving
/// static resources.
pub(super) async fn start(args: &ServerArgs) -> anyhow::Result<(SocketAddr, Box<dyn Updater>)> {
    match &args.plugin {
        Some(plugin) => {
            let (addr, updater) = start_app(args, plugin).await?;
            Ok((addr, Box::new(updater)))
        }
        None => {
            let (addr, updater) = start_static(args).await?;
            Ok((addr, Box::new(updater)))
        }
    }
}

/// Applies input changes by rewriting the served inputs directory.
struct AppUpdater {
    /// Holds the config file and the inputs directory; removed on drop.
    dir: PathBuf,
    services: usize,
    pipeline: Pipeline,
    /// Serving until dropped.
    running: Running,
}

impl Updater for AppUpdater {
    /// Writes revision `revision` of the services in place (a rename, as editors save) and
    /// returns when the server's directory watch announced it to the pipeline: that watch
    /// polls every 250 ms, a wait that is the same before and after churn and is not timed.
    fn update(&mut self, revision: u32) -> anyhow::Result<Option<u64>> {
        let before = self.pipeline.input_generation();
        write_services(&self.dir.join("inputs"), self.services, revision)?;
        let started = Instant::now();
        while self.pipeline.input_generation() == before {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the server did not see its inputs change within 10 s"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok(Some(unix_ns(SystemTime::now())))
    }

    fn groups(&self) -> GroupCount {
        let server = self.running.server();
        GroupCount {
            count: Some(self.pipeline.group_count()),
            evicted: Some(self.pipeline.evicted_groups()),
            cache_entries: Some(server.cache().groups().len()),
            node_records: Some(server.nodes().len()),
        }
    }
}

impl Drop for AppUpdater {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts our server through `App` on free loopback ports (xDS and admin), with the mesh
/// plugin (and `--policy` after it), nodes grouped by identity (the serving default) or by
/// cluster. Grouped by cluster, every node is in one group, as the replicas of one service
/// are: one computation, one copy of the resources, computed before any client comes so that
/// the memory baseline includes it.
async fn start_app(args: &ServerArgs, plugin: &Path) -> anyhow::Result<(SocketAddr, AppUpdater)> {
    let dir = std::env::temp_dir().join(format!("nx-bench-app-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("inputs"))?;
    write_services(&dir.join("inputs"), args.services, 0)?;
    let file = dir.join("config.toml");
    std::fs::write(&file, config_text(args, plugin)?)?;
    let config = Config::load(&file)?;
    let app = App::build(config).await?;
    let pipeline = app
        .pipeline()
        .cloned()
        .context("an App with plugins has a pipeline")?;
    let running = app.spawn(None, None).await?;
    if args.grouping == Grouping::Cluster {
        pipeline.stream_opened(CLUSTER, envoy_node(0))?;
        wait_for_group(running.server().cache()).await?;
    }
    Ok((
        running.xds_addr,
        AppUpdater {
            dir,
            services: args.services,
            pipeline,
            running,
        },
    ))
}

/// The config file: the quickstart's, with the mesh plugin (and the policy after it), ports
/// chosen by the kernel, and the bench's grouping, debounce, grace period and plugin file
/// watch. `debounce_ms` 0 becomes 1, the least a config accepts.
fn config_text(args: &ServerArgs, plugin: &Path) -> anyhow::Result<String> {
    let group_by = match args.grouping {
        Grouping::Node => "identity",
        Grouping::Cluster => "cluster",
    };
    let debounce = args.debounce_ms.max(1);
    let mut plugins = plugin_entry("mesh", plugin)?;
    if let Some(policy) = &args.policy {
        plugins.push_str(&plugin_entry("policy", policy)?);
    }
    Ok(format!(
        "[xds]\nlisten = \"127.0.0.1:0\"\ngroup_by = \"{group_by}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [pipeline]\ndebounce_ms = {debounce}\nmax_delay_ms = {}\ngroup_grace_ms = {}\n\n\
         [reload]\ninterval_ms = {}\nsettle_ms = {}\n\n\
         [inputs]\ndir = \"inputs\"\n\n{plugins}",
        debounce * 10,
        args.grace_ms,
        args.reload_interval_ms,
        args.reload_settle_ms,
    ))
}

/// A `[[plugins]]` entry for the file at `path`, with an empty config and the default limits.
fn plugin_entry(name: &str, path: &Path) -> anyhow::Result<String> {
    // A JSON string is a TOML basic string for any path.
    let path = serde_json::to_string(&path.canonicalize()?)?;
    Ok(format!("[[plugins]]\nname = \"{name}\"\npath = {path}\n\n"))
}

/// Writes revision `revision` of `n` services as one JSON list of `Service` documents: to a
/// hidden file first (the watch skips those), then renamed over the served one.
fn write_services(inputs: &Path, n: usize, revision: u32) -> anyhow::Result<()> {
    let docs: Vec<serde_json::Value> = services(n, revision)
        .into_iter()
        .map(|(name, svc)| {
            let mut doc = serde_json::to_value(&svc)?;
            if let Some(map) = doc.as_object_mut() {
                map.insert("kind".to_owned(), "Service".into());
                map.insert("name".to_owned(), name.into());
            }
            Ok(doc)
        })
        .collect::<anyhow::Result<_>>()?;
    let hidden = inputs.join(format!(".{SERVICES_FILE}.tmp"));
    std::fs::write(&hidden, serde_json::to_vec(&docs)?)?;
    std::fs::rename(&hidden, inputs.join(SERVICES_FILE))?;
    Ok(())
}

/// Applies input changes straight onto the cache.
struct StaticUpdater {
    cache: Cache,
    services: usize,
}

impl Updater for StaticUpdater {
    fn update(&mut self, revision: u32) -> anyhow::Result<Option<u64>> {
        self.cache
            .set_shared(CLUSTER, mesh_set(self.services, revision)?);
        Ok(None)
    }
}

/// Static resources as one shared set, every node in one group by cluster.
// Wired by hand: the cache and the xDS layer alone, without the pipeline. `serve --resources`
// groups by node id, which would need a set per simulated node.
async fn start_static(args: &ServerArgs) -> anyhow::Result<(SocketAddr, StaticUpdater)> {
    anyhow::ensure!(
        args.grouping == Grouping::Cluster && args.policy.is_none(),
        "static resources are one shared set: --grouping node and --policy need --plugin"
    );
    let cache = Cache::new();
    cache.set_shared(CLUSTER, mesh_set(args.services, 0)?);
    let server = XdsServer::builder(cache.clone())
        .grouping(ByCluster)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = server
            .serve_with_shutdown(listener, std::future::pending())
            .await
        {
            eprintln!("bench-server: {e}");
        }
    });
    let updater = StaticUpdater {
        cache,
        services: args.services,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_config_loads_and_groups_by_identity_with_the_grace_given() {
        let dir = std::env::temp_dir().join(format!("nx-bench-app-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("inputs")).unwrap();
        let plugin = dir.join("mesh.wasm");
        std::fs::write(&plugin, b"").unwrap();
        let policy = dir.join("policy.wasm");
        std::fs::write(&policy, b"").unwrap();
        let mut args = ServerArgs {
            implementation: super::super::Impl::Ours,
            nodes: 1,
            services: 3,
            plugin: Some(plugin.clone()),
            debounce_ms: 0,
            grouping: Grouping::Node,
            policy: None,
            reload_interval_ms: 250,
            reload_settle_ms: 1000,
            grace_ms: 1500,
        };
        let file = dir.join("config.toml");
        std::fs::write(&file, config_text(&args, &plugin).unwrap()).unwrap();
        let config = Config::load(&file).unwrap();
        assert_eq!(
            config.xds.group_by,
            nebucloud_xds::config::GroupBy::Identity
        );
        assert_eq!(config.pipeline.group_grace_ms, 1500);
        assert_eq!(config.pipeline.debounce_ms, 1);
        assert_eq!(config.plugins.len(), 1);
        write_services(&dir.join("inputs"), 3, 7).unwrap();
        let text = std::fs::read_to_string(dir.join("inputs").join(SERVICES_FILE)).unwrap();
        let docs: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["kind"], "Service");
        assert_eq!(docs[0]["name"], crate::fixtures::MARKER_SERVICE);
        assert_eq!(docs[0]["endpoints"][0]["port"], 8007);

        // The reload benchmark: the policy after the mesh plugin, its file watched as told.
        args.policy = Some(policy);
        args.grouping = Grouping::Cluster;
        (args.reload_interval_ms, args.reload_settle_ms) = (20, 100);
        std::fs::write(&file, config_text(&args, &plugin).unwrap()).unwrap();
        let config = Config::load(&file).unwrap();
        assert_eq!(config.xds.group_by, nebucloud_xds::config::GroupBy::Cluster);
        let names: Vec<&str> = config.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["mesh", "policy"]);
        assert!(config.reload.watch);
        assert_eq!(
            (config.reload.interval_ms, config.reload.settle_ms),
            (20, 100)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
