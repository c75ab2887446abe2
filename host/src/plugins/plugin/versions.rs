//! The contract versions a plugin may be built against: the current one, where `run` gets
//! the resources and the plugin asks for node fields, and 0.1.0, where `run` gets the whole
//! node (every field counts as read).

use wasmtime::Store;

use crate::cache::Resource;
use crate::plugins::bindings::{self, v1, PluginPre};
use crate::plugins::call::CallState;
use crate::plugins::node::{NodeReads, NodeView};

/// A plugin, ready to instantiate, by the contract version it was built against.
pub(super) enum Pre {
    Current(PluginPre<CallState>),
    /// 0.1.0: `run` gets the whole node, so every call reads every field.
    V1(v1::PluginPre<CallState>),
}

/// An instance, by contract version.
pub(super) enum Instance {
    Current(bindings::Plugin),
    V1(v1::Plugin),
}

/// What `run` returned: `(type URL, name, body)` of each resource, or the plugin's error.
type RunResult = wasmtime::Result<Result<Vec<(String, String, Vec<u8>)>, String>>;

/// Calls `run` on `instance` for `node` with `resources`, in its contract's types.
pub(super) fn run_instance(
    instance: &Instance,
    store: &mut Store<CallState>,
    node: &NodeView,
    resources: &[Resource],
) -> RunResult {
    let triple = |r: &Resource| {
        (
            r.type_url().to_owned(),
            r.name().to_owned(),
            r.body().to_vec(),
        )
    };
    match instance {
        Instance::Current(instance) => {
            let wit: Vec<bindings::Resource> = resources
                .iter()
                .map(triple)
                .map(|(type_url, name, body)| bindings::Resource {
                    type_url,
                    name,
                    body,
                })
                .collect();
            let out = instance.call_run(&mut *store, &wit)?;
            Ok(out.map(|out| {
                out.into_iter()
                    .map(|r| (r.type_url, r.name, r.body))
                    .collect()
            }))
        }
        Instance::V1(instance) => {
            store.data_mut().node_reads = NodeReads::everything();
            let wit: Vec<v1::Resource> = resources
                .iter()
                .map(triple)
                .map(|(type_url, name, body)| v1::Resource {
                    type_url,
                    name,
                    body,
                })
                .collect();
            let out = instance.call_run(&mut *store, &v1_node(node), &wit)?;
            Ok(out.map(|out| {
                out.into_iter()
                    .map(|r| (r.type_url, r.name, r.body))
                    .collect()
            }))
        }
    }
}

/// The whole node, as contract 0.1.0 hands it to `run`.
fn v1_node(view: &NodeView) -> v1::Node {
    let node = view.node();
    v1::Node {
        id: node.id.clone(),
        cluster: node.cluster.clone(),
        locality: node
            .locality
            .as_ref()
            .map(|l| v1::nebucloud::xds::types::Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            }),
        metadata_json: serde_json::Value::Object(view.metadata().clone()).to_string(),
        user_agent_name: node.user_agent_name.clone(),
        user_agent_version: view.user_agent_version().to_owned(),
        client_features: node.client_features.clone(),
    }
}
