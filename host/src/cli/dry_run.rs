//! A config's plugin chain run for one node without a server, as `plugin run` prints it and
//! `plugin test` compares it: the chain and inputs loaded once, node files read within a limit.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use nebucloud_xds::app::load_chain;
use nebucloud_xds::config::Config;
use nebucloud_xds::inputs::{DirSource, DocumentFileError, InputStore};
use nebucloud_xds::plugins::{
    ChainOutput, EngineOptions, NodeView, PluginChain, PluginEngine, PluginRunError, Transport,
};
use nebucloud_xds::schema::Schema;
use nebucloud_xds::Resource;
use nebucloud_xds_proto::envoy::config::core::v3::Node;

/// A config's chain with the inputs read once, ready to run for any node.
pub(crate) struct DryRun {
    /// The config file, loaded.
    pub(crate) config: Config,
    /// Its plugins, in order.
    pub(crate) chain: PluginChain,
    /// Input files that did not load: the store holds nothing of them.
    pub(crate) skipped: Vec<DocumentFileError>,
    inputs: Arc<InputStore>,
    // The chain's plugins run on this engine's epoch ticker: it lives as long as they do.
    _engine: PluginEngine,
}

impl DryRun {
    /// Loads the config at `config_path` and its chain on an engine with `options`, and reads
    /// the inputs directory (`inputs`, else the config's `[inputs] dir`, else none) within the
    /// config's `[inputs]` limits, waiting out files still being written.
    pub(crate) fn load(
        config_path: &Path,
        inputs: Option<&Path>,
        options: EngineOptions,
    ) -> anyhow::Result<Self> {
        let config = Config::load(config_path)?;
        let engine = PluginEngine::new(options).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let chain = load_chain(&config, &engine)?;
        let store = Arc::new(InputStore::new());
        let mut skipped = Vec::new();
        if let Some(dir) = inputs.or(config.inputs.dir.as_deref()) {
            let mut source =
                DirSource::with_limits(dir, Arc::clone(&store), config.inputs.limits())?;
            skipped = source.scan_settled().1;
        }
        Ok(DryRun {
            config,
            chain,
            skipped,
            inputs: store,
            _engine: engine,
        })
    }

    /// The node file at `path`, within the config's `inputs.max_file_bytes`.
    pub(crate) fn read_node(&self, path: &Path) -> anyhow::Result<NodeView> {
        let max = self.config.inputs.max_file_bytes;
        read_node(path, max, &format!("inputs.max_file_bytes = {max}"))
    }

    /// Runs the chain once for `node` on the inputs read at load.
    pub(crate) fn run(&self, node: &NodeView) -> Result<ChainOutput, PluginRunError> {
        self.chain.run(node.clone(), self.inputs.clone())
    }
}

/// The transports a node file may name, as `transport:` spells them.
const TRANSPORTS: [(&str, Transport); 4] = [
    (
        "ads",
        Transport {
            aggregated: true,
            incremental: false,
        },
    ),
    (
        "ads-delta",
        Transport {
            aggregated: true,
            incremental: true,
        },
    ),
    (
        "per-type",
        Transport {
            aggregated: false,
            incremental: false,
        },
    ),
    (
        "per-type-delta",
        Transport {
            aggregated: false,
            incremental: true,
        },
    ),
];

