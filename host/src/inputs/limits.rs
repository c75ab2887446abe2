//! Bounds on what one input source may put in the store, and how long a changed file must
//! stay unchanged before it is read: no source can grow the server's memory without limit.

use std::collections::BTreeMap;
use std::time::Duration;

/// Default settle window of a change no file event marks whole (the polling fallback, a writer
/// that keeps the file open): a little under one poll interval, so such an edit is published
/// on the poll after the one that saw it.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(200);
/// Default largest document file.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 << 20;
/// Default most document files read from the directory.
pub const DEFAULT_MAX_FILES: usize = 10_000;
/// Default most documents one source holds.
pub const DEFAULT_MAX_DOCUMENTS: usize = 100_000;
/// Default largest etcd value: etcd's own default request limit (`--max-request-bytes`).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1536 << 10;

/// What one source may hold. Over a limit, the file or key is refused with an error naming it
/// and the limit, and keeps its last good documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// How long a change that no close or rename marks whole must stay unchanged before the
    /// store sees it; zero publishes what each look sees.
    pub settle: Duration,
    /// Largest document file read, in bytes.
    pub max_file_bytes: u64,
    /// Most document files read from the directory; past it, only the first ones by path.
    pub max_files: usize,
    /// Most documents one source (the directory, the etcd prefix) holds.
    pub max_documents: usize,
    /// Largest etcd value decoded, in bytes.
    pub max_value_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            settle: DEFAULT_SETTLE,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_files: DEFAULT_MAX_FILES,
            max_documents: DEFAULT_MAX_DOCUMENTS,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// How many documents each entry (a file, an etcd key) of one source holds, against the
/// source's `max_documents`.
#[derive(Debug)]
pub(crate) struct DocumentBudget {
    per_entry: BTreeMap<String, usize>,
    total: usize,
    max: usize,
}

impl DocumentBudget {
    /// An empty budget of `max` documents.
    pub(crate) fn new(max: usize) -> Self {
        DocumentBudget {
            per_entry: BTreeMap::new(),
            total: 0,
            max,
        }
    }

    /// Lets `entry` hold `count` documents instead of what it held, unless that takes the
    /// source over its limit: then nothing changes and the error says by how much.
    pub(crate) fn admit(&mut self, entry: &str, count: usize) -> Result<(), String> {
        let current = self.per_entry.get(entry).copied().unwrap_or(0);
        let next = self.total - current + count;
        if next > self.max && count > current {
            return Err(format!(
                "its {count} documents would make the source's {next}, over \
                 inputs.max_documents = {}",
                self.max
            ));
        }
        self.total = next;
        if count == 0 {
            self.per_entry.remove(entry);
        } else {
            self.per_entry.insert(entry.to_owned(), count);
        }
        Ok(())
    }

    /// `entry` holds nothing any more.
    pub(crate) fn release(&mut self, entry: &str) {
        if let Some(n) = self.per_entry.remove(entry) {
            self.total -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_growth_past_its_limit_and_always_allows_shrinking() {
        let mut b = DocumentBudget::new(3);
        assert!(b.admit("a", 2).is_ok());
        let e = b.admit("b", 2).unwrap_err();
        assert!(e.contains("inputs.max_documents = 3"), "{e}");
        assert!(b.admit("a", 3).is_ok(), "an entry may grow into the room");
        b.release("a");
        assert!(b.admit("b", 3).is_ok());
        assert!(b.admit("b", 1).is_ok());
        assert_eq!(b.total, 1);
    }
}
