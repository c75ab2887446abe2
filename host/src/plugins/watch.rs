//! Plugin files: which ones a reload may read and how (regular files inside the plugin
//! directories, size-capped, timed, off the async workers), and the watch that reloads a
//! plugin once its changed file has settled — a file still being written is never loaded.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::slots::{PluginSlots, ReloadError};

/// Which plugin files a reload may read, and how much of them for how long.
#[derive(Debug, Clone)]
pub(super) struct PluginFileRules {
    /// Canonical (symlinks resolved) where they exist.
    dirs: Vec<PathBuf>,
    max_bytes: u64,
    timeout: Duration,
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
}

impl PluginFileRules {
    /// Rules for files inside `dirs` (resolved now; one that does not exist yet is kept as
    /// given, and admits nothing until it does and the server restarts).
    pub(super) fn new(
        dirs: impl IntoIterator<Item = PathBuf>,
        max_bytes: u64,
        timeout: Duration,
    ) -> Self {
        let mut dirs: Vec<PathBuf> = dirs
            .into_iter()
            .map(|d| std::fs::canonicalize(&d).unwrap_or_else(|_| lexical(&d)))
            .collect();
        dirs.sort();
        dirs.dedup();
        PluginFileRules {
            dirs,
            max_bytes,
            timeout,
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

    /// Reads a plugin file under the rules, on a blocking thread, within the timeout.
    pub(super) async fn read(&self, path: &Path) -> Result<Vec<u8>, FileRefusal> {
        let rules = self.clone();
        let owned = path.to_path_buf();
        let deadline = Instant::now() + self.timeout;
        let reading = tokio::task::spawn_blocking(move || rules.read_blocking(&owned, deadline));
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
        let shown = || path.display().to_string();
        let io = |e: std::io::Error| FileRefusal::Io {
            path: shown(),
            reason: e.to_string(),
        };
        let real = self.admit(path)?;
        // O_NONBLOCK: opening a FIFO (swapped in after the check, say) returns at once instead
        // of waiting for a writer; O_NOFOLLOW: the checked path is the one opened.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&real)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.file_type().is_file() {
            return Err(FileRefusal::NotRegular {
                path: shown(),
                kind: kind(&meta.file_type()),
            });
        }
        let too_large = || FileRefusal::TooLarge {
            path: shown(),
            max: self.max_bytes,
        };
        if meta.len() > self.max_bytes {
            return Err(too_large());
        }
        // The size said is not trusted (a file that grows, a /proc file that says 0): at most
        // one byte past the cap is ever read.
        let mut wasm = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        if !read_until(file.take(self.max_bytes + 1), &mut wasm, deadline).map_err(io)? {
            return Err(self.timed_out(path));
        }
        if wasm.len() as u64 > self.max_bytes {
            return Err(too_large());
        }
        Ok(wasm)
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

/// Reads `from` to its end into `into` in chunks, stopping at `deadline`: `Ok(false)` if it
/// was reached first.
fn read_until(mut from: impl Read, into: &mut Vec<u8>, deadline: Instant) -> std::io::Result<bool> {
    let mut chunk = vec![0; 1 << 20];
    loop {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        match from.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
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

fn kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// What a file looked like at one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// Every plugin file's stamp, taken on a blocking thread (a stat on a hung network file
/// system must not hold an async worker).
async fn stamps(slots: &PluginSlots) -> BTreeMap<String, Stamp> {
    let paths = slots.paths();
    tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .filter_map(|(name, path)| stamp(&path).map(|s| (name, s)))
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Watches every plugin file of `slots`; when one changes and then stays unchanged for
/// `settle`, reloads that plugin (which reads it under the plugin-file rules, then compiles,
/// checks and canaries it before serving). A file that settles broken is refused once, with
/// its reason in the plugin's status.
pub async fn watch_plugin_files(slots: PluginSlots, interval: Duration, settle: Duration) {
    let mut known = stamps(&slots).await;
    let mut pending: BTreeMap<String, (Stamp, SystemTime)> = BTreeMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (name, now) in stamps(&slots).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(dir: &Path, max: u64) -> PluginFileRules {
        PluginFileRules::new([dir.to_path_buf()], max, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_regular_file_inside_is_read_and_everything_else_is_refused_by_its_rule() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("plugins");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.wasm"), b"wasm").unwrap();
        std::fs::write(root.path().join("outside.wasm"), b"x").unwrap();
        std::os::unix::fs::symlink(root.path().join("outside.wasm"), dir.join("link.wasm"))
            .unwrap();
        std::os::unix::fs::symlink(dir.join("a.wasm"), root.path().join("in.wasm")).unwrap();
        let r = rules(&dir, 10);
        assert_eq!(r.read(&dir.join("a.wasm")).await.unwrap(), b"wasm");
        assert_eq!(
            r.read(&root.path().join("in.wasm")).await.unwrap(),
            b"wasm",
            "a link from outside to a file inside is judged by where it leads"
        );
        for p in [
            root.path().join("outside.wasm"),
            dir.join("link.wasm"),
            dir.join("../outside.wasm"),
            root.path().join("missing.wasm"),
            PathBuf::from("/dev/zero"),
        ] {
            let e = r.read(&p).await.unwrap_err();
            assert!(matches!(e, FileRefusal::OutsideDirs { .. }), "{p:?}: {e}");
            assert!(
                e.to_string().contains("outside the plugin directories"),
                "{e}"
            );
        }
        let e = r.read(&dir.join("missing.wasm")).await.unwrap_err();
        assert!(matches!(e, FileRefusal::Io { .. }), "{e}");
        std::fs::create_dir(dir.join("sub")).unwrap();
        let e = r.read(&dir.join("sub")).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("not a regular file (it is a directory)"),
            "{e}"
        );
        std::fs::write(dir.join("big.wasm"), [0u8; 11]).unwrap();
        let e = r.read(&dir.join("big.wasm")).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("larger than max_plugin_bytes (10 bytes"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.wasm");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = tokio::time::timeout(Duration::from_secs(2), rules(dir.path(), 10).read(&fifo))
            .await
            .expect("no hang on a FIFO")
            .unwrap_err();
        assert!(
            e.to_string().contains("not a regular file (it is a FIFO)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_file_whose_size_lies_is_cut_one_byte_past_the_cap() {
        // /proc files say they are empty; this one holds more than 64 bytes.
        let r = rules(Path::new("/proc"), 64);
        let e = r.read(Path::new("/proc/self/status")).await.unwrap_err();
        assert!(matches!(e, FileRefusal::TooLarge { max: 64, .. }), "{e}");
    }

    #[test]
    fn a_read_past_its_deadline_stops_and_says_so() {
        let mut into = Vec::new();
        let past = Instant::now() - Duration::from_millis(1);
        assert!(!read_until(std::io::repeat(0), &mut into, past).unwrap());
        assert!(into.is_empty());
        /// A file system that answers a byte every 10 ms, for ever.
        struct Slow;
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(10));
                buf[0] = 0;
                Ok(1)
            }
        }
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(!read_until(Slow, &mut into, soon).unwrap());
        assert!(into.len() < 10, "stopped at the deadline: {}", into.len());
        let e = rules(Path::new("/tmp"), 1).timed_out(Path::new("/tmp/a.wasm"));
        assert!(e.to_string().contains("timed out after 5s"), "{e}");
    }
}
