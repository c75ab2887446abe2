//! The message types the host knows (every Envoy v3 API message), by type URL: to check that
//! a body decodes as its type, and to convert resources to and from their JSON form.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};

use crate::cache::Resource;

/// Why a resource does not fit its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The type URL names no message this host knows.
    #[error("unknown type URL {type_url:?}")]
    UnknownType {
        /// The type URL.
        type_url: String,
    },
    /// The body is not a valid encoding of the type.
    #[error("body of {type_url} does not decode: {reason}")]
    Undecodable {
        /// The type URL.
        type_url: String,
        /// The decoder's message.
        reason: String,
    },
    /// The JSON form does not fit the type.
    #[error("{what}: {reason}")]
    BadJson {
        /// Which resource or field.
        what: String,
        /// Why.
        reason: String,
    },
    /// The embedded descriptor set is unreadable (a build defect, not an input error).
    #[error("the embedded Envoy descriptor set is unreadable: {0}")]
    Descriptors(String),
}

/// The Envoy API message types, by type URL.
#[derive(Debug)]
pub struct Schema {
    pool: DescriptorPool,
}

impl Schema {
    /// The schema of the Envoy v3 API this host was built with (decoded once per process).
    pub fn envoy() -> Result<&'static Schema, SchemaError> {
        static SCHEMA: OnceLock<Result<Schema, SchemaError>> = OnceLock::new();
        SCHEMA
            .get_or_init(|| {
                DescriptorPool::decode(nebucloud_xds_proto::FILE_DESCRIPTOR_SET)
                    .map(|pool| Schema { pool })
                    .map_err(|e| SchemaError::Descriptors(e.to_string()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The descriptor of the message a type URL names.
    pub fn message(&self, type_url: &str) -> Result<MessageDescriptor, SchemaError> {
        let name = type_url.rsplit_once('/').map_or(type_url, |(_, n)| n);
        self.pool
            .get_message_by_name(name)
            .ok_or_else(|| SchemaError::UnknownType {
                type_url: type_url.to_owned(),
            })
    }

    /// Decodes `body` as `type_url`: `Ok` means a client can parse it.
    pub fn decode(&self, type_url: &str, body: &[u8]) -> Result<DynamicMessage, SchemaError> {
        DynamicMessage::decode(self.message(type_url)?, body).map_err(|e| {
            SchemaError::Undecodable {
                type_url: type_url.to_owned(),
                reason: e.to_string(),
            }
        })
    }

    /// The proto3 JSON form of a resource body (`Any` fields expanded with their `@type`).
    pub fn to_json(&self, type_url: &str, body: &[u8]) -> Result<serde_json::Value, SchemaError> {
        let msg = self.decode(type_url, body)?;
        serde_json::to_value(&msg).map_err(|e| SchemaError::BadJson {
            what: type_url.to_owned(),
            reason: e.to_string(),
        })
    }

    /// A resource from its proto3 JSON form, which names its type in `@type` (as Envoy's own
    /// file-based configuration does). The name is the message's `name` field, or
    /// `cluster_name` for a `ClusterLoadAssignment`.
    pub fn resource_from_json(&self, json: &serde_json::Value) -> Result<Resource, SchemaError> {
        let bad = |reason: String| SchemaError::BadJson {
            what: "resource".into(),
            reason,
        };
        let mut object = json
            .as_object()
            .cloned()
            .ok_or_else(|| bad("a resource must be a JSON/YAML object".into()))?;
        let type_url = match object.remove("@type") {
            Some(serde_json::Value::String(t)) => t,
            _ => {
                return Err(bad(
                    "a resource needs an \"@type\" naming its type URL".into()
                ))
            }
        };
        let msg = self.from_json(&type_url, serde_json::Value::Object(object))?;
        let name = ["name", "cluster_name"]
            .iter()
            .find_map(|f| match msg.get_field_by_name(f).as_deref() {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            })
            .ok_or_else(|| SchemaError::BadJson {
                what: type_url.clone(),
                reason: "the resource has no name (field `name`, or `cluster_name`)".into(),
            })?;
        Ok(Resource::new(
            type_url,
            name,
            prost::Message::encode_to_vec(&msg),
        ))
    }

    /// A message of `type_url` from its proto3 JSON form (without `@type`).
    pub fn from_json(
        &self,
        type_url: &str,
        json: serde_json::Value,
    ) -> Result<DynamicMessage, SchemaError> {
        DynamicMessage::deserialize(self.message(type_url)?, json).map_err(|e| {
            SchemaError::BadJson {
                what: type_url.to_owned(),
                reason: e.to_string(),
            }
        })
    }
}

/// A `google.protobuf.Struct` (node metadata) as JSON.
pub fn struct_to_json(s: &nebucloud_xds_proto::google::protobuf::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &nebucloud_xds_proto::google::protobuf::Value) -> serde_json::Value {
    use nebucloud_xds_proto::google::protobuf::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nebucloud_xds_proto::envoy::config::cluster::v3::Cluster;
    use nebucloud_xds_proto::type_url;

    #[test]
    fn json_round_trips_through_the_generated_types() {
        let schema = Schema::envoy().unwrap();
        let json = serde_json::json!({
            "@type": type_url::CLUSTER,
            "name": "backend",
            "connect_timeout": "1s",
            "type": "EDS",
            "eds_cluster_config": {"eds_config": {"ads": {}}},
        });
        let r = schema.resource_from_json(&json).unwrap();
        assert_eq!(r.name(), "backend");
        let c: Cluster = prost::Message::decode(r.body().clone()).unwrap();
        assert_eq!(c.connect_timeout.map(|d| d.seconds), Some(1));
        let back = schema.to_json(type_url::CLUSTER, r.body()).unwrap();
        assert_eq!(back["name"], "backend");
        assert_eq!(back["connectTimeout"], "1s");
    }

    #[test]
    fn garbage_and_unknown_types_are_precise_errors() {
        let schema = Schema::envoy().unwrap();
        assert!(matches!(
            schema.decode(type_url::CLUSTER, &[0xff, 0xff, 0xff]),
            Err(SchemaError::Undecodable { .. })
        ));
        assert!(matches!(
            schema.decode("type.googleapis.com/nope.Nope", &[]),
            Err(SchemaError::UnknownType { .. })
        ));
        let no_name = serde_json::json!({"@type": type_url::CLUSTER});
        let err = schema.resource_from_json(&no_name).unwrap_err().to_string();
        assert!(err.contains("no name"), "{err}");
        let bad_field = serde_json::json!({"@type": type_url::CLUSTER, "name": "x", "bogus": 1});
        assert!(schema.resource_from_json(&bad_field).is_err());
    }
}
