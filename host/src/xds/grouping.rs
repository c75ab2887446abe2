//! Which group a node is served from, and who is told when a group's nodes come and go.

use nebucloud_xds_proto::envoy::config::core::v3::Node;

/// How a stream reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transport {
    /// One aggregated (ADS) stream for every type, rather than a stream per type.
    pub aggregated: bool,
    /// Incremental (Delta) xDS, rather than state of the world.
    pub incremental: bool,
}

impl Transport {
    /// A unary fetch (REST-style `Fetch*`): per-type state of the world.
    pub const FETCH: Transport = Transport {
        aggregated: false,
        incremental: false,
    };
}

/// Maps a node to the group whose resources it is served. Nodes of one group share one
/// copy of the resources.
pub trait NodeGrouping: Send + Sync + 'static {
    /// The group of `node`.
    fn group_of(&self, node: &Node) -> String;

    /// The group of `node` on a stream over `transport`: by default the group of the node, so
    /// that its streams of every transport share one group. A grouping whose resources may
    /// depend on the transport keeps transports apart.
    fn group_of_stream(&self, node: &Node, transport: Transport) -> String {
        let _ = transport;
        self.group_of(node)
    }
}

impl<F> NodeGrouping for F
where
    F: Fn(&Node) -> String + Send + Sync + 'static,
{
    fn group_of(&self, node: &Node) -> String {
        self(node)
    }
}

/// Told when a node opens and closes a stream, so that its group can be computed when it is
/// needed and forgotten when it is not. The plugin pipeline is one.
pub trait NodeObserver: Send + Sync + 'static {
    /// A node of `group` opened a stream over `transport`. Must not block. An error refuses
    /// the stream with that status (e.g. `RESOURCE_EXHAUSTED` when no more groups may be
    /// held); then [`NodeObserver::node_disconnected`] is not called for it.
    fn node_connected(
        &self,
        group: &str,
        node: &Node,
        transport: Transport,
    ) -> Result<(), tonic::Status>;

    /// A stream announced by [`NodeObserver::node_connected`] closed. Must not block.
    fn node_disconnected(&self, group: &str) {
        let _ = group;
    }

    /// A node of `group` made a unary fetch: the group is needed, but no stream holds it. By
    /// default a stream that opens and closes at once, so the group lives for the observer's
    /// grace period and no longer.
    fn node_fetched(&self, group: &str, node: &Node) -> Result<(), tonic::Status> {
        self.node_connected(group, node, Transport::FETCH)?;
        self.node_disconnected(group);
        Ok(())
    }
}

/// One group per node id: `Cache::set(node_id, …)` configures that node.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByNodeId;

impl NodeGrouping for ByNodeId {
    fn group_of(&self, node: &Node) -> String {
        node.id.clone()
    }
}

/// One group per node identity: everything a plugin can see of a node (id, cluster, locality,
/// metadata, user agent, client features, and on a stream, its transport: an ADS SotW stream
/// and a unary fetch share the group without a suffix). The group name starts with the node
/// id, for operators. Nodes of different groups still share one
/// computation when they agree on every field a plugin run read (the plugin pipeline's
/// memo), so this grouping is both exact and shared.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByIdentity;

impl NodeGrouping for ByIdentity {
    fn group_of_stream(&self, node: &Node, transport: Transport) -> String {
        let group = self.group_of(node);
        // The name of the transport, for operators; a node's ADS SotW group keeps the name
        // it has without one.
        match (transport.aggregated, transport.incremental) {
            (true, false) => group,
            (true, true) => format!("{group}#ads-delta"),
            (false, false) => format!("{group}#sotw"),
            (false, true) => format!("{group}#delta"),
        }
    }

    fn group_of(&self, node: &Node) -> String {
        use prost::Message;
        let identity = Node {
            id: node.id.clone(),
            cluster: node.cluster.clone(),
            locality: node.locality.clone(),
            metadata: node.metadata.clone(),
            user_agent_name: node.user_agent_name.clone(),
            user_agent_version_type: node.user_agent_version_type.clone(),
            client_features: node.client_features.clone(),
            ..Node::default()
        };
        // Struct fields are a map: encode them in key order so equal nodes hash equally.
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(
            &Node {
                metadata: None,
                ..identity.clone()
            }
            .encode_to_vec(),
        );
        if let Some(m) = &identity.metadata {
            h.update(crate::schema::struct_to_json(m).to_string().as_bytes());
        }
        format!("{}#{:016x}", node.id, h.digest())
    }
}

/// One group per `node.cluster` (Envoy's service cluster): every replica of a service gets the
/// same configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByCluster;

impl NodeGrouping for ByCluster {
    fn group_of(&self, node: &Node) -> String {
        node.cluster.clone()
    }
}
