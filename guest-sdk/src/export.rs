//! The glue between the WIT exports and a plain plugin function: config kept from `init`,
//! inputs read through the host, panics reported through the host log.

use std::sync::OnceLock;

use crate::bindings::nebucloud::xds::host;
use crate::bindings::nebucloud::xds::types::Level;
use crate::plugin::{Context, Inputs, Locality, Node, PluginFn, Resource};

static CONFIG: OnceLock<serde_json::Value> = OnceLock::new();

/// Inputs read through the host's imports (which records every read).
struct HostInputs;

impl Inputs for HostInputs {
    fn get_json(&self, kind: &str, name: &str) -> Option<String> {
        host::get(kind, name).map(|d| d.json)
    }

    fn list_json(&self, kind: &str) -> Vec<(String, String)> {
        host::list(kind)
            .into_iter()
            .map(|d| (d.name, d.json))
            .collect()
    }
}

/// `init`: keeps the configuration and routes panic messages to the host log, so that the
/// host reports "panicked at src/lib.rs:12: …" instead of a bare trap.
#[doc(hidden)]
pub fn init(config: String) -> Result<(), String> {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        host::log(Level::Error, &format!("panicked at {location}: {payload}"));
    }));
    let value: serde_json::Value =
        serde_json::from_str(&config).map_err(|e| format!("plugin config is not JSON: {e}"))?;
    // A reused instance is initialised once; a second init with other config is a host bug.
    let _ = CONFIG.set(value);
    Ok(())
}

/// `init` for a plugin that declares its config type: the config must also decode into `T`,
/// so that a typo in the server's config file is refused when the plugin loads (`serve`,
/// `config check`, `plugin check --config`, a reload) rather than on its first run.
#[doc(hidden)]
pub fn init_with_config<T: serde::de::DeserializeOwned>(config: String) -> Result<(), String> {
    serde_json::from_str::<T>(&config).map_err(|e| format!("plugin config: {e}"))?;
    init(config)
}

/// `run`: converts the WIT values, calls the plugin function, converts back.
#[doc(hidden)]
pub fn run(
    plugin: PluginFn,
    node: crate::bindings::Node,
    resources: Vec<crate::bindings::Resource>,
) -> Result<Vec<crate::bindings::Resource>, String> {
    let node = Node {
        id: node.id,
        cluster: node.cluster,
        locality: node.locality.map(|l| Locality {
            region: l.region,
            zone: l.zone,
            sub_zone: l.sub_zone,
        }),
        metadata: serde_json::from_str(&node.metadata_json).unwrap_or(serde_json::Value::Null),
        user_agent_name: node.user_agent_name,
        user_agent_version: node.user_agent_version,
        client_features: node.client_features,
    };
    let resources = resources
        .into_iter()
        .map(|r| Resource {
            type_url: r.type_url,
            name: r.name,
            body: r.body,
        })
        .collect();
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let config = CONFIG.get().unwrap_or(&empty);
    let out = plugin(&Context::new(&node, config, &HostInputs), resources);
    // `print!` without a newline waits in std's line buffer: out with it now, so that it is
    // logged with this call's node rather than the next call's.
    {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
    let out = out.map_err(|e| e.to_string())?;
    Ok(out
        .into_iter()
        .map(|r| crate::bindings::Resource {
            type_url: r.type_url,
            name: r.name,
            body: r.body,
        })
        .collect())
}

/// Writes a line to the host log (tagged with plugin and node by the host).
///
/// In a native build (`cargo test` of a plugin) there is no host: the line goes to stderr.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        let level = match level {
            LogLevel::Debug => Level::Debug,
            LogLevel::Info => Level::Info,
            LogLevel::Warn => Level::Warn,
            LogLevel::Error => Level::Error,
        };
        host::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Detail for debugging a plugin.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd, not an error.
    Warn,
    /// An error.
    Error,
}

/// Makes a plugin function the component's `run` export.
///
/// ```ignore
/// use nebucloud_xds_guest::{export_plugin, Context, Resource, Result};
///
/// fn generate(ctx: &Context<'_>, resources: Vec<Resource>) -> Result<Vec<Resource>> {
///     Ok(resources)
/// }
/// export_plugin!(generate);
/// ```
///
/// With `config = T`, the plugin's config must decode into `T` when the plugin loads, or the
/// load fails naming the field (with `#[serde(deny_unknown_fields)]` on `T`, a typo too):
///
/// ```ignore
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config { header: String }
///
/// export_plugin!(generate, config = Config);
/// ```
#[macro_export]
macro_rules! export_plugin {
    (@export $plugin:path, $init:expr) => {
        #[doc(hidden)]
        pub struct NebucloudXdsPlugin;

        impl $crate::bindings::Guest for NebucloudXdsPlugin {
            fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                $init(config)
            }

            fn run(
                node: $crate::bindings::Node,
                resources: ::std::vec::Vec<$crate::bindings::Resource>,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::bindings::Resource>, ::std::string::String> {
                $crate::export::run($plugin, node, resources)
            }
        }

        $crate::bindings::export!(NebucloudXdsPlugin with_types_in $crate::bindings);
    };
    ($plugin:path) => {
        $crate::export_plugin!(@export $plugin, $crate::export::init);
    };
    ($plugin:path, config = $config:ty) => {
        $crate::export_plugin!(@export $plugin, $crate::export::init_with_config::<$config>);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        header: String,
    }

    #[test]
    fn a_config_that_does_not_decode_is_refused_at_init_naming_the_field() {
        let typo = init_with_config::<Config>(r#"{"hedaer": "x-owner"}"#.into()).unwrap_err();
        assert!(
            typo.starts_with("plugin config: unknown field `hedaer`") && typo.contains("`header`"),
            "{typo}"
        );
        let missing = init_with_config::<Config>("{}".into()).unwrap_err();
        assert!(missing.contains("missing field `header`"), "{missing}");
        let garbage = init_with_config::<Config>("not json".into()).unwrap_err();
        assert!(garbage.starts_with("plugin config: "), "{garbage}");
        // Nothing was kept: a refused config never becomes the plugin's.
        assert!(CONFIG.get().is_none());
    }
}
