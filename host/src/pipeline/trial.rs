//! A reload's trial: the candidate chain runs beside the serving one over every live group,
//! spread over the pipeline's parallelism, and serves only if it breaks no group that works
//! now; what the trial computed is then published as it is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::memo::{Computed, SharedMemo};
use super::scheduler::{Event, Outcome, Pipeline};
use crate::inputs::Reads;
use crate::plugins::{
    ChainHost, ChainOutput, ChainTrial, NodeReads, NodeView, PluginChain, PluginRunError,
    TrialFuture,
};

/// Each group's run of a chain.
type GroupResults = Vec<(String, Result<ChainOutput, PluginRunError>)>;

/// Each group's computation by a chain.
type GroupOutcomes = Vec<(String, Outcome)>;

/// One group as a trial sees it.
#[derive(Clone)]
struct TrialTarget {
    group: String,
    node: Arc<NodeView>,
}

impl Pipeline {
    /// Replaces the plugin chain with one whose results for some groups are already known:
    /// `results`, computed by `chain` when the input generation was `generation`. If no input
    /// changed since and `chain` is still the installed one when they are processed, they are
    /// published as they are and only the other groups run; otherwise every group is
    /// recomputed, as [`Pipeline::set_chain`] does.
    pub fn install_chain(&self, chain: PluginChain, generation: u64, results: GroupResults) {
        let outcomes = results
            .into_iter()
            .map(|(group, result)| {
                // A failure given here comes without what its run read.
                let computed = match result {
                    Ok(out) => Computed::of(out),
                    Err(e) if e.fault.is_transient() => return (group, Outcome::Transient(e)),
                    Err(e) => Computed::failed_unread(e),
                };
                let outcome = Outcome::Computed {
                    computed: Arc::new(computed),
                    ran: true,
                };
                (group, outcome)
            })
            .collect();
        self.install_outcomes(chain, generation, outcomes);
    }

    /// As [`Pipeline::install_chain`], with the computations a trial made.
    fn install_outcomes(&self, chain: PluginChain, generation: u64, results: GroupOutcomes) {
        let chain = Arc::new(chain);
        self.inner.chain.store(Arc::clone(&chain));
        let _ = self.inner.events.send(Event::Install {
            chain,
            generation,
            results,
        });
    }

    /// Every group with its node: what a trial covers.
    fn trial_targets(&self) -> Vec<TrialTarget> {
        self.inner
            .groups
            .iter()
            .map(|e| TrialTarget {
                group: e.key().clone(),
                node: Arc::clone(&e.value().node),
            })
            .collect()
    }

    /// Runs `candidate` for every current group, spread over the pipeline's parallelism, and
    /// fails if the new version of `plugin` breaks any group that works now: a group fails
    /// with the new chain (the new plugin faults, or a later one refuses its output) while the
    /// current chain succeeds on the same group and inputs. A group that fails with both (bad
    /// metadata, inputs that changed under it) cannot block a reload. On success, the results
    /// and the input generation they were computed at, to be published as they are. Groups
    /// whose nodes agree on what a run read share it, as they do when serving.
    async fn run_trial(
        &self,
        candidate: &PluginChain,
        plugin: &str,
    ) -> Result<(u64, GroupOutcomes), String> {
        // Read before the inputs: results stand only if no input changed after this point.
        let generation = self.input_generation();
        let targets = self.trial_targets();
        let inputs = self.inputs();
        let current = self.chain();
        let parallelism = self.parallelism().max(1);
        let chunk = targets.len().div_ceil(parallelism).max(1);
        // Set on the first refusal: the other chunks stop at their next group.
        let refused = Arc::new(AtomicBool::new(false));
        let memo = Arc::new(SharedMemo::default());
        let mut tasks = tokio::task::JoinSet::new();
        for part in targets.chunks(chunk) {
            let (part, chain, inputs) = (part.to_vec(), candidate.clone(), Arc::clone(&inputs));
            let (current, refused) = (Arc::clone(&current), Arc::clone(&refused));
            let (plugin, memo) = (plugin.to_owned(), Arc::clone(&memo));
            tasks.spawn_blocking(move || {
                let mut results = Vec::with_capacity(part.len());
                for t in part {
                    if refused.load(Ordering::Relaxed) {
                        return Err(String::new());
                    }
                    let shared = memo.lookup(&t.node);
                    let outcome = match shared {
                        Some(computed) => Outcome::Computed {
                            computed,
                            ran: false,
                        },
                        None => {
                            let (mut reads, mut node_reads) =
                                (Reads::default(), NodeReads::default());
                            let result = chain.run_reading(
                                &t.node,
                                Arc::clone(&inputs),
                                &mut reads,
                                &mut node_reads,
                            );
                            match Outcome::of_run(result, reads, node_reads) {
                                Ok(computed) => Outcome::Computed {
                                    computed: memo.insert(&t.node, computed),
                                    ran: true,
                                },
                                Err(outcome) => outcome,
                            }
                        }
                    };
                    // Only a group the current chain serves on the same inputs can refuse the
                    // new version: one that already fails (bad metadata, inputs that changed
                    // under it) says nothing about the new version. A failure shared from
                    // another group is held against this group the same way.
                    let error = match &outcome {
                        Outcome::Computed { computed, .. } => computed.result.as_ref().err(),
                        Outcome::Transient(e) => Some(e),
                        Outcome::Died(_) => None,
                    };
                    let blame = match error {
                        Some(e)
                            if current
                                .run_reading(
                                    &t.node,
                                    Arc::clone(&inputs),
                                    &mut Reads::default(),
                                    &mut NodeReads::default(),
                                )
                                .is_ok() =>
                        {
                            // Named for this group's node, also when shared.
                            let e = PluginRunError {
                                node: t.node.id().to_owned(),
                                ..e.clone()
                            };
                            // An empty `plugin`: a whole new chain (the config file).
                            Some(if e.plugin == plugin || plugin.is_empty() {
                                format!("canary on group {}: {e}", t.group)
                            } else {
                                format!(
                                    "canary on group {}: with this version of {plugin}, {e} (the current version serves this group)",
                                    t.group
                                )
                            })
                        }
                        _ => None,
                    };
                    if let Some(reason) = blame {
                        refused.store(true, Ordering::Relaxed);
                        return Err(reason);
                    }
                    results.push((t.group, outcome));
                }
                Ok(results)
            });
        }
        let mut results = Vec::with_capacity(targets.len());
        let mut refusal = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(part)) => results.extend(part),
                // A chunk stopped because another refused: that one's reason is the one.
                Ok(Err(reason)) if reason.is_empty() => {}
                Ok(Err(reason)) => refusal = refusal.or(Some(reason)),
                Err(e) => refusal = refusal.or(Some(format!("canary task failed: {e}"))),
            }
        }
        match refusal {
            Some(reason) => Err(reason),
            None => Ok((generation, results)),
        }
    }
}

/// The pipeline owns when a chain runs, a reload's trial included: the plugin slots hand it a
/// candidate and commit the trial it answers.
impl ChainHost for Pipeline {
    fn trial(&self, candidate: PluginChain, plugin: &str) -> TrialFuture<'_> {
        let plugin = plugin.to_owned();
        Box::pin(async move {
            let (generation, results) = self.run_trial(&candidate, &plugin).await?;
            let pipeline = self.clone();
            Ok(ChainTrial::new(move || {
                pipeline.install_outcomes(candidate, generation, results);
            }))
        })
    }

    fn set_chain(&self, chain: PluginChain) {
        Pipeline::set_chain(self, chain);
    }
}
