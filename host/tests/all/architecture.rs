//! The shape of the source tree, checked: the data path reads one way (inputs → pipeline →
//! plugins → cache → xds → admin, with `app` and `config` above them all), and no module is
//! longer than a reader can hold.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The crate modules each top-level module may import. A stage imports the types of the
/// stages it reads from; the pipeline is the one stage that drives later ones (it runs
/// plugins and fills the cache); only `admin`, `config` and `app` see the whole server.
const ALLOWED: &[(&str, &[&str])] = &[
    ("cache", &[]),
    ("schema", &["cache"]),
    ("xds", &["cache", "schema"]),
    ("inputs", &[]),
    ("plugins", &["inputs", "cache", "schema"]),
    ("pipeline", &["inputs", "plugins", "cache"]),
    (
        "admin",
        &["inputs", "pipeline", "plugins", "cache", "schema", "xds"],
    ),
    (
        "config",
        &[
            "inputs", "pipeline", "plugins", "cache", "schema", "xds", "admin",
        ],
    ),
    (
        "app",
        &[
            "inputs", "pipeline", "plugins", "cache", "schema", "xds", "admin", "config",
        ],
    ),
];

/// The root's re-exports (`lib.rs`), by the module they come from.
const REEXPORTS: &[(&str, &str)] = &[
    ("Cache", "cache"),
    ("Resource", "cache"),
    ("ResourceSet", "cache"),
    ("ResourceSetError", "cache"),
    ("NodeGrouping", "xds"),
    ("StreamLimits", "xds"),
    ("XdsServer", "xds"),
];

const MAX_LINES: usize = 400;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file under a module directory belongs to: its first path component, without
/// `.rs`.
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The top-level crate modules `source` names: `crate::x` anywhere, and each `x` of a
/// `use crate::{x::…, y, …}` group.
fn crate_imports(source: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in source.match_indices("crate::") {
        let rest = &source[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        found.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
        .into_iter()
        .map(
            |name| match REEXPORTS.iter().find(|(item, _)| *item == name) {
                Some((_, module)) => (*module).to_owned(),
                None => name,
            },
        )
        .collect()
}

#[test]
fn the_data_path_is_imported_one_way() {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = module_of(relative);
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == top) else {
            // lib.rs, main.rs and the binary's own modules are above everything.
            continue;
        };
        let source = std::fs::read_to_string(file).unwrap();
        for import in crate_imports(&source) {
            if import != top && !allowed.contains(&import.as_str()) {
                wrong.push(format!("{} imports crate::{import}", relative.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the data path:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_is_over_the_line_budget() {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES)
                .then(|| format!("{}: {lines}", f.strip_prefix(&src).unwrap().display()))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "modules over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_import_scanner_reads_groups_and_paths() {
    let found = crate_imports(
        "use crate::{cache::{Resource, ResourceSet}, xds::unix_now};\nlet x = crate::inputs::DocKey::new();\nuse crate::schema;",
    );
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, ["cache", "inputs", "schema", "xds"]);
}

#[test]
fn the_xds_modules_import_each_other_without_a_circle() {
    let dir = src().join("xds");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    // Module → the sibling modules it imports (`super::x`), tests and the root left out.
    let mut edges: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for file in &files {
        let module = module_of(file.strip_prefix(&dir).unwrap());
        if module == "mod" || module.ends_with("tests") || module == "test_support" {
            continue;
        }
        let source = std::fs::read_to_string(file).unwrap();
        let uses = edges.entry(module.clone()).or_default();
        for (at, _) in source.match_indices("super::") {
            let name: String = source[at + "super::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != "super" && name != module {
                uses.insert(name);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        edges: &std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut circle = path[i..].to_vec();
            circle.push(m.to_owned());
            return Some(circle);
        }
        if !done.insert(m.to_owned()) {
            return None;
        }
        path.push(m.to_owned());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(circle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!("xds modules import in a circle: {}", circle.join(" → "));
        }
    }
}
