//! `plugin new`: a plugin crate that builds, tests and runs as is, written from the templates in
//! `scaffold/templates/`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// What the new plugin's template does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// Adds resources made from input documents: a cluster and its endpoints per `Service`.
    Generator,
    /// Changes the resources it is given: circuit breakers on every cluster that has none.
    Transform,
    /// Rejects a bad set, naming resource and field: clusters without a sane connect timeout.
    Validator,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Generator => "generator",
            Kind::Transform => "transform",
            Kind::Validator => "validator",
        }
    }

    /// `src/lib.rs` and the `config` table that `nebucloud-xds.toml` gives it.
    fn template(self) -> (&'static str, &'static str) {
        match self {
            Kind::Generator => (
                include_str!("scaffold/templates/generator.rs.tmpl"),
                "{ connect_timeout_ms = 5000 }",
            ),
            Kind::Transform => (
                include_str!("scaffold/templates/transform.rs.tmpl"),
                "{ max_connections = 1024, max_pending_requests = 1024, max_requests = 1024 }",
            ),
            Kind::Validator => (
                include_str!("scaffold/templates/validator.rs.tmpl"),
                "{ max_connect_timeout_ms = 10000 }",
            ),
        }
    }

    /// A line for the config that runs the plugin alone, where alone it has nothing to do.
    fn chain_note(self) -> &'static str {
        match self {
            Kind::Generator => "",
            Kind::Transform | Kind::Validator => {
                "\n# Alone it gets no resources to work on: put a generator before it (the bundled\n\
                 # `mesh`, from build/plugins/mesh.wasm of a checkout, or your own)."
            }
        }
    }
}

/// Where the new crate gets the guest SDK (`nebucloud-xds-guest`) from.
#[derive(Debug, clap::Args)]
pub(crate) struct SdkArgs {
    /// The guest SDK of a checkout (its `guest-sdk` directory), as a path dependency; the
    /// checkout's `Cargo.lock` is copied too, so the plugin builds with the versions the SDK
    /// was tested with. Without `--sdk-path` or `--sdk-git`: crates.io, this binary's version.
    #[arg(long, value_name = "PATH", conflicts_with = "sdk_git")]
    sdk_path: Option<PathBuf>,
    /// The repository to take the guest SDK from, as a git dependency.
    #[arg(long, value_name = "URL")]
    sdk_git: Option<String>,
    /// The commit, tag or branch of `--sdk-git`.
    #[arg(long, value_name = "REV", requires = "sdk_git")]
    sdk_rev: Option<String>,
}

/// The longest plugin name: crates.io's limit for a crate name.
const MAX_NAME_LEN: usize = 64;

/// Rust's keywords, std's crate names and the SDK's: cargo refuses the first two as package
/// names, and a plugin named like the SDK could not depend on it.
const RESERVED: &str = "as async await break const continue crate dyn else enum extern false fn \
    for gen if impl in let loop match mod move mut pub ref return self static struct super trait \
    true try type unsafe use where while abstract become box do final macro override priv typeof \
    unsized virtual yield std core alloc proc_macro test nebucloud_xds_guest";

/// Why a plugin name cannot be used: each variant states the rule it breaks.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    /// Too long.
    #[error("plugin name {0:?} is too long: a plugin name has at most {MAX_NAME_LEN} characters")]
    TooLong(String),
    /// Starts with something other than a letter.
    #[error("plugin name {0:?}: a plugin name starts with an ASCII letter (it becomes the crate's name)")]
    FirstChar(String),
    /// Has a character cargo does not allow.
    #[error("plugin name {0:?}: a plugin name has only ASCII letters, digits, `-` and `_` (it becomes the crate's name)")]
    Chars(String),
    /// Is a keyword or a name cargo reserves.
    #[error("plugin name {0:?} is a Rust keyword or a reserved crate name (std's, the SDK's)")]
    Reserved(String),
}

/// Checks `name` against the rules for a crate name that cargo and crates.io accept.
pub(crate) fn check_name(name: &str) -> Result<(), NameError> {
    let owned = || name.to_owned();
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(owned()));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(NameError::FirstChar(owned()));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(NameError::Chars(owned()));
    }
    let snake = name.replace('-', "_").to_ascii_lowercase();
    if RESERVED.split_whitespace().any(|r| r == snake) {
        return Err(NameError::Reserved(owned()));
    }
    Ok(())
}

