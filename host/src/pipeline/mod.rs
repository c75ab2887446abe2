//! The pipeline: from "something changed" to new resources in the cache. It knows every node
//! group (with a node to compute it for), what each group's last run read, and runs the plugin
//! chain for exactly the groups a change affects — coalescing bursts, never publishing a
//! failed run; a reloaded chain serves only after a trial over the live groups. Groups live
//! while their nodes do, plus a grace period.

mod compute;
mod groups;
mod lifecycle;
mod memo;
mod record;
mod scheduler;
mod trial;

pub use groups::GroupStatus;
pub use lifecycle::TooManyGroups;
pub use scheduler::{Pipeline, PipelineOptions, DEFAULT_GROUP_GRACE, DEFAULT_MAX_GROUPS};
