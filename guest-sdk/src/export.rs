//! The glue between the WIT exports and a plain plugin function: config kept from `init`
//! (decoded once, for a plugin that declares its type), inputs read through the host, panics
//! reported through the host log.

use std::sync::OnceLock;

use crate::bindings::nebucloud::xds::host;
use crate::bindings::nebucloud::xds::types::Level;
use crate::error::Result;
use crate::node::Node;
use crate::plugin::{decode_config, ConfiguredPluginFn, Context, Inputs, PluginFn, Resource};

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
/// `config check`, `plugin check --config`, a reload) rather than on its first run. The
/// decoded value is kept in `slot` (a static of the `export_plugin!` expansion) for every
/// `run` of this instance.
#[doc(hidden)]
pub fn init_with_config<T: serde::de::DeserializeOwned>(
    config: String,
    slot: &OnceLock<T>,
) -> Result<(), String> {
    let typed = decode_config::<T>(&config)?;
    init(config)?;
    // As for `CONFIG`: an instance is initialised once.
    let _ = slot.set(typed);
    Ok(())
}

/// `run` of a plugin exported with `export_plugin!(f)`.
#[doc(hidden)]
pub fn run(
    plugin: PluginFn,
    resources: Vec<crate::bindings::Resource>,
) -> Result<Vec<crate::bindings::Resource>, String> {
    call(&Node::from_host(), resources, plugin)
}

/// `run` of a plugin exported with `export_plugin!(f, config = T)`: hands it the config that
/// `init` decoded into `slot`.
#[doc(hidden)]
pub fn run_with_config<T>(
    plugin: ConfiguredPluginFn<T>,
    slot: &OnceLock<T>,
    resources: Vec<crate::bindings::Resource>,
) -> Result<Vec<crate::bindings::Resource>, String> {
    configured(plugin, slot, &Node::from_host(), resources)
}

/// As [`run_with_config`], for a given node.
fn configured<T>(
    plugin: ConfiguredPluginFn<T>,
    slot: &OnceLock<T>,
    node: &Node,
    resources: Vec<crate::bindings::Resource>,
) -> Result<Vec<crate::bindings::Resource>, String> {
    call(node, resources, |ctx, resources| match slot.get() {
        Some(config) => plugin(ctx, config, resources),
        // The host calls `init` before any `run`, and an instance whose `init` failed is
        // never run.
        None => Err(crate::Error::msg(
            "plugin config: `run` was called before a successful `init`",
        )),
    })
}

