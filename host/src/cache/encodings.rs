//! What a set's resources encode to on the wire, made once per selection and kept with the
//! set: every stream of every group that holds the set sends the same bytes.
//!
//! The cache does not know the encoding (the xDS layer makes it); it holds it, bounded, and
//! forgets it with the set. An entry is used only for the very resources it was made of
//! (compared by pointer), under the same type, version string and variant, so nothing but
//! the inputs of an encoding decides whether it is reused.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::resource::Resource;

/// The most encodings one set keeps (a type's selection, per wire variant).
pub(crate) const MAX_ENCODINGS_PER_SET: usize = 16;

/// Bytes allowed per resource, beyond its body, for what the encoding adds to it (the type
/// URL, name, framing).
const OVERHEAD_PER_RESOURCE: usize = 256;

/// A set's encodings.
#[derive(Default)]
pub(crate) struct Encodings {
    entries: Mutex<Entries>,
    /// The most bytes all entries' encodings may hold together: twice what the set's
    /// resources weigh (bodies, names, and [`OVERHEAD_PER_RESOURCE`] each).
    max_bytes: usize,
}

/// The entries, and a clock of uses: past a bound, the least recently used goes first, so
/// selections one stream asks for once cannot keep the fleet's own out.
#[derive(Default)]
struct Entries {
    list: Vec<Entry>,
    clock: u64,
}

impl Entries {
    fn find(&mut self, key: &Key<'_>, resources: &[Arc<Resource>]) -> Option<Bytes> {
        self.clock += 1;
        let clock = self.clock;
        let e = self.list.iter_mut().find(|e| e.is(key, resources))?;
        e.used = clock;
        Some(e.bytes.clone())
    }

    fn bytes(&self) -> usize {
        self.list.iter().map(|e| e.bytes.len()).sum()
    }

    /// Drops the least recently used entry, if any.
    fn evict(&mut self) -> bool {
        let Some(oldest) = (0..self.list.len()).min_by_key(|&i| self.list[i].used) else {
            return false;
        };
        self.list.swap_remove(oldest);
        metrics::counter!("xds_response_bodies_evicted_total").increment(1);
        true
    }
}

struct Entry {
    used: u64,
    type_url: String,
    version: String,
    variant: u8,
    resources: Vec<Arc<Resource>>,
    bytes: Bytes,
}

impl Entry {
    fn is(&self, key: &Key<'_>, resources: &[Arc<Resource>]) -> bool {
        self.variant == key.variant
            && self.version == key.version
            && self.type_url == key.type_url
            && self.resources.len() == resources.len()
            && self
                .resources
                .iter()
                .zip(resources)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// What an encoding is of, besides its resources.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a> {
    pub(crate) type_url: &'a str,
    /// The version string the encoding carries.
    pub(crate) version: &'a str,
    /// How the encoder wraps the resources (its own flags).
    pub(crate) variant: u8,
}

/// Where an encoding came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoded {
    /// Made earlier for another stream.
    Reused,
    /// Made now and kept (the least recently used entries make room for it).
    Made,
    /// Made now and not kept: alone it is over the set's bound in bytes.
    Refused,
}

impl Encodings {
    pub(crate) fn for_set<'a>(resources: impl Iterator<Item = &'a Arc<Resource>>) -> Self {
        let weight: usize = resources
            .map(|r| r.body().len() + r.name().len() + OVERHEAD_PER_RESOURCE)
            .sum();
        Encodings {
            entries: Mutex::default(),
            max_bytes: weight.saturating_mul(2),
        }
    }

    /// The encoding of `resources` under `key`, made by `encode` unless held, counted by where
    /// it came from in `xds_response_bodies_total{how}`.
    pub(crate) fn get_or_make(
        &self,
        key: Key<'_>,
        resources: &[Arc<Resource>],
        encode: impl FnOnce() -> Bytes,
    ) -> (Bytes, Encoded) {
        let (bytes, how) = self.find_or_make(key, resources, encode);
        let label = match how {
            Encoded::Reused => "reused",
            Encoded::Made => "made",
            Encoded::Refused => "refused",
        };
        metrics::counter!("xds_response_bodies_total", "how" => label).increment(1);
        (bytes, how)
    }

    /// [`Encodings::get_or_make`], uncounted. The lock is not held while encoding: two streams
    /// may both make it, one keeps it.
    fn find_or_make(
        &self,
        key: Key<'_>,
        resources: &[Arc<Resource>],
        encode: impl FnOnce() -> Bytes,
    ) -> (Bytes, Encoded) {
        if let Some(bytes) = self
            .entries
            .lock()
            .ok()
            .and_then(|mut e| e.find(&key, resources))
        {
            return (bytes, Encoded::Reused);
        }
        let bytes = encode();
        if bytes.len() > self.max_bytes {
            return (bytes, Encoded::Refused);
        }
        let Ok(mut entries) = self.entries.lock() else {
            return (bytes, Encoded::Refused);
        };
        if let Some(held) = entries.find(&key, resources) {
            return (held, Encoded::Reused);
        }
        while entries.list.len() >= MAX_ENCODINGS_PER_SET
            || entries.bytes() + bytes.len() > self.max_bytes
        {
            if !entries.evict() {
                break;
            }
        }
        let used = entries.clock;
        entries.list.push(Entry {
            used,
            type_url: key.type_url.to_owned(),
            version: key.version.to_owned(),
            variant: key.variant,
            resources: resources.to_vec(),
            bytes: bytes.clone(),
        });
        (bytes, Encoded::Made)
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap();
        (entries.list.len(), entries.bytes())
    }
}

