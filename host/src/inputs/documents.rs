//! The document format every source shares: YAML or JSON mappings with a string `kind` and
//! `name`, one per file or value, `---`-separated, or in a list.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Document;

/// A document file that could not be read: which file, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct DocumentFileError {
    /// The file.
    pub path: PathBuf,
    /// Why (YAML errors carry line and column; a limit is named with its value).
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
