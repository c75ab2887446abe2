//! The node a plugin computes for: each field fetched from the host the first time the plugin
//! asks for it, so that the host knows which fields the run read and can hand the result to
//! every node that agrees on them.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Where a node runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Sub-zone.
    pub sub_zone: String,
}

/// How a node's streams reach the server. Envoy needs the config sources nested in its
/// listeners and clusters to match it (`ads {}` over ADS, `api_config_source` per type, and it
/// refuses `self`): [`build::config_source_for`](crate::build::config_source_for) asks for you.
/// gRPC clients always use ADS. Asking counts as a read like any other field: under the
/// default grouping (`identity`), nodes that differ only in their transport then get results
/// of their own; under `node-id` or `cluster` a group is computed for the transport its
/// first node connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    /// Over one aggregated (ADS) stream for every type, rather than a stream per type.
    pub aggregated: bool,
    /// Incremental (Delta) xDS, rather than state of the world.
    pub incremental: bool,
}

impl Default for Transport {
    /// State-of-the-world ADS: what most Envoys and every proxyless gRPC client use.
    fn default() -> Self {
        Transport {
            aggregated: true,
            incremental: false,
        }
    }
}

/// The identity a node announced in its first xDS request, and how it connected.
///
/// Read only what the result depends on: the host hands a run's result to every node that
/// has the same values for the fields that run read (and, for [`Node::metadata`], the keys it
/// asked for), so a plugin that reads the node id computes once per node, and one that reads
/// only the cluster computes once per cluster. To log which node a line is about, do not read
/// the id: the host tags every plugin log line with the node already.
///
/// In a native test, build one with [`Node::new`] and the `with_` methods.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Whether fields come from the host (a call in a wasm build) or were all given.
    from_host: bool,
    id: OnceCell<String>,
    cluster: OnceCell<String>,
    locality: OnceCell<Option<Locality>>,
    /// The whole metadata: set when given, or when the plugin asked for all of it.
    metadata_all: OnceCell<serde_json::Value>,
    /// Single keys asked of the host (JSON text, `None` when unset).
    metadata_keys: RefCell<BTreeMap<String, Option<String>>>,
    user_agent_name: OnceCell<String>,
    user_agent_version: OnceCell<String>,
    client_features: OnceCell<Vec<String>>,
    transport: OnceCell<Transport>,
}

impl PartialEq for Node {
    /// Nodes are equal when every field is: for a node read from the host, that reads them all.
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
            && self.cluster() == other.cluster()
            && self.locality() == other.locality()
            && self.metadata_json() == other.metadata_json()
            && self.user_agent_name() == other.user_agent_name()
            && self.user_agent_version() == other.user_agent_version()
            && self.client_features() == other.client_features()
            && self.transport() == other.transport()
    }
}

/// Fills a cell from the host on first use; a given node has every cell set.
fn field<T>(cell: &OnceCell<T>, from_host: bool, fetch: impl FnOnce() -> T) -> &T
where
    T: Default,
{
    cell.get_or_init(|| if from_host { fetch() } else { T::default() })
}

impl Node {
    /// A node with this id and every other field empty (metadata `{}`, transport ADS SotW):
    /// what a native test starts from.
    pub fn new(id: impl Into<String>) -> Self {
        Node {
            id: OnceCell::from(id.into()),
            ..Node::default()
        }
    }

    /// The node of the current call, read from the host field by field.
    pub(crate) fn from_host() -> Self {
        Node {
            from_host: true,
            ..Node::default()
        }
    }

