//! Per type, what a Delta client holds, and how it forgets.

use std::collections::{BTreeSet, HashMap};

use super::super::subscription::SubscriptionState;

/// Per type: the subscription and what the client holds.
#[derive(Debug, Default)]
pub(super) struct DeltaType {
    pub(super) sub: SubscriptionState,
    /// Name → version of every resource the client holds (told by us, or by the client in
    /// `initial_resource_versions`).
    pub(super) held: HashMap<String, String>,
    /// Bytes of `held` that the client announced in `initial_resource_versions` and that are
    /// not yet reconciled with the group's resources (counted by `max_names_bytes`).
    pub(super) announced: usize,
    /// Subscribed names that do not exist and that the client was told so.
    pub(super) told_absent: BTreeSet<String>,
    pub(super) nonce: Option<String>,
    pub(super) sent_version: Option<String>,
    /// The first request still awaits an answer (a wildcard one is answered even if empty).
    pub(super) first_unanswered: bool,
    /// Whether resources with a TTL were sent (heartbeats may be due).
    pub(super) has_ttl: bool,
    /// Whether the client rejected the last response.
    pub(super) rejected: bool,
}

impl DeltaType {
    /// Forgets what the subscription no longer covers: the client drops it.
    pub(super) fn forget_uncovered(&mut self) {
        if self.sub.is_wildcard() {
            return;
        }
        let DeltaType {
            sub,
            held,
            announced,
            ..
        } = self;
        held.retain(|name, version| {
            let keep = sub.covers(name);
            if !keep {
                *announced = announced.saturating_sub(name.len() + version.len());
            }
            keep
        });
    }

    /// Forgets `name`: the client no longer holds it (and, if it had announced it, its
    /// bytes are no longer held).
    pub(super) fn forget(&mut self, name: &str) {
        if let Some(version) = self.held.remove(name) {
            self.announced = self.announced.saturating_sub(name.len() + version.len());
        }
    }
}
