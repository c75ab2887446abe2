//! The recompute loop: events (a node needs its first result, inputs changed, the chain
//! changed) are coalesced into batches, mapped to the affected groups, and run through the
//! plugin chain on blocking threads, a few groups at a time.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use futures::StreamExt;
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::groups::{GroupRecord, GroupStatus};
use crate::cache::Cache;
use crate::plugins::{InputView, PluginChain};
use crate::xds::NodeObserver;

/// How changes are coalesced and how much runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineOptions {
    /// A burst of input changes is collected until this long passes without another.
    pub debounce: Duration,
    /// ... but never for longer than this after the first change.
    pub max_delay: Duration,
    /// How many groups compute at once.
    pub parallelism: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            parallelism: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }
}

enum Event {
    /// A group has a node waiting and no result: compute now, no debounce.
    Demand(String),
    /// Input documents changed.
    Changed(Vec<(String, String)>),
    /// Everything must be recomputed (the chain changed).
    All,
}

struct Inner {
    cache: Cache,
    chain: ArcSwap<PluginChain>,
    inputs: Arc<dyn InputView>,
    groups: DashMap<String, GroupRecord>,
    events: mpsc::UnboundedSender<Event>,
    options: PipelineOptions,
    batches: watch::Sender<u64>,
}

/// Keeps every node group's resources up to date with the inputs and the plugin chain.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
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
        });
        tokio::spawn(run(Arc::downgrade(&inner), rx));
        Pipeline { inner }
    }

    /// Input documents changed: recompute the groups whose last run read any of them.
    pub fn inputs_changed(&self, keys: Vec<(String, String)>) {
        let _ = self.inner.events.send(Event::Changed(keys));
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

    /// Every group with the node it is computed for: what a canary run covers.
    pub fn nodes(&self) -> Vec<(String, Node)> {
        self.inner
            .groups
            .iter()
            .map(|e| (e.key().clone(), e.value().node.clone()))
            .collect()
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

impl NodeObserver for Pipeline {
    fn node_connected(&self, group: &str, node: &Node) {
        let known = self.inner.groups.contains_key(group);
        if !known {
            self.inner
                .groups
                .entry(group.to_owned())
                .or_insert_with(|| GroupRecord::new(node.clone()));
        }
        if !known || self.inner.cache.get(group).is_none() {
            let _ = self.inner.events.send(Event::Demand(group.to_owned()));
        }
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
        let mut add = |ev: Event, demand: &mut BTreeSet<String>| match ev {
            Event::Demand(g) => {
                demand.insert(g);
            }
            Event::Changed(keys) => changed.extend(keys),
            Event::All => all = true,
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
        let mut groups = demand;
        for entry in inner.groups.iter() {
            if all || changed.iter().any(|(k, n)| entry.value().affected_by(k, n)) {
                groups.insert(entry.key().clone());
            }
        }
        metrics::counter!("pipeline_batches_total").increment(1);
        metrics::gauge!("pipeline_batch_groups").set(groups.len() as f64);
        let started = std::time::Instant::now();
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
    let Some(node) = inner.groups.get(&group).map(|r| r.node.clone()) else {
        return;
    };
    let chain = inner.chain.load_full();
    let inputs = Arc::clone(&inner.inputs);
    let result = tokio::task::spawn_blocking(move || chain.run(&node, inputs)).await;
    let Some(mut record) = inner.groups.get_mut(&group) else {
        return;
    };
    record.runs += 1;
    match result {
        Ok(Ok(out)) => {
            record.reads = Some(out.reads);
            record.last_error = None;
            record.last_success = Some(SystemTime::now());
            drop(record);
            if inner.cache.set(&group, out.resources) {
                metrics::counter!("pipeline_publishes_total").increment(1);
            }
        }
        Ok(Err(error)) => {
            record.failures += 1;
            tracing::warn!(%group, %error, "group keeps its last good resources");
            record.last_error = Some(error);
        }
        Err(join) => {
            record.failures += 1;
            tracing::error!(%group, error = %join, "plugin chain task failed");
        }
    }
}
