//! The plugins of a running server, by position in the chain, with their versions: hot
//! reload (compile → contract check → canary over the current groups → atomic swap), explicit
//! rollback, and the status operators see.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::chain::{ChainOutput, PluginChain, PluginRunError};
use super::engine::PluginEngine;
use super::limits::PluginLimits;
use super::plugin::{Plugin, PluginStatsSnapshot};
use super::watch::{FileRefusal, PluginFileRules};
use crate::pipeline::Pipeline;
use crate::xds::unix_now;

/// What a successful canary computed: every group's result with the new chain, and the input
/// generation they were computed at.
struct Canary {
    generation: u64,
    results: Vec<(String, Result<ChainOutput, PluginRunError>)>,
}

/// A version that was offered and refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The refused file's content hash.
    pub hash: String,
    /// Why.
    pub error: String,
    /// When, in seconds since the Unix epoch.
    pub at_unix_secs: u64,
}

/// One position of the chain.
#[derive(Debug)]
struct Slot {
    name: String,
    path: PathBuf,
    config: serde_json::Value,
    limits: PluginLimits,
    current: Arc<Plugin>,
    loaded_at: u64,
    previous: Option<Arc<Plugin>>,
    rejected: Option<Rejected>,
    loads: u64,
}

/// What operators see of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Its file.
    pub path: String,
    /// The serving version (content hash).
    pub version: String,
    /// When it was loaded, in seconds since the Unix epoch.
    pub loaded_at_unix_secs: u64,
    /// The version a rollback returns to.
    pub previous_version: Option<String>,
    /// The last version refused, and why.
    pub rejected: Option<Rejected>,
    /// How many versions were loaded into service since start.
    pub loads: u64,
    /// Calls, errors, time and instructions of the serving version.
    pub stats: PluginStatsSnapshot,
}

/// Why a reload or rollback did not happen; the old version keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// No plugin has that name.
    #[error("no plugin is named {0:?}")]
    UnknownPlugin(String),
    /// The new file could not be read, compiled, checked or initialised.
    #[error("plugin {name}: new version {hash} refused: {reason}")]
    Refused {
        /// The plugin.
        name: String,
        /// The refused file's hash.
        hash: String,
        /// Why.
        reason: String,
    },
    /// The file is outside the plugin directories (`[reload] plugin_dirs`) once symlinks are
    /// resolved: nothing was opened.
    #[error("plugin {name}: {reason}")]
    OutsidePluginDirs {
        /// The plugin.
        name: String,
        /// The path and the directories.
        reason: String,
    },
    /// The file was not read: not a regular file, larger than `[reload] max_plugin_bytes`,
    /// not read within `[reload] read_timeout_ms`, or refused by the OS.
    #[error("plugin {name}: {reason}")]
    FileRefused {
        /// The plugin.
        name: String,
        /// Which rule refused which path.
        reason: String,
    },
    /// An earlier read of a plugin file is still blocked past `[reload] read_timeout_ms`:
    /// nothing was read, and nothing is recorded; the file watch tries again.
    #[error("plugin {name}: {reason}")]
    ReadInFlight {
        /// The plugin.
        name: String,
        /// The path and the limit.
        reason: String,
    },
    /// A plugin directory (`[reload] plugin_dirs`, or by default the directory of a plugin
    /// file) is a filesystem root: every file would be a plugin file.
    #[error(
        "{dir} is a filesystem root, which would make every file a plugin file: put the \
         plugins in a directory of their own and name it in reload.plugin_dirs"
    )]
    RootPluginDir {
        /// The directory, as given.
        dir: String,
    },
    /// There is no previous version to roll back to.
    #[error("plugin {0} has no previous version")]
    NoPrevious(String),
    /// Another reload or rollback is under way; one runs at a time.
    #[error("another plugin reload or rollback is in progress; try again when it is done")]
    Busy,
    /// The plugin slots were left inconsistent by a panic: no chain is built from them.
    #[error("the plugin slots are unreadable after an internal fault; restart the server")]
    Unavailable,
}

/// The result of a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The file is the version already serving.
    Unchanged,
    /// The new version serves.
    Swapped {
        /// Its hash.
        version: String,
    },
}

/// The chain's plugins and their versions, driving a [`Pipeline`].
#[derive(Clone)]
pub struct PluginSlots {
    engine: PluginEngine,
    pipeline: Pipeline,
    slots: Arc<Mutex<Vec<Slot>>>,
    /// Which files a reload may read.
    files: Arc<PluginFileRules>,
    /// Set while a reload or rollback runs: one at a time, so that a canary's chain is never
    /// built from slots another swap changes meanwhile (a flag, not a lock held across awaits).
    busy: Arc<AtomicBool>,
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

