//! The plugins of a running server, by position in the chain, with their versions: hot
//! reload (compile → contract check → trial over the live groups, run by the chain's host →
//! atomic swap), explicit rollback, and the status operators see.

mod reconfigure;
mod rollback;
mod status;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::chain::PluginChain;
use super::engine::PluginEngine;
use super::host::ChainHost;
use super::limits::PluginLimits;
use super::plugin::Plugin;
use super::watch::{FileRefusal, PluginFileRules};
pub use reconfigure::{PluginPlan, ReconfigureOutcome};
pub use status::{PluginStatus, Rejected, ReloadError, ReloadOutcome};

/// One position of the chain.
#[derive(Debug)]
struct Slot {
    name: String,
    /// The plugin's file: what the file watch follows and a reload without a path reads.
    path: PathBuf,
    config: serde_json::Value,
    limits: PluginLimits,
    current: Arc<Plugin>,
    /// The file the serving version was read from: `path`, or the file of a one-off reload.
    serving_from: PathBuf,
    loaded_at: u64,
    previous: Option<Previous>,
    rejected: Option<Rejected>,
    loads: u64,
    /// What the config file said of this plugin when it was last applied (at start or by
    /// [`PluginSlots::reconfigure`]): a new version of the file changes the slot only where
    /// it differs from this, so a reload or rollback since holds until then.
    configured: PluginPlan,
}

/// The version a slot served before its current one, and how it was configured then.
#[derive(Debug, Clone)]
struct Previous {
    plugin: Arc<Plugin>,
    from: PathBuf,
    config: serde_json::Value,
    limits: PluginLimits,
}

/// The chain's plugins and their versions, driving the [`ChainHost`] that serves the chain.
#[derive(Clone)]
pub struct PluginSlots {
    engine: PluginEngine,
    host: Arc<dyn ChainHost>,
    slots: Arc<Mutex<Vec<Slot>>>,
    /// Which files a reload may read.
    files: Arc<PluginFileRules>,
    /// Set while a reload or rollback runs: one at a time, so that a trial's chain is never
    /// built from slots another swap changes meanwhile (a flag, not a lock held across awaits).
    busy: Arc<AtomicBool>,
    /// The last chain from the config file that was refused, until one serves.
    chain_rejected: Arc<Mutex<Option<Rejected>>>,
}

/// Holds [`PluginSlots::busy`] for one reload or rollback.
struct BusyGuard(Arc<AtomicBool>);

impl BusyGuard {
    fn take(flag: &Arc<AtomicBool>) -> Result<Self, ReloadError> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| BusyGuard(Arc::clone(flag)))
            .map_err(|_| ReloadError::Busy)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A plugin to put in a slot at start.
#[derive(Debug, Clone)]
pub struct SlotSpec {
    /// Name.
    pub name: String,
    /// File.
    pub path: PathBuf,
    /// Config for `init`.
    pub config: serde_json::Value,
    /// Limits.
    pub limits: PluginLimits,
    /// The loaded plugin.
    pub plugin: Arc<Plugin>,
}

impl PluginSlots {
    /// The largest plugin file a reload reads unless told otherwise: 64 MiB.
    pub const DEFAULT_MAX_PLUGIN_BYTES: u64 = 64 << 20;
    /// How long reading a plugin file may take unless told otherwise: 10 s.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

