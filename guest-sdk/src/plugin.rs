//! What a plugin function sees — its node, its configuration, the input documents — and the
//! resources it returns.

use std::collections::BTreeMap;

use nebucloud_xds_proto::prost::{Message, Name};
use serde::de::DeserializeOwned;

use crate::node::Node;

use crate::error::{Error, Result};

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
    /// decoded into `T` on every call. A plugin exported with `export_plugin!(f, config = T)`
    /// gets it as `&T` instead, decoded once when the instance starts.
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

/// The shape of a plugin exported with `export_plugin!(f)`: the context, the resources so far,
/// and the new resources.
pub type PluginFn = fn(&Context<'_>, Vec<Resource>) -> Result<Vec<Resource>>;

/// The shape of a plugin exported with `export_plugin!(f, config = T)`: as [`PluginFn`], with
/// the plugin's config, decoded into `T` once when the instance starts.
pub type ConfiguredPluginFn<T> = fn(&Context<'_>, &T, Vec<Resource>) -> Result<Vec<Resource>>;

/// A plugin function [`run_native`] can call: either shape, [`PluginFn`] (`Args` is `()`) or
/// [`ConfiguredPluginFn<T>`] (`Args` is `(T,)`). Rust infers `Args` from the function.
pub trait PluginFunction<Args> {
    /// Calls the function as the host would; a configured function gets the config table
    /// decoded into its `T`, or the error the host's `init` would refuse it with.
    fn call_native(&self, ctx: &Context<'_>, resources: Vec<Resource>) -> Result<Vec<Resource>>;
}

impl<F> PluginFunction<()> for F
where
    F: Fn(&Context<'_>, Vec<Resource>) -> Result<Vec<Resource>>,
{
    fn call_native(&self, ctx: &Context<'_>, resources: Vec<Resource>) -> Result<Vec<Resource>> {
        self(ctx, resources)
    }
}

impl<F, T> PluginFunction<(T,)> for F
where
    F: Fn(&Context<'_>, &T, Vec<Resource>) -> Result<Vec<Resource>>,
    T: DeserializeOwned,
{
    fn call_native(&self, ctx: &Context<'_>, resources: Vec<Resource>) -> Result<Vec<Resource>> {
        let config = decode_config::<T>(&ctx.config.to_string()).map_err(Error::msg)?;
        self(ctx, &config, resources)
    }
}

/// The config table (JSON text) decoded into `T`, or why not, as `init` reports it.
pub(crate) fn decode_config<T: DeserializeOwned>(json: &str) -> std::result::Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("plugin config: {e}"))
}

/// Runs a plugin function natively, as the host would run its wasm build: the way to unit
/// test a plugin with `cargo test`. `config` is the plugin's config table; a function
/// exported with `config = T` gets it decoded into `T`, and a table that `init` would refuse
/// is the same error here.
pub fn run_native<Args>(
    plugin: impl PluginFunction<Args>,
    node: &Node,
    config: &serde_json::Value,
    inputs: &dyn Inputs,
    resources: Vec<Resource>,
) -> Result<Vec<Resource>> {
    plugin.call_native(&Context::new(node, config, inputs), resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        name: String,
    }

    /// Names one resource after the config's `name`, read from the table on each call.
    fn plain(ctx: &Context<'_>, _: Vec<Resource>) -> Result<Vec<Resource>> {
        let config: Config = ctx.config()?;
        Ok(vec![named(config.name)])
    }

    /// The same with the config declared: it comes decoded.
    fn configured(_: &Context<'_>, config: &Config, _: Vec<Resource>) -> Result<Vec<Resource>> {
        Ok(vec![named(config.name.clone())])
    }

    fn named(name: String) -> Resource {
        Resource {
            type_url: "t".into(),
            name,
            body: Vec::new(),
        }
    }

    fn run<Args>(plugin: impl PluginFunction<Args>, config: serde_json::Value) -> Result<String> {
        let out = run_native(
            plugin,
            &Node::new("n"),
            &config,
            &MemoryInputs::new(),
            vec![],
        )?;
        Ok(out.into_iter().map(|r| r.name).collect())
    }

    #[test]
    fn run_native_calls_both_shapes_with_the_same_config() {
        let config = serde_json::json!({"name": "a"});
        assert_eq!(run(plain, config.clone()), Ok("a".to_owned()));
        assert_eq!(run(configured, config), Ok("a".to_owned()));
        let as_pointer: PluginFn = plain;
        assert_eq!(
            run(as_pointer, serde_json::json!({"name": "b"})),
            Ok("b".to_owned())
        );
    }

    #[test]
    fn run_native_refuses_a_declared_config_as_init_would() {
        let typo = run(configured, serde_json::json!({"nmae": "a"})).unwrap_err();
        assert_eq!(
            typo.message(),
            decode_config::<Config>(r#"{"nmae":"a"}"#)
                .err()
                .unwrap_or_default()
        );
        assert!(
            typo.message()
                .starts_with("plugin config: unknown field `nmae`, expected `name`"),
            "{typo}"
        );
    }
}
