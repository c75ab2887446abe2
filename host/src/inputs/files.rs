//! The default input source: a directory of YAML/JSON files, each holding documents with a
//! `kind` and a `name`. A file that does not parse keeps its last good documents and says
//! which file and line is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::InputStore;
use crate::plugins::Document;

/// A document file that could not be read: which file, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct DocumentFileError {
    /// The file.
    pub path: PathBuf,
    /// Why (YAML errors carry line and column).
    pub reason: String,
}

/// Parses one file's text: YAML (or JSON) with one document, several `---`-separated ones, or
/// a list. Each must be a mapping with string `kind` and `name`.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Document>, DocumentFileError> {
    let err = |reason: String| DocumentFileError {
        path: path.to_owned(),
        reason,
    };
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(de).map_err(|e| err(e.to_string()))?;
        let items = match value {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::Array(items) => items,
            one => vec![one],
        };
        for item in items {
            let field = |f: &str| {
                item.get(f)
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            let (Some(kind), Some(name)) = (field("kind"), field("name")) else {
                return Err(err(format!(
                    "document {} has no string `kind` and `name`",
                    i + 1
                )));
            };
            out.push(Document {
                kind,
                name,
                json: item.to_string().into(),
            });
        }
    }
    Ok(out)
}

/// A watched directory feeding an [`InputStore`].
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    store: Arc<InputStore>,
    seen: BTreeMap<PathBuf, SystemTime>,
}

impl DirSource {
    /// A source for `dir`, which must exist.
    pub fn new(dir: &Path, store: Arc<InputStore>) -> Result<Self, DocumentFileError> {
        if !dir.is_dir() {
            return Err(DocumentFileError {
                path: dir.to_owned(),
                reason: "not a directory".into(),
            });
        }
        Ok(DirSource {
            dir: dir.to_owned(),
            store,
            seen: BTreeMap::new(),
        })
    }

    /// Reads what changed since the last scan into the store; returns the changed keys and the
    /// errors of files that did not parse (their last documents stay in the store).
    pub fn scan(&mut self) -> (Vec<(String, String)>, Vec<DocumentFileError>) {
        let mut changed = Vec::new();
        let mut errors = Vec::new();
        let mut present = BTreeMap::new();
        for path in files_under(&self.dir) {
            let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
                continue;
            };
            present.insert(path.clone(), modified);
            if self.seen.get(&path) == Some(&modified) {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| DocumentFileError {
                    path: path.clone(),
                    reason: e.to_string(),
                })
                .and_then(|text| parse_documents(&path, &text));
            match parsed {
                Ok(docs) => changed.extend(self.store.replace_source(&source_name(&path), docs)),
                Err(e) => {
                    metrics::counter!("input_errors_total", "source" => "files").increment(1);
                    tracing::warn!(error = %e, "input file keeps its last good documents");
                    errors.push(e);
                }
            }
        }
        for gone in self.seen.keys().filter(|p| !present.contains_key(*p)) {
            changed.extend(self.store.replace_source(&source_name(gone), Vec::new()));
        }
        // A file that failed is retried at every scan until it parses (the epoch never equals
        // a real mtime), and still counts as present, so deleting it removes its documents.
        for e in &errors {
            present.insert(e.path.clone(), SystemTime::UNIX_EPOCH);
        }
        self.seen = present;
        if !changed.is_empty() {
            metrics::counter!("input_events_total", "source" => "files").increment(1);
        }
        (changed, errors)
    }
}

fn source_name(path: &Path) -> String {
    format!("file:{}", path.display())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
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
            if hidden {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Scans `source` every `interval` and calls `on_change` with the keys that changed. Polling
/// (not inotify) so that editors' rename-into-place saves and network filesystems behave the
/// same; the interval bounds the latency.
pub async fn watch_dir(
    mut source: DirSource,
    interval: Duration,
    on_change: impl Fn(Vec<(String, String)>) + Send + 'static,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (changed, _errors) = source.scan();
        if !changed.is_empty() {
            on_change(changed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::InputView;

    #[test]
    fn documents_need_kind_and_name_and_errors_give_file_and_line() {
        let p = Path::new("svc.yaml");
        let docs = parse_documents(
            p,
            "kind: Service\nname: a\n---\n- {kind: Service, name: b}\n",
        )
        .unwrap();
        assert_eq!(
            docs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        let e = parse_documents(p, "kind: Service\nname: [a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("svc.yaml") && e.contains("line"), "{e}");
        let e = parse_documents(p, "kind: Service\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`kind` and `name`"), "{e}");
    }

    #[test]
    fn a_broken_file_keeps_its_last_documents_and_deleting_a_file_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(InputStore::new());
        let mut src = DirSource::new(dir.path(), Arc::clone(&store)).unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "kind: Service\nname: a\nport: 1\n").unwrap();
        assert_eq!(src.scan().0.len(), 1);
        std::fs::write(&f, "kind: Service\nname: a\nport: [\n").unwrap();
        filetime_bump(&f);
        let (changed, errors) = src.scan();
        assert!(changed.is_empty());
        assert!(errors[0].to_string().contains("a.yaml"));
        assert!(store
            .get("Service", "a")
            .unwrap()
            .json
            .contains("\"port\":1"));
        std::fs::remove_file(&f).unwrap();
        assert_eq!(src.scan().0.len(), 1);
        assert!(store.get("Service", "a").is_none());
    }

    /// Some filesystems keep whole-second mtimes: make sure a rewrite looks modified.
    fn filetime_bump(p: &Path) {
        let f = std::fs::File::options().append(true).open(p).unwrap();
        let later = SystemTime::now() + Duration::from_secs(2);
        f.set_modified(later).unwrap();
    }
}