    /// With `node.cluster`.
    #[must_use]
    pub fn with_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = OnceCell::from(cluster.into());
        self
    }

    /// With `node.locality`.
    #[must_use]
    pub fn with_locality(mut self, locality: Locality) -> Self {
        self.locality = OnceCell::from(Some(locality));
        self
    }

    /// With `node.metadata`: a JSON object (anything else reads as no metadata).
    #[must_use]
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata_all = OnceCell::from(metadata);
        self
    }

    /// With `node.user_agent_name` and `node.user_agent_version`.
    #[must_use]
    pub fn with_user_agent(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.user_agent_name = OnceCell::from(name.into());
        self.user_agent_version = OnceCell::from(version.into());
        self
    }

    /// With `node.client_features`.
    #[must_use]
    pub fn with_client_features(mut self, features: Vec<String>) -> Self {
        self.client_features = OnceCell::from(features);
        self
    }

    /// With this transport.
    #[must_use]
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = OnceCell::from(transport);
        self
    }

    /// `node.id`. Reading it makes the result this node's alone; to tag a log line with the
    /// node, do not: the host does.
    pub fn id(&self) -> &str {
        field(&self.id, self.from_host, host::id).as_str()
    }

    /// `node.cluster`: the service the node belongs to.
    pub fn cluster(&self) -> &str {
        field(&self.cluster, self.from_host, host::cluster).as_str()
    }

    /// `node.locality`, if set.
    pub fn locality(&self) -> Option<&Locality> {
        field(&self.locality, self.from_host, host::locality).as_ref()
    }

    /// `node.user_agent_name`, e.g. `envoy` or `gRPC C-core`.
    pub fn user_agent_name(&self) -> &str {
        field(&self.user_agent_name, self.from_host, host::user_agent_name).as_str()
    }

    /// `node.user_agent_version`.
    pub fn user_agent_version(&self) -> &str {
        field(
            &self.user_agent_version,
            self.from_host,
            host::user_agent_version,
        )
        .as_str()
    }

    /// `node.client_features`.
    pub fn client_features(&self) -> &[String] {
        field(&self.client_features, self.from_host, host::client_features).as_slice()
    }

    /// How the node's streams reach the server.
    pub fn transport(&self) -> Transport {
        *field(&self.transport, self.from_host, host::transport)
    }

    /// Whether the node is a proxyless gRPC client (C-core, grpc-js, grpc-java, grpc-go),
    /// rather than Envoy: gRPC clients want API listeners named after their target. Reads the
    /// user agent name.
    pub fn is_grpc(&self) -> bool {
        self.user_agent_name()
            .to_ascii_lowercase()
            .starts_with("grpc")
    }

    /// The metadata value under `key` decoded into `T`, if set (a JSON `null` reads as unset).
    /// Reads that key only: nodes that differ in other keys still share the result.
    pub fn metadata<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let decode = |v: serde_json::Value| {
            serde_json::from_value(v).map_err(|e| Error::msg(format!("node metadata {key:?}: {e}")))
        };
        if let Some(all) = self.metadata_all.get() {
            return match all.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => decode(v.clone()).map(Some),
            };
        }
        if !self.from_host {
            return Ok(None);
        }
        let json = self
            .metadata_keys
            .borrow_mut()
            .entry(key.to_owned())
            .or_insert_with(|| host::metadata(key))
            .clone();
        match json.map(|j| serde_json::from_str::<serde_json::Value>(&j)) {
            None | Some(Ok(serde_json::Value::Null)) => Ok(None),
            Some(Ok(v)) => decode(v).map(Some),
            Some(Err(e)) => Err(Error::msg(format!("node metadata {key:?}: {e}"))),
        }
    }

    /// All of `node.metadata`, as a JSON object (empty when unset). Reads every key: prefer
    /// [`Node::metadata`] with the keys the result depends on.
    pub fn metadata_json(&self) -> &serde_json::Value {
        self.metadata_all.get_or_init(|| {
            if self.from_host {
                serde_json::from_str(&host::metadata_all())
                    .unwrap_or_else(|_| serde_json::Value::Object(serde_json::Map::new()))
            } else {
                serde_json::Value::Object(serde_json::Map::new())
            }
        })
    }
}

/// The contract's `node` interface, converted to the SDK's types. Only a node made by
/// [`Node::from_host`] (in a wasm build's `run`) calls it.
mod host {
    use super::{Locality, Transport};
    use crate::bindings::nebucloud::xds::node as wit;

    pub(super) fn id() -> String {
        wit::id()
    }

    pub(super) fn cluster() -> String {
        wit::cluster()
    }

    pub(super) fn locality() -> Option<Locality> {
        wit::locality().map(|l| Locality {
            region: l.region,
            zone: l.zone,
            sub_zone: l.sub_zone,
        })
    }

    pub(super) fn metadata(key: &str) -> Option<String> {
        wit::metadata(key)
    }

    pub(super) fn metadata_all() -> String {
        wit::metadata_all()
    }

    pub(super) fn user_agent_name() -> String {
        wit::user_agent_name()
    }

    pub(super) fn user_agent_version() -> String {
        wit::user_agent_version()
    }

    pub(super) fn client_features() -> Vec<String> {
        wit::client_features()
    }

    pub(super) fn transport() -> Transport {
        let t = wit::transport();
        Transport {
            aggregated: t.aggregated,
            incremental: t.incremental,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_node_reads_what_it_was_given_and_defaults_the_rest() {
        let node = Node::new("envoy-1")
            .with_cluster("web")
            .with_metadata(serde_json::json!({"services": ["a"], "off": null}))
            .with_user_agent("gRPC C-core", "1.70");
        assert_eq!(node.id(), "envoy-1");
        assert_eq!(node.cluster(), "web");
        assert_eq!(node.locality(), None);
        assert!(node.is_grpc());
        assert_eq!(
            node.metadata::<Vec<String>>("services").unwrap(),
            Some(vec!["a".to_owned()])
        );
        assert_eq!(node.metadata::<String>("off").unwrap(), None);
        assert_eq!(node.metadata::<String>("missing").unwrap(), None);
        assert!(node
            .metadata::<u32>("services")
            .unwrap_err()
            .to_string()
            .starts_with("node metadata \"services\": "));
        assert_eq!(node.transport(), Transport::default());
        assert!(Node::default()
            .metadata_json()
            .as_object()
            .unwrap()
            .is_empty());
        assert_eq!(node.clone(), node);
        assert_ne!(node.clone().with_cluster("api"), node);
    }
}
