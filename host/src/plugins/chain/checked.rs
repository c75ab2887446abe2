//! Bodies the chain has decoded against their type already: a plugin that returns the same
//! cluster on every run (most do) is not decoded again. Kept by type and content hash with the
//! body itself, which a hit compares byte for byte, so that a body crafted to collide with
//! one checked before is still decoded. Bounded in count and bytes; past either, the memo
//! starts over.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::cache::Resource;

/// The most bodies held.
pub(crate) const MAX_CHECKED: usize = 100_000;
/// The most bytes of bodies held (the bodies are shared with the resources that carry them,
/// but the memo can keep a body alive after its resource is gone).
pub(crate) const MAX_CHECKED_BYTES: usize = 64 << 20;

/// Bodies known to decode as their type.
#[derive(Debug)]
pub(crate) struct Checked {
    inner: Mutex<Inner>,
    max: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    bodies: HashMap<(String, String), Bytes>,
    bytes: usize,
}

impl Default for Checked {
    fn default() -> Self {
        Checked::with_limits(MAX_CHECKED, MAX_CHECKED_BYTES)
    }
}

impl Checked {
    /// A memo of at most `max` bodies and `max_bytes` bytes.
    pub(crate) fn with_limits(max: usize, max_bytes: usize) -> Self {
        Checked {
            inner: Mutex::new(Inner::default()),
            max,
            max_bytes,
        }
    }

    /// Whether `r`'s body (the same bytes, of the same type) decoded before.
    pub(crate) fn contains(&self, r: &Resource) -> bool {
        let Ok(inner) = self.inner.lock() else {
            return false;
        };
        inner
            .bodies
            .get(&(r.type_url().to_owned(), r.version().to_owned()))
            .is_some_and(|body| body == r.body())
    }

    /// Remembers that `r`'s body decodes as its type.
    pub(crate) fn insert(&self, r: &Resource) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let len = r.body().len();
        if inner.bodies.len() >= self.max || inner.bytes + len > self.max_bytes {
            metrics::counter!("plugin_checked_bodies_reset_total").increment(1);
            inner.bodies.clear();
            inner.bytes = 0;
        }
        if len > self.max_bytes {
            return;
        }
        let key = (r.type_url().to_owned(), r.version().to_owned());
        if let Some(old) = inner.bodies.insert(key, r.body().clone()) {
            inner.bytes -= old.len();
        }
        inner.bytes += len;
    }

    /// How many bodies and bytes are held.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.bodies.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, body: &[u8]) -> Resource {
        Resource::new(
            "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            name,
            body.to_vec(),
        )
    }

    #[test]
    fn a_body_is_known_by_type_and_bytes_whatever_its_name() {
        let checked = Checked::default();
        let a = cluster("a", b"\x0a\x01a");
        assert!(!checked.contains(&a));
        checked.insert(&a);
        assert!(checked.contains(&cluster("other-name", b"\x0a\x01a")));
        assert!(!checked.contains(&cluster("a", b"\x0a\x01b")));
        let listener = Resource::new(
            "type.googleapis.com/envoy.config.listener.v3.Listener",
            "a",
            b"\x0a\x01a".to_vec(),
        );
        assert!(
            !checked.contains(&listener),
            "the same bytes of another type"
        );
    }

    #[test]
    fn past_its_count_or_bytes_the_memo_starts_over() {
        let checked = Checked::with_limits(2, 10);
        checked.insert(&cluster("a", b"1234"));
        checked.insert(&cluster("b", b"5678"));
        assert_eq!(checked.len(), (2, 8));
        checked.insert(&cluster("c", b"9"));
        assert_eq!(checked.len(), (1, 1), "the count limit");
        checked.insert(&cluster("d", b"abcdefghij"));
        assert_eq!(checked.len(), (1, 10), "the byte limit");
        checked.insert(&cluster("e", b"far too many bytes"));
        assert_eq!(checked.len(), (0, 0), "a body over the limit is not held");
    }
}
