//! Going back a version: a rollback swaps a slot's serving version with the one before it,
//! config and limits included, and a swap records what it replaced.

use std::path::PathBuf;
use std::sync::Arc;

use super::{unix_now, BusyGuard, PluginSlots, Previous, ReloadError, ReloadOutcome};
use crate::plugins::plugin::Plugin;

impl PluginSlots {
    /// Puts the previous version of `name` back into service, with the config and limits it
    /// was loaded with.
    pub fn rollback(&self, name: &str) -> Result<ReloadOutcome, ReloadError> {
        let _busy = BusyGuard::take(&self.busy)?;
        let previous = self.with_slot(name, |slot| {
            slot.previous
                .clone()
                .ok_or_else(|| ReloadError::NoPrevious(name.to_owned()))
        })?;
        let chain = self
            .chain_with(name, &previous.plugin)
            .ok_or(ReloadError::Unavailable)?;
        let version = previous.plugin.hash().to_owned();
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(slot) = slots.iter_mut().find(|s| s.name == name) {
                let old = std::mem::replace(&mut slot.current, previous.plugin);
                let old_from = std::mem::replace(&mut slot.serving_from, previous.from);
                let old_config = std::mem::replace(&mut slot.config, previous.config);
                let old_limits = std::mem::replace(&mut slot.limits, previous.limits);
                slot.previous = Some(Previous {
                    plugin: old,
                    from: old_from,
                    config: old_config,
                    limits: old_limits,
                });
                slot.loaded_at = unix_now();
                slot.loads += 1;
            }
        }
        self.host.set_chain(chain);
        tracing::info!(plugin = name, %version, "plugin rolled back");
        Ok(ReloadOutcome::Swapped { version })
    }

    /// Records `plugin`, read from `from`, as serving in `name`'s slot, the version it
    /// replaces becoming the previous one: called as the chain with it is put into service.
    pub(super) fn record_swap(&self, name: &str, plugin: Arc<Plugin>, from: PathBuf) {
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(slot) = slots.iter_mut().find(|s| s.name == name) {
                let old = std::mem::replace(&mut slot.current, plugin);
                let old_from = std::mem::replace(&mut slot.serving_from, from);
                slot.previous = Some(Previous {
                    plugin: old,
                    from: old_from,
                    config: slot.config.clone(),
                    limits: slot.limits,
                });
                slot.loaded_at = unix_now();
                slot.loads += 1;
            }
        }
    }
}
