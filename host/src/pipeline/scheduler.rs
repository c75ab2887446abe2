//! The recompute loop: events (a node needs its first result, inputs changed, the chain
//! changed) are coalesced into batches, mapped to the affected groups, and run through the
//! plugin chain on blocking threads, a few groups at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::compute;
use super::groups::{GroupRecord, GroupStatus};
use super::memo::SharedMemo;
use super::record::record;
pub(crate) use super::record::Outcome;
use crate::cache::Cache;
use crate::inputs::{DocKey, InputView};
use crate::plugins::PluginChain;

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
        results: Vec<(String, Outcome)>,
    },
}

pub(super) struct Inner {
    pub(super) cache: Cache,
    pub(super) chain: ArcSwap<PluginChain>,
    pub(super) inputs: Arc<dyn InputView>,
    pub(super) groups: DashMap<String, GroupRecord>,
    /// Results that nodes agreeing on what a run read share. Locked briefly, never across an
    /// await.
    pub(super) memo: SharedMemo,
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
            memo: SharedMemo::default(),
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
        // What the memo holds was computed before this batch's changes.
        inner.memo.with(|memo| {
            if all {
                memo.clear();
            } else {
                memo.invalidate(&changed);
            }
        });
        let mut groups = demand;
        for entry in inner.groups.iter() {
            if all || changed.iter().any(|key| entry.value().affected_by(key)) {
                groups.insert(entry.key().clone());
            }
        }
        metrics::counter!("pipeline_batches_total").increment(1);
        metrics::gauge!("pipeline_batch_groups").set(groups.len() as f64);
        let started = std::time::Instant::now();
        for (group, outcome) in precomputed {
            if groups.remove(&group) {
                record(&inner, &group, None, outcome);
            }
        }
        // Groups that shared a result are likely to share the new one: one of each runs first,
        // the others after, when the memo holds what it computed.
        let (leaders, followers) = cohorts(&inner, groups);
        let parallelism = inner.options.parallelism.max(1);
        for wave in [leaders, followers] {
            futures::stream::iter(compute::chunks(wave, parallelism))
                .map(|chunk| compute::chunk(Arc::clone(&inner), chunk))
                .buffer_unordered(parallelism)
                .collect::<Vec<()>>()
                .await;
        }
        metrics::histogram!("pipeline_batch_seconds").record(started.elapsed().as_secs_f64());
        inner.batches.send_modify(|n| *n += 1);
    }
}

/// Splits `groups` into one group per result they last shared (and every group that shared
/// none), and the rest.
fn cohorts(inner: &Inner, groups: BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    groups.into_iter().partition(|g| {
        inner
            .groups
            .get(g)
            .and_then(|r| r.computed.as_ref().map(|c| Arc::as_ptr(c) as usize))
            .is_none_or(|result| seen.insert(result))
    })
}