    /// Slots for the plugins the chain `host` serves was started with. Reloads read regular
    /// files from the directories of `specs`' files, up to the default size and time.
    pub fn new(engine: PluginEngine, host: impl ChainHost, specs: Vec<SlotSpec>) -> Self {
        let now = unix_now();
        let (max_bytes, timeout) = (Self::DEFAULT_MAX_PLUGIN_BYTES, Self::DEFAULT_READ_TIMEOUT);
        let files = PluginFileRules::new(
            specs.iter().map(|s| directory_of(&s.path)),
            max_bytes,
            timeout,
        )
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "plugin files will not be reloaded");
            PluginFileRules::admitting_nothing(max_bytes, timeout)
        });
        let slots = specs
            .into_iter()
            .map(|s| Slot {
                configured: PluginPlan {
                    name: s.name.clone(),
                    path: s.path.clone(),
                    config: s.config.clone(),
                    limits: s.limits,
                },
                name: s.name,
                serving_from: s.path.clone(),
                path: s.path,
                config: s.config,
                limits: s.limits,
                current: s.plugin,
                loaded_at: now,
                previous: None,
                rejected: None,
                loads: 1,
            })
            .collect();
        PluginSlots {
            engine,
            host: Arc::new(host),
            slots: Arc::new(Mutex::new(slots)),
            files: Arc::new(files),
            busy: Arc::new(AtomicBool::new(false)),
            chain_rejected: Arc::new(Mutex::new(None)),
        }
    }

    /// Reloads read only regular files inside `dirs` (empty: the directories of the current
    /// plugin files), symlinks resolved, of at most `max_bytes`, within `read_timeout`. Fails
    /// if a current plugin file is outside them (its file watch could never reload it), or if
    /// one of them is a filesystem root.
    pub fn with_file_rules(
        mut self,
        dirs: &[PathBuf],
        max_bytes: u64,
        read_timeout: Duration,
    ) -> Result<Self, ReloadError> {
        let paths = self.paths();
        let dirs: Vec<PathBuf> = if dirs.is_empty() {
            paths.iter().map(|(_, p)| directory_of(p)).collect()
        } else {
            dirs.to_vec()
        };
        let files = PluginFileRules::new(dirs, max_bytes, read_timeout)?;
        for (name, path) in &paths {
            if let Err(refusal @ FileRefusal::OutsideDirs { .. }) = files.admit(path) {
                return Err(ReloadError::file(name, refusal));
            }
        }
        self.files = Arc::new(files);
        Ok(self)
    }

    /// The status of every plugin, in chain order.
    pub fn status(&self) -> Vec<PluginStatus> {
        let Ok(slots) = self.slots.lock() else {
            return Vec::new();
        };
        slots
            .iter()
            .map(|s| PluginStatus {
                name: s.name.clone(),
                path: s.path.display().to_string(),
                serving_path: s.serving_from.display().to_string(),
                version: s.current.hash().to_owned(),
                loaded_at_unix_secs: s.loaded_at,
                previous_version: s.previous.as_ref().map(|p| p.plugin.hash().to_owned()),
                rejected: s.rejected.clone(),
                loads: s.loads,
                stats: s.current.stats().snapshot(),
            })
            .collect()
    }

    /// The file each plugin is loaded from, by name.
    pub fn paths(&self) -> Vec<(String, PathBuf)> {
        self.slots
            .lock()
            .map(|s| s.iter().map(|s| (s.name.clone(), s.path.clone())).collect())
            .unwrap_or_default()
    }

    /// Loads a new version of plugin `name` (from `path`, or its file), checks it, has the
    /// host try the new chain over every live group, and only then swaps it in. Any failure
    /// keeps the old version serving and is recorded. A `path` is a one-off: the plugin's file
    /// stays what the watch follows, so the next change of that file (or a reload without a
    /// path) replaces this version. [`PluginSlots::reload_and_persist`] re-points the plugin.
    pub async fn reload(
        &self,
        name: &str,
        path: Option<&Path>,
    ) -> Result<ReloadOutcome, ReloadError> {
        self.reload_from(name, path, false).await
    }

    /// Reloads plugin `name` from `path`, as [`PluginSlots::reload`] does, and makes `path`
    /// the plugin's file from then on (for the life of the process: the config file is not
    /// changed): the file watch follows it, and later changes of the old file are ignored.
    pub async fn reload_and_persist(
        &self,
        name: &str,
        path: &Path,
    ) -> Result<ReloadOutcome, ReloadError> {
        self.reload_from(name, Some(path), true).await
    }

    async fn reload_from(
        &self,
        name: &str,
        path: Option<&Path>,
        persist: bool,
    ) -> Result<ReloadOutcome, ReloadError> {
        let _busy = BusyGuard::take(&self.busy)?;
        let (file, config, limits, current_hash) = self.with_slot(name, |slot| {
            Ok((
                path.map_or_else(|| slot.path.clone(), Path::to_path_buf),
                slot.config.clone(),
                slot.limits,
                slot.current.hash().to_owned(),
            ))
        })?;
        let wasm = match self.files.read(&file).await {
            Ok(w) => w,
            // Not this version's fault: not recorded as refused.
            Err(refusal @ FileRefusal::ReadInFlight { .. }) => {
                return Err(ReloadError::file(name, refusal))
            }
            Err(refusal) => {
                // Recorded in the status like any refused version; the answer names the rule.
                self.refuse(name, String::new(), refusal.to_string());
                return Err(ReloadError::file(name, refusal));
            }
        };
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&wasm));
        if hash == current_hash {
            self.record_paths(name, &file, persist);
            return Ok(ReloadOutcome::Unchanged);
        }
        let engine = self.engine.clone();
        let plugin_name = name.to_owned();
        let loaded = tokio::task::spawn_blocking(move || {
            Plugin::load(&engine, &plugin_name, &wasm, &config, limits)
        })
        .await;
        let plugin = match loaded {
            Ok(Ok(p)) => Arc::new(p),
            Ok(Err(e)) => return Err(self.refuse(name, hash, e.to_string())),
            Err(e) => return Err(self.refuse(name, hash, format!("load task failed: {e}"))),
        };
        let Some(candidate) = self.chain_with(name, &plugin) else {
            return Err(ReloadError::Unavailable);
        };
        let trial = match self.host.trial(candidate, name).await {
            Ok(t) => t,
            Err(reason) => return Err(self.refuse(name, hash, reason)),
        };
        self.record_swap(name, plugin, file.clone());
        self.record_paths(name, &file, persist);
        trial.commit();
        metrics::counter!("plugin_reloads_total", "plugin" => name.to_owned(), "result" => "swapped").increment(1);
        tracing::info!(plugin = name, version = %hash, "plugin reloaded");
        Ok(ReloadOutcome::Swapped { version: hash })
    }

    /// Reads the slot called `name`, under the lock (never held across an `.await`).
    fn with_slot<T>(
        &self,
        name: &str,
        f: impl FnOnce(&Slot) -> Result<T, ReloadError>,
    ) -> Result<T, ReloadError> {
        let unknown = || ReloadError::UnknownPlugin(name.to_owned());
        let slots = self.slots.lock().map_err(|_| unknown())?;
        let slot = slots.iter().find(|s| s.name == name).ok_or_else(unknown)?;
        f(slot)
    }

    /// The current chain with `plugin` in `name`'s place; `None` if the slots are unreadable
    /// (a panic while they were written), never a chain missing plugins.
    fn chain_with(&self, name: &str, plugin: &Arc<Plugin>) -> Option<PluginChain> {
        let slots = self.slots.lock().ok()?;
        Some(PluginChain::new(
            slots
                .iter()
                .map(|s| {
                    if s.name == name {
                        Arc::clone(plugin)
                    } else {
                        Arc::clone(&s.current)
                    }
                })
                .collect(),
        ))
    }

    /// After a reload from `file` (which serves): with `persist`, `file` becomes the plugin's
    /// file; a one-off leaves the plugin's file as it was.
    fn record_paths(&self, name: &str, file: &Path, persist: bool) {
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(slot) = slots.iter_mut().find(|s| s.name == name) {
                slot.serving_from = file.to_path_buf();
                if persist {
                    slot.path = file.to_path_buf();
                }
            }
        }
    }

    fn refuse(&self, name: &str, hash: String, reason: String) -> ReloadError {
        metrics::counter!("plugin_reloads_total", "plugin" => name.to_owned(), "result" => "refused").increment(1);
        tracing::warn!(plugin = name, version = %hash, %reason, "new plugin version refused; the old one keeps serving");
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(slot) = slots.iter_mut().find(|s| s.name == name) {
                slot.rejected = Some(Rejected {
                    hash: hash.clone(),
                    error: reason.clone(),
                    at_unix_secs: unix_now(),
                });
            }
        }
        ReloadError::Refused {
            name: name.to_owned(),
            hash,
            reason,
        }
    }
}

/// The directory a plugin file is in (`.` for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Seconds since the Unix epoch, for the records.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reload_or_rollback_at_a_time() {
        let flag = Arc::new(AtomicBool::new(false));
        let first = BusyGuard::take(&flag).ok();
        assert!(first.is_some());
        assert!(matches!(BusyGuard::take(&flag), Err(ReloadError::Busy)));
        drop(first);
        assert!(
            BusyGuard::take(&flag).is_ok(),
            "free again once the first is done"
        );
    }
}
