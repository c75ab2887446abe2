//! A plugin built against contract 0.1.0, where `run` gets the whole node: one cluster named
//! after the node's cluster. Since a 0.1.0 plugin can read any field without the host knowing,
//! the host must count its runs as reading every field and share none.

mod bindings {
    //! Generated from contract 0.1.0 (`proto/wit-0.1`, linked as `wit/contract`).
    #![allow(missing_docs, unreachable_pub, unsafe_code, clippy::all)]

    wit_bindgen::generate!({
        world: "plugin",
        path: "wit/contract",
    });

    use super::Legacy;
    export!(Legacy with_types_in self);
}

use bindings::nebucloud::xds::types::{Node, Resource};
use nebucloud_xds_proto::envoy::config::cluster::v3::Cluster;
use nebucloud_xds_proto::prost::{Message, Name};

/// The plugin.
struct Legacy;

impl bindings::Guest for Legacy {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn run(node: Node, mut resources: Vec<Resource>) -> Result<Vec<Resource>, String> {
        let cluster = Cluster {
            name: node.cluster.clone(),
            ..Cluster::default()
        };
        resources.push(Resource {
            type_url: Cluster::type_url(),
            name: node.cluster,
            body: cluster.encode_to_vec(),
        });
        Ok(resources)
    }
}
