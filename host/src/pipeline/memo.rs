//! Sharing by what a run read. Plugins are pure: a chain run's result depends only on the
//! inputs it read and the node fields it read. So a node that agrees with an earlier run's
//! node on every field that run read gets that run's result, without running the chain — as
//! long as none of the inputs it read changed since. The memo holds such results, keyed by the
//! fields read and their values; the groups that use a result hold it, and it is forgotten
//! when none does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::cache::ResourceSet;
use crate::inputs::{DocKey, Reads};
use crate::plugins::{ChainOutput, NodeReads, NodeView, PluginFault, PluginRunError};

/// The most distinct sets of node fields the memo keys results by. Each lookup projects the
/// node once per set, so this bounds a lookup's cost; a run that read another set is not
/// shared (counted in `pipeline_memo_refused_total`), which costs runs, never correctness.
pub(crate) const MAX_SHAPES: usize = 64;

/// The most bytes of node values the memo keys results by, over every result: with results
/// kept only while a group uses them, a bound on what nodes whose runs read large metadata
/// values can make it hold beside their groups.
pub(crate) const MAX_KEY_BYTES: usize = 64 << 20;

/// One chain run's outcome, shared by every group whose node agrees on what it read.
#[derive(Debug)]
pub(crate) struct Computed {
    /// The resources, or the deterministic failure (a transient one is never shared).
    pub(crate) result: Result<Arc<ResourceSet>, PluginRunError>,
    /// The inputs the run read.
    pub(crate) reads: Reads,
    /// Whether `reads` is all the run read: `false` for a failure whose reads were not
    /// recorded, which depends on everything.
    pub(crate) reads_known: bool,
    /// The node fields the run read.
    pub(crate) node_reads: Arc<NodeReads>,
}

impl Computed {
    /// A successful run.
    pub(crate) fn of(out: ChainOutput) -> Self {
        Computed {
            result: Ok(Arc::new(out.resources)),
            reads: out.reads,
            reads_known: true,
            node_reads: Arc::new(out.node_reads),
        }
    }

    /// A run that failed deterministically, after reading `reads` and `node_reads`.
    pub(crate) fn failed(error: PluginRunError, reads: Reads, node_reads: NodeReads) -> Self {
        Computed {
            result: Err(error),
            reads,
            reads_known: true,
            node_reads: Arc::new(node_reads),
        }
    }

    /// Whether nodes that agree on what its run read may take it: not a memory limit, which
    /// the history of the instance it ran on can cause.
    pub(crate) fn shareable(&self) -> bool {
        !matches!(&self.result, Err(e) if matches!(e.fault, PluginFault::MemoryLimit { .. }))
    }

    /// A run that failed deterministically after reading what nobody recorded: it depends on
    /// everything.
    pub(crate) fn failed_unread(error: PluginRunError) -> Self {
        Computed {
            result: Err(error),
            reads: Reads::default(),
            reads_known: false,
            node_reads: Arc::new(NodeReads::everything()),
        }
    }
}

/// The results that nodes can share, by the node fields their run read and those fields'
/// values.
#[derive(Debug)]
pub(crate) struct Memo {
    shapes: HashMap<Arc<NodeReads>, HashMap<Vec<u8>, Weak<Computed>>>,
    /// Bytes of keys held: the node values, and the field sets (metadata key names).
    key_bytes: usize,
    max_shapes: usize,
    max_key_bytes: usize,
    /// Results refused since the last prune: a full memo of live results is pruned once per
    /// so many refusals as it holds results, not on every insert.
    refused_since_prune: usize,
}

/// A [`Memo`] shared by the tasks of a batch or a trial. Nodes are projected outside its
/// lock, which is held only to look up and store keys.
#[derive(Debug, Default)]
pub(crate) struct SharedMemo {
    memo: Mutex<Memo>,
}

impl SharedMemo {
    /// A result a run for `node` would produce now, if one is held.
    pub(crate) fn lookup(&self, node: &NodeView) -> Option<Arc<Computed>> {
        let shapes: Vec<Arc<NodeReads>> = self.memo.lock().ok()?.shapes.keys().cloned().collect();
        let keys: Vec<(Arc<NodeReads>, Vec<u8>)> = shapes
            .into_iter()
            .map(|shape| {
                let key = node.project(&shape);
                (shape, key)
            })
            .collect();
        let memo = self.memo.lock().ok()?;
        keys.iter().find_map(|(shape, key)| memo.get(shape, key))
    }

    /// Holds `computed`, the result of a run for `node`, for nodes that agree with it; returns
    /// it shared.
    pub(crate) fn insert(&self, node: &NodeView, computed: Computed) -> Arc<Computed> {
        let computed = Arc::new(computed);
        let key = node.project(&computed.node_reads);
        if let Ok(mut memo) = self.memo.lock() {
            memo.insert_keyed(key, &computed);
        }
        computed
    }