/// Derived data, not content: two sets of equal resources are equal whatever they encoded.
impl PartialEq for Encodings {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Encodings {}

impl std::fmt::Debug for Encodings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.entries.lock().map_or(0, |e| e.list.len());
        f.debug_struct("Encodings").field("held", &held).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(n: usize, body: usize) -> Vec<Arc<Resource>> {
        (0..n)
            .map(|i| Arc::new(Resource::new("t/x", format!("r{i}"), vec![b'x'; body])))
            .collect()
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![0; n])
    }

    fn key<'a>(type_url: &'a str, version: &'a str, variant: u8) -> Key<'a> {
        Key {
            type_url,
            version,
            variant,
        }
    }

    #[test]
    fn a_selection_is_encoded_once_and_reused_only_for_the_same_resources() {
        let all = resources(3, 10);
        let memo = Encodings::for_set(all.iter());
        let (first, how) = memo.get_or_make(key("t/x", "v1", 0), &all, || bytes(40));
        assert_eq!(how, Encoded::Made);
        let (again, how) = memo.get_or_make(key("t/x", "v1", 0), &all, || unreachable!("held"));
        assert_eq!((how, again.as_ptr()), (Encoded::Reused, first.as_ptr()));
        // Another variant, type or version string, fewer resources, equal resources of
        // another set: each is its own encoding.
        let copies: Vec<_> = all.iter().map(|r| Arc::new((**r).clone())).collect();
        let others = [
            (key("t/x", "v1", 1), &all[..]),
            (key("t/y", "v1", 0), &all[..]),
            (key("t/x", "v0", 0), &all[..]),
            (key("t/x", "v1", 0), &all[..2]),
            (key("t/x", "v1", 0), &copies[..]),
        ];
        for (k, rs) in others {
            let (_, how) = memo.get_or_make(k, rs, || bytes(1));
            assert_eq!(how, Encoded::Made, "{k:?} {}", rs.len());
        }
        assert_eq!(memo.held(), (6, 45));
    }

    #[test]
    fn past_its_count_or_bytes_the_least_recently_used_encoding_makes_room() {
        let all = resources(1, 0);
        // One resource of no body: its weight is its name and the overhead.
        let max = 2 * (2 + OVERHEAD_PER_RESOURCE);
        let memo = Encodings::for_set(all.iter());
        let (_, how) = memo.get_or_make(key("t/x", "v", 0), &all, || bytes(max + 1));
        assert_eq!(how, Encoded::Refused, "alone over twice the set's weight");
        assert_eq!(memo.held(), (0, 0));
        for v in 0..MAX_ENCODINGS_PER_SET as u8 {
            let (_, how) = memo.get_or_make(key("t/x", "v", v), &all, || bytes(1));
            assert_eq!(how, Encoded::Made);
        }
        // The fleet's selection (variant 0) is in use; a sixteenth other one evicts variant 1,
        // the least recently used, not it.
        let (_, how) = memo.get_or_make(key("t/x", "v", 0), &all, || unreachable!("held"));
        assert_eq!(how, Encoded::Reused);
        let (_, how) = memo.get_or_make(key("t/y", "v", 0), &all, || bytes(1));
        assert_eq!(how, Encoded::Made);
        assert_eq!(memo.held(), (MAX_ENCODINGS_PER_SET, MAX_ENCODINGS_PER_SET));
        let (_, how) = memo.get_or_make(key("t/x", "v", 0), &all, || unreachable!("kept"));
        assert_eq!(how, Encoded::Reused);
        let (_, how) = memo.get_or_make(key("t/x", "v", 1), &all, || bytes(1));
        assert_eq!(how, Encoded::Made, "evicted, made again");
        // Past the bytes: as many of the least recently used go as it takes.
        let (_, how) = memo.get_or_make(key("t/z", "v", 0), &all, || bytes(max - 3));
        assert_eq!(how, Encoded::Made);
        assert_eq!(
            memo.held(),
            (4, max),
            "the three most recently used, and it"
        );
        let (_, how) = memo.get_or_make(key("t/x", "v", 0), &all, || unreachable!("recent"));
        assert_eq!(how, Encoded::Reused);
        let (_, how) = memo.get_or_make(key("t/x", "v", 5), &all, || bytes(1));
        assert_eq!(how, Encoded::Made, "evicted for the bytes");
    }
}
