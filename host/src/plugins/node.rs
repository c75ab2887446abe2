//! The node a chain computes for, as plugins see it, and which of its fields a run read: two
//! nodes that agree on every field a run read get the same result from it (plugins are pure),
//! so the pipeline shares that run.

use std::collections::BTreeSet;
use std::fmt;

use nebucloud_xds_proto::envoy::config::core::v3::Node;

use crate::schema::struct_to_json;

/// How a node's streams reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.aggregated { "ADS" } else { "per-type" };
        let variant = if self.incremental { "Delta" } else { "SotW" };
        write!(f, "{kind} {variant}")
    }
}

/// A node as a plugin chain sees it: what it announced, and how it connected.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    node: Node,
    transport: Transport,
    /// `node.metadata` as a JSON object, converted once.
    metadata: serde_json::Map<String, serde_json::Value>,
}

impl NodeView {
    /// `node`, connected over `transport`.
    pub fn new(node: Node, transport: Transport) -> Self {
        let metadata = match node.metadata.as_ref().map(struct_to_json) {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        NodeView {
            node,
            transport,
            metadata,
        }
    }

    /// What the node announced.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// `node.id`.
    pub fn id(&self) -> &str {
        &self.node.id
    }

    /// How it connected.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// `node.metadata` as a JSON object.
    pub fn metadata(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.metadata
    }

    /// `node.user_agent_version`, when the client gave a version string.
    pub fn user_agent_version(&self) -> &str {
        use nebucloud_xds_proto::envoy::config::core::v3::node::UserAgentVersionType;
        match &self.node.user_agent_version_type {
            Some(UserAgentVersionType::UserAgentVersion(v)) => v,
            _ => "",
        }
    }

    /// The values of the fields `reads` names, in one byte string: equal for two nodes exactly
    /// when every one of those fields is equal. Each value is length-prefixed, so no two
    /// different lists of values run together into the same bytes.
    pub fn project(&self, reads: &NodeReads) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        let fields: Vec<NodeField> = if reads.all {
            NodeField::EVERY.to_vec()
        } else {
            reads.fields.iter().cloned().collect()
        };
        for field in &fields {
            match field {
                NodeField::Id => put(self.node.id.as_bytes()),
                NodeField::Cluster => put(self.node.cluster.as_bytes()),
                NodeField::Locality => match &self.node.locality {
                    None => put(b"-"),
                    Some(l) => {
                        put(b"+");
                        put(l.region.as_bytes());
                        put(l.zone.as_bytes());
                        put(l.sub_zone.as_bytes());
                    }
                },
                NodeField::Metadata(key) => match self.metadata.get(key) {
                    None => put(b"-"),
                    Some(v) => put(format!("+{v}").as_bytes()),
                },
                NodeField::MetadataAll => {
                    put(serde_json::Value::Object(self.metadata.clone())
                        .to_string()
                        .as_bytes());
                }
                NodeField::UserAgentName => put(self.node.user_agent_name.as_bytes()),
                NodeField::UserAgentVersion => put(self.user_agent_version().as_bytes()),
                NodeField::ClientFeatures => {
                    put(&(self.node.client_features.len() as u64).to_le_bytes());
                    for f in &self.node.client_features {
                        put(f.as_bytes());
                    }
                }
                NodeField::Transport => {
                    put(&[
                        u8::from(self.transport.aggregated),
                        u8::from(self.transport.incremental),
                    ]);
                }
            }
        }
        out
    }
}

impl From<Node> for NodeView {
    /// The node, over state-of-the-world ADS.
    fn from(node: Node) -> Self {
        NodeView::new(node, Transport::default())
    }
}

impl From<&Node> for NodeView {
    /// The node, over state-of-the-world ADS.
    fn from(node: &Node) -> Self {
        NodeView::new(node.clone(), Transport::default())
    }
}

/// One field of a node a plugin may read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeField {
    /// `node.id`.
    Id,
    /// `node.cluster`.
    Cluster,
    /// `node.locality`.
    Locality,
    /// One key of `node.metadata`.
    Metadata(String),
    /// All of `node.metadata`.
    MetadataAll,
    /// `node.user_agent_name`.
    UserAgentName,
    /// `node.user_agent_version`.
    UserAgentVersion,
    /// `node.client_features`.
    ClientFeatures,
    /// How the node connected.
    Transport,
}

impl NodeField {
    /// Every field, metadata whole: what a plugin that gets the whole node reads.
    const EVERY: [NodeField; 8] = [
        NodeField::Id,
        NodeField::Cluster,
        NodeField::Locality,
        NodeField::MetadataAll,
        NodeField::UserAgentName,
        NodeField::UserAgentVersion,
        NodeField::ClientFeatures,
        NodeField::Transport,
    ];
}

impl fmt::Display for NodeField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeField::Id => f.write_str("id"),
            NodeField::Cluster => f.write_str("cluster"),
            NodeField::Locality => f.write_str("locality"),
            NodeField::Metadata(key) => write!(f, "metadata.{key}"),
            NodeField::MetadataAll => f.write_str("metadata"),
            NodeField::UserAgentName => f.write_str("user_agent_name"),
            NodeField::UserAgentVersion => f.write_str("user_agent_version"),
            NodeField::ClientFeatures => f.write_str("client_features"),
            NodeField::Transport => f.write_str("transport"),
        }
    }
}