    /// Runs `f` on the memo (forgetting results), if its lock is sound.
    pub(crate) fn with(&self, f: impl FnOnce(&mut Memo)) {
        if let Ok(mut memo) = self.memo.lock() {
            f(&mut memo);
        }
    }
}

impl Default for Memo {
    fn default() -> Self {
        Memo::with_limits(MAX_SHAPES, MAX_KEY_BYTES)
    }
}

impl Memo {
    /// A memo that holds results for at most `max_shapes` sets of fields and `max_key_bytes`
    /// bytes of node values.
    pub(crate) fn with_limits(max_shapes: usize, max_key_bytes: usize) -> Self {
        Memo {
            shapes: HashMap::new(),
            key_bytes: 0,
            max_shapes,
            max_key_bytes,
            refused_since_prune: 0,
        }
    }

    /// The live result held under `shape` and `key`.
    fn get(&self, shape: &NodeReads, key: &[u8]) -> Option<Arc<Computed>> {
        self.shapes.get(shape)?.get(key)?.upgrade()
    }

    /// Whether holding `key` under `shape` would go past the limits.
    fn full(&self, shape: &NodeReads, key: &[u8]) -> bool {
        let new_shape = !self.shapes.contains_key(shape);
        let bytes = key.len() + if new_shape { shape.bytes() } else { 0 };
        (new_shape && self.shapes.len() >= self.max_shapes)
            || self.key_bytes + bytes > self.max_key_bytes
    }

    /// Holds `computed` under `key` (its node's projection onto what it read), unless that
    /// would go past [`MAX_SHAPES`] or [`MAX_KEY_BYTES`] even after forgetting the results no
    /// group holds.
    fn insert_keyed(&mut self, key: Vec<u8>, computed: &Arc<Computed>) {
        let shape = &computed.node_reads;
        if self.full(shape, &key) && self.refused_since_prune >= self.len().0 / 2 {
            self.prune();
            self.refused_since_prune = 0;
        }
        if self.full(shape, &key) {
            self.refused_since_prune += 1;
            metrics::counter!("pipeline_memo_refused_total").increment(1);
            return;
        }
        if !self.shapes.contains_key(shape) {
            self.key_bytes += shape.bytes();
        }
        let results = self.shapes.entry(Arc::clone(shape)).or_default();
        let len = key.len();
        if results.insert(key, Arc::downgrade(computed)).is_none() {
            self.key_bytes += len;
        }
    }

    /// Forgets every result that read one of `changed`.
    pub(crate) fn invalidate(&mut self, changed: &[DocKey]) {
        if changed.is_empty() {
            return;
        }
        self.retain(|c| !changed.iter().any(|key| c.reads.depends_on(key)));
    }

    /// Forgets everything (the chain changed).
    pub(crate) fn clear(&mut self) {
        self.shapes.clear();
        self.key_bytes = 0;
    }

    /// Forgets the results no group uses any more.
    pub(crate) fn prune(&mut self) {
        self.retain(|_| true);
    }

    /// How many results are held, and for how many distinct sets of fields read.
    pub(crate) fn len(&self) -> (usize, usize) {
        (
            self.shapes.values().map(HashMap::len).sum(),
            self.shapes.len(),
        )
    }

