//! Benchmarks of nebucloud-xds side by side with the seed library (nebucloud-xds 0.1.0 from
//! crates.io, renamed `seed` here): shared fixtures, the servers under load, the load
//! generator, and the reports they write under `target/bench-results/`.

#![forbid(unsafe_code)]

pub mod criterion_ratios;
pub mod fixtures;
pub mod loadgen;
pub mod plot;
pub mod report;
pub mod servers;
pub mod stats;
