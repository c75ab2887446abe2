//! Reloads a plugin when its file changes — once the file has settled: a file still being
//! written (or copied in chunks) is never loaded half-way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::slots::{PluginSlots, ReloadError};

/// What a file looked like at one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// Watches every plugin file of `slots`; when one changes and then stays unchanged for
/// `settle`, reloads that plugin (which compiles, checks and canaries it before serving).
/// A file that settles broken is refused once, with its reason in the plugin's status.
pub async fn watch_plugin_files(slots: PluginSlots, interval: Duration, settle: Duration) {
    let mut known: BTreeMap<String, Stamp> = slots
        .paths()
        .into_iter()
        .filter_map(|(name, path)| stamp(&path).map(|s| (name, s)))
        .collect();
    let mut pending: BTreeMap<String, (Stamp, SystemTime)> = BTreeMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (name, path) in slots.paths() {
            let Some(now) = stamp(&path) else { continue };
            if known.get(&name) == Some(&now) {
                pending.remove(&name);
                continue;
            }
            match pending.get(&name) {
                Some((seen, since)) if *seen == now => {
                    if since.elapsed().unwrap_or_default() >= settle {
                        match slots.reload(&name, None).await {
                            // An admin reload or rollback is running: try again next tick.
                            Err(ReloadError::Busy) => continue,
                            Err(e) => {
                                tracing::warn!(plugin = %name, error = %e, "plugin file change refused");
                            }
                            Ok(_) => {}
                        }
                        pending.remove(&name);
                        known.insert(name.clone(), now);
                    }
                }
                _ => {
                    pending.insert(name, (now, SystemTime::now()));
                }
            }
        }
    }
}