    /// Keeps the live results `keep` says yes to.
    fn retain(&mut self, keep: impl Fn(&Computed) -> bool) {
        let mut freed = 0;
        self.shapes.retain(|shape, results| {
            results.retain(|key, weak| {
                let live = weak.upgrade().is_some_and(|c| keep(&c));
                if !live {
                    freed += key.len();
                }
                live
            });
            if results.is_empty() {
                freed += shape.bytes();
            }
            !results.is_empty()
        });
        self.key_bytes -= freed;
        let (results, shapes) = self.len();
        metrics::gauge!("pipeline_memo_results").set(results as f64);
        metrics::gauge!("pipeline_memo_shapes").set(shapes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{NodeField, Transport};
    use nebucloud_xds_proto::envoy::config::core::v3::Node;

    fn node(id: &str, cluster: &str) -> NodeView {
        NodeView::new(
            Node {
                id: id.into(),
                cluster: cluster.into(),
                ..Node::default()
            },
            Transport::default(),
        )
    }

    fn computed(fields: &[NodeField], docs: &[(&str, &str)]) -> Computed {
        let reads = Reads {
            documents: docs.iter().map(|(k, n)| DocKey::new(*k, *n)).collect(),
            ..Reads::default()
        };
        let node_reads = NodeReads {
            all: false,
            fields: fields.iter().cloned().collect(),
        };
        Computed {
            result: Ok(Arc::new(ResourceSet::default())),
            reads,
            reads_known: true,
            node_reads: Arc::new(node_reads),
        }
    }

    fn shared(max_shapes: usize, max_key_bytes: usize) -> SharedMemo {
        SharedMemo {
            memo: Mutex::new(Memo::with_limits(max_shapes, max_key_bytes)),
        }
    }

    fn len(memo: &SharedMemo) -> (usize, usize) {
        memo.memo.lock().unwrap().len()
    }

    #[test]
    fn a_result_is_shared_by_nodes_that_agree_on_what_its_run_read() {
        let memo = SharedMemo::default();
        let held = memo.insert(&node("a", "web"), computed(&[NodeField::Cluster], &[]));
        let hit = memo.lookup(&node("b", "web")).unwrap();
        assert!(Arc::ptr_eq(&held, &hit));
        assert!(memo.lookup(&node("c", "api")).is_none());
        // A run that read the id is the node's own.
        let own = memo.insert(&node("c", "api"), computed(&[NodeField::Id], &[]));
        assert!(Arc::ptr_eq(&memo.lookup(&node("c", "api")).unwrap(), &own));
        assert!(memo.lookup(&node("d", "api")).is_none());
        assert_eq!(len(&memo), (2, 2));
    }

    #[test]
    fn results_go_when_no_group_holds_them_or_an_input_they_read_changes() {
        let memo = SharedMemo::default();
        let kept = memo.insert(
            &node("a", "web"),
            computed(&[NodeField::Cluster], &[("S", "x")]),
        );
        drop(memo.insert(&node("b", "api"), computed(&[NodeField::Cluster], &[])));
        assert!(
            memo.lookup(&node("b2", "api")).is_none(),
            "no group holds it"
        );
        memo.with(Memo::prune);
        assert_eq!(len(&memo), (1, 1));
        memo.with(|m| m.invalidate(&[DocKey::new("S", "y")]));
        assert!(memo.lookup(&node("a2", "web")).is_some());
        memo.with(|m| m.invalidate(&[DocKey::new("S", "x")]));
        assert!(memo.lookup(&node("a2", "web")).is_none());
        assert_eq!(len(&memo), (0, 0));
        assert_eq!(
            memo.memo.lock().unwrap().key_bytes,
            0,
            "keys and field sets freed"
        );
        drop(kept);
    }

    #[test]
    fn past_its_shapes_a_result_is_computed_but_not_held() {
        let memo = SharedMemo::default();
        let mut held = Vec::new();
        for i in 0..MAX_SHAPES {
            let key = NodeField::Metadata(format!("k{i}"));
            held.push(memo.insert(&node("a", "web"), computed(&[key], &[])));
        }
        let past = memo.insert(&node("a", "web"), computed(&[NodeField::Locality], &[]));
        assert_eq!(len(&memo), (MAX_SHAPES, MAX_SHAPES));
        assert!(past.result.is_ok());
        assert!(
            memo.lookup(&node("b", "x")).is_some(),
            "the held ones still serve"
        );
        // Once a shape is no longer used, there is room again (after enough refusals to make
        // a prune worth its walk: one here, a memo of 64 results needs 32).
        held.pop();
        for _ in 0..MAX_SHAPES / 2 {
            drop(memo.insert(&node("a", "web"), computed(&[NodeField::Locality], &[])));
        }
        let room = memo.insert(&node("a", "web"), computed(&[NodeField::Locality], &[]));
        let key = node("a", "web").project(&room.node_reads);
        let held_now = memo.memo.lock().unwrap().get(&room.node_reads, &key);
        assert!(held_now.is_some_and(|c| Arc::ptr_eq(&c, &room)));
        assert_eq!(len(&memo), (MAX_SHAPES, MAX_SHAPES));
    }

    #[test]
    fn past_its_bytes_a_result_is_computed_but_not_held() {
        let reads = computed(&[NodeField::Cluster], &[]).node_reads;
        let key_len = node("a", "web").project(&reads).len();
        let memo = shared(MAX_SHAPES, 2 * key_len + reads.bytes());
        let a = memo.insert(&node("a", "web"), computed(&[NodeField::Cluster], &[]));
        let b = memo.insert(&node("b", "api"), computed(&[NodeField::Cluster], &[]));
        let c = memo.insert(&node("c", "db1"), computed(&[NodeField::Cluster], &[]));
        assert_eq!(len(&memo), (2, 1));
        assert!(memo.lookup(&node("c2", "db1")).is_none());
        drop((a, b, c));
    }
}
