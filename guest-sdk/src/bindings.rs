//! The generated side of the WIT contract (`proto/wit/plugin.wit`). Plugin authors use the
//! [`export_plugin!`](crate::export_plugin) macro and never touch this module.

#![allow(missing_docs, unreachable_pub, clippy::all, unsafe_code)]

wit_bindgen::generate!({
    world: "plugin",
    path: "wit",
    pub_export_macro: true,
    default_bindings_module: "nebucloud_xds_guest::bindings",
});
