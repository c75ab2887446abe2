//! The recompute loop: events (a node needs its first result, inputs changed, the chain
//! changed) are coalesced into batches, mapped to the affected groups, and run through the
//! plugin chain on blocking threads, a few groups at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::groups::{GroupRecord, GroupStatus};
use crate::cache::Cache;
use crate::inputs::{DocKey, InputView, Reads};
use crate::plugins::{ChainOutput, PluginChain, PluginRunError};

/// How changes are coalesced and how much runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineOptions {
    /// A burst of input changes is collected until this long passes without another.
    pub debounce: Duration,
    /// ... but never for longer than this after the first change.
    pub max_delay: Duration,
    /// How many groups compute at once.
    pub parallelism: usize,
    /// How long a group is kept after its last stream closed (or its last fetch): then its
    /// record, its cache entry and its results are forgotten, and a node that comes back is
    /// computed afresh. Zero forgets a group as its last stream closes.
    pub group_grace: Duration,
    /// The most node groups held at once; a stream or fetch that would make another is
    /// refused (`RESOURCE_EXHAUSTED`) until one is forgotten.
    pub max_groups: usize,
}

/// The default [`PipelineOptions::max_groups`]: five times the 10,000 nodes one server on 2
/// cores is measured with, each its own group (the quickstart's grouping).
pub const DEFAULT_MAX_GROUPS: usize = 50_000;

/// The default [`PipelineOptions::group_grace`]: long enough to ride out a proxy's reconnect
/// or a rolling restart of the control plane, short enough that pod churn does not pile up.
pub const DEFAULT_GROUP_GRACE: Duration = Duration::from_secs(300);

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            parallelism: std::thread::available_parallelism().map_or(2, usize::from),
            group_grace: DEFAULT_GROUP_GRACE,
            max_groups: DEFAULT_MAX_GROUPS,
        }
    }
}

pub(super) enum Event {
    /// A group is new (or its node changed): compute now, no debounce.
    Demand(String),
    /// Input documents changed.
    Changed(Vec<DocKey>),
    /// Everything must be recomputed (the chain changed).
    All,
    /// A new chain was installed with results already computed by it (a reload's trial) at
    /// input generation `generation`: published as they are if no input changed since,
    /// every other group recomputed.
    Install {
        chain: Arc<PluginChain>,
        generation: u64,
        results: Vec<(String, Result<ChainOutput, PluginRunError>)>,
    },
}

pub(super) struct Inner {
    pub(super) cache: Cache,
    pub(super) chain: ArcSwap<PluginChain>,
    inputs: Arc<dyn InputView>,
    pub(super) groups: DashMap<String, GroupRecord>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) options: PipelineOptions,
    /// Groups forgotten after their grace period, since start.
    pub(super) evicted: AtomicU64,
    batches: watch::Sender<u64>,
    /// Counts input changes and node changes (a group whose node was replaced): results
    /// computed while it stayed put are current.
    pub(super) generation: AtomicU64,
}

/// Keeps every node group's resources up to date with the inputs and the plugin chain.
#[derive(Clone)]
pub struct Pipeline {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("groups", &self.inner.groups.len())
            .finish()
    }
}

impl Pipeline {
    /// Starts the pipeline's loop on the current tokio runtime. It stops when the last
    /// `Pipeline` handle is dropped.
    pub fn start(
        cache: Cache,
        chain: PluginChain,
        inputs: Arc<dyn InputView>,
        options: PipelineOptions,
    ) -> Self {
        let (events, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            cache,
            chain: ArcSwap::from_pointee(chain),
            inputs,
            groups: DashMap::new(),
            events,
            options,
            batches: watch::Sender::new(0),
            generation: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        });
        tokio::spawn(run(Arc::downgrade(&inner), rx));
        tokio::spawn(super::lifecycle::sweep_idle_groups(Arc::downgrade(&inner)));
        Pipeline { inner }
    }

    /// Input documents changed: recompute the groups whose last run read any of them.
    pub fn inputs_changed(&self, keys: Vec<DocKey>) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        let _ = self.inner.events.send(Event::Changed(keys));
    }

    /// How many input changes (and node changes) were announced so far. Results computed while
    /// this stayed the same are current (see [`Pipeline::install_chain`]).
    pub fn input_generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Recomputes every group.
    pub fn recompute_all(&self) {
        let _ = self.inner.events.send(Event::All);
    }

    /// Replaces the plugin chain and recomputes every group with it. Calls already running
    /// finish on the old chain.
    pub fn set_chain(&self, chain: PluginChain) {
        self.inner.chain.store(Arc::new(chain));
        self.recompute_all();
    }

    /// The current chain.
    pub fn chain(&self) -> Arc<PluginChain> {
        self.inner.chain.load_full()
    }

    /// Every known group, sorted by name.
    pub fn groups(&self) -> Vec<GroupStatus> {
        let mut v: Vec<GroupStatus> = self
            .inner
            .groups
            .iter()
            .map(|e| GroupStatus::of(e.key(), e.value()))
            .collect();
        v.sort_by(|a, b| a.group.cmp(&b.group));
        v
    }

    /// One group.
    pub fn group(&self, group: &str) -> Option<GroupStatus> {
        self.inner
            .groups
            .get(group)
            .map(|r| GroupStatus::of(group, &r))
    }

    /// How many groups compute at once.
    pub fn parallelism(&self) -> usize {
        self.inner.options.parallelism
    }

    /// The inputs plugins read.
    pub fn inputs(&self) -> Arc<dyn InputView> {
        Arc::clone(&self.inner.inputs)
    }

    /// A receiver that ticks after every completed batch (for tests and benchmarks).
    pub fn batches(&self) -> watch::Receiver<u64> {
        self.inner.batches.subscribe()
    }
}

