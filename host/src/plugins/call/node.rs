//! The `node` interface: each call hands over one field of the call's node and records that
//! the call read it (a metadata key within the call's read budgets, like a document).

use wasmtime::component::{Linker, WasmStr};
use wasmtime::StoreContextMut;

use super::tally::HostCall;
use super::{key, refuse, CallState, NAME};
use crate::plugins::bindings::nebucloud::xds::types::{Locality, Transport};
use crate::plugins::node::{NodeField, NodeView};
use crate::plugins::plugin::{PluginFault, NODE_V2};

impl CallState {
    /// Records that this call read `field`, charging a new read to its budgets.
    fn read_node(&mut self, call: &'static str, field: &NodeField) -> Result<(), PluginFault> {
        if self.node_reads.all || self.node_reads.fields.contains(field) {
            return Ok(());
        }
        let bytes = match field {
            NodeField::Metadata(key) => key.len(),
            _ => 0,
        };
        self.charge_read(call, bytes)?;
        self.node_reads.insert(field.clone());
        Ok(())
    }
}

/// Hands over `value` of the call's node after recording the read of `field`.
fn read<T>(
    store: &mut StoreContextMut<'_, CallState>,
    call: &'static str,
    field: NodeField,
    value: impl FnOnce(&NodeView) -> T,
) -> wasmtime::Result<T> {
    let Some(node) = store.data().subject.clone() else {
        return Err(wasmtime::Error::msg(format!(
            "`node.{call}` called outside `run`: a plugin's `init` has no node"
        )));
    };
    let recorded = store.data_mut().read_node(call, &field);
    refuse(store, recorded)?;
    store.data_mut().host_calls.returned(HostCall::Node);
    Ok(value(&node))
}

/// Defines the `node` interface's calls.
pub(super) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let mut node = linker.instance(NODE_V2)?;
    node.func_wrap("id", |mut s: StoreContextMut<'_, CallState>, (): ()| {
        read(&mut s, "id", NodeField::Id, |n| (n.id().to_owned(),))
    })?;
    node.func_wrap(
        "cluster",
        |mut s: StoreContextMut<'_, CallState>, (): ()| {
            read(&mut s, "cluster", NodeField::Cluster, |n| {
                (n.node().cluster.clone(),)
            })
        },
    )?;
    node.func_wrap(
        "locality",
        |mut s: StoreContextMut<'_, CallState>, (): ()| {
            read(&mut s, "locality", NodeField::Locality, |n| {
                let locality = n.node().locality.as_ref().map(|l| Locality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    sub_zone: l.sub_zone.clone(),
                });
                (locality,)
            })
        },
    )?;
    node.func_wrap(
        "metadata",
        |mut s: StoreContextMut<'_, CallState>, (k,): (WasmStr,)| {
            let k = key(&mut s, "metadata", &k, NAME)?;
            let field = NodeField::Metadata(k.clone());
            read(&mut s, "metadata", field, |n| {
                (n.metadata().get(&k).map(ToString::to_string),)
            })
        },
    )?;
    node.func_wrap(
        "metadata-all",
        |mut s: StoreContextMut<'_, CallState>, (): ()| {
            read(&mut s, "metadata-all", NodeField::MetadataAll, |n| {
                (serde_json::Value::Object(n.metadata().clone()).to_string(),)
            })
        },
    )?;
    node.func_wrap(
        "user-agent-name",
        |mut s: StoreContextMut<'_, CallState>, (): ()| {
            read(&mut s, "user-agent-name", NodeField::UserAgentName, |n| {
                (n.node().user_agent_name.clone(),)
            })
        },
    )?;
    node.func_wrap(
        "user-agent-version",
        |mut s: StoreContextMut<'_, CallState>, (): ()| {
            read(
                &mut s,
                "user-agent-version",
                NodeField::UserAgentVersion,
                |n| (n.user_agent_version().to_owned(),),
            )
        },
    )?;
    node.func_wrap(
        "client-features",
        |mut s: StoreContextMut<'_, CallState>, (): ()| {
            read(&mut s, "client-features", NodeField::ClientFeatures, |n| {
                (n.node().client_features.clone(),)
            })
        },
    )?;
    node.func_wrap(
        "transport",
        |mut s: StoreContextMut<'_, CallState>, (): ()| {
            read(&mut s, "transport", NodeField::Transport, |n| {
                let t = n.transport();
                (Transport {
                    aggregated: t.aggregated,
                    incremental: t.incremental,
                },)
            })
        },
    )
}
