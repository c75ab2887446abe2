//! The cache: immutable, content-versioned resource sets per node group, shared by `Arc` and
//! published to streams through watch channels.

mod consistency;
mod encodings;
mod resource;
mod set;
mod store;

pub use consistency::{ConsistencyError, Inconsistency};
pub(crate) use encodings::Key as EncodingKey;
pub(crate) use resource::combined_version;
pub use resource::Resource;
pub(crate) use set::is_valid_type_url;
pub use set::{ResourceSet, ResourceSetError, TypeResources};
pub use store::{Cache, GroupView};