async fn run(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Event>) {
    while let Some(first) = rx.recv().await {
        let Some(options) = inner.upgrade().map(|i| i.options) else {
            return;
        };
        let mut demand = BTreeSet::new();
        let mut changed = Vec::new();
        let mut all = false;
        let mut installs = Vec::new();
        let mut add = |ev: Event, demand: &mut BTreeSet<String>| match ev {
            Event::Demand(g) => {
                demand.insert(g);
            }
            Event::Changed(keys) => changed.extend(keys),
            Event::All => all = true,
            Event::Install {
                chain,
                generation,
                results,
            } => installs.push((chain, generation, results)),
        };
        let debounced = !matches!(first, Event::Demand(_));
        add(first, &mut demand);
        if debounced {
            let deadline = Instant::now() + options.max_delay;
            loop {
                let quiet = Instant::now() + options.debounce;
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Some(ev) => add(ev, &mut demand),
                        None => break,
                    },
                    () = tokio::time::sleep_until(quiet.min(deadline)) => break,
                }
            }
        }
        while let Ok(ev) = rx.try_recv() {
            add(ev, &mut demand);
        }
        let Some(inner) = inner.upgrade() else { return };
        // A new chain's precomputed results stand only if they come from the chain installed
        // now (the last install, not superseded by another chain change) and no input changed
        // since they were computed; every other group runs.
        let mut precomputed = BTreeMap::new();
        if let Some((chain, generation, results)) = installs.pop() {
            let installed = Arc::ptr_eq(&chain, &inner.chain.load());
            let fresh = generation == inner.generation.load(Ordering::SeqCst);
            if installed && fresh && !all {
                precomputed.extend(results);
            }
            all = true;
        }
        let mut groups = demand;
        for entry in inner.groups.iter() {
            if all || changed.iter().any(|key| entry.value().affected_by(key)) {
                groups.insert(entry.key().clone());
            }
        }
        metrics::counter!("pipeline_batches_total").increment(1);
        metrics::gauge!("pipeline_batch_groups").set(groups.len() as f64);
        let started = std::time::Instant::now();
        for (group, result) in precomputed {
            if groups.remove(&group) {
                record(&inner, &group, None, Ok(result), None);
            }
        }
        futures::stream::iter(groups)
            .map(|g| compute(Arc::clone(&inner), g))
            .buffer_unordered(inner.options.parallelism.max(1))
            .collect::<Vec<()>>()
            .await;
        metrics::histogram!("pipeline_batch_seconds").record(started.elapsed().as_secs_f64());
        inner.batches.send_modify(|n| *n += 1);
    }
}

/// Runs the chain for one group and publishes the result; a failure keeps what the cache has.
async fn compute(inner: Arc<Inner>, group: String) {
    let Some((node, epoch)) = inner.groups.get(&group).map(|r| (r.node.clone(), r.epoch)) else {
        return;
    };
    let chain = inner.chain.load_full();
    let inputs = Arc::clone(&inner.inputs);
    let run = tokio::task::spawn_blocking(move || {
        let mut reads = Reads::default();
        let result = chain.run_reading(&node, inputs, &mut reads);
        (result, reads)
    })
    .await;
    match run {
        Ok((result, reads)) => record(&inner, &group, Some(epoch), Ok(result), Some(reads)),
        Err(join) => record(&inner, &group, Some(epoch), Err(join), None),
    }
}

/// How long the `n`th transient failure in a row waits before its retry: 200 ms doubling, at
/// most 30 s.
fn retry_delay(n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(8);
    (Duration::from_millis(200) * (1u32 << exp)).min(Duration::from_secs(30))
}

/// Records one run of the chain for `group` and publishes its resources if it succeeded.
///
/// - A run started for an earlier node of the group (`epoch` no longer the record's) is
///   dropped: the group's node changed, and its own run follows.
/// - A failed run keeps the group's last good resources. A deterministic failure depends on
///   what the run read before failing, added to what earlier runs read (the dependencies
///   never shrink on a failure), so a change of those reruns it. A transient one (a deadline
///   hit under load, no instance, unreadable inputs, a task that died) depends on everything
///   and is retried after a backoff while the group has streams.
/// - The record stays locked until the cache has the result, so a group forgotten meanwhile
///   is not brought back and an eviction cannot slip between the two.
fn record(
    inner: &Inner,
    group: &str,
    epoch: Option<u64>,
    result: Result<Result<ChainOutput, PluginRunError>, tokio::task::JoinError>,
    reads: Option<Reads>,
) {
    let Some(mut record) = inner.groups.get_mut(group) else {
        return;
    };
    if epoch.is_some_and(|e| e != record.epoch) {
        return;
    }
    record.runs += 1;
    let transient = match result {
        Ok(Ok(out)) => {
            record.reads = Some(out.reads);
            record.last_error = None;
            record.last_success = Some(SystemTime::now());
            record.transient_failures = 0;
            if inner.cache.set(group, out.resources) {
                metrics::counter!("pipeline_publishes_total").increment(1);
            }
            false
        }
        Ok(Err(error)) => {
            record.failures += 1;
            let transient = error.fault.is_transient();
            if transient {
                record.reads = None;
            } else if let Some(reads) = reads {
                let mut all = record.reads.take().unwrap_or_default();
                all.extend(reads);
                record.reads = Some(all);
            }
            if record.last_success.is_some() {
                tracing::warn!(%group, %error, "group keeps its last good resources");
            } else {
                tracing::warn!(%group, %error, "group has no good resources yet");
            }
            record.last_error = Some(error);
            transient
        }
        Err(join) => {
            record.failures += 1;
            record.reads = None;
            tracing::error!(%group, error = %join, "plugin chain task failed");
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
