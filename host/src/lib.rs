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

//! # Features
//!
//! With `default-features = false` the library is [`cache`], [`xds`] and [`schema`]: the
//! protocol over tonic, without wasmtime, kube, etcd-client, axum or clap. Each feature adds a
//! layer of the data path:
//!
//! - `plugins`: the plugin runtime (wasmtime), the input store with file inputs, the pipeline;
//! - `etcd`, `kubernetes`: those input sources (with `plugins`);
//! - `admin`: the admin HTTP API (axum) and Prometheus endpoint, and with them the composition
//!   root `app` and its config file `config`;
//! - `cli` (default): all of the above and the `nebucloud-xds` binary.

#![forbid(unsafe_code)]

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "admin")]
pub mod app;
pub mod cache;
#[cfg(feature = "admin")]
pub mod config;
#[cfg(feature = "plugins")]
pub mod inputs;
#[cfg(feature = "plugins")]
pub mod pipeline;
#[cfg(feature = "plugins")]
pub mod plugins;
pub mod schema;
pub mod xds;

pub use cache::{Cache, Resource, ResourceSet, ResourceSetError};
pub use xds::{NodeGrouping, StreamLimits, XdsServer};
