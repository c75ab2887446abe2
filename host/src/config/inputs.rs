//! `[inputs]`: where input documents come from and what one source may hold.

use std::path::PathBuf;

use serde::Deserialize;

use super::{millis, positive, InvalidValue};
pub use crate::inputs::{CustomResourceKind, KubernetesConfig};
use crate::inputs::{InputLimits, DEFAULT_MAX_VALUE_BYTES};

/// `[inputs]`: where documents come from, and what one source may hold. A `(kind, name)`
/// that several sources define is resolved by precedence — the directory, then etcd, then
/// Kubernetes, a later one winning; within one, the greatest file path or etcd key — and is
/// listed as a conflict (see `docs/architecture.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputsConfig {
    /// A directory of YAML/JSON documents, each with `kind` and `name`.
    pub dir: Option<PathBuf>,
    /// An etcd prefix whose keys each hold such documents.
    pub etcd: Option<EtcdConfig>,
    /// A Kubernetes cluster's objects, as `k8s/<Kind>` documents plus mesh `Service`s.
    pub kubernetes: Option<KubernetesConfig>,
    /// How often the directory is polled when no file events can be had (inotify unavailable
    /// or exhausted), in ms (default 250). With events, a file closed after writing or renamed
    /// into place is read once no other event came for it for 50 ms, and a full scan that
    /// catches lost events runs every 10 s, or every `interval_ms` if longer.
    pub interval_ms: u64,
    /// How long a change that no close or rename marks whole must stay unchanged before the
    /// store sees it, in ms (default 200): under the polling fallback, for a writer that keeps
    /// the file open, for a hard link. A file still being written is never published. `0`
    /// publishes what each look sees.
    pub settle_ms: u64,
    /// Largest document file, in bytes (default 4 MiB); a larger one is refused and keeps its
    /// last good documents.
    pub max_file_bytes: u64,
    /// Most document files read from the directory (default 10,000); past it only the first
    /// ones by path are read.
    pub max_files: usize,
    /// Most documents one source — the directory, the etcd prefix — holds (default 100,000);
    /// a file or key that would exceed it is refused and keeps its last good documents.
    pub max_documents: usize,
}

impl Default for InputsConfig {
    fn default() -> Self {
        let limits = InputLimits::default();
        InputsConfig {
            dir: None,
            etcd: None,
            kubernetes: None,
            interval_ms: 250,
            settle_ms: millis(limits.settle),
            max_file_bytes: limits.max_file_bytes,
            max_files: limits.max_files,
            max_documents: limits.max_documents,
        }
    }
}

impl InputsConfig {
    /// The limits every source is built with.
    pub fn limits(&self) -> InputLimits {
        InputLimits {
            settle: std::time::Duration::from_millis(self.settle_ms),
            max_file_bytes: self.max_file_bytes,
            max_files: self.max_files,
            max_documents: self.max_documents,
            max_value_bytes: self
                .etcd
                .as_ref()
                .map_or(DEFAULT_MAX_VALUE_BYTES, |e| e.max_value_bytes),
        }
    }
}

/// `[inputs.etcd]`: `etcd = { endpoints = ["127.0.0.1:2379"], prefix = "/nebucloud-xds/" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// The cluster's client endpoints, `host:port` or `http://host:port`; at least one.
    pub endpoints: Vec<String>,
    /// Every key under this prefix is read (required: an empty one would read all of etcd).
    pub prefix: String,
    /// Largest value decoded, in bytes (default 1.5 MiB, etcd's own default request limit); a
    /// larger one is refused unread and its key keeps its last good documents.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
}

fn default_max_value_bytes() -> usize {
    DEFAULT_MAX_VALUE_BYTES
}

impl InputsConfig {
    /// Values that parse but cannot work, naming the key.
    pub(super) fn check(&self) -> Result<(), InvalidValue> {
        let i = self;
        positive("inputs.interval_ms", i.interval_ms)?;
        positive("inputs.max_file_bytes", i.max_file_bytes)?;
        positive("inputs.max_files", i.max_files as u64)?;
        positive("inputs.max_documents", i.max_documents as u64)?;
        if let Some(etcd) = &self.etcd {
            positive("inputs.etcd.max_value_bytes", etcd.max_value_bytes as u64)?;
            if etcd.endpoints.is_empty() {
                return Err(InvalidValue::new(
                    "inputs.etcd.endpoints",
                    "inputs.etcd.endpoints is empty: give at least one",
                ));
            }
            if etcd.endpoints.iter().any(|e| e.trim().is_empty()) {
                return Err(InvalidValue::new(
                    "inputs.etcd.endpoints",
                    "inputs.etcd.endpoints has an empty endpoint",
                ));
            }
            if etcd.prefix.is_empty() {
                return Err(InvalidValue::new(
                    "inputs.etcd.prefix",
                    "inputs.etcd.prefix is empty: it would read all of etcd",
                ));
            }
        }
        let built_without = |source: &str| {
            let message = format!(
                "inputs.{source} is configured, but this build of nebucloud-xds has no `{source}` \
                 feature: build it with `--features {source}` (the binary's default has it)"
            );
            InvalidValue::new(format!("inputs.{source}"), message)
        };
        if self.etcd.is_some() && !cfg!(feature = "etcd") {
            return Err(built_without("etcd"));
        }
        if self.kubernetes.is_some() && !cfg!(feature = "kubernetes") {
            return Err(built_without("kubernetes"));
        }
        Ok(())
    }
}
