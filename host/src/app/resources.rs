//! Static resources read from a directory of YAML/JSON files (`serve --resources`): one
//! sub-directory per node group, each file one resource or a list of them, in Envoy's JSON
//! form with `@type`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::schema::Schema;

use crate::cache::{Resource, ResourceSet};

/// A file that could not become resources: which file, and why (with the line for YAML
/// syntax errors).
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct ResourceFileError {
    /// The file or directory.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

fn err(path: &Path, reason: impl ToString) -> ResourceFileError {
    ResourceFileError {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Reads `dir/<group>/*.{yaml,yml,json}` into one [`ResourceSet`] per group. Files are read in
/// name order; every resource is checked against its type. Any error names its file.
pub fn load_resource_dir(dir: &Path) -> Result<BTreeMap<String, ResourceSet>, ResourceFileError> {
    let schema = Schema::envoy().map_err(|e| err(dir, e))?;
    let mut groups = BTreeMap::new();
    for group_dir in sorted_entries(dir)? {
        if !group_dir.is_dir() {
            continue;
        }
        let Some(group) = group_dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
        else {
            return Err(err(&group_dir, "a group directory name must be UTF-8"));
        };
        let mut resources = Vec::new();
        for file in sorted_entries(&group_dir)? {
            let ext = file
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if matches!(ext, "yaml" | "yml" | "json") {
                resources.extend(read_file(schema, &file)?);
            }
        }
        let set = ResourceSet::new(resources).map_err(|e| err(&group_dir, e))?;
        groups.insert(group, set);
    }
    Ok(groups)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ResourceFileError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

fn read_file(schema: &Schema, path: &Path) -> Result<Vec<Resource>, ResourceFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, e))?;
    // YAML is a superset of JSON: one parser, with line numbers in its errors.
    let value: serde_json::Value = serde_yaml::from_str(&text).map_err(|e| err(path, e))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Null => Vec::new(),
        one => vec![one],
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            schema
                .resource_from_json(item)
                .map_err(|e| err(path, format!("resource #{}: {e}", i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn groups_are_directories_and_files_hold_one_or_many_resources() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "edge/clusters.yaml", "- '@type': type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: a\n- '@type': type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: b\n");
        write(
            tmp.path(),
            "edge/eds.json",
            r#"{"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "cluster_name": "a"}"#,
        );
        write(tmp.path(), "edge/README.txt", "ignored");
        write(tmp.path(), "empty/none.yaml", "");
        let groups = load_resource_dir(tmp.path()).unwrap();
        assert_eq!(groups.keys().collect::<Vec<_>>(), vec!["edge", "empty"]);
        assert_eq!(groups["edge"].len(), 3);
        assert!(groups["empty"].is_empty());
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "g/bad.yaml", "- name: [unclosed\n");
        let e = load_resource_dir(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("line"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "g/typeless.yaml", "name: x\n");
        let e = load_resource_dir(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("typeless.yaml") && e.contains("@type"), "{e}");
    }
}
