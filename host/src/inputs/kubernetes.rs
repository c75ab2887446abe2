//! The Kubernetes input source: Services, EndpointSlices, ConfigMaps and chosen custom
//! resources become `k8s/<Kind>` documents, and each Service with its endpoints a mesh `Service`.
//!
//! Every object is its own source in the [`InputStore`] (`k8s:<Kind>:<namespace>/<name>`), so a
//! deletion removes exactly its documents. A watch that fails is an ambient error: the last
//! documents stay, the error is logged, counted and shown in its [`SourceHealth`], and kube's
//! watcher retries with its default backoff (relisting when the API server says it must).

mod mesh;
mod mirror;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::time::Instant;

use super::{DocKey, InputStore, KubernetesConfig, SourceHealth};
use mirror::ClusterMirror;

/// The source could not start: no usable cluster configuration was found.
#[derive(Debug, thiserror::Error)]
#[error("kubernetes input: no usable cluster configuration (in-cluster service account or KUBECONFIG): {0}")]
pub struct KubernetesConnectError(#[source] kube::Error);

/// A Kubernetes cluster feeding an [`InputStore`]; [`KubernetesSource::run`] does the work.
pub struct KubernetesSource {
    client: Client,
    default_namespace: String,
    targets: Vec<WatchTarget>,
    store: Arc<InputStore>,
    health: SourceHealth,
}

impl std::fmt::Debug for KubernetesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let watches: Vec<String> = self.targets.iter().map(WatchTarget::label).collect();
        f.debug_struct("KubernetesSource")
            .field("watches", &watches)
            .finish_non_exhaustive()
    }
}

impl KubernetesSource {
    /// A source with the client the environment gives: the in-cluster service account, or
    /// `KUBECONFIG` (`~/.kube/config`) outside a cluster.
    pub async fn connect(
        config: &KubernetesConfig,
        store: Arc<InputStore>,
    ) -> Result<Self, KubernetesConnectError> {
        let client = Client::try_default()
            .await
            .map_err(KubernetesConnectError)?;
        Ok(Self::new(client, config, store))
    }

    /// A source using `client` (any API server, e.g. a fake one in tests). Nothing is
    /// requested until [`run`](Self::run).
    pub fn new(client: Client, config: &KubernetesConfig, store: Arc<InputStore>) -> Self {
        let targets = watch_targets(config);
        let health = SourceHealth::new("kubernetes");
        KubernetesSource {
            client,
            default_namespace: config.default_namespace.clone(),
            targets,
            store,
            health,
        }
    }

    /// The source's health: connected once every watch has listed and while none fails (the
    /// last error names the watch); stays valid while [`run`](Self::run) goes on.
    pub fn health(&self) -> SourceHealth {
        self.health.clone()
    }

    /// Lists and watches every configured kind, forever, keeping the store equal to the
    /// cluster. `on_change` gets the keys each event changed (nothing when nothing did). Mesh
    /// `Service`s appear only once Services and EndpointSlices are both fully listed, so a
    /// restart never serves a Service without its endpoints.
    pub async fn run(self, on_change: impl Fn(Vec<DocKey>) + Send + 'static) {
        let watches = self.targets.iter().enumerate().map(|(i, target)| {
            let api = match &target.namespace {
                Some(ns) => {
                    Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &target.resource)
                }
                None => Api::<DynamicObject>::all_with(self.client.clone(), &target.resource),
            };
            watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .map(move |event| (i, event))
                .boxed()
        });
        let mut events = futures::stream::select_all(watches);
        let mut mirror = ClusterMirror::new(
            &self.targets,
            self.default_namespace.clone(),
            Arc::clone(&self.store),
        );
        // When each failing watch last failed.
        let mut failing: Vec<Option<Instant>> = vec![None; self.targets.len()];
        loop {
            let quiet_since = failing.iter().flatten().min().copied();
            let next = tokio::select! {
                next = events.next() => next,
                () = quiet_for(quiet_since) => {
                    failing.iter_mut().filter(|f| f.is_some_and(|t| t.elapsed() >= RECOVERED_AFTER)).for_each(|f| *f = None);
                    self.report(&mirror, &failing);
                    continue;
                }
            };
            let Some((i, event)) = next else { return };
            match event {
                Ok(event) => {
                    let changed = mirror.apply(i, event);
                    if !changed.is_empty() {
                        metrics::counter!("input_events_total", "source" => "kubernetes")
                            .increment(1);
                        on_change(changed);
                    }
                    failing[i] = None;
                    // After `on_change`: whoever sees the source connected has been given every key.
                    self.report(&mirror, &failing);
                }
                Err(e) => {
                    failing[i] = Some(Instant::now());
                    self.health
                        .lost(&format_args!("{}: {e}", self.targets[i].label()));
                }
            }
        }
    }

    /// Connected once every watch has listed and none is failing.
    fn report(&self, mirror: &ClusterMirror, failing: &[Option<Instant>]) {
        let up = mirror.all_listed() && failing.iter().all(Option::is_none);
        if up && !self.health.is_connected() {
            self.health.synced();
        }
    }
}

