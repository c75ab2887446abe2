//! What a plugin function sees — its node, its configuration, the input documents — and the
//! resources it returns.

use std::collections::BTreeMap;

use nebucloud_xds_proto::prost::{Message, Name};
use serde::de::DeserializeOwned;

/// A plugin's error: the message the host logs, meters and shows, with plugin and node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        Error(message.to_string())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_owned())
    }
}

/// The result of a plugin.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// The identity a node announced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// `node.locality`.
    pub locality: Option<Locality>,
    /// `node.metadata` as JSON (an object; empty when unset).
    pub metadata: serde_json::Value,
    /// `node.user_agent_name`.
    pub user_agent_name: String,
    /// `node.user_agent_version`.
    pub user_agent_version: String,
    /// `node.client_features`.
    pub client_features: Vec<String>,
}

impl Node {
    /// Whether the node is a proxyless gRPC client (C-core, grpc-js, grpc-java, grpc-go),
    /// rather than Envoy: gRPC clients want API listeners named after their target.
    pub fn is_grpc(&self) -> bool {
        self.user_agent_name
            .to_ascii_lowercase()
            .starts_with("grpc")
    }

    /// A metadata value decoded into `T`, if present.
    pub fn metadata<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.metadata.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| Error::msg(format!("node metadata {key:?}: {e}"))),
        }
    }
}

/// One xDS resource: type URL, name, and the encoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// e.g. `type.googleapis.com/envoy.config.cluster.v3.Cluster`.
    pub type_url: String,
    /// Unique within its type.
    pub name: String,
    /// The protobuf encoding of the message.
    pub body: Vec<u8>,
}

impl Resource {
    /// A resource holding `message` under `name`, with the message's own type URL.
    pub fn new<M: Message + Name>(name: impl Into<String>, message: &M) -> Self {
        Resource {
            type_url: M::type_url(),
            name: name.into(),
            body: message.encode_to_vec(),
        }
    }

    /// Whether this resource is a `M`.
    pub fn is<M: Name>(&self) -> bool {
        self.type_url == M::type_url()
    }

    /// The message, if this resource is a `M`; an error if it is a `M` that does not decode.
    pub fn decode<M: Message + Name + Default>(&self) -> Result<Option<M>> {
        if !self.is::<M>() {
            return Ok(None);
        }
        M::decode(self.body.as_slice()).map(Some).map_err(|e| {
            Error::msg(format!(
                "{} {:?} does not decode: {e}",
                M::full_name(),
                self.name
            ))
        })
    }
}

/// Where input documents come from: the host during a real call, memory in native tests.
pub trait Inputs {
    /// The JSON text of the document `kind`/`name`, if it exists.
    fn get_json(&self, kind: &str, name: &str) -> Option<String>;
    /// `(name, JSON text)` of every document of `kind`, in name order.
    fn list_json(&self, kind: &str) -> Vec<(String, String)>;
}

/// Input documents held in memory: what a native unit test gives a plugin.
#[derive(Debug, Clone, Default)]
pub struct MemoryInputs {
    docs: BTreeMap<String, BTreeMap<String, String>>,
}

impl MemoryInputs {
    /// No documents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a document, given as any serializable value.
    #[must_use]
    pub fn with(mut self, kind: &str, name: &str, doc: &impl serde::Serialize) -> Self {
        let json = serde_json::to_string(doc).unwrap_or_else(|_| "null".to_owned());
        self.docs
            .entry(kind.to_owned())
            .or_default()
            .insert(name.to_owned(), json);
        self
    }
}

impl Inputs for MemoryInputs {
    fn get_json(&self, kind: &str, name: &str) -> Option<String> {
        self.docs.get(kind).and_then(|d| d.get(name)).cloned()
    }

    fn list_json(&self, kind: &str) -> Vec<(String, String)> {
        self.docs
            .get(kind)
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// Everything a plugin call may read.
pub struct Context<'a> {
    node: &'a Node,
    config: &'a serde_json::Value,
    inputs: &'a dyn Inputs,
}

impl<'a> Context<'a> {
    /// A context over explicit parts (the export glue and native tests build these).
    pub fn new(node: &'a Node, config: &'a serde_json::Value, inputs: &'a dyn Inputs) -> Self {
        Context {
            node,
            config,
            inputs,
        }
    }

    /// The node being computed.
    pub fn node(&self) -> &Node {
        self.node
    }

    /// The plugin's configuration (the `config` table of its entry in the server config),
    /// decoded into `T`.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| Error::msg(format!("plugin config: {e}")))
    }

    /// The input document `kind`/`name` decoded into `T`, if it exists. The host records the
    /// read: a change of that document recomputes this node's group.
    pub fn get<T: DeserializeOwned>(&self, kind: &str, name: &str) -> Result<Option<T>> {
        match self.inputs.get_json(kind, name) {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| Error::msg(format!("input {kind}/{name}: {e}"))),
        }
    }

    /// Every input document of `kind`, decoded into `T`, in name order. The host records the
    /// read: any change of that kind recomputes this node's group.
    pub fn list<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<(String, T)>> {
        self.inputs
            .list_json(kind)
            .into_iter()
            .map(|(name, json)| {
                serde_json::from_str(&json)
                    .map(|doc| (name.clone(), doc))
                    .map_err(|e| Error::msg(format!("input {kind}/{name}: {e}")))
            })
            .collect()
    }
}

/// The shape of a plugin: the context, the resources so far, and the new resources.
pub type PluginFn = fn(&Context<'_>, Vec<Resource>) -> Result<Vec<Resource>>;

/// Runs a plugin function natively, as the host would run its wasm build: the way to unit
/// test a plugin with `cargo test`.
pub fn run_native(
    plugin: PluginFn,
    node: &Node,
    config: &serde_json::Value,
    inputs: &dyn Inputs,
    resources: Vec<Resource>,
) -> Result<Vec<Resource>> {
    plugin(&Context::new(node, config, inputs), resources)
}
