//! The pipeline: from "something changed" to new resources in the cache. It knows every node
//! group (with a node to compute it for), what each group's last run read, and runs the plugin
//! chain for exactly the groups a change affects — coalescing bursts, never publishing a
//! failed run.

mod groups;
mod scheduler;

pub use groups::GroupStatus;
pub use scheduler::{CanaryTarget, Pipeline, PipelineOptions};
