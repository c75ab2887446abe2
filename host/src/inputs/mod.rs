//! Inputs: the world plugins read. Every source (a watched directory, etcd, Kubernetes) feeds
//! one [`InputStore`] of documents keyed by kind and name ([`DocKey`]); a key several sources
//! define is resolved by a fixed precedence and listed as a [`Conflict`]; a change yields the keys that
//! changed, which the pipeline maps to the groups that read them.

mod documents;
#[cfg(feature = "etcd")]
mod etcd;
pub(crate) mod files;
mod health;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod kubernetes_config;
mod limits;
mod store;
mod view;

pub use documents::{parse_documents, DocumentFileError};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdSource, EtcdUnavailable};
pub use files::{watch_dir, DirSource};
pub use health::{SourceHealth, SourceStatus};
#[cfg(feature = "kubernetes")]
pub use kubernetes::{KubernetesConnectError, KubernetesSource};
pub use kubernetes_config::{CustomResourceKind, KubernetesConfig};
pub use limits::{
    InputLimits, DEFAULT_MAX_DOCUMENTS, DEFAULT_MAX_FILES, DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_VALUE_BYTES, DEFAULT_SETTLE,
};
pub use store::{Conflict, InputStore};
pub use view::{DocKey, Document, InputView, Reads, StaticInputs};
