//! Benchmarks of nebucloud-xds side by side with the seed library (nebucloud-xds 0.1.0 from
//! crates.io, as [`seed`] here): shared fixtures, the servers under load, the load generator,
//! and the reports they write under `target/bench-results/`.

#![forbid(unsafe_code)]

pub mod criterion_ratios;
pub mod fixtures;
pub mod loadgen;
pub mod plot;
pub mod report;
pub mod servers;
pub mod stats;

/// The seed library as its facade crate (`nebucloud-xds` 0.1.0) exposes it: the facade is only
/// these re-exports, so depending on its four crates gives the same code without a second
/// package named `nebucloud-xds` in the workspace.
pub mod seed {
    pub use seed_cache as cache;
    pub use seed_core as core;
    pub use seed_server as server;
    pub use seed_types as types;
}
