//! Inputs: the world plugins read. Every source (a watched directory, etcd, Kubernetes) feeds
//! one [`InputStore`] of documents keyed by kind and name; a change yields the keys that
//! changed, which the pipeline maps to the groups that read them.

mod etcd;
mod files;
mod health;
mod kubernetes;
mod store;

pub use etcd::{EtcdSource, EtcdUnavailable};
pub use files::{parse_documents, watch_dir, DirSource, DocumentFileError};
pub use health::{SourceHealth, SourceStatus};
pub use kubernetes::{KubernetesConnectError, KubernetesSource};
pub use store::InputStore;
