//! A new chain from the config file: other plugins, another order, other configs or limits.
//! What changed is loaded (a plugin whose file, config and limits are as they were keeps its
//! loaded version), the whole chain is tried over the live groups like any reload, and only
//! then does it serve.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::{unix_now, BusyGuard, PluginSlots, Previous, Rejected, ReloadError, Slot};
use crate::plugins::chain::PluginChain;
use crate::plugins::limits::PluginLimits;
use crate::plugins::plugin::Plugin;

/// A plugin as the config file names it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginPlan {
    /// Name.
    pub name: String,
    /// File.
    pub path: PathBuf,
    /// Config for `init`.
    pub config: serde_json::Value,
    /// Limits.
    pub limits: PluginLimits,
}

/// What [`PluginSlots::reconfigure`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconfigureOutcome {
    /// The chain is the one serving.
    Unchanged,
    /// The new chain serves.
    Swapped {
        /// The plugins loaded anew (new, or with another file, config or limits), in order.
        loaded: Vec<String>,
        /// The chain's plugins, in order.
        chain: Vec<String>,
    },
}

impl PluginSlots {
    /// Makes the chain `plans`: a plugin the config file says the same of as when it was last
    /// applied keeps its slot as it is (the version it serves, a reload's or rollback's
    /// included); the others are read under the plugin-file rules, compiled, checked and
    /// initialised with their config; then the whole chain is tried over every live group
    /// ([`ChainHost::trial`](crate::plugins::ChainHost::trial)) and serves only if it breaks
    /// no group that works now. A chain of no plugins is refused (it would serve every node
    /// nothing). Any failure keeps the running chain and says which plugin (or group) failed
    /// and why.
    pub async fn reconfigure(
        &self,
        plans: Vec<PluginPlan>,
    ) -> Result<ReconfigureOutcome, ReloadError> {
        let _busy = BusyGuard::take(&self.busy)?;
        let current: Vec<(PluginPlan, Arc<Plugin>)> = {
            let slots = self.slots.lock().map_err(|_| ReloadError::Unavailable)?;
            slots
                .iter()
                .map(|s| (s.configured.clone(), Arc::clone(&s.current)))
                .collect()
        };
        if current.iter().map(|(p, _)| p).eq(plans.iter()) {
            self.set_chain_rejected(None);
            return Ok(ReconfigureOutcome::Unchanged);
        }
        if plans.is_empty() {
            let reason = "the config file names no plugins, which would serve every node \
                          nothing"
                .to_owned();
            return Err(self.refuse_chain(reason));
        }
        let mut chain = Vec::with_capacity(plans.len());
        let mut loaded = Vec::new();
        for plan in &plans {
            if let Some((_, plugin)) = current.iter().find(|(p, _)| p == plan) {
                chain.push(Arc::clone(plugin));
                continue;
            }
            chain.push(self.load_plan(plan).await?);
            loaded.push(plan.name.clone());
        }
        let candidate = PluginChain::new(chain.clone());
        let trial = match self.host.trial(candidate, "").await {
            Ok(t) => t,
            Err(reason) => return Err(self.refuse_chain(reason)),
        };
        self.replace_slots(&plans, &chain);
        self.set_chain_rejected(None);
        trial.commit();
        metrics::counter!("plugin_chain_reconfigures_total", "result" => "swapped").increment(1);
        let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
        tracing::info!(chain = ?names, loaded = ?loaded, "plugin chain reconfigured from the config file");
        Ok(ReconfigureOutcome::Swapped {
            loaded,
            chain: names,
        })
    }

    /// The last chain from the config file that the trial refused (its `hash` is empty), until
    /// a later one serves.
    pub fn chain_rejected(&self) -> Option<Rejected> {
        self.chain_rejected.lock().ok().and_then(|r| r.clone())
    }

    /// Records a refused chain and says so.
    fn refuse_chain(&self, reason: String) -> ReloadError {
        metrics::counter!("plugin_chain_reconfigures_total", "result" => "refused").increment(1);
        tracing::warn!(%reason, "the config file's plugin chain was refused; the running chain keeps serving");
        self.set_chain_rejected(Some(Rejected {
            hash: String::new(),
            error: reason.clone(),
            at_unix_secs: unix_now(),
        }));
        ReloadError::ChainRefused { reason }
    }

    fn set_chain_rejected(&self, rejected: Option<Rejected>) {
        if let Ok(mut slot) = self.chain_rejected.lock() {
            *slot = rejected;
        }
    }

    /// Reads, compiles, checks and initialises the plugin `plan` names.
    async fn load_plan(&self, plan: &PluginPlan) -> Result<Arc<Plugin>, ReloadError> {
        let wasm = self
            .files
            .read(&plan.path)
            .await
            .map_err(|refusal| ReloadError::file(&plan.name, refusal))?;
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&wasm));
        let (engine, name, config, limits) = (
            self.engine.clone(),
            plan.name.clone(),
            plan.config.clone(),
            plan.limits,
        );
        let loaded = tokio::task::spawn_blocking(move || {
            Plugin::load(&engine, &name, &wasm, &config, limits)
        })
        .await;
        match loaded {
            Ok(Ok(plugin)) => Ok(Arc::new(plugin)),
            Ok(Err(e)) => Err(self.refuse(&plan.name, hash, e.to_string())),
            Err(e) => Err(self.refuse(&plan.name, hash, format!("load task failed: {e}"))),
        }
    }

    /// Makes the slots `plans`, serving `chain`: a plugin the config file says the same of
    /// keeps its slot untouched; one that kept its name keeps its record, the version it
    /// replaces becoming the previous one.
    fn replace_slots(&self, plans: &[PluginPlan], chain: &[Arc<Plugin>]) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let mut old: Vec<Slot> = std::mem::take(&mut *slots);
        let now = unix_now();
        for (plan, plugin) in plans.iter().zip(chain) {
            let kept = old
                .iter()
                .position(|s| s.name == plan.name)
                .map(|i| old.swap_remove(i));
            let slot = match kept {
                Some(slot) if slot.configured == *plan => slot,
                Some(mut slot) => {
                    let previous = Previous {
                        plugin: std::mem::replace(&mut slot.current, Arc::clone(plugin)),
                        from: std::mem::replace(&mut slot.serving_from, plan.path.clone()),
                        config: std::mem::replace(&mut slot.config, plan.config.clone()),
                        limits: std::mem::replace(&mut slot.limits, plan.limits),
                    };
                    slot.previous = Some(previous);
                    slot.path.clone_from(&plan.path);
                    slot.configured = plan.clone();
                    slot.loaded_at = now;
                    slot.loads += 1;
                    slot.rejected = None;
                    slot
                }
                None => Slot {
                    name: plan.name.clone(),
                    path: plan.path.clone(),
                    serving_from: plan.path.clone(),
                    config: plan.config.clone(),
                    limits: plan.limits,
                    current: Arc::clone(plugin),
                    loaded_at: now,
                    previous: None,
                    rejected: None,
                    loads: 1,
                    configured: plan.clone(),
                },
            };
            slots.push(slot);
        }
    }
}
