//! `dev`: `serve` for the plugin author's loop. Plugin files and the config file are watched
//! and reloaded the moment a change is whole (no settle time, a 1 ms debounce), each through
//! the same canary as in production, and after every change the command prints which nodes'
//! resources changed, one line each.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use nebucloud_xds::app::App;
use nebucloud_xds::config::Config;
use nebucloud_xds::pipeline::Pipeline;
use nebucloud_xds::{Cache, ResourceSet};

use super::serve::shutdown_signal;

/// The most nodes one change prints a line for; the rest are counted.
const MAX_LINES: usize = 20;
/// The most resources one line names; the rest are counted.
const MAX_NAMES: usize = 8;

/// Serves `config_path` in development mode until a signal.
pub(crate) async fn dev(
    config_path: &Path,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let file = Config::load(config_path)?;
    let mut config = file.clone();
    config.reload.watch = true;
    config.reload.settle_ms = 0;
    config.pipeline.debounce_ms = 1;
    let app = App::build(config)
        .await?
        .watch_config_against(config_path.to_path_buf(), file);
    let (Some(pipeline), cache) = (app.pipeline().cloned(), app.server().cache().clone()) else {
        anyhow::bail!("dev needs a config with plugins");
    };
    let running = app.spawn(listen, admin_listen).await?;
    println!(
        "dev: serving xDS on {} (admin {}); every change of a plugin file or of {} reloads at once",
        running.xds_addr,
        running.admin_addr,
        config_path.display()
    );
    let report = tokio::spawn(report_changes(pipeline, cache));
    let served = running.run_until(shutdown_signal()).await;
    report.abort();
    Ok(served?)
}

/// After each batch of the pipeline, prints one line per node group whose resources changed.
async fn report_changes(pipeline: Pipeline, cache: Cache) {
    let mut batches = pipeline.batches();
    let mut seen: HashMap<String, Arc<ResourceSet>> = HashMap::new();
    while batches.changed().await.is_ok() {
        let mut lines = Vec::new();
        let mut now = HashMap::with_capacity(seen.len());
        for status in pipeline.groups() {
            let Some(set) = cache.get(&status.group) else {
                continue;
            };
            match seen.get(&status.group) {
                Some(old) if Arc::ptr_eq(old, &set) || old.version() == set.version() => {}
                old => lines.push(format!(
                    "dev: {} ({}): {}",
                    status.node_id,
                    status.transport,
                    diff(old.map(AsRef::as_ref), &set)
                )),
            }
            now.insert(status.group, set);
        }
        seen = now;
        let more = lines.len().saturating_sub(MAX_LINES);
        for line in lines.iter().take(MAX_LINES) {
            println!("{line}");
        }
        if more > 0 {
            println!("dev: … and {more} more nodes changed");
        }
    }
}

/// One line: resources added (`+`), changed (`~`) and removed (`-`), as `Type/name`.
fn diff(old: Option<&ResourceSet>, new: &ResourceSet) -> String {
    let versions = |set: &ResourceSet| -> BTreeMap<(String, String), String> {
        set.iter()
            .map(|r| {
                let short = r.type_url().rsplit('.').next().unwrap_or_default();
                (
                    (short.to_owned(), r.name().to_owned()),
                    r.version().to_owned(),
                )
            })
            .collect()
    };
    let after = versions(new);
    let before = old.map(versions).unwrap_or_default();
    let mut changes = Vec::new();
    for (key, version) in &after {
        match before.get(key) {
            None => changes.push(format!("+{}/{}", key.0, key.1)),
            Some(v) if v != version => changes.push(format!("~{}/{}", key.0, key.1)),
            Some(_) => {}
        }
    }
    changes.extend(
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|(t, n)| format!("-{t}/{n}")),
    );
    if changes.is_empty() {
        return format!("{} resources, same content", new.len());
    }
    let more = changes.len().saturating_sub(MAX_NAMES);
    let mut line = changes
        .into_iter()
        .take(MAX_NAMES)
        .collect::<Vec<_>>()
        .join(" ");
    if more > 0 {
        line.push_str(&format!(" … and {more} more"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use nebucloud_xds::Resource;

    fn set(resources: &[(&str, &str, &[u8])]) -> ResourceSet {
        ResourceSet::new(resources.iter().map(|(t, n, body)| {
            Resource::new(
                format!("type.googleapis.com/envoy.config.{t}"),
                *n,
                body.to_vec(),
            )
        }))
        .unwrap()
    }

    #[test]
    fn a_change_is_one_line_of_added_changed_and_removed_resources() {
        let old = set(&[
            ("cluster.v3.Cluster", "web", b"a"),
            ("cluster.v3.Cluster", "old", b"b"),
            ("route.v3.RouteConfiguration", "ingress", b"c"),
        ]);
        let new = set(&[
            ("cluster.v3.Cluster", "web", b"a"),
            ("cluster.v3.Cluster", "api", b"d"),
            ("route.v3.RouteConfiguration", "ingress", b"e"),
        ]);
        assert_eq!(
            diff(Some(&old), &new),
            "+Cluster/api ~RouteConfiguration/ingress -Cluster/old"
        );
        assert_eq!(
            diff(None, &old),
            "+Cluster/old +Cluster/web +RouteConfiguration/ingress"
        );
        assert_eq!(diff(Some(&old), &old), "3 resources, same content");
    }

    #[test]
    fn a_line_names_a_bounded_number_of_resources() {
        let many: Vec<(String, Vec<u8>)> = (0..30).map(|i| (format!("c{i:02}"), vec![i])).collect();
        let new = ResourceSet::new(many.iter().map(|(n, b)| {
            Resource::new(
                "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                n.as_str(),
                b.clone(),
            )
        }))
        .unwrap();
        let line = diff(None, &new);
        assert!(line.ends_with(" … and 22 more"), "{line}");
        assert_eq!(line.matches("+Cluster/").count(), MAX_NAMES);
    }
}
