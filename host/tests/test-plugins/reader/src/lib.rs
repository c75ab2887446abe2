//! A test plugin whose result depends on the node's cluster, and for cluster `web` on its
//! metadata key `tier` too: one cluster resource named `<cluster>` or `<cluster>-<tier>`.
//! With `transport = true` in its config it also names the node's transport; with
//! `fail_cluster = "x"` it fails for nodes of cluster `x`. Sharing tests count how often it
//! runs.

use nebucloud_xds_guest::proto::envoy::config::cluster::v3::Cluster;
use nebucloud_xds_guest::serde::Deserialize;
use nebucloud_xds_guest::{export_plugin, Context, Error, Resource, Result};

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(crate = "nebucloud_xds_guest::serde", deny_unknown_fields)]
pub struct Config {
    /// Whether to read the transport too.
    #[serde(default)]
    pub transport: bool,
    /// Fail for nodes of this cluster (having read only the cluster).
    #[serde(default)]
    pub fail_cluster: Option<String>,
}

/// The plugin function.
pub fn read(
    ctx: &Context<'_>,
    config: &Config,
    mut resources: Vec<Resource>,
) -> Result<Vec<Resource>> {
    let node = ctx.node();
    let mut name = node.cluster().to_owned();
    if config.fail_cluster.as_deref() == Some(name.as_str()) {
        return Err(Error::msg(format!("reader: refusing cluster {name}")));
    }
    if name == "web" {
        let tier: Option<String> = node.metadata("tier")?;
        name = format!("{name}-{}", tier.as_deref().unwrap_or("none"));
    }
    if config.transport {
        let t = node.transport();
        name = format!(
            "{name}-{}-{}",
            if t.aggregated { "ads" } else { "xds" },
            if t.incremental { "delta" } else { "sotw" }
        );
    }
    let cluster = Cluster {
        name: name.clone(),
        ..Cluster::default()
    };
    resources.push(Resource::new(name, &cluster));
    Ok(resources)
}

export_plugin!(read, config = Config);

#[cfg(test)]
mod tests {
    use super::*;
    use nebucloud_xds_guest::serde_json::json;
    use nebucloud_xds_guest::{run_native, MemoryInputs, Node};

    fn names(node: &Node) -> Vec<String> {
        let out = run_native(read, node, &json!({}), &MemoryInputs::new(), vec![]);
        out.unwrap().into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn the_tier_counts_for_web_only() {
        let tier = json!({"tier": "gold"});
        let web = Node::new("a")
            .with_cluster("web")
            .with_metadata(tier.clone());
        let api = Node::new("b").with_cluster("api").with_metadata(tier);
        assert_eq!(names(&web), vec!["web-gold"]);
        assert_eq!(names(&api), vec!["api"]);
    }
}
