//! What one stream has subscribed to for one type: wildcard (explicit `*` or legacy), names.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::cache::{combined_version, Resource, ResourceSet};

/// The explicit wildcard name.
pub(crate) const WILDCARD: &str = "*";

/// The subscription of one stream to one resource type.
///
/// Wildcard is an explicit `*` or, for a client that has never named a resource of this type,
/// an empty list (the legacy form). Once names have been sent, an empty list means
/// "unsubscribe from everything".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SubscriptionState {
    wildcard: bool,
    names: BTreeSet<String>,
    ever_named: bool,
    /// The sum of the lengths of `names`, kept as they change (never recounted).
    bytes: usize,
}

/// What a request changed in a subscription.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SubscriptionChange {
    /// Names newly subscribed (explicitly).
    pub(crate) added: Vec<String>,
    /// Names no longer subscribed (explicitly).
    pub(crate) removed: Vec<String>,
    /// Whether wildcard was turned on by this request.
    pub(crate) wildcard_added: bool,
    /// Whether wildcard was turned off by this request.
    pub(crate) wildcard_removed: bool,
}

impl SubscriptionState {
    /// Whether the stream gets every resource of the type.
    pub(crate) fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The explicitly subscribed names.
    pub(crate) fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// Whether a resource of this name is subscribed, explicitly or by wildcard.
    pub(crate) fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Replaces the subscription with the names of a State-of-the-World request, in
    /// O(n log n): the request's names are moved in, and only the newly added ones copied.
    pub(crate) fn apply_sotw(&mut self, resource_names: Vec<String>) -> SubscriptionChange {
        let wildcard = if resource_names.is_empty() {
            !self.ever_named
        } else {
            self.ever_named = true;
            resource_names.iter().any(|n| n == WILDCARD)
        };
        let old = std::mem::take(&mut self.names);
        let mut added = Vec::new();
        let mut bytes = 0;
        for name in resource_names {
            if name == WILDCARD || self.names.contains(&name) {
                continue;
            }
            if !old.contains(&name) {
                added.push(name.clone());
            }
            bytes += name.len();
            self.names.insert(name);
        }
        let removed = old
            .into_iter()
            .filter(|n| !self.names.contains(n))
            .collect();
        let change = SubscriptionChange {
            added,
            removed,
            wildcard_added: wildcard && !self.wildcard,
            wildcard_removed: !wildcard && self.wildcard,
        };
        self.wildcard = wildcard;
        self.bytes = bytes;
        change
    }

    /// Applies the subscribe/unsubscribe lists of a delta request. `first` is whether this is
    /// the first request of the stream for this type: only then does an empty subscribe list
    /// mean (legacy) wildcard.
    pub(crate) fn apply_delta(
        &mut self,
        first: bool,
        subscribe: &[String],
        unsubscribe: &[String],
    ) -> SubscriptionChange {
        let mut change = SubscriptionChange::default();
        if first && subscribe.is_empty() && !self.ever_named {
            change.wildcard_added = !self.wildcard;
            self.wildcard = true;
        }
        for name in subscribe {
            self.ever_named = true;
            if name == WILDCARD {
                change.wildcard_added |= !self.wildcard;
                self.wildcard = true;
            } else if !self.names.contains(name) {
                self.bytes += name.len();
                self.names.insert(name.clone());
                change.added.push(name.clone());
            }
        }
        for name in unsubscribe {
            if name == WILDCARD {
                change.wildcard_removed |= self.wildcard;
                self.wildcard = false;
            } else if let Some(name) = self.names.take(name) {
                self.bytes -= name.len();
                change.removed.push(name);
            }
        }
        change
    }

    /// How many names the subscription holds: what per-stream limits count.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// How many bytes the subscribed names take: what `max_names_bytes` counts.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The resources of `type_url` that `sub` covers, and the version of exactly that selection.
pub(crate) fn select(
    set: &ResourceSet,
    type_url: &str,
    sub: &SubscriptionState,
) -> (String, Vec<Arc<Resource>>) {
    let Some(of_type) = set.of_type(type_url) else {
        return (combined_version([]), Vec::new());
    };
    if sub.is_wildcard() {
        return (
            of_type.version().to_owned(),
            of_type.iter().cloned().collect(),
        );
    }
    let chosen: Vec<Arc<Resource>> = sub
        .names()
        .iter()
        .filter_map(|n| of_type.get(n).cloned())
        .collect();
    (version_of(&chosen), chosen)
}

pub(crate) fn version_of(resources: &[Arc<Resource>]) -> String {
    combined_version(resources.iter().map(|r| (r.name(), r.version())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn empty_first_sotw_request_is_legacy_wildcard() {
        let mut s = SubscriptionState::default();
        let c = s.apply_sotw(vec![]);
        assert!(s.is_wildcard());
        assert!(c.wildcard_added);
        // An ACK with an empty list keeps the legacy wildcard.
        s.apply_sotw(vec![]);
        assert!(s.is_wildcard());
    }

    #[test]
    fn empty_sotw_list_after_names_unsubscribes_everything() {
        let mut s = SubscriptionState::default();
        s.apply_sotw(names(&["a", "b"]));
        assert!(!s.is_wildcard());
        let c = s.apply_sotw(vec![]);
        assert!(!s.is_wildcard());
        assert!(s.names().is_empty());
        assert_eq!(c.removed, names(&["a", "b"]));
    }

    #[test]
    fn explicit_wildcard_with_names() {
        let mut s = SubscriptionState::default();
        let c = s.apply_sotw(names(&["*", "a"]));
        assert!(s.is_wildcard() && c.wildcard_added);
        assert_eq!(c.added, names(&["a"]));
        // Unsubscribing the name keeps it covered by the wildcard.
        s.apply_sotw(names(&["*"]));
        assert!(s.covers("a"));
        s.apply_sotw(vec![]);
        assert!(
            !s.covers("a"),
            "explicit '*' was sent, so an empty list unsubscribes"
        );
    }

    #[test]
    fn delta_legacy_and_explicit_wildcard() {
        let mut s = SubscriptionState::default();
        s.apply_delta(true, &[], &[]);
        assert!(s.is_wildcard());
        let mut s = SubscriptionState::default();
        s.apply_delta(true, &names(&["a"]), &[]);
        assert!(!s.is_wildcard());
        s.apply_delta(false, &[], &[]);
        assert!(
            !s.is_wildcard(),
            "only the first request can be legacy wildcard"
        );
        let c = s.apply_delta(false, &names(&["*"]), &names(&["a", "never-had"]));
        assert!(s.is_wildcard() && c.wildcard_added);
        assert_eq!(c.removed, names(&["a"]));
        s.apply_delta(false, &[], &names(&["*"]));
        assert!(!s.is_wildcard());
    }

    #[test]
    fn bytes_follow_subscribes_and_unsubscribes() {
        let mut s = SubscriptionState::default();
        s.apply_sotw(names(&["abc", "de", "abc", "*"]));
        assert_eq!((s.len(), s.bytes()), (2, 5));
        let c = s.apply_sotw(names(&["de", "fghi"]));
        assert_eq!((c.added, c.removed), (names(&["fghi"]), names(&["abc"])));
        assert!(c.wildcard_removed);
        assert_eq!(s.bytes(), 6);
        let mut d = SubscriptionState::default();
        d.apply_delta(true, &names(&["abc", "abc", "de"]), &[]);
        assert_eq!(d.bytes(), 5);
        d.apply_delta(false, &names(&["x"]), &names(&["abc", "never-had"]));
        assert_eq!((d.len(), d.bytes()), (2, 3));
    }
}