/// The `[dependencies]` line for the SDK, and the lock file to start from (a checkout's).
fn sdk_dependency(sdk: &SdkArgs) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(path) = &sdk.sdk_path {
        let dir = std::fs::canonicalize(path)
            .with_context(|| format!("--sdk-path {}", path.display()))?;
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).with_context(|| {
            format!("--sdk-path {}: no Cargo.toml there; give the guest-sdk directory of a nebucloud-xds checkout", path.display())
        })?;
        let package: toml::Table = toml::from_str(&manifest)
            .with_context(|| format!("--sdk-path {}: Cargo.toml", path.display()))?;
        let name = package
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str);
        anyhow::ensure!(
            name == Some("nebucloud-xds-guest"),
            "--sdk-path {}: its Cargo.toml is not the guest SDK's (package {}); give the \
             guest-sdk directory of a nebucloud-xds checkout",
            path.display(),
            name.unwrap_or("none")
        );
        let lock = dir
            .ancestors()
            .map(|d| d.join("Cargo.lock"))
            .find(|l| l.is_file());
        let line = format!("nebucloud-xds-guest = {{ path = {} }}", toml_string(&dir));
        return Ok((line, lock));
    }
    if let Some(url) = &sdk.sdk_git {
        let rev = sdk
            .sdk_rev
            .as_ref()
            .map(|r| format!(", rev = {}", toml_str(r)))
            .unwrap_or_default();
        let line = format!("nebucloud-xds-guest = {{ git = {}{rev} }}", toml_str(url));
        return Ok((line, None));
    }
    let version = env!("CARGO_PKG_VERSION");
    Ok((format!("nebucloud-xds-guest = \"{version}\""), None))
}

/// A TOML basic string (a JSON string is one).
fn toml_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn toml_string(path: &Path) -> String {
    toml_str(&path.to_string_lossy())
}

