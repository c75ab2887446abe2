//! How one group's computation ended, and what the pipeline records and publishes for it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::groups::GroupRecord;
use super::memo::Computed;
use super::scheduler::{Event, Inner};
use crate::inputs::Reads;
use crate::plugins::{ChainOutput, NodeReads, PluginRunError};

/// How one group's computation ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The chain ran for this group (`ran`), or the group took the result of a run for a node
    /// that agrees with its node on everything that run read.
    Computed { computed: Arc<Computed>, ran: bool },
    /// A failure that may pass (a deadline hit under load, no instance, unreadable inputs):
    /// never shared, retried after a backoff.
    Transient(PluginRunError),
    /// The task running the chain died.
    Died(String),
}

impl Outcome {
    /// Classifies a chain run that read `reads` and `node_reads`.
    pub(crate) fn of_run(
        result: Result<ChainOutput, PluginRunError>,
        reads: Reads,
        node_reads: NodeReads,
    ) -> Result<Computed, Outcome> {
        match result {
            Ok(out) => Ok(Computed::of(out)),
            Err(e) if e.fault.is_transient() => Err(Outcome::Transient(e)),
            Err(e) => Ok(Computed::failed(e, reads, node_reads)),
        }
    }
}

/// How long the `n`th transient failure in a row waits before its retry: 200 ms doubling, at
/// most 30 s.
fn retry_delay(n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(8);
    (Duration::from_millis(200) * (1u32 << exp)).min(Duration::from_secs(30))
}

/// Records one computation of `group` and publishes its resources if it succeeded.
///
/// - A computation started for an earlier node of the group (`epoch` no longer the record's)
///   is dropped: the group's node changed, and its own computation follows.
/// - A failed run keeps the group's last good resources. A deterministic failure depends on
///   what the run read before failing, added to what earlier runs read (the dependencies
///   never shrink on a failure), so a change of those reruns it. A transient one (a deadline
///   hit under load, no instance, unreadable inputs, a task that died) depends on everything
///   and is retried after a backoff while the group has streams.
/// - The record stays locked until the cache has the result, so a group forgotten meanwhile
///   is not brought back and an eviction cannot slip between the two.
pub(super) fn record(inner: &Inner, group: &str, epoch: Option<u64>, outcome: Outcome) {
    let Some(mut record) = inner.groups.get_mut(group) else {
        return;
    };
    if epoch.is_some_and(|e| e != record.epoch) {
        return;
    }
    let transient = match outcome {
        Outcome::Computed { computed, ran } => {
            if ran {
                record.runs += 1;
            } else {
                record.shared_results += 1;
            }
            let transient = match &computed.result {
                Ok(set) => {
                    record.reads = Some(computed.reads.clone());
                    record.last_error = None;
                    record.last_success = Some(SystemTime::now());
                    record.transient_failures = 0;
                    if inner.cache.set_shared(group, Arc::clone(set)) {
                        metrics::counter!("pipeline_publishes_total").increment(1);
                    }
                    false
                }
                Err(error) => {
                    record.failures += 1;
                    // What it read adds to what earlier runs read; unknown reads depend on
                    // everything.
                    record.reads = match (record.reads.take(), computed.reads_known) {
                        (earlier, true) => {
                            let mut all = earlier.unwrap_or_default();
                            all.extend(computed.reads.clone());
                            Some(all)
                        }
                        (_, false) => None,
                    };
                    // A shared failure names this group's node, as its own run would.
                    let mut error = error.clone();
                    error.node.clone_from(&record.node.id().to_owned());
                    failed(&record, group, &error);
                    record.last_error = Some(error);
                    false
                }
            };
            record.computed = Some(computed);
            transient
        }
        Outcome::Transient(error) => {
            record.runs += 1;
            record.failures += 1;
            record.reads = None;
            failed(&record, group, &error);
            record.last_error = Some(error);
            true
        }
        Outcome::Died(error) => {
            record.runs += 1;
            record.failures += 1;
            record.reads = None;
            tracing::error!(%group, %error, "plugin chain task failed");
            true
        }
    };
    if transient && record.streams > 0 {
        record.transient_failures = record.transient_failures.saturating_add(1);
        let delay = retry_delay(record.transient_failures);
        let (events, group) = (inner.events.clone(), group.to_owned());
        metrics::counter!("pipeline_retries_total").increment(1);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Demand(group));
        });
    }
}

/// Logs a failed computation of `group`.
fn failed(record: &GroupRecord, group: &str, error: &PluginRunError) {
    if record.last_success.is_some() {
        tracing::warn!(%group, %error, "group keeps its last good resources");
    } else {
        tracing::warn!(%group, %error, "group has no good resources yet");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_back_off_from_200_ms_to_30_s() {
        assert_eq!(retry_delay(1), Duration::from_millis(200));
        assert_eq!(retry_delay(2), Duration::from_millis(400));
        assert_eq!(retry_delay(8), Duration::from_millis(25_600));
        assert_eq!(retry_delay(9), Duration::from_secs(30));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
    }
}
