//! The directory source's side that touches the disk: which files it holds, and reading one
//! within a size cap. Blocking calls, made off the async runtime's workers.
//!
//! [`open_regular`] and [`RegularFile::read_at_most`] are also how plugin files are read:
//! one way, for both, to open a file that may have been swapped for a FIFO or a device since
//! it was checked, and to read no more of it than allowed.

use std::ffi::OsStr;
use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::Stamp;

/// Why a file was not read: its content, kept refused until the file changes; the OS,
/// retried at the next scan (a permission or a mount may come back); or a file that changed
/// since it was listed (now as stamped), read again once it settles.
#[derive(Debug)]
pub(super) enum Refusal {
    Content(String),
    Io(String),
    Changed(Stamp),
}

/// A regular file open for reading, and its status as the open handle sees it (never the
/// path's: by now the path may name another file).
#[derive(Debug)]
pub(crate) struct RegularFile {
    /// The open file.
    pub(crate) file: File,
    /// Its status when opened.
    pub(crate) meta: Metadata,
}

/// Why [`open_regular`] or [`RegularFile::read_at_most`] gave nothing.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The OS refused: a missing file, permissions, a link where none is followed.
    Io(std::io::Error),
    /// Not a regular file: what it is instead ("a FIFO", "a directory", …).
    NotRegular(&'static str),
    /// Over the cap: the size it said, or what reading it gave (one byte past the cap).
    TooLarge(u64),
    /// The deadline came before the end of the file.
    TimedOut,
}

/// Opens `path` for reading without blocking, and refuses it unless the opened file is a
/// regular file. `O_NONBLOCK`: a FIFO (swapped in after a check, say) opens at once instead
/// of waiting for a writer, and is then refused by the type of the open handle. With
/// `follow_last_link` false, `O_NOFOLLOW`: a symbolic link as the last component is refused.
pub(crate) fn open_regular(
    path: &Path,
    follow_last_link: bool,
) -> Result<RegularFile, ReadFailure> {
    let nofollow = if follow_last_link {
        0
    } else {
        libc::O_NOFOLLOW
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | nofollow)
        .open(path)
        .map_err(ReadFailure::Io)?;
    let meta = file.metadata().map_err(ReadFailure::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadFailure::NotRegular(kind(&meta.file_type())));
    }
    Ok(RegularFile { file, meta })
}

impl RegularFile {
    /// The file's bytes, refused without reading when its size is over `max_bytes`. The size
    /// said is not trusted (a file that grows, a `/proc` file that says 0): at most one byte
    /// past the cap is ever read. Stops at `deadline`, if any, between chunks.
    pub(crate) fn read_at_most(
        &self,
        max_bytes: u64,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, ReadFailure> {
        if self.meta.len() > max_bytes {
            return Err(ReadFailure::TooLarge(self.meta.len()));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(self.meta.len()).unwrap_or(0));
        let capped = (&self.file).take(max_bytes.saturating_add(1));
        if !read_until(capped, &mut bytes, deadline).map_err(ReadFailure::Io)? {
            return Err(ReadFailure::TimedOut);
        }
        if bytes.len() as u64 > max_bytes {
            return Err(ReadFailure::TooLarge(bytes.len() as u64));
        }
        Ok(bytes)
    }
}

/// Reads `from` to its end into `into` in chunks, stopping at `deadline` if there is one:
/// `Ok(false)` if it was reached first.
pub(crate) fn read_until(
    mut from: impl Read,
    into: &mut Vec<u8>,
    deadline: Option<Instant>,
) -> std::io::Result<bool> {
    let mut chunk = vec![0; 1 << 16];
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
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

/// What a file that is not a regular file is, for a refusal.
fn kind(t: &FileType) -> &'static str {
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

/// Every `.yaml`/`.yml`/`.json` file under `dir`, sorted; hidden names skipped. Symbolic
/// links to files are followed (a Kubernetes ConfigMap volume is made of them); links to
/// directories are not, so a link loop cannot make the walk endless. An error if `dir`
/// itself cannot be read: an empty listing would say every file is gone.
pub(super) fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = Vec::new();
    let mut listing = Some(std::fs::read_dir(dir)?);
    while let Some(entries) = listing.take() {
        for e in entries.flatten() {
            let p = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if hidden(&e.file_name()) {
                continue;
            }
            if kind.is_dir() {
                stack.push(p);
            } else if document(&p) && !(kind.is_symlink() && p.is_dir()) {
                out.push(p);
            }
        }
        // A directory below that cannot be read is skipped.
        listing = std::iter::from_fn(|| stack.pop()).find_map(|d| std::fs::read_dir(d).ok());
    }
    out.sort();
    Ok(out)
}

/// Whether a name is hidden: such a file, or a directory with all it holds, is not read.
pub(super) fn hidden(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with('.'))
}

