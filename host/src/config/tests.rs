//! The config file's keys, defaults and refusals.

use super::*;
use crate::inputs::InputLimits;
use crate::plugins::PluginLimits;

/// A config file in a scratch directory, written and loaded as a test needs.
struct ConfigFile {
    dir: tempfile::TempDir,
}

impl ConfigFile {
    fn new() -> Self {
        ConfigFile {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The directory the file's relative paths resolve against.
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` as the file and loads it; an error as its message.
    fn load(&self, text: &str) -> Result<Config, String> {
        let p = self.dir().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&p).map_err(|e| e.to_string())
    }
}

#[test]
fn a_kubernetes_input_takes_namespaces_a_default_namespace_and_custom_kinds() {
    let file = ConfigFile::new();
    let load = |text: &str| file.load(text);
    assert!(load("").unwrap().inputs.kubernetes.is_none());
    assert_eq!(
        load("[inputs.kubernetes]\n").unwrap().inputs.kubernetes,
        Some(KubernetesConfig::default())
    );
    let c = load(concat!(
        "[inputs]\nkubernetes = { namespaces = [\"shop\", \"default\"], default_namespace = \"shop\", ",
        "custom = [{ group = \"example.com\", version = \"v1\", kind = \"Widget\", plural = \"widgets\" }] }\n",
    ))
    .unwrap();
    let k = c.inputs.kubernetes.unwrap();
    assert_eq!(k.namespaces, ["shop", "default"]);
    assert_eq!(k.default_namespace, "shop");
    let widget = CustomResourceKind {
        group: "example.com".into(),
        version: "v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
        namespaced: true,
    };
    assert_eq!(k.custom, [widget]);
    let e = load("[inputs.kubernetes]\nnamespace = [\"a\"]\n").unwrap_err();
    assert!(e.contains("namespace"), "{e}");
    let e = load("[[inputs.kubernetes.custom]]\ngroup = \"g\"\nversion = \"v1\"\nkind = \"K\"\n")
        .unwrap_err();
    assert!(e.contains("plural"), "{e}");
}

#[test]
fn values_that_cannot_work_are_errors_that_name_the_key() {
    let file = ConfigFile::new();
    let load = |text: &str| file.load(text);
    for (text, key) in [
        ("[reload]\ninterval_ms = 0\n", "reload.interval_ms"),
        ("[xds]\nheartbeat_ms = 0\n", "xds.heartbeat_ms"),
        ("[xds]\nkeepalive_ms = 0\n", "xds.keepalive_ms"),
        ("[xds]\nmax_connections = 0\n", "xds.max_connections"),
        ("[xds]\nmax_names_per_type = 0\n", "xds.max_names_per_type"),
        ("[pipeline]\nmax_delay_ms = 0\n", "pipeline.max_delay_ms"),
        (
            "[pipeline]\ndebounce_ms = 500\nmax_delay_ms = 100\n",
            "pipeline.debounce_ms",
        ),
        (
            "[inputs]\netcd = { endpoints = [\"a:1\"], prefix = \"\" }\n",
            "inputs.etcd.prefix",
        ),
        (
            "[[plugins]]\nname = \"m\"\npath = \"m.wasm\"\nlimits = { deadline_ms = 0 }\n",
            "plugins.m.limits.deadline_ms",
        ),
    ] {
        let e = load(text).unwrap_err();
        assert!(e.contains(key), "{text:?}: {e}");
    }
    let c = load("[pipeline]\ngroup_grace_ms = 0\n").unwrap();
    assert_eq!(
        c.pipeline.group_grace_ms, 0,
        "a zero grace is allowed: forget at once"
    );
    assert_eq!(
        load("").unwrap().pipeline.group_grace_ms,
        300_000,
        "five minutes by default"
    );
}

#[test]
fn admin_and_plugin_file_keys_resolve_against_the_file_and_are_checked() {
    let file = ConfigFile::new();
    let load = |text: &str| file.load(text);
    let c = load("").unwrap();
    assert_eq!((c.admin.token_file, c.admin.allowed_hosts.len()), (None, 0));
    assert!(
        c.reload.plugin_dirs.is_empty(),
        "default: the plugin files' directories"
    );
    assert_eq!(
        (c.reload.max_plugin_bytes, c.reload.read_timeout_ms),
        (64 << 20, 10_000)
    );
    let c = load(concat!(
        "[admin]\nlisten = \"0.0.0.0:18001\"\ntoken_file = \"secret/token\"\n",
        "allowed_hosts = [\"admin.example\", \"[fd00::1]:8443\"]\n",
        "[reload]\nplugin_dirs = [\"plugins\", \"/opt/wasm\"]\nmax_plugin_bytes = 1024\n",
        "read_timeout_ms = 50\n",
    ))
    .unwrap();
    assert_eq!(c.admin.token_file, Some(file.dir().join("secret/token")));
    assert_eq!(
        c.reload.plugin_dirs,
        [file.dir().join("plugins"), PathBuf::from("/opt/wasm")]
    );
    assert_eq!(
        (c.reload.max_plugin_bytes, c.reload.read_timeout_ms),
        (1024, 50)
    );
    for (text, key) in [
        ("[admin]\nlisten = \"0.0.0.0:18001\"\n", "admin.token_file"),
        (
            "[admin]\nlisten = \"[::]:18001\"\n",
            "not a loopback address",
        ),
        (
            "[admin]\nallowed_hosts = [\"http://a\"]\n",
            "admin.allowed_hosts",
        ),
        (
            "[admin]\nallowed_hosts = [\"a:port\"]\n",
            "admin.allowed_hosts",
        ),
        ("[admin]\ntoken = \"x\"\n", "token"),
        (
            "[reload]\nmax_plugin_bytes = 0\n",
            "reload.max_plugin_bytes",
        ),
        ("[reload]\nread_timeout_ms = 0\n", "reload.read_timeout_ms"),
        ("[reload]\nplugin_dirs = [\"\"]\n", "reload.plugin_dirs"),
    ] {
        let e = load(text).unwrap_err();
        assert!(e.contains(key), "{text:?}: {e}");
    }
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let e = ConfigFile::new()
        .load("[xds]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
        .unwrap_err();
    assert!(e.contains("lisen") && e.contains("line 3"), "{e}");
}

#[test]
fn plugin_paths_are_relative_to_the_file_and_config_becomes_json() {
    let file = ConfigFile::new();
    let c = file.load("[[plugins]]\nname = \"mesh\"\npath = \"mesh.wasm\"\nconfig = { listener_port = 10000 }\nlimits = { deadline_ms = 50 }\n").unwrap();
    assert_eq!(c.plugins[0].path, file.dir().join("mesh.wasm"));
    assert_eq!(c.plugins[0].config_json()["listener_port"], 10000);
    assert_eq!(c.plugins[0].limits.deadline_ms, 50);
    assert_eq!(
        c.plugins[0].limits.memory_bytes,
        PluginLimits::default().memory_bytes
    );
    assert_eq!(c.xds.group_by, GroupBy::Identity);
}

#[test]
fn an_etcd_input_needs_endpoints_and_a_prefix_and_nothing_else() {
    let file = ConfigFile::new();
    let load = |text: &str| file.load(text);
    let c =
        load("[inputs]\netcd = { endpoints = [\"127.0.0.1:2379\"], prefix = \"/nx/\" }\n").unwrap();
    let etcd = c.inputs.etcd.unwrap();
    assert_eq!(
        (etcd.endpoints, etcd.prefix),
        (vec!["127.0.0.1:2379".to_owned()], "/nx/".to_owned())
    );
    assert!(load("").unwrap().inputs.etcd.is_none());
    let e = load("[inputs.etcd]\nendpoints = [\"a:1\"]\nprefix = \"/\"\nprefx = 1\n").unwrap_err();
    assert!(e.contains("prefx"), "{e}");
    let e = load("[inputs.etcd]\nendpoints = [\"a:1\"]\n").unwrap_err();
    assert!(e.contains("prefix"), "{e}");
    let e = load("[inputs.etcd]\nendpoints = []\nprefix = \"/\"\n").unwrap_err();
    assert!(e.contains("inputs.etcd.endpoints"), "{e}");
}

#[test]
fn input_limits_have_defaults_reach_the_sources_and_zero_is_refused_by_key() {
    let file = ConfigFile::new();
    let load = |text: &str| file.load(text);
    let c = load("").unwrap();
    assert_eq!(c.inputs.interval_ms, 250);
    assert_eq!(c.inputs.limits(), InputLimits::default());
    assert_eq!(InputLimits::default().max_file_bytes, 4 << 20);
    let c = load(concat!(
        "[inputs]\nsettle_ms = 0\nmax_file_bytes = 10\nmax_files = 2\nmax_documents = 3\n",
        "etcd = { endpoints = [\"a:1\"], prefix = \"/\", max_value_bytes = 5 }\n",
    ))
    .unwrap();
    let limits = c.inputs.limits();
    assert_eq!(limits.settle, std::time::Duration::ZERO, "0 is allowed");
    let caps = (limits.max_file_bytes, limits.max_files);
    assert_eq!((caps, limits.max_documents), ((10, 2), 3));
    assert_eq!(limits.max_value_bytes, 5);
    for key in [
        "interval_ms",
        "max_file_bytes",
        "max_files",
        "max_documents",
    ] {
        let e = load(&format!("[inputs]\n{key} = 0\n")).unwrap_err();
        assert!(e.contains(&format!("inputs.{key}")), "{e}");
    }
    let e = load("[inputs.etcd]\nendpoints = [\"a:1\"]\nprefix = \"/\"\nmax_value_bytes = 0\n")
        .unwrap_err();
    assert!(e.contains("inputs.etcd.max_value_bytes"), "{e}");
    let e = load("[inputs]\nsettle = 1\n").unwrap_err();
    assert!(e.contains("settle"), "{e}");
}

#[test]
fn grouping_by_cluster_under_node_authorization_is_refused() {
    let file = ConfigFile::new();
    let e = file
        .load("[xds]\ngroup_by = \"cluster\"\ntls = { cert = \"c.pem\", key = \"k.pem\", client_ca = \"ca.pem\", authorize_node_ids = true }\n")
        .unwrap_err();
    assert!(
        e.contains("xds.group_by") && e.contains("authorize_node_ids"),
        "{e}"
    );
    let c = file.load("[pipeline]\nmax_groups = 0\n").unwrap_err();
    assert!(c.contains("pipeline.max_groups"), "{c}");
}

#[test]
fn a_refusal_is_typed_names_its_key_and_keeps_its_cause() {
    use std::error::Error as _;
    let file = ConfigFile::new();
    let p = file.dir().join("c.toml");
    std::fs::write(&p, "[inputs]\ninterval_ms = 0\n").unwrap();
    match Config::load(&p) {
        Err(ConfigError::Invalid { path, source }) => {
            assert_eq!(path, p);
            assert_eq!(source.key, "inputs.interval_ms");
            assert_eq!(
                source.to_string(),
                "inputs.interval_ms is 0: it must be at least 1"
            );
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&p, "[xds]\nlisten = 5\n").unwrap();
    let parse = Config::load(&p).unwrap_err();
    assert!(matches!(parse, ConfigError::Parse { .. }), "{parse:?}");
    assert!(parse.source().is_some());
    let missing = Config::load(&file.dir().join("none.toml")).unwrap_err();
    assert!(
        matches!(&missing, ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{missing:?}"
    );
}
