//! Plugin files: which ones a reload may read and how (regular files inside the plugin
//! directories, size-capped, timed, off the async workers), and the watch that reloads a
//! plugin when its changed file is whole (`reload.rs`).

mod reload;

use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::slots::ReloadError;
use crate::inputs::files::disk::{open_regular, ReadFailure};

pub use reload::watch_plugin_files;

/// Which plugin files a reload may read, and how much of them for how long.
#[derive(Debug, Clone)]
pub(super) struct PluginFileRules {
    /// Canonical (symlinks resolved) where they exist.
    dirs: Vec<PathBuf>,
    max_bytes: u64,
    timeout: Duration,
    /// Set while a blocking read runs, cleared when it really ends (not when it times out):
    /// shared by the clones that reading threads hold.
    reading: Arc<AtomicBool>,
}

/// Holds [`PluginFileRules::reading`] for one blocking read.
struct ReadSlot(Arc<AtomicBool>);

impl ReadSlot {
    fn take(flag: &Arc<AtomicBool>) -> Option<Self> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| ReadSlot(Arc::clone(flag)))
    }
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Why a plugin file was not read: the rule that refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FileRefusal {
    /// Not inside any plugin directory once symlinks are resolved.
    #[error("{path} is outside the plugin directories ({dirs}; [reload] plugin_dirs)")]
    OutsideDirs { path: String, dirs: String },
    /// A FIFO, a device, a directory, a socket.
    #[error("{path} is not a regular file (it is {kind})")]
    NotRegular { path: String, kind: &'static str },
    /// Over `[reload] max_plugin_bytes`, by its size or by what it gave when read.
    #[error("{path} is larger than max_plugin_bytes ({max} bytes; [reload] max_plugin_bytes)")]
    TooLarge { path: String, max: u64 },
    /// Reading took longer than `[reload] read_timeout_ms`.
    #[error("reading {path} timed out after {after:?} ([reload] read_timeout_ms)")]
    TimedOut { path: String, after: Duration },
    /// The OS refused (missing file, permissions).
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    /// An earlier read has not returned: its thread is blocked (on a hung file system, say)
    /// past the timeout, and another would only block one more.
    #[error(
        "not reading {path}: an earlier plugin file read is still blocked past \
         [reload] read_timeout_ms (a hung file system?); try again once it has returned"
    )]
    ReadInFlight { path: String },
}

