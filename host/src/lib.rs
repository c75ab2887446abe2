//! nebucloud-xds: an xDS control plane whose configuration logic is user code.
//!
//! The data path, one module per stage: [`cache`] holds each node group's immutable
//! [`ResourceSet`] and publishes it; [`xds`] serves it to Envoy and gRPC clients over every
//! xDS transport. Embedding the host without plugins takes three calls:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use nebucloud_xds::{Cache, Resource, ResourceSet, XdsServer};
//! use nebucloud_xds_proto::envoy::config::cluster::v3::Cluster;
//!
//! let cache = Cache::new();
//! let cluster = Cluster { name: "backend".into(), ..Default::default() };
//! cache.set("envoy-1", ResourceSet::new([Resource::from_message("backend", &cluster)])?);
//! XdsServer::builder(cache).build().serve("127.0.0.1:18000".parse()?).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cache;
pub mod config;
pub mod inputs;
pub mod pipeline;
pub mod plugins;
pub mod schema;
pub mod xds;

pub use cache::{Cache, Resource, ResourceSet, ResourceSetError};
pub use xds::{NodeGrouping, StreamLimits, XdsServer};
