//! What operators see of the plugin slots: each plugin's status, and what a reload or a
//! rollback answers.

use serde::Serialize;

use super::super::plugin::PluginStatsSnapshot;
use super::super::watch::FileRefusal;

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

/// What operators see of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Its file: what the file watch follows and a reload without a path reads.
    pub path: String,
    /// The file the serving version was read from: `path`, or the file of a one-off admin
    /// reload (`{"path": …}` without `persist`) until `path` changes again.
    pub serving_path: String,
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
    /// A new plugin chain from the config file (another order, other plugins, other configs
    /// or limits) failed its trial over the live groups: the old chain keeps serving.
    #[error(
        "the config file's plugin chain was refused; the running chain keeps serving: {reason}"
    )]
    ChainRefused {
        /// The group and plugin that failed, and why.
        reason: String,
    },
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

impl ReloadError {
    /// Plugin `name`'s file was refused by a file rule (or is still being read).
    pub(super) fn file(name: &str, refusal: FileRefusal) -> Self {
        let (name, reason) = (name.to_owned(), refusal.to_string());
        match refusal {
            FileRefusal::OutsideDirs { .. } => ReloadError::OutsidePluginDirs { name, reason },
            FileRefusal::ReadInFlight { .. } => ReloadError::ReadInFlight { name, reason },
            _ => ReloadError::FileRefused { name, reason },
        }
    }
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