/// Converts the WIT values, calls the plugin function, converts back.
fn call(
    node: &Node,
    resources: Vec<crate::bindings::Resource>,
    plugin: impl FnOnce(&Context<'_>, Vec<Resource>) -> Result<Vec<Resource>>,
) -> Result<Vec<crate::bindings::Resource>, String> {
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
    let out = plugin(&Context::new(node, config, &HostInputs), resources);
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
    host::log(Level::from(level), message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// How loud a log line is: the contract's levels, one for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Finer detail than `Debug`: each step of a computation.
    Trace,
    /// Detail for debugging a plugin.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd, not an error.
    Warn,
    /// An error.
    Error,
}

impl From<LogLevel> for Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => Level::Trace,
            LogLevel::Debug => Level::Debug,
            LogLevel::Info => Level::Info,
            LogLevel::Warn => Level::Warn,
            LogLevel::Error => Level::Error,
        }
    }
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
/// load fails naming the field (with `#[serde(deny_unknown_fields)]` on `T`, a typo too). The
/// decoded `T` is kept for the life of the instance (in a static of this expansion, so `T` is
/// `Send + Sync`) and handed to the function, which takes it as its second argument:
///
/// ```ignore
/// use nebucloud_xds_guest::serde::Deserialize;
///
/// #[derive(Deserialize)]
/// #[serde(crate = "nebucloud_xds_guest::serde", deny_unknown_fields)]
/// pub struct Config { header: String }
///
/// fn generate(ctx: &Context<'_>, config: &Config, resources: Vec<Resource>) -> Result<Vec<Resource>> {
///     Ok(resources)
/// }
/// export_plugin!(generate, config = Config);
/// ```
#[macro_export]
macro_rules! export_plugin {
    (@export $init:expr, $run:expr) => {
        #[doc(hidden)]
        pub struct NebucloudXdsPlugin;

        impl $crate::bindings::Guest for NebucloudXdsPlugin {
            fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                $init(config)
            }

            fn run(
                resources: ::std::vec::Vec<$crate::bindings::Resource>,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::bindings::Resource>, ::std::string::String> {
                $run(resources)
            }
        }

        $crate::bindings::export!(NebucloudXdsPlugin with_types_in $crate::bindings);
    };
    ($plugin:path) => {
        $crate::export_plugin!(
            @export
            $crate::export::init,
            |resources| $crate::export::run($plugin, resources)
        );
    };
    ($plugin:path, config = $config:ty) => {
        /// The plugin's config, decoded by `init` once per instance.
        #[doc(hidden)]
        static NEBUCLOUD_XDS_CONFIG: ::std::sync::OnceLock<$config> = ::std::sync::OnceLock::new();

        $crate::export_plugin!(
            @export
            |config| $crate::export::init_with_config::<$config>(config, &NEBUCLOUD_XDS_CONFIG),
            |resources| {
                $crate::export::run_with_config::<$config>($plugin, &NEBUCLOUD_XDS_CONFIG, resources)
            }
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        header: String,
    }

    fn node(id: &str) -> Node {
        Node::new(id)
    }

    /// Names the node and the config's header in the one resource it returns.
    fn echo(ctx: &Context<'_>, config: &Config, _: Vec<Resource>) -> Result<Vec<Resource>> {
        Ok(vec![Resource {
            type_url: "t".into(),
            name: format!("{} {}", ctx.node().id(), config.header),
            // The address of the config: the same value on every call.
            body: (std::ptr::from_ref(config) as usize).to_le_bytes().to_vec(),
        }])
    }

    #[test]
    fn a_config_that_does_not_decode_is_refused_at_init_naming_the_field() {
        let slot = OnceLock::new();
        let typo =
            init_with_config::<Config>(r#"{"hedaer": "x-owner"}"#.into(), &slot).unwrap_err();
        assert!(
            typo.starts_with("plugin config: unknown field `hedaer`") && typo.contains("`header`"),
            "{typo}"
        );
        let missing = init_with_config::<Config>("{}".into(), &slot).unwrap_err();
        assert!(missing.contains("missing field `header`"), "{missing}");
        let garbage = init_with_config::<Config>("not json".into(), &slot).unwrap_err();
        assert!(garbage.starts_with("plugin config: "), "{garbage}");
        // Nothing was kept: a refused config never becomes the plugin's.
        assert!(CONFIG.get().is_none());
        assert!(slot.get().is_none());
    }

    #[test]
    fn a_declared_config_is_decoded_once_and_handed_to_every_run() {
        // What `init_with_config` keeps after its checks (`init` itself installs the panic
        // hook, which logs through the host: not in a native test).
        let config = decode_config::<Config>(r#"{"header": "x-owner"}"#);
        let slot = OnceLock::from(config.unwrap());
        let first = configured(echo, &slot, &node("a"), vec![]).unwrap();
        let second = configured(echo, &slot, &node("b"), vec![]).unwrap();
        assert_eq!(first[0].name, "a x-owner");
        assert_eq!(second[0].name, "b x-owner");
        assert_eq!(first[0].body, second[0].body, "the same decoded value");
    }

    #[test]
    fn run_before_a_successful_init_is_an_error_not_a_panic() {
        let e = configured(echo, &OnceLock::new(), &node("a"), vec![]).unwrap_err();
        assert!(e.starts_with("plugin config: "), "{e}");
    }

    #[test]
    fn every_log_level_maps_to_the_contracts_level_of_the_same_name() {
        let levels = [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ];
        let mapped = levels.map(Level::from);
        assert_eq!(
            mapped,
            [
                Level::Trace,
                Level::Debug,
                Level::Info,
                Level::Warn,
                Level::Error
            ]
        );
        assert_eq!(format!("{:?}", LogLevel::Trace), "Trace");
    }
}
