//! Inputs: the world plugins read. Every source (a watched directory, etcd, Kubernetes) feeds
//! one [`InputStore`] of documents keyed by kind and name; a key several sources define is
//! resolved by a fixed precedence and listed as a [`Conflict`]; a change yields the keys that
//! changed, which the pipeline maps to the groups that read them.

mod documents;
mod etcd;
pub(crate) mod files;
mod health;
mod kubernetes;
mod limits;
mod store;

pub use documents::{parse_documents, DocumentFileError};
pub use etcd::{EtcdSource, EtcdUnavailable};
pub use files::{watch_dir, DirSource};
pub use health::{SourceHealth, SourceStatus};
pub use kubernetes::{
    CustomResourceKind, KubernetesConfig, KubernetesConnectError, KubernetesSource,
};
pub use limits::{
    InputLimits, DEFAULT_MAX_DOCUMENTS, DEFAULT_MAX_FILES, DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_VALUE_BYTES, DEFAULT_SETTLE,
};
pub use store::{Conflict, InputStore};
