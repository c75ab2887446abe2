//! The directory source's side that touches the disk: which files it holds, and reading one
//! within a size cap. Blocking calls, made off the async runtime's workers.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a file was not read: its content, kept refused until the file changes, or the OS,
/// retried at the next scan (a permission or a mount may come back).
#[derive(Debug)]
pub(super) enum Refusal {
    Content(String),
    Io(String),
}

/// Every `.yaml`/`.yml`/`.json` file under `dir`, sorted; hidden names skipped. Symbolic
/// links to files are followed (a Kubernetes ConfigMap volume is made of them); links to
/// directories are not, so a link loop cannot make the walk endless.
pub(super) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            let Ok(kind) = e.file_type() else { continue };
            if hidden {
                continue;
            }
            let document = matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml" | "json")
            );
            if kind.is_dir() {
                stack.push(p);
            } else if document && !(kind.is_symlink() && p.is_dir()) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The text of the regular file at `path`, refused without reading it when it is over
/// `max_bytes` (and never reading more than that if it grows meanwhile).
pub(super) fn read_capped(path: &Path, max_bytes: u64) -> Result<String, Refusal> {
    let too_big = |len: u64| {
        Refusal::Content(format!(
            "is {len} bytes, over inputs.max_file_bytes = {max_bytes}"
        ))
    };
    let io = |e: std::io::Error| Refusal::Io(e.to_string());
    let meta = std::fs::metadata(path).map_err(io)?;
    // A FIFO or a device would block the read or never end.
    if !meta.is_file() {
        return Err(Refusal::Content("is not a regular file".into()));
    }
    if meta.len() > max_bytes {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big(bytes.len() as u64));
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
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["a.yaml", "link.yml", "sub/b.json"].map(PathBuf::from)
        );
    }

    #[test]
    fn a_file_over_the_cap_is_refused_naming_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.yaml");
        std::fs::write(&f, "x".repeat(11)).unwrap();
        let Err(Refusal::Content(e)) = read_capped(&f, 10) else {
            panic!("read")
        };
        assert_eq!(e, "is 11 bytes, over inputs.max_file_bytes = 10");
        assert_eq!(read_capped(&f, 11).unwrap().len(), 11);
        let Err(Refusal::Content(e)) = read_capped(dir.path(), 10) else {
            panic!("a directory")
        };
        assert!(e.contains("regular"), "{e}");
        assert!(matches!(
            read_capped(&dir.path().join("gone.yaml"), 10),
            Err(Refusal::Io(_))
        ));
    }
}
