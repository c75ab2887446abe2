//! The config file, watched while serving. Its plugin chain (which plugins, in which order,
//! with which `config` tables and limits) is applied without a restart, through the same
//! trial over the live groups as a plugin reload: a chain that breaks a group that works now
//! is refused and the running one keeps serving. The other sections (ports, TLS, admin,
//! inputs, pipeline, reload) are read at start only: a change there is logged as needing a
//! restart, and the chain change in the same edit still applies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use tokio::time::Instant;

use crate::config::Config;
use crate::inputs::files::changes::Seen;
use crate::inputs::files::events::{FileEvents, MIN_WAIT, QUIET, SAFETY_NET};
use crate::plugins::{PluginPlan, PluginSlots, ReconfigureOutcome, ReloadError};

/// How soon a chain change is tried again when a plugin reload was running.
const RETRY: Duration = Duration::from_millis(200);

/// The plugin chain `config` names.
pub fn plugin_plans(config: &Config) -> Vec<PluginPlan> {
    config
        .plugins
        .iter()
        .map(|p| PluginPlan {
            name: p.name.clone(),
            path: p.path.clone(),
            config: p.config_json(),
            limits: p.limits,
        })
        .collect()
}

/// The sections of `new` that differ from `running` and apply only at start.
fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    // Every field of these sections is plain data: their Debug forms differ exactly when a
    // value does.
    let differ =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut sections = Vec::new();
    if differ(&running.xds, &new.xds) {
        sections.push("xds");
    }
    if differ(&running.admin, &new.admin) {
        sections.push("admin");
    }
    if differ(&running.reload, &new.reload) {
        sections.push("reload");
    }
    if differ(&running.pipeline, &new.pipeline) {
        sections.push("pipeline");
    }
    if differ(&running.inputs, &new.inputs) {
        sections.push("inputs");
    }
    sections
}

/// How a version of the file looks: its length and modification time.
type Stamp = (u64, Option<std::time::SystemTime>);

/// How long a change that no close or rename said was whole must stay unchanged before the
/// file is read (an in-place write with no close event, the 10 s look).
const SETTLE: Duration = Duration::from_secs(1);

/// Identifies a version of the file by what its metadata says.
fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()))
}

/// Watches the config file at `path` (as loaded into `running`) and applies each whole new
/// version's plugin chain to `slots`. A version that does not load (a syntax error, a bad
/// value) or names no plugins is refused with the reason logged, and the running config
/// stays. Whole: closed after writing or renamed into place (an editor's save, a Kubernetes
/// ConfigMap's swap), or, for a change no such event announced (the 10 s look, a writer that
/// never closes), unchanged for a second.
pub async fn watch_config_file(path: PathBuf, running: Config, slots: PluginSlots) {
    // Events name the file by its absolute path; it is loaded by the path it was given, so
    // that its relative paths resolve as they did at start.
    let given = path.clone();
    let path = std::path::absolute(&path).unwrap_or(path);
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let roots = vec![(dir, RecursiveMode::NonRecursive)];
    let mut events = tokio::task::spawn_blocking(move || {
        FileEvents::start("config file", &roots, SAFETY_NET)
            .map(|e| e.quiet(QUIET))
            .inspect_err(|e| {
                tracing::warn!(error = %e, "cannot watch the config file: looking at it every 10 s");
            })
            .ok()
    })
    .await
    .ok()
    .flatten();
    let mut running = running;
    let mut known = stamp(&path);
    let mut next_look = Instant::now() + SAFETY_NET;
    let mut retry_at: Option<Instant> = None;
    // A change not known to be whole yet (written, or seen by a look): when it was last seen
    // changing, and how the file looked then.
    let mut pending: Option<(Instant, Option<Stamp>)> = None;
    loop {
        let due = [Some(next_look), retry_at, pending.map(|(t, _)| t + SETTLE)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_look)
            .max(Instant::now() + MIN_WAIT);
        let changes = FileEvents::next_or_sleep(&mut events, due).await;
        let now = Instant::now();
        let mut whole = changes.paths.get(&path) == Some(&Seen::Whole);
        if changes.paths.contains_key(&path) && !whole {
            pending = Some((now, stamp(&path)));
        }
        if changes.rescan || now >= next_look {
            next_look = now + SAFETY_NET;
            let current = stamp(&path);
            if current != known && pending.is_none() {
                pending = Some((now, current));
            }
        }
        // A change no close or rename said was whole: loaded once it stopped changing.
        if let Some((since, seen)) = pending {
            if now >= since + SETTLE {
                let current = stamp(&path);
                if current == seen {
                    whole = true;
                } else {
                    pending = Some((now, current));
                }
            }
        }
        let retry = retry_at.is_some_and(|r| r <= now);
        if !whole && !retry {
            continue;
        }
        retry_at = None;
        pending = None;
        known = stamp(&path);
        let file = given.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&file)).await;
        let new = match loaded {
            Ok(Ok(new)) => new,
            Ok(Err(e)) => {
                metrics::counter!("config_reloads_total", "result" => "invalid").increment(1);
                tracing::warn!(error = %e, "the changed config file is refused; the running config stays");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the config file failed");
                continue;
            }
        };
        let restart = needs_restart(&running, &new);
        if !restart.is_empty() {
            tracing::warn!(sections = ?restart, "these config sections changed and apply at the next start only");
        }
        match slots.reconfigure(plugin_plans(&new)).await {
            Ok(ReconfigureOutcome::Unchanged) => {
                metrics::counter!("config_reloads_total", "result" => "unchanged").increment(1);
                running = new;
            }
            Ok(ReconfigureOutcome::Swapped { .. }) => {
                metrics::counter!("config_reloads_total", "result" => "applied").increment(1);
                running = new;
            }
            Err(ReloadError::Busy) => retry_at = Some(Instant::now() + RETRY),
            Err(e) => {
                metrics::counter!("config_reloads_total", "result" => "refused").increment(1);
                tracing::warn!(error = %e, "the changed config file's plugin chain is refused");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn sections_read_at_start_only_are_named_when_they_change() {
        let a = config("[xds]\nlisten = \"127.0.0.1:18000\"\n");
        let b = config("[xds]\nlisten = \"127.0.0.1:18100\"\n[pipeline]\ndebounce_ms = 5\n");
        assert_eq!(needs_restart(&a, &a), Vec::<&str>::new());
        assert_eq!(needs_restart(&a, &b), vec!["xds", "pipeline"]);
    }
}
