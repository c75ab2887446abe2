//! The server as `serve` builds it: a config file written to a scratch directory, loaded as
//! `serve --config` loads it and built by `App`, with an inputs directory beside it.

use std::path::{Path, PathBuf};

use nebucloud_xds::app::App;
use nebucloud_xds::config::Config;

use crate::scripted::TestServer;

/// A scratch directory holding `config.toml` and `inputs/`. Keep it while the server runs:
/// the server reads its inputs directory, and may reload plugin files from it.
pub(crate) struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    /// An empty config directory with an empty `inputs/`.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("inputs")).unwrap();
        ConfigDir { dir }
    }

    /// The directory the config's relative paths resolve against.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `inputs/<name>`.
    pub(crate) fn input(&self, name: &str) -> PathBuf {
        self.path().join("inputs").join(name)
    }

    /// Writes `inputs/<name>` whole: to a hidden file first (the directory watch skips those),
    /// then renamed over it, as editors save.
    pub(crate) fn write_input(&self, name: &str, text: &str) {
        let hidden = self.path().join("inputs").join(format!(".{name}.tmp"));
        std::fs::write(&hidden, text).unwrap();
        std::fs::rename(&hidden, self.input(name)).unwrap();
    }

    /// Writes `toml` as `config.toml`, loads it as `serve --config` does (relative paths
    /// against this directory, every check) and builds the server from it.
    pub(crate) async fn build(&self, toml: &str) -> App {
        let file = self.path().join("config.toml");
        std::fs::write(&file, toml).unwrap();
        let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        App::build(config)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{toml}"))
    }

    /// [`ConfigDir::build`], then serves it on loopback ports the kernel picks.
    pub(crate) async fn serve(&self, toml: &str) -> TestServer {
        TestServer::app(self.build(toml).await).await
    }
}

/// A path as a TOML string (a JSON string is a TOML basic string).
pub(crate) fn toml_path(path: &Path) -> String {
    serde_json::to_string(path).unwrap()
}

/// A `[[plugins]]` entry for `name`, loaded from `path` with `config` (a TOML inline table).
pub(crate) fn plugin_entry(name: &str, path: &Path, config: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\npath = {}\nconfig = {config}\n",
        toml_path(path)
    )
}
