//! How long a node group lives: from its first stream (or fetch) until a grace period after
//! its last one closed. Then its record, cache entry and results go, so pod churn never grows
//! the server's state; a node that comes back is computed afresh.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;

use super::groups::GroupRecord;
use crate::plugins::NodeView;

/// A new node group was refused: the pipeline holds its limit of groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this server holds its limit of {max} node groups (pipeline.max_groups); a new group is \
     admitted when another is forgotten, a grace period after its last stream"
)]
pub struct TooManyGroups {
    /// The limit.
    pub max: usize,
}
use super::scheduler::{Event, Inner, Pipeline};

impl Pipeline {
    /// A node of `group` opened a stream: counts the stream. A new group is computed at once
    /// (from a result shared with a node that agrees on what its run read, when there is
    /// one); so is a group whose node comes back under the same id with anything else changed
    /// (metadata, locality, …): it is served from what it sends now, never from an earlier
    /// claimant's node. Its transport is not compared: a grouping that keeps transports apart
    /// gives each its own group, and under one that does not (`node-id`, `cluster`) a group is
    /// computed for the transport it was first seen on. A known group is not recomputed (a failed one runs again when an input
    /// it read changes, or after a backoff if the failure was transient). A new group past
    /// [`PipelineOptions::max_groups`](super::PipelineOptions::max_groups) is refused.
    pub fn stream_opened(
        &self,
        group: &str,
        node: impl Into<NodeView>,
    ) -> Result<(), TooManyGroups> {
        let node: NodeView = node.into();
        let inner = &self.inner;
        let max = inner.options.max_groups;
        let at_limit = inner.groups.len() >= max;
        let demand = match inner.groups.entry(group.to_owned()) {
            Entry::Vacant(_) if at_limit => {
                metrics::counter!("pipeline_groups_refused_total").increment(1);
                return Err(TooManyGroups { max });
            }
            Entry::Vacant(v) => {
                let mut record = GroupRecord::new(Arc::new(node));
                record.streams = 1;
                v.insert(record);
                true
            }
            Entry::Occupied(mut o) => {
                let record = o.get_mut();
                record.streams += 1;
                record.idle_since = None;
                if record.node.id() == node.id() && record.node.node() != node.node() {
                    // What was computed for the earlier node is not this one's config: its
                    // result is withdrawn, and runs started for it are not published.
                    record.node = Arc::new(node);
                    record.computed = None;
                    record.epoch += 1;
                    inner.generation.fetch_add(1, Ordering::SeqCst);
                    inner.cache.clear(group);
                    true
                } else {
                    false
                }
            }
        };
        metrics::gauge!("pipeline_groups").set(inner.groups.len() as f64);
        if demand {
            let _ = inner.events.send(Event::Demand(group.to_owned()));
        }
        Ok(())
    }

    /// A stream of `group` closed: starts the group's grace period when it was the last;
    /// with no grace, forgets the group at once.
    pub fn stream_closed(&self, group: &str) {
        let inner = &self.inner;
        if let Some(mut record) = inner.groups.get_mut(group) {
            record.streams = record.streams.saturating_sub(1);
            if record.streams == 0 {
                record.idle_since = Some(Instant::now());
            }
        }
        if inner.options.group_grace.is_zero() {
            evict_if_idle(inner, group, Instant::now());
        }
    }

    /// How many groups the pipeline knows now.
    pub fn group_count(&self) -> usize {
        self.inner.groups.len()
    }

    /// How many groups were forgotten after their grace period, since start.
    pub fn evicted_groups(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }

    /// How long a group outlives its last stream.
    pub fn group_grace(&self) -> Duration {
        self.inner.options.group_grace
    }
}

/// Forgets `group` if it has had no stream for the grace period at `now`. The check and the
/// removal of both the record and the cache entry happen under the record's lock, so a stream
/// that opens meanwhile either keeps the group or finds it gone and starts a new one.
fn evict_if_idle(inner: &Inner, group: &str, now: Instant) -> bool {
    let grace = inner.options.group_grace;
    let removed = inner.groups.remove_if(group, |_, r| {
        let expired =
            r.streams == 0 && r.idle_since.is_some_and(|t| now.duration_since(t) >= grace);
        if expired {
            inner.cache.remove(group);
        }
        expired
    });
    if removed.is_some() {
        inner.evicted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("pipeline_groups_evicted_total").increment(1);
        metrics::gauge!("pipeline_groups").set(inner.groups.len() as f64);
        tracing::debug!(%group, "group forgotten after its grace period");
    }
    removed.is_some()
}

/// How often idle groups are looked for: a fraction of the grace period, within bounds.
fn sweep_period(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(10))
}

/// Forgets the groups whose grace period ended, until the pipeline is dropped.
pub(super) async fn sweep_idle_groups(inner: Weak<Inner>) {
    let Some(period) = inner.upgrade().map(|i| sweep_period(i.options.group_grace)) else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let grace = inner.options.group_grace;
        let idle: Vec<String> = inner
            .groups
            .iter()
            .filter(|e| {
                e.streams == 0 && e.idle_since.is_some_and(|t| now.duration_since(t) >= grace)
            })
            .map(|e| e.key().clone())
            .collect();
        for group in idle {
            evict_if_idle(&inner, &group, now);
        }
        // The results no group holds any more.
        inner.memo.with(super::memo::Memo::prune);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_a_few_times_per_grace_period_within_bounds() {
        assert_eq!(sweep_period(Duration::ZERO), Duration::from_millis(50));
        assert_eq!(
            sweep_period(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            sweep_period(Duration::from_secs(300)),
            Duration::from_secs(10)
        );
    }
}
