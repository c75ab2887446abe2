//! Inputs: the world plugins read. Every source (a watched directory, etcd, Kubernetes) feeds
//! one [`InputStore`] of documents keyed by kind and name; a change yields the keys that
//! changed, which the pipeline maps to the groups that read them.

mod files;
mod store;

pub use files::{parse_documents, watch_dir, DirSource, DocumentFileError};
pub use store::InputStore;
