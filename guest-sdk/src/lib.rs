//! What a nebucloud-xds plugin author depends on: a plugin is one plain Rust function from
//! the node and the resources so far to the node's resources, exported with
//! [`export_plugin!`] and built with `cargo build --target wasm32-wasip2 --release`.
//!
//! ```ignore
//! use nebucloud_xds_guest::{build, export_plugin, Context, Resource, Result};
//!
//! fn generate(ctx: &Context<'_>, mut resources: Vec<Resource>) -> Result<Vec<Resource>> {
//!     let target = ctx.node().cluster();
//!     resources.push(Resource::new(target, &build::grpc_api_listener(target, target)));
//!     Ok(resources)
//! }
//! export_plugin!(generate);
//! ```
//!
//! A plugin that declares its config type gets it decoded once, as `&T`
//! (`export_plugin!(generate, config = Config)` with
//! `fn generate(ctx: &Context<'_>, config: &Config, resources: Vec<Resource>)`), and `?` turns
//! any error (serde's, prost's, your own) into an [`Error`] that keeps its chain of causes.
//!
//! The Envoy types come from [`proto`], the very crate the host decodes with. The [`build`]
//! module turns a few parameters into complete resources, with the fields that clients need
//! but do not complain about when missing already filled in. [`run_native`] runs a plugin
//! function in a plain `cargo test`, no wasm involved.

#![deny(unsafe_code)]

#[doc(hidden)]
pub mod bindings;
pub mod build;
mod error;
#[doc(hidden)]
pub mod export;
mod node;
mod plugin;

pub use error::{Error, Result};
pub use export::{log, LogLevel};
pub use nebucloud_xds_proto as proto;
pub use nebucloud_xds_proto::prost;
pub use node::{Locality, Node, Transport};
pub use plugin::{
    run_native, ConfiguredPluginFn, Context, Inputs, MemoryInputs, PluginFn, PluginFunction,
    Resource,
};
/// serde, with its derives. A plugin that does not depend on serde itself derives through this
/// re-export by naming it on each type, since the derives' code names the crate `serde`:
///
/// ```ignore
/// use nebucloud_xds_guest::serde::Deserialize;
///
/// #[derive(Deserialize)]
/// #[serde(crate = "nebucloud_xds_guest::serde")]
/// struct Service { port: u16 }
/// ```
pub use serde;
pub use serde_json;
