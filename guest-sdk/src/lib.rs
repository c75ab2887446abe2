//! What a nebucloud-xds plugin author depends on: the Envoy v3 types and builders for the
//! resource shapes that real xDS clients (Envoy, gRPC C-core, grpc-js) accept.
//!
//! The types come from [`proto`], the very crate the host decodes with. The [`build`] module
//! turns a few parameters into complete resources, with the fields that clients need but do not
//! complain about when missing (locality weights, the router filter, HTTP/2 to gRPC backends)
//! already filled in.

#![forbid(unsafe_code)]

pub mod build;

pub use nebucloud_xds_proto as proto;
pub use nebucloud_xds_proto::prost;
