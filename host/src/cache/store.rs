//! The cache: the latest `ResourceSet` of every node group, published to the streams that
//! serve the group.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

use super::set::ResourceSet;

/// What a stream sees of its group: `None` until the group's first result exists.
pub type GroupView = Option<Arc<ResourceSet>>;

/// The latest resources of every node group.
///
/// Sharded (a `DashMap`), so setting one group never waits on another, and every operation is
/// synchronous: no lock is ever held across an `.await`. Streams hold a [`watch::Receiver`]
/// per group; publishing is O(1) whatever the number of streams, and a stream that wakes late
/// sees only the newest set.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    groups: Arc<DashMap<String, watch::Sender<GroupView>>>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Cache::default()
    }

    /// Publishes `set` as the group's resources. Returns whether anything changed: a set whose
    /// content hash equals the current one is not published, so clients see no push.
    pub fn set(&self, group: &str, set: ResourceSet) -> bool {
        self.set_shared(group, Arc::new(set))
    }

    /// As [`Cache::set`], for a set already shared.
    pub fn set_shared(&self, group: &str, set: Arc<ResourceSet>) -> bool {
        let sender = self.sender(group);
        sender.send_if_modified(|current| match current {
            Some(old) if old.version() == set.version() => false,
            _ => {
                *current = Some(set);
                true
            }
        })
    }

    /// The group's current resources, if it has any yet.
    pub fn get(&self, group: &str) -> GroupView {
        self.groups.get(group).and_then(|s| s.borrow().clone())
    }

    /// A receiver that sees the group's current resources and every later change.
    pub fn watch(&self, group: &str) -> watch::Receiver<GroupView> {
        self.sender(group).subscribe()
    }

    /// Withdraws the group's resources until the next [`Cache::set`]: its streams keep what
    /// they have, and a stream that opens meanwhile waits for the next set. Unlike
    /// [`Cache::remove`], the group keeps its slot.
    pub fn clear(&self, group: &str) {
        if let Some(s) = self.groups.get(group) {
            s.send_if_modified(|current| current.take().is_some());
        }
    }

    /// Clears a group: go-control-plane's `ClearSnapshot`, and the way to drop a group an
    /// embedder no longer serves. Its resources and its slot are freed: [`Cache::get`] is
    /// `None`, and [`Cache::groups`] lists it again only once a stream watches it.
    ///
    /// Its open streams keep what they were sent and wait, as streams of a group without
    /// resources do: when the group is set again, they get the new set. A stream that opens
    /// meanwhile waits for that set too.
    pub fn remove(&self, group: &str) {
        self.groups.remove(group);
    }

    /// The names of the groups that have a slot (a result, or a stream waiting for one).
    pub fn groups(&self) -> Vec<String> {
        self.groups.iter().map(|e| e.key().clone()).collect()
    }

    /// How many streams watch the group now.
    pub fn watchers(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, |s| s.receiver_count())
    }

    fn sender(&self, group: &str) -> watch::Sender<GroupView> {
        if let Some(s) = self.groups.get(group) {
            return s.clone();
        }
        self.groups
            .entry(group.to_owned())
            .or_insert_with(|| watch::Sender::new(None))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Resource;

    fn set(body: u8) -> ResourceSet {
        ResourceSet::new([Resource::new("type.googleapis.com/t.A", "a", vec![body])])
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn watchers_see_new_sets_and_identical_sets_are_not_republished() {
        let cache = Cache::new();
        let mut rx = cache.watch("g");
        assert!(rx.borrow_and_update().is_none());
        assert!(cache.set("g", set(1)));
        assert!(rx.has_changed().unwrap_or(false));
        let seen = rx.borrow_and_update().clone();
        assert_eq!(seen.map(|s| s.len()), Some(1));
        assert!(
            !cache.set("g", set(1)),
            "same content must not be republished"
        );
        assert!(!rx.has_changed().unwrap_or(true));
        assert!(cache.set("g", set(2)));
        assert!(rx.has_changed().unwrap_or(false));
    }

    #[test]
    fn groups_are_independent() {
        let cache = Cache::new();
        cache.set("a", set(1));
        assert!(cache.get("b").is_none());
        assert!(cache.get("a").is_some());
        let mut groups = cache.groups();
        groups.sort();
        assert_eq!(groups, vec!["a".to_owned()]);
        let _rx = cache.watch("b");
        assert_eq!(cache.watchers("b"), 1);
        cache.clear("a");
        assert!(cache.get("a").is_none(), "cleared");
        assert!(cache.set("a", set(1)), "a set after a clear is published");
        cache.remove("a");
        assert!(cache.get("a").is_none());
    }
}
