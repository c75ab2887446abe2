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
    let out =
        plugin(&Context::new(&node, config, &HostInputs), resources).map_err(|e| e.to_string())?;
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
#[macro_export]
macro_rules! export_plugin {
    ($plugin:path) => {
        #[doc(hidden)]
        pub struct NebucloudXdsPlugin;

        impl $crate::bindings::Guest for NebucloudXdsPlugin {
            fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                $crate::export::init(config)
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
}
