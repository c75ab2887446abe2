//! Compiled functions kept between loads: Cranelift's incremental cache, in memory, bounded.
//!
//! A plugin rebuilt after an edit differs from the build before it in a few functions; the rest
//! (the SDK, serde, prost, the Envoy types) compile to the same machine code. Cranelift keys
//! each function's compiled code by a hash of its intermediate code and the compiler's
//! settings, so an unchanged function is taken from here instead of being compiled again: a
//! reload then costs translating and hashing the module, not code generation, which is most of
//! the time from a plugin file written to the clients having its output.
//!
//! Bounded in entries and bytes; past either, it starts over empty (counted in
//! `plugin_compile_cache_resets_total`): it is a cache, and a load always compiles what it
//! does not find.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::CacheStore;

/// At most this many compiled functions are kept (a 1 MB plugin has about 3,000).
pub(crate) const MAX_ENTRIES: usize = 200_000;
/// At most this many bytes of keys and compiled code are kept, each entry counted with
/// [`ENTRY_OVERHEAD`] more for the map and the allocations.
pub(crate) const MAX_BYTES: usize = 128 << 20;
/// What an entry costs beyond its key and code: the map's slot and two allocations' headers.
const ENTRY_OVERHEAD: usize = 96;

/// What the cache holds and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileCacheStats {
    /// Compiled functions held.
    pub entries: usize,
    /// Bytes of keys and code held.
    pub bytes: usize,
    /// Functions taken from the cache instead of compiled.
    pub hits: u64,
    /// Functions looked up and not found (then compiled).
    pub misses: u64,
}

/// The in-memory store behind [`wasmtime::Config::enable_incremental_compilation`].
#[derive(Debug)]
pub(crate) struct CompileCache {
    max_entries: usize,
    max_bytes: usize,
    held: Mutex<Held>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct Held {
    code: HashMap<Box<[u8]>, Arc<[u8]>>,
    bytes: usize,
}

impl CompileCache {
    /// A cache of at most `max_entries` functions and `max_bytes` bytes.
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        CompileCache {
            max_entries,
            max_bytes,
            held: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> CompileCacheStats {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        CompileCacheStats {
            entries: held.code.len(),
            bytes: held.bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

impl CacheStore for CompileCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let found = held.code.get(key).cloned();
        drop(held);
        // Copied outside the lock: the compile threads look up at once.
        let found = found.map(|code| Cow::Owned(code.to_vec()));
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("plugin_compile_cache_hits_total").increment(1);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("plugin_compile_cache_misses_total").increment(1);
        }
        found
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = key.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_bytes {
            return false;
        }
        let (key, value): (Box<[u8]>, Arc<[u8]>) = (key.into(), value.into());
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = held.code.remove(&key) {
            held.bytes -= key.len() + old.len() + ENTRY_OVERHEAD;
        }
        let mut dropped = None;
        if held.code.len() + 1 > self.max_entries || held.bytes + size > self.max_bytes {
            // Freed after the lock is released, not while the compile threads wait on it.
            dropped = Some(std::mem::take(&mut held.code));
            held.bytes = 0;
        }
        held.code.insert(key, value);
        held.bytes += size;
        drop(held);
        if dropped.is_some() {
            metrics::counter!("plugin_compile_cache_resets_total").increment(1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_inserted_is_found_and_counted() {
        let cache = CompileCache::new(10, 1000);
        assert_eq!(cache.get(b"k"), None);
        assert!(cache.insert(b"k", b"code".to_vec()));
        assert_eq!(cache.get(b"k").as_deref(), Some(&b"code"[..]));
        // Replacing a key counts its bytes once.
        assert!(cache.insert(b"k", b"other".to_vec()));
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (1, 6 + ENTRY_OVERHEAD));
        assert_eq!((stats.hits, stats.misses), (1, 1));
    }

    #[test]
    fn past_its_entries_it_starts_over() {
        let cache = CompileCache::new(2, 1000);
        assert!(cache.insert(b"a", vec![1]));
        assert!(cache.insert(b"b", vec![2]));
        assert!(cache.insert(b"c", vec![3]));
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (1, 2 + ENTRY_OVERHEAD));
        assert_eq!(cache.get(b"a"), None);
        assert!(cache.get(b"c").is_some());
    }

    #[test]
    fn past_its_bytes_counted_with_overhead_it_starts_over_and_a_value_larger_than_all_is_refused()
    {
        let cache = CompileCache::new(100, 2 * ENTRY_OVERHEAD + 10);
        assert!(cache.insert(b"a", vec![0; 5]));
        assert!(cache.insert(b"b", vec![0; 5]));
        assert!(cache.insert(b"c", vec![0; 5]));
        assert_eq!(cache.stats().entries, 1);
        assert!(cache.stats().bytes <= 2 * ENTRY_OVERHEAD + 10);
        assert!(!cache.insert(b"d", vec![0; ENTRY_OVERHEAD + 10]));
        assert_eq!(cache.get(b"d"), None);
    }
}
