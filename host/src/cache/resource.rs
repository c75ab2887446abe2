//! One xDS resource as the cache holds it: encoded once, versioned by its content.

use std::time::Duration;

use bytes::Bytes;
use nebucloud_xds_proto::google::protobuf::Any;
use xxhash_rust::xxh3::Xxh3;

/// A named resource of one type, encoded as protobuf, with a content-hash version.
///
/// The version depends only on the body and the TTL, so two hosts (or one host before and after
/// a restart) that produce the same resource give it the same version, and a recompute that
/// produces identical bytes changes nothing that a client can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    name: String,
    type_url: String,
    body: Bytes,
    ttl: Option<Duration>,
    version: String,
}

impl Resource {
    /// A resource from its already-encoded protobuf body.
    pub fn new(
        type_url: impl Into<String>,
        name: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Self {
        let body = body.into();
        let version = content_version(&body, None);
        Resource {
            name: name.into(),
            type_url: type_url.into(),
            body,
            ttl: None,
            version,
        }
    }

    /// A resource from a message, whose type URL is the message's own.
    pub fn from_message<M: prost::Message + prost::Name>(
        name: impl Into<String>,
        message: &M,
    ) -> Self {
        Resource::new(M::type_url(), name, message.encode_to_vec())
    }

    /// The same resource with a time-to-live: clients that announce
    /// `xds.config.supports-resource-ttl` drop it unless it is refreshed by a heartbeat.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.version = content_version(&self.body, Some(ttl));
        self.ttl = Some(ttl);
        self
    }

    /// The resource's name, unique within its type in a [`ResourceSet`](super::ResourceSet).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The type URL, e.g. `type.googleapis.com/envoy.config.cluster.v3.Cluster`.
    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    /// The protobuf encoding of the message.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The time-to-live, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The content-hash version: 16 hex digits.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The resource as a response carries it: its body in an `Any` of its type (the body is
    /// shared, not copied).
    pub(crate) fn to_any(&self) -> Any {
        Any {
            type_url: self.type_url.clone(),
            value: self.body.clone(),
        }
    }
}

fn content_version(body: &[u8], ttl: Option<Duration>) -> String {
    let mut h = Xxh3::new();
    h.update(body);
    if let Some(ttl) = ttl {
        h.update(&ttl.as_nanos().to_le_bytes());
    }
    format!("{:016x}", h.digest())
}

/// Hashes `(name, version)` pairs into one version: the version of a group of resources.
///
/// Callers pass pairs in name order, so equal contents always give equal versions.
pub(crate) fn combined_version<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Xxh3::new();
    for (name, version) in items {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(version.as_bytes());
        h.update(&[0]);
    }
    format!("{:016x}", h.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_bodies_have_identical_versions() {
        let a = Resource::new("t", "a", vec![1, 2, 3]);
        let b = Resource::new("t", "b", vec![1, 2, 3]);
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), Resource::new("t", "a", vec![1, 2]).version());
    }

    #[test]
    fn ttl_changes_the_version() {
        let a = Resource::new("t", "a", vec![1]);
        let b = a.clone().with_ttl(Duration::from_secs(5));
        assert_ne!(a.version(), b.version());
        assert_eq!(b.ttl(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn versions_are_stable_across_runs() {
        // A content hash, not a counter: this literal must never change, or replicas and
        // restarts would disagree with clients that hold the old version.
        assert_eq!(
            Resource::new("t", "a", b"hello".to_vec()).version(),
            "9555e8555c62dcfd"
        );
    }

    #[test]
    fn combined_version_depends_on_names_and_versions() {
        let v1 = combined_version([("a", "1"), ("b", "2")]);
        assert_ne!(v1, combined_version([("a", "1"), ("b", "3")]));
        assert_ne!(v1, combined_version([("a", "1"), ("c", "2")]));
        assert_ne!(
            combined_version([("ab", "")]),
            combined_version([("a", "b")])
        );
    }
}