/// A node from YAML/JSON in Envoy's `Node` form, plus an optional `transport:` (`ads`, the
/// default, `ads-delta`, `per-type` or `per-type-delta`), refused unread when over
/// `max_bytes` (`limit` names that limit in the error).
pub(crate) fn read_node(path: &Path, max_bytes: u64, limit: &str) -> anyhow::Result<NodeView> {
    let text = read_bounded(path, max_bytes, limit)?;
    let mut json: serde_json::Value =
        serde_yaml::from_str(&text).with_context(|| path.display().to_string())?;
    let transport = match json.as_object_mut().and_then(|o| o.remove("transport")) {
        None => Transport::default(),
        Some(value) => TRANSPORTS
            .iter()
            .find(|(name, _)| value.as_str() == Some(name))
            .map(|(_, t)| *t)
            .with_context(|| {
                let names: Vec<&str> = TRANSPORTS.iter().map(|(n, _)| *n).collect();
                format!(
                    "{}: transport must be one of {}, not {value}",
                    path.display(),
                    names.join(", ")
                )
            })?,
    };
    let msg = Schema::envoy()?
        .from_json("type.googleapis.com/envoy.config.core.v3.Node", json)
        .with_context(|| path.display().to_string())?;
    let node: Node = prost::Message::decode(prost::Message::encode_to_vec(&msg).as_slice())?;
    Ok(NodeView::new(node, transport))
}

/// The text of the regular file at `path`, never reading more than `max_bytes` of it: a
/// larger file is refused with an error that names `limit` (`inputs.max_file_bytes = N`).
pub(crate) fn read_bounded(path: &Path, max_bytes: u64, limit: &str) -> anyhow::Result<String> {
    let cannot = || format!("cannot read {}", path.display());
    // A FIFO or a device would block or never end: only regular files are read.
    let meta = std::fs::metadata(path).with_context(cannot)?;
    anyhow::ensure!(meta.is_file(), "{} is not a regular file", path.display());
    let over = |len: u64| anyhow::anyhow!("{} is {len} bytes, over {limit}", path.display());
    if meta.len() > max_bytes {
        return Err(over(meta.len()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes))
        .with_context(cannot)?;
    if bytes.len() as u64 > max_bytes {
        return Err(over(bytes.len() as u64));
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))
}

/// A resource as `plugin run` prints it and `plugin test` stores it: its type URL, name and
/// body in Envoy's JSON form (`null` for a body the schema cannot decode, which the chain has
/// already refused). Without its version: callers that want it add it.
pub(crate) fn resource_json(
    schema: &Schema,
    resource: &Resource,
) -> serde_json::Map<String, serde_json::Value> {
    let body = schema
        .to_json(resource.type_url(), resource.body())
        .unwrap_or(serde_json::Value::Null);
    let mut json = serde_json::Map::new();
    json.insert("type_url".into(), resource.type_url().into());
    json.insert("name".into(), resource.name().into());
    json.insert("resource".into(), body);
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_file_may_name_its_transport_and_a_wrong_one_is_refused_naming_the_choices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.yaml");
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_node(&path, 1000, "the limit")
        };
        let plain = read("id: envoy-1\ncluster: web\n").unwrap();
        assert_eq!(
            (plain.id(), plain.transport()),
            ("envoy-1", Transport::default())
        );
        let delta = read("id: envoy-1\ntransport: per-type-delta\n").unwrap();
        assert_eq!(
            delta.transport(),
            Transport {
                aggregated: false,
                incremental: true
            }
        );
        let e = read("id: envoy-1\ntransport: adz\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "transport must be one of ads, ads-delta, per-type, per-type-delta, not \"adz\""
            ),
            "{e}"
        );
    }

    #[test]
    fn a_file_over_its_limit_is_refused_naming_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.yaml");
        std::fs::write(&path, "id: envoy-1\n").unwrap();
        assert_eq!(
            read_bounded(&path, 12, "the limit").unwrap(),
            "id: envoy-1\n"
        );
        let e = read_bounded(&path, 11, "inputs.max_file_bytes = 11").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is 12 bytes, over inputs.max_file_bytes = 11",
                path.display()
            )
        );
        let e = read_bounded(dir.path(), 100, "the limit").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_node_file_reads_in_envoys_node_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.yaml");
        std::fs::write(
            &path,
            "id: envoy-1\ncluster: edge\nuser_agent_name: envoy\n",
        )
        .unwrap();
        let node = read_node(&path, 100, "the limit").unwrap();
        assert_eq!(
            (node.id(), node.node().cluster.as_str()),
            ("envoy-1", "edge")
        );
    }
}