impl PluginFileRules {
    /// Rules for files inside `dirs` (resolved now; one that does not exist yet is kept as
    /// given, and admits nothing until it does and the server restarts). A filesystem root
    /// (`/`, or a path that resolves to it) is refused: every file would be a plugin file.
    pub(super) fn new(
        dirs: impl IntoIterator<Item = PathBuf>,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Self, ReloadError> {
        let mut rules = Self::admitting_nothing(max_bytes, timeout);
        for given in dirs {
            let dir = std::fs::canonicalize(&given).unwrap_or_else(|_| lexical(&given));
            if dir.parent().is_none() {
                return Err(ReloadError::RootPluginDir {
                    dir: given.display().to_string(),
                });
            }
            rules.dirs.push(dir);
        }
        rules.dirs.sort();
        rules.dirs.dedup();
        Ok(rules)
    }

    /// Rules that admit no file: no plugin directory.
    pub(super) fn admitting_nothing(max_bytes: u64, timeout: Duration) -> Self {
        PluginFileRules {
            dirs: Vec::new(),
            max_bytes,
            timeout,
            reading: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Where `path` really is, if that is inside a plugin directory. Blocking: for start-up
    /// checks and the reading thread.
    pub(super) fn admit(&self, path: &Path) -> Result<PathBuf, FileRefusal> {
        match std::fs::canonicalize(path) {
            Ok(real) if self.inside(&real) => Ok(real),
            Ok(_) => Err(self.outside(path)),
            // Whether a path outside the directories exists is none of the caller's business.
            Err(_) if !self.inside(&lexical(path)) => Err(self.outside(path)),
            Err(e) => Err(FileRefusal::Io {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Reads a plugin file under the rules, on a blocking thread, within the timeout. One
    /// read at a time: while an earlier one's thread is still blocked (its read timed out on
    /// a hung file system, say), refused at once rather than blocking another thread.
    pub(super) async fn read(&self, path: &Path) -> Result<Vec<u8>, FileRefusal> {
        let Some(slot) = ReadSlot::take(&self.reading) else {
            return Err(FileRefusal::ReadInFlight {
                path: path.display().to_string(),
            });
        };
        let rules = self.clone();
        let owned = path.to_path_buf();
        let deadline = Instant::now() + self.timeout;
        let reading = tokio::task::spawn_blocking(move || {
            let read = rules.read_blocking(&owned, deadline);
            // Only now has the read really ended.
            drop(slot);
            read
        });
        match tokio::time::timeout(self.timeout, reading).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(FileRefusal::Io {
                path: path.display().to_string(),
                reason: format!("the reading task failed: {e}"),
            }),
            // The thread stops at its next chunk (or when the OS returns): it checks the
            // same deadline.
            Err(_) => Err(self.timed_out(path)),
        }
    }

    fn read_blocking(&self, path: &Path, deadline: Instant) -> Result<Vec<u8>, FileRefusal> {
        let real = self.admit(path)?;
        self.read_admitted(path, &real, deadline)
    }

    /// Reads `real`, where [`PluginFileRules::admit`] found `path` to be, if the file opened
    /// there is still inside a plugin directory.
    fn read_admitted(
        &self,
        path: &Path,
        real: &Path,
        deadline: Instant,
    ) -> Result<Vec<u8>, FileRefusal> {
        let shown = || path.display().to_string();
        let refused = |failure: ReadFailure| match failure {
            ReadFailure::Io(e) => FileRefusal::Io {
                path: shown(),
                reason: e.to_string(),
            },
            ReadFailure::NotRegular(kind) => FileRefusal::NotRegular {
                path: shown(),
                kind,
            },
            ReadFailure::TooLarge(_) => FileRefusal::TooLarge {
                path: shown(),
                max: self.max_bytes,
            },
            ReadFailure::TimedOut => self.timed_out(path),
        };
        // Not following a link as the last component: a link put there since the check is
        // refused. A directory on the way may have become a link too: where the opened file
        // really is decides.
        let opened = open_regular(real, false).map_err(refused)?;
        let at = opened_at(&opened.file, real).map_err(|e| FileRefusal::Io {
            path: shown(),
            reason: format!("cannot tell where the opened file is: {e}"),
        })?;
        if !self.inside(&at) {
            return Err(self.outside(&at));
        }
        opened
            .read_at_most(self.max_bytes, Some(deadline))
            .map_err(refused)
    }

    fn inside(&self, path: &Path) -> bool {
        self.dirs.iter().any(|d| path.starts_with(d))
    }

    fn outside(&self, path: &Path) -> FileRefusal {
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        FileRefusal::OutsideDirs {
            path: path.display().to_string(),
            dirs: dirs.join(", "),
        }
    }

    fn timed_out(&self, path: &Path) -> FileRefusal {
        FileRefusal::TimedOut {
            path: path.display().to_string(),
            after: self.timeout,
        }
    }
}

/// Where the open `file` really is: its path as the kernel knows it, whatever links and
/// renames led to it.
#[cfg(target_os = "linux")]
fn opened_at(file: &File, _opened_as: &Path) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Where the open `file` really is: without `/proc`, the path it was opened as, resolved
/// again now (a swap back in between would go unseen).
#[cfg(not(target_os = "linux"))]
fn opened_at(_file: &File, opened_as: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(opened_as)
}

/// The path made absolute and without `.`/`..`, for a file that does not exist: judged by
/// its name only.
fn lexical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