/// Which node fields a run read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NodeReads {
    /// Every field: a plugin built against contract 0.1.0 gets the whole node.
    pub all: bool,
    /// The fields read, when not all.
    pub fields: BTreeSet<NodeField>,
}

impl NodeReads {
    /// Every field.
    pub fn everything() -> Self {
        NodeReads {
            all: true,
            fields: BTreeSet::new(),
        }
    }

    /// Adds another run's reads.
    pub fn extend(&mut self, other: &NodeReads) {
        self.all |= other.all;
        if self.all {
            self.fields.clear();
        } else {
            self.fields.extend(other.fields.iter().cloned());
        }
    }

    /// Records a read; whether it is new.
    pub(crate) fn insert(&mut self, field: NodeField) -> bool {
        !self.all && self.fields.insert(field)
    }

    /// About how many bytes this set takes held: a metadata key's name, plus a word a field.
    pub fn bytes(&self) -> usize {
        self.fields
            .iter()
            .map(|f| match f {
                NodeField::Metadata(key) => 16 + key.len(),
                _ => 16,
            })
            .sum::<usize>()
            + 16
    }

    /// The fields, as operators see them (`*` for all).
    pub fn names(&self) -> Vec<String> {
        if self.all {
            return vec!["*".to_owned()];
        }
        self.fields.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nebucloud_xds_proto::google::protobuf::{value::Kind, Struct, Value};

    fn node(id: &str, cluster: &str, meta: &[(&str, &str)]) -> NodeView {
        let fields = meta
            .iter()
            .map(|(k, v)| {
                let v = Value {
                    kind: Some(Kind::StringValue((*v).to_owned())),
                };
                ((*k).to_owned(), v)
            })
            .collect();
        NodeView::new(
            Node {
                id: id.to_owned(),
                cluster: cluster.to_owned(),
                metadata: Some(Struct { fields }),
                ..Node::default()
            },
            Transport::default(),
        )
    }

    fn reads(fields: &[NodeField]) -> NodeReads {
        NodeReads {
            all: false,
            fields: fields.iter().cloned().collect(),
        }
    }

    #[test]
    fn nodes_project_equal_exactly_when_the_fields_read_are_equal() {
        let a = node("a", "web", &[("zone", "z1"), ("x", "1")]);
        let b = node("b", "web", &[("zone", "z1"), ("x", "2")]);
        let cluster = reads(&[NodeField::Cluster]);
        assert_eq!(a.project(&cluster), b.project(&cluster));
        let zone = reads(&[NodeField::Cluster, NodeField::Metadata("zone".into())]);
        assert_eq!(a.project(&zone), b.project(&zone));
        let x = reads(&[NodeField::Metadata("x".into())]);
        assert_ne!(a.project(&x), b.project(&x));
        assert_ne!(
            a.project(&reads(&[NodeField::Id])),
            b.project(&reads(&[NodeField::Id]))
        );
        assert_ne!(
            a.project(&NodeReads::everything()),
            b.project(&NodeReads::everything())
        );
        // A key set to "" and a key not set differ.
        let unset = node("a", "web", &[]);
        let empty = node("a", "web", &[("x", "")]);
        assert_ne!(unset.project(&x), empty.project(&x));
        // Values do not run together: ("ab", "") is not ("a", "b").
        let ab = NodeView::new(
            Node {
                id: "ab".into(),
                ..Node::default()
            },
            Transport::default(),
        );
        let a_b = NodeView::new(
            Node {
                id: "a".into(),
                cluster: "b".into(),
                ..Node::default()
            },
            Transport::default(),
        );
        let both = reads(&[NodeField::Id, NodeField::Cluster]);
        assert_ne!(ab.project(&both), a_b.project(&both));
    }

    #[test]
    fn the_transport_is_a_field_like_any_other() {
        let ads = node("a", "web", &[]);
        let delta = NodeView::new(
            ads.node().clone(),
            Transport {
                aggregated: true,
                incremental: true,
            },
        );
        let t = reads(&[NodeField::Transport]);
        assert_ne!(ads.project(&t), delta.project(&t));
        assert_eq!(
            ads.project(&reads(&[NodeField::Cluster])),
            delta.project(&reads(&[NodeField::Cluster]))
        );
        assert_eq!(delta.transport().to_string(), "ADS Delta");
    }

    #[test]
    fn reading_everything_absorbs_single_fields() {
        let mut r = reads(&[NodeField::Cluster]);
        r.extend(&NodeReads::everything());
        assert_eq!(r, NodeReads::everything());
        assert!(!r.insert(NodeField::Id));
        assert_eq!(r.names(), vec!["*"]);
        let mut r = reads(&[NodeField::Metadata("k".into())]);
        assert!(r.insert(NodeField::Cluster));
        assert_eq!(r.names(), vec!["cluster", "metadata.k"]);
    }
}