/// How long a failed watch must stay quiet to count as recovered. kube's watcher re-establishes
/// a watch without a word (no event until an object changes); it retries at most 30 s apart,
/// and its own backoff forgets errors after 120 s without one, as this does.
const RECOVERED_AFTER: Duration = Duration::from_secs(120);

/// Completes `RECOVERED_AFTER` after `since`; never without a failing watch.
async fn quiet_for(since: Option<Instant>) {
    match since {
        Some(t) => tokio::time::sleep_until(t + RECOVERED_AFTER).await,
        None => std::future::pending().await,
    }
}

/// What the source does with a kind's objects besides storing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Service,
    EndpointSlice,
    Other,
}

/// One list-and-watch: a kind, in one namespace or in all.
#[derive(Debug, Clone, PartialEq)]
struct WatchTarget {
    resource: ApiResource,
    namespace: Option<String>,
    role: Role,
}

impl WatchTarget {
    fn label(&self) -> String {
        format!(
            "{} in {}",
            self.resource.kind,
            self.namespace.as_deref().unwrap_or("all namespaces")
        )
    }
}

/// The watches `config` asks for: the built-in kinds and each custom kind, per configured
/// namespace (or once for all); cluster-scoped custom kinds once.
fn watch_targets(config: &KubernetesConfig) -> Vec<WatchTarget> {
    let mut kinds = vec![
        (ApiResource::erase::<Service>(&()), Role::Service, true),
        (
            ApiResource::erase::<EndpointSlice>(&()),
            Role::EndpointSlice,
            true,
        ),
        (ApiResource::erase::<ConfigMap>(&()), Role::Other, true),
    ];
    for c in &config.custom {
        let api_version = if c.group.is_empty() {
            c.version.clone()
        } else {
            format!("{}/{}", c.group, c.version)
        };
        let resource = ApiResource {
            group: c.group.clone(),
            version: c.version.clone(),
            api_version,
            kind: c.kind.clone(),
            plural: c.plural.clone(),
        };
        kinds.push((resource, Role::Other, c.namespaced));
    }
    let mut targets = Vec::new();
    for (resource, role, namespaced) in kinds {
        if !namespaced || config.namespaces.is_empty() {
            targets.push(WatchTarget {
                resource,
                namespace: None,
                role,
            });
        } else {
            for ns in &config.namespaces {
                targets.push(WatchTarget {
                    resource: resource.clone(),
                    namespace: Some(ns.clone()),
                    role,
                });
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::CustomResourceKind;

    #[test]
    fn watches_cover_each_namespace_and_cluster_scoped_kinds_once() {
        let crd = |kind: &str, namespaced| CustomResourceKind {
            group: "example.com".into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
            namespaced,
        };
        let config = KubernetesConfig {
            namespaces: vec!["a".into(), "b".into()],
            custom: vec![crd("Widget", true), crd("Realm", false)],
            ..KubernetesConfig::default()
        };
        let labels: Vec<String> = watch_targets(&config)
            .iter()
            .map(WatchTarget::label)
            .collect();
        assert_eq!(
            labels,
            [
                "Service in a",
                "Service in b",
                "EndpointSlice in a",
                "EndpointSlice in b",
                "ConfigMap in a",
                "ConfigMap in b",
                "Widget in a",
                "Widget in b",
                "Realm in all namespaces"
            ]
        );
        let all = watch_targets(&KubernetesConfig::default());
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].resource.api_version, "discovery.k8s.io/v1");
        assert_eq!(
            watch_targets(&config)[6].resource.api_version,
            "example.com/v1"
        );
    }
}