/// Whether `path` names a document file by its extension.
pub(super) fn document(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|x| x.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The text of the regular file at `path` if it is still the one listed as `listed`. Refused
/// without reading when over `max_bytes` (and never reading more than that if it grows
/// meanwhile). [`Refusal::Changed`] when the open file's size or modification time is not the
/// listed one, when opened or after the read, or the read gave another size: a writer got in
/// between the listing and the read, and what was read may be half a file.
pub(super) fn read_listed(path: &Path, listed: Stamp, max_bytes: u64) -> Result<String, Refusal> {
    let refused = |failure: ReadFailure| match failure {
        ReadFailure::Io(e) => Refusal::Io(e.to_string()),
        ReadFailure::NotRegular(kind) => {
            Refusal::Content(format!("is not a regular file (it is {kind})"))
        }
        ReadFailure::TooLarge(len) => Refusal::Content(format!(
            "is {len} bytes, over inputs.max_file_bytes = {max_bytes}"
        )),
        ReadFailure::TimedOut => Refusal::Io("the read timed out".into()),
    };
    let stamp_now = |file: &File| {
        let meta = file.metadata().map_err(|e| Refusal::Io(e.to_string()))?;
        Stamp::of(&meta).ok_or_else(|| Refusal::Io("has no mtime".into()))
    };
    let opened = open_regular(path, true).map_err(refused)?;
    let at_open = Stamp::of(&opened.meta).ok_or_else(|| Refusal::Io("has no mtime".into()))?;
    if at_open != listed {
        return Err(Refusal::Changed(at_open));
    }
    let read = opened.read_at_most(max_bytes, None);
    let after = stamp_now(&opened.file)?;
    if after != listed {
        return Err(Refusal::Changed(after));
    }
    let bytes = read.map_err(refused)?;
    if bytes.len() as u64 != after.len {
        return Err(Refusal::Changed(after));
    }
    String::from_utf8(bytes)
        .map_err(|e| Refusal::Content(format!("is not UTF-8: {}", e.utf8_error())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_document_files_are_listed_and_link_loops_end() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        for f in ["a.yaml", "sub/b.json", ".hidden.yaml", "notes.txt"] {
            std::fs::write(d.join(f), "").unwrap();
        }
        std::os::unix::fs::symlink(d, d.join("sub/loop")).unwrap();
        std::os::unix::fs::symlink(d.join("a.yaml"), d.join("link.yml")).unwrap();
        let names: Vec<PathBuf> = files_under(d)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["a.yaml", "link.yml", "sub/b.json"].map(PathBuf::from)
        );
    }

    fn listed(path: &Path) -> Stamp {
        Stamp::of(&std::fs::metadata(path).unwrap()).unwrap()
    }

    #[test]
    fn a_file_over_the_cap_is_refused_naming_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.yaml");
        std::fs::write(&f, "x".repeat(11)).unwrap();
        let Err(Refusal::Content(e)) = read_listed(&f, listed(&f), 10) else {
            panic!("read")
        };
        assert_eq!(e, "is 11 bytes, over inputs.max_file_bytes = 10");
        assert_eq!(read_listed(&f, listed(&f), 11).unwrap().len(), 11);
        let d = dir.path();
        let Err(Refusal::Content(e)) = read_listed(d, listed(d), 10) else {
            panic!("a directory")
        };
        assert_eq!(e, "is not a regular file (it is a directory)");
        assert!(matches!(
            read_listed(&d.join("gone.yaml"), listed(&f), 10),
            Err(Refusal::Io(_))
        ));
    }

    #[test]
    fn a_file_that_is_not_as_listed_is_not_read_as_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "kind: A\nname: a\n").unwrap();
        let stamp = listed(&f);
        std::fs::write(&f, "kind: A\n").unwrap();
        let Err(Refusal::Changed(now)) = read_listed(&f, stamp, 100) else {
            panic!("rewritten since it was listed: not read")
        };
        assert_eq!(now, listed(&f), "the stamp it has now, to settle on");
        assert_eq!(read_listed(&f, now, 100).unwrap(), "kind: A\n");
    }

    #[test]
    fn a_fifo_is_opened_without_waiting_for_a_writer_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // No check of the path first: only the open handle's type guards against blocking.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(open_regular(&fifo, true).map(|_| ())));
        let opened = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the open of a FIFO with no writer returns at once");
        assert!(matches!(opened, Err(ReadFailure::NotRegular("a FIFO"))));
    }

    #[test]
    fn a_read_past_its_deadline_stops_and_says_so() {
        let mut into = Vec::new();
        let past = Instant::now() - std::time::Duration::from_millis(1);
        assert!(!read_until(std::io::repeat(0), &mut into, Some(past)).unwrap());
        assert!(into.is_empty());
        /// A file system that answers a byte every 10 ms, for ever.
        struct Slow;
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_millis(10));
                buf[0] = 0;
                Ok(1)
            }
        }
        let soon = Instant::now() + std::time::Duration::from_millis(50);
        assert!(!read_until(Slow, &mut into, Some(soon)).unwrap());
        assert!(into.len() < 10, "stopped at the deadline: {}", into.len());
        assert!(read_until(&b"abc"[..], &mut into, None).unwrap());
    }
}
