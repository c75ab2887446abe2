//! The Kubernetes input source's options: plain data, so that a config file naming them is
//! read (and refused with a precise error) by a build without the `kubernetes` feature too.

use serde::Deserialize;

/// `[inputs.kubernetes]`: `kubernetes = { namespaces = ["shop"], default_namespace = "default",
/// custom = [{ group = "example.com", version = "v1", kind = "Widget", plural = "widgets" }] }`.
/// The client comes from the environment: in-cluster service account, or `KUBECONFIG`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The namespaces to watch; empty (the default) watches every namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Services in this namespace get bare mesh names (`greeter`); those elsewhere are
    /// `<namespace>.<name>` (default `default`).
    #[serde(default = "default_namespace")]
    pub default_namespace: String,
    /// Custom resource kinds to watch besides Services, EndpointSlices and ConfigMaps.
    #[serde(default)]
    pub custom: Vec<CustomResourceKind>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespaces: Vec::new(),
            default_namespace: default_namespace(),
            custom: Vec::new(),
        }
    }
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// A custom resource kind to watch, as its CRD names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomResourceKind {
    /// API group, e.g. `gateway.networking.k8s.io` (empty for the core group).
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `HTTPRoute`; documents are `k8s/<kind>`.
    pub kind: String,
    /// Plural resource name in URLs, e.g. `httproutes`.
    pub plural: String,
    /// Whether objects live in namespaces (default true); cluster-scoped kinds are watched
    /// cluster-wide whatever `namespaces` says.
    #[serde(default = "yes")]
    pub namespaced: bool,
}

fn yes() -> bool {
    true
}