/// Where `cargo build --target wasm32-wasip2 --release` in `dir` puts the component: under
/// `CARGO_TARGET_DIR` when set (cargo reads a relative one from where it runs, the crate), else
/// under the crate's own `target/`, as a path relative to the crate.
fn wasm_path(dir: &Path, name: &str) -> PathBuf {
    let file = format!("wasm32-wasip2/release/{}.wasm", name.replace('-', "_"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(target) => dir.join(target).join(file),
        None => Path::new("target").join(file),
    }
}

/// Fills the `{{key}}` placeholders of a template.
fn render(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// Writes the crate `name` of `kind` into `./name` (which must not exist, or be empty), and
/// prints what it wrote, what to run next, and the config entry to paste.
pub(crate) fn new(name: &str, kind: Kind, sdk: &SdkArgs) -> anyhow::Result<()> {
    check_name(name)?;
    let dir = std::path::absolute(name)?;
    if dir.exists() {
        let empty = dir.is_dir() && std::fs::read_dir(&dir)?.next().is_none();
        anyhow::ensure!(
            empty,
            "{} exists and is not empty: `plugin new` writes only into a new or empty directory",
            dir.display()
        );
    }
    let (dependency, lock) = sdk_dependency(sdk)?;
    let (lib, config) = kind.template();
    let wasm = wasm_path(&dir, name);
    let wasm_text = wasm.to_string_lossy();
    let wasm_toml = toml_string(&wasm);
    let values = [
        ("name", name),
        ("sdk_dependency", dependency.as_str()),
        ("wasm_path", wasm_toml.as_str()),
        ("config", config),
        ("chain_note", kind.chain_note()),
    ];
    let files: [(&str, String); 7] = [
        (
            "Cargo.toml",
            render(include_str!("scaffold/templates/Cargo.toml.tmpl"), &values),
        ),
        ("src/lib.rs", render(lib, &values)),
        (
            "nodes/envoy.yaml",
            include_str!("scaffold/templates/envoy.yaml").to_owned(),
        ),
        (
            "nodes/grpc.yaml",
            include_str!("scaffold/templates/grpc.yaml").to_owned(),
        ),
        (
            "inputs/services.yaml",
            include_str!("scaffold/templates/services.yaml").to_owned(),
        ),
        (
            "nebucloud-xds.toml",
            render(
                include_str!("scaffold/templates/nebucloud-xds.toml.tmpl"),
                &values,
            ),
        ),
        (
            ".gitignore",
            include_str!("scaffold/templates/gitignore").to_owned(),
        ),
    ];
    for (file, text) in &files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let lock_note = match &lock {
        Some(lock) => {
            std::fs::copy(lock, dir.join("Cargo.lock"))
                .with_context(|| format!("cannot copy {}", lock.display()))?;
            format!(" (Cargo.lock from {})", lock.display())
        }
        None => String::new(),
    };
    let absolute_wasm = if wasm.is_absolute() {
        wasm.clone()
    } else {
        dir.join(&wasm)
    };
    println!(
        "Created the {} plugin `{name}` in {}{lock_note}:\n\
         \x20 src/lib.rs          the plugin function, its Config and native tests\n\
         \x20 nodes/*.yaml        an Envoy and a gRPC client, for `plugin run --node`\n\
         \x20 inputs/             input documents, for `plugin run`\n\
         \x20 nebucloud-xds.toml  a config that runs the plugin alone\n\n\
         Next:\n\
         \x20 cd {name}\n\
         \x20 cargo test\n\
         \x20 cargo build --target wasm32-wasip2 --release\n\
         \x20 nebucloud-xds plugin check {wasm_text}\n\
         \x20 nebucloud-xds plugin run --config nebucloud-xds.toml --node nodes/envoy.yaml\n\n\
         To add it to a server's chain, paste into its config file:\n\n\
         [[plugins]]\nname = \"{name}\"\npath = {}\nconfig = {config}",
        kind.label(),
        dir.display(),
        toml_string(&absolute_wasm),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cargo_refuses_are_refused_with_the_rule() {
        assert_eq!(check_name("my-policy"), Ok(()));
        assert_eq!(check_name("a_1"), Ok(()));
        assert!(matches!(check_name("1a"), Err(NameError::FirstChar(_))));
        assert!(matches!(check_name("-a"), Err(NameError::FirstChar(_))));
        assert!(matches!(check_name(""), Err(NameError::FirstChar(_))));
        assert!(matches!(check_name("a.b"), Err(NameError::Chars(_))));
        assert!(matches!(check_name("café"), Err(NameError::Chars(_))));
        assert!(matches!(check_name("match"), Err(NameError::Reserved(_))));
        assert!(matches!(check_name("std"), Err(NameError::Reserved(_))));
        assert!(matches!(
            check_name("nebucloud-xds-guest"),
            Err(NameError::Reserved(_))
        ));
        assert_eq!(check_name(&"a".repeat(MAX_NAME_LEN)), Ok(()));
        assert!(matches!(
            check_name(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong(_))
        ));
    }

    /// The template's profiles are the workspace's (less the workspace's overrides for the
    /// host's own dependencies): a plugin that shares a target directory with the checkout
    /// then reuses its builds.
    #[test]
    fn the_profiles_are_the_workspaces() {
        let profiles = |text: &str| -> toml::Value {
            let mut table: toml::Table = toml::from_str(text).unwrap();
            let mut profile = table.remove("profile").unwrap();
            let packages = profile["dev"]["package"].as_table_mut().unwrap();
            packages.retain(|name, _| name == "*");
            profile
        };
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let template = include_str!("scaffold/templates/Cargo.toml.tmpl")
            .replace("{{sdk_dependency}}", "")
            .replace("{{name}}", "p");
        assert_eq!(
            profiles(&template),
            profiles(&std::fs::read_to_string(workspace).unwrap())
        );
    }

    #[test]
    fn every_placeholder_is_filled() {
        let values = [
            ("name", "p"),
            ("sdk_dependency", "x"),
            ("wasm_path", "w"),
            ("config", "{}"),
            ("chain_note", ""),
        ];
        for kind in [Kind::Generator, Kind::Transform, Kind::Validator] {
            for template in [
                kind.template().0,
                include_str!("scaffold/templates/Cargo.toml.tmpl"),
                include_str!("scaffold/templates/nebucloud-xds.toml.tmpl"),
            ] {
                let text = render(template, &values);
                assert!(!text.contains("{{"), "{text}");
            }
        }
    }

    #[test]
    fn the_sdk_comes_from_a_path_a_git_repository_or_crates_io() {
        let args = |sdk_git: Option<&str>, sdk_rev: Option<&str>| SdkArgs {
            sdk_path: None,
            sdk_git: sdk_git.map(str::to_owned),
            sdk_rev: sdk_rev.map(str::to_owned),
        };
        let (line, lock) = sdk_dependency(&args(Some("https://h/o/r"), Some("v1"))).unwrap();
        assert_eq!(
            line,
            r#"nebucloud-xds-guest = { git = "https://h/o/r", rev = "v1" }"#
        );
        assert_eq!(lock, None);
        let (line, _) = sdk_dependency(&args(None, None)).unwrap();
        assert_eq!(
            line,
            format!("nebucloud-xds-guest = \"{}\"", env!("CARGO_PKG_VERSION"))
        );
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
        let (line, lock) = sdk_dependency(&SdkArgs {
            sdk_path: Some(sdk.clone()),
            ..args(None, None)
        })
        .unwrap();
        assert!(
            line.starts_with("nebucloud-xds-guest = { path = \""),
            "{line}"
        );
        assert!(lock.is_some_and(|l| l.ends_with("Cargo.lock")));
        let wrong = sdk_dependency(&SdkArgs {
            sdk_path: Some(sdk.join("../host")),
            ..args(None, None)
        })
        .unwrap_err();
        assert!(
            format!("{wrong:#}").contains("not the guest SDK"),
            "{wrong:#}"
        );
    }
}