    /// Slots for the plugins the pipeline's chain was started with. Reloads read regular
    /// files from the directories of `specs`' files, up to the default size and time.
    pub fn new(engine: PluginEngine, pipeline: Pipeline, specs: Vec<SlotSpec>) -> Self {
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
                name: s.name,
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
            pipeline,
            slots: Arc::new(Mutex::new(slots)),
            files: Arc::new(files),
            busy: Arc::new(AtomicBool::new(false)),
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
                return Err(file_error(name, refusal));
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
                version: s.current.hash().to_owned(),
                loaded_at_unix_secs: s.loaded_at,
                previous_version: s.previous.as_ref().map(|p| p.hash().to_owned()),
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

    /// Loads a new version of plugin `name` (from `path`, or its current file), checks it, runs
    /// the new chain over every current group as a canary, and only then swaps it in and
    /// recomputes. Any failure keeps the old version serving and is recorded.
    pub async fn reload(
        &self,
        name: &str,
        path: Option<&Path>,
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
                return Err(file_error(name, refusal))
            }
            Err(refusal) => {
                // Recorded in the status like any refused version; the answer names the rule.
                self.refuse(name, String::new(), refusal.to_string());
                return Err(file_error(name, refusal));
            }
        };
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&wasm));
        if hash == current_hash {
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
        let canary = match self.canary(name, &candidate).await {
            Ok(c) => c,
            Err(reason) => return Err(self.refuse(name, hash, reason)),
        };
        self.install(name, plugin, Some(file), candidate, Some(canary));
        metrics::counter!("plugin_reloads_total", "plugin" => name.to_owned(), "result" => "swapped").increment(1);
        tracing::info!(plugin = name, version = %hash, "plugin reloaded");
        Ok(ReloadOutcome::Swapped { version: hash })
    }

    /// Puts the previous version of `name` back into service.
    pub fn rollback(&self, name: &str) -> Result<ReloadOutcome, ReloadError> {
        let _busy = BusyGuard::take(&self.busy)?;
        let previous = self.with_slot(name, |slot| {
            slot.previous
                .clone()
                .ok_or_else(|| ReloadError::NoPrevious(name.to_owned()))
        })?;
        let chain = self
            .chain_with(name, &previous)
            .ok_or(ReloadError::Unavailable)?;
        let version = previous.hash().to_owned();
        self.install(name, previous, None, chain, None);
        tracing::info!(plugin = name, %version, "plugin rolled back");
        Ok(ReloadOutcome::Swapped { version })
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

    /// Runs `candidate` for every current group, spread over the pipeline's parallelism, and
    /// fails if the new version breaks any group that works now: a group fails with the new
    /// chain (the new plugin faults, or a later one refuses its output) while the current chain
    /// succeeds on the same group and inputs. A group that fails with both (bad metadata,
    /// inputs that changed under it) cannot block a reload. On success the results are kept,
    /// to be published as they are.
    async fn canary(&self, name: &str, candidate: &PluginChain) -> Result<Canary, String> {
        // Read before the inputs: results stand only if no input changed after this point.
        let generation = self.pipeline.input_generation();
        let targets = self.pipeline.canary_targets();
        let inputs = self.pipeline.inputs();
        let current = self.pipeline.chain();
        let parallelism = self.pipeline.parallelism().max(1);
        let chunk = targets.len().div_ceil(parallelism).max(1);
        // Set on the first refusal: the other chunks stop at their next group.
        let refused = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for part in targets.chunks(chunk) {
            let (part, chain, inputs) = (part.to_vec(), candidate.clone(), Arc::clone(&inputs));
            let (current, refused) = (Arc::clone(&current), Arc::clone(&refused));
            let plugin = name.to_owned();
            tasks.spawn_blocking(move || {
                let mut results = Vec::with_capacity(part.len());
                for t in part {
                    if refused.load(Ordering::Relaxed) {
                        return Err(String::new());
                    }
                    let result = chain.run(&t.node, Arc::clone(&inputs));
                    // Only a group the current chain serves on the same inputs can refuse the
                    // new version: one that already fails (bad metadata, inputs that changed
                    // under it) says nothing about the new version.
                    let blame = match &result {
                        Ok(_) => None,
                        Err(e) if current.run(&t.node, Arc::clone(&inputs)).is_ok() => {
                            Some(if e.plugin == plugin {
                                format!("canary on group {}: {e}", t.group)
                            } else {
                                format!(
                                    "canary on group {}: with this version of {plugin}, {e} (the current version serves this group)",
                                    t.group
                                )
                            })
                        }
                        Err(_) => None,
                    };
                    if let Some(reason) = blame {
                        refused.store(true, Ordering::Relaxed);
                        return Err(reason);
                    }
                    results.push((t.group, result));
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
            None => Ok(Canary {
                generation,
                results,
            }),
        }
    }

    fn install(
        &self,
        name: &str,
        plugin: Arc<Plugin>,
        path: Option<PathBuf>,
        chain: PluginChain,
        canary: Option<Canary>,
    ) {
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(slot) = slots.iter_mut().find(|s| s.name == name) {
                let old = std::mem::replace(&mut slot.current, plugin);
                slot.previous = Some(old);
                slot.loaded_at = unix_now();
                slot.loads += 1;
                if let Some(p) = path {
                    slot.path = p;
                }
            }
        }
        match canary {
            Some(c) => self.pipeline.install_chain(chain, c.generation, c.results),
            None => self.pipeline.set_chain(chain),
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

fn file_error(name: &str, refusal: FileRefusal) -> ReloadError {
    let (name, reason) = (name.to_owned(), refusal.to_string());
    match refusal {
        FileRefusal::OutsideDirs { .. } => ReloadError::OutsidePluginDirs { name, reason },
        FileRefusal::ReadInFlight { .. } => ReloadError::ReadInFlight { name, reason },
        _ => ReloadError::FileRefused { name, reason },
    }
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
