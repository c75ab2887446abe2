//! The workload every benchmark shares: a mesh of N services with endpoints, the resources
//! the `mesh` plugin makes of it for an Envoy node, and the same resources as the seed's types.

use std::path::PathBuf;
use std::sync::Arc;

use mesh::{Endpoint, Protocol, Service};
use nebucloud_xds::inputs::StaticInputs;
use nebucloud_xds::{Resource, ResourceSet};
use nebucloud_xds_guest::{run_native, MemoryInputs};
use nebucloud_xds_proto::envoy::config::core::v3::Node;

use crate::seed;

/// The resource whose content an input change alters: the endpoints of the first service.
pub const MARKER_SERVICE: &str = "svc-000";

/// The group (and `node.cluster`) every simulated Envoy belongs to.
pub const CLUSTER: &str = "mesh";

/// `n` services, three endpoints each over two zones. `revision` moves the first service's
/// first endpoint to another port: one input change, one changed `ClusterLoadAssignment`.
pub fn services(n: usize, revision: u32) -> Vec<(String, Service)> {
    (0..n)
        .map(|i| {
            let endpoints = (0..3u16)
                .map(|e| Endpoint {
                    address: format!("10.{}.{}.{}", i / 250, i % 250, e + 1),
                    port: if i == 0 && e == 0 {
                        8000 + (revision % 1000) as u16
                    } else {
                        8080
                    },
                    zone: Some(if e % 2 == 0 { "zone-a" } else { "zone-b" }.to_owned()),
                    weight: Some(1),
                })
                .collect();
            let svc = Service {
                protocol: if i % 2 == 0 {
                    Protocol::Grpc
                } else {
                    Protocol::Http
                },
                endpoints,
            };
            (format!("svc-{i:03}"), svc)
        })
        .collect()
}

/// The services as a native plugin call reads them.
pub fn memory_inputs(services: &[(String, Service)]) -> MemoryInputs {
    services.iter().fold(MemoryInputs::new(), |m, (name, svc)| {
        m.with("Service", name, svc)
    })
}

/// The services as the host hands them to a wasm plugin.
pub fn static_inputs(services: &[(String, Service)]) -> StaticInputs {
    let mut inputs = StaticInputs::new();
    for (name, svc) in services {
        inputs.insert("Service", name, service_json(svc));
    }
    inputs
}

/// A service document's JSON text.
pub fn service_json(svc: &Service) -> String {
    serde_json::to_string(svc).unwrap_or_else(|_| "{}".to_owned())
}

/// The simulated Envoy `i`, as the host sees it.
pub fn envoy_node(i: usize) -> Node {
    Node {
        id: format!("node-{i}"),
        cluster: CLUSTER.to_owned(),
        user_agent_name: "envoy".to_owned(),
        ..Node::default()
    }
}

/// The same node as a plugin sees it (for native calls).
pub fn guest_node(node: &Node) -> nebucloud_xds_guest::Node {
    nebucloud_xds_guest::Node::new(node.id.clone())
        .with_cluster(node.cluster.clone())
        .with_user_agent(node.user_agent_name.clone(), "")
}

/// The host resources the `mesh` plugin makes for an Envoy node, computed natively.
pub fn mesh_resources(services: &[(String, Service)]) -> anyhow::Result<Vec<Resource>> {
    let inputs = memory_inputs(services);
    let node = guest_node(&envoy_node(0));
    let out = run_native(
        mesh::generate,
        &node,
        &serde_json::json!({}),
        &inputs,
        vec![],
    )
    .map_err(|e| anyhow::anyhow!("mesh plugin: {e}"))?;
    Ok(out
        .into_iter()
        .map(|r| Resource::new(r.type_url, r.name, r.body))
        .collect())
}

/// The mesh resources as one of our resource sets.
pub fn mesh_set(services: usize, revision: u32) -> anyhow::Result<Arc<ResourceSet>> {
    let resources = mesh_resources(&self::services(services, revision))?;
    Ok(Arc::new(ResourceSet::new(resources)?))
}

/// A resource as the seed holds it: encoded once, handed out as an `Any` (what the seed's
/// own, unexported, `AnyResource` does).
#[derive(Debug)]
pub struct SeedResource {
    name: String,
    any: seed_prost_types::Any,
}

impl SeedResource {
    /// A boxed resource for the seed's snapshots.
    pub fn boxed(type_url: &str, name: &str, body: Vec<u8>) -> seed::core::BoxResource {
        Arc::new(SeedResource {
            name: name.to_owned(),
            any: seed_prost_types::Any {
                type_url: type_url.to_owned(),
                value: body,
            },
        })
    }
}

impl seed::core::Resource for SeedResource {
    fn type_url(&self) -> &str {
        &self.any.type_url
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn encode(&self) -> Result<seed_prost_types::Any, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.any.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The same resources as a seed snapshot: every type carries the snapshot's version, as the
/// seed's `SnapshotBuilder::resources` does.
pub fn seed_snapshot(resources: &[Resource], version: &str) -> seed::cache::Snapshot {
    use std::collections::BTreeMap;
    let mut by_type: BTreeMap<&str, Vec<seed::core::BoxResource>> = BTreeMap::new();
    for r in resources {
        by_type
            .entry(r.type_url())
            .or_default()
            .push(SeedResource::boxed(
                r.type_url(),
                r.name(),
                r.body().to_vec(),
            ));
    }
    by_type
        .into_iter()
        .fold(
            seed::cache::Snapshot::builder().version(version),
            |b, (t, rs)| b.resources(seed::core::TypeUrl::new(t), rs),
        )
        .build()
}

/// The directory built plugins are read from: `NX_PLUGIN_DIR`, else `build/plugins`.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("NX_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build/plugins"))
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Where results go: `$CARGO_TARGET_DIR/bench-results`, else `target/bench-results`.
pub fn results_dir() -> PathBuf {
    target_dir().join("bench-results")
}

/// Cargo's target directory, as the Makefile resolves it.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_changes_exactly_one_endpoint_assignment() {
        let a = mesh_resources(&services(10, 0)).unwrap();
        let b = mesh_resources(&services(10, 1)).unwrap();
        assert_eq!(
            a.len(),
            22,
            "10 clusters, 10 assignments, a listener, a route table"
        );
        let changed: Vec<_> = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.body() != y.body())
            .map(|(x, _)| (x.type_url().to_owned(), x.name().to_owned()))
            .collect();
        assert_eq!(
            changed,
            vec![(
                nebucloud_xds_proto::type_url::ENDPOINT.to_owned(),
                MARKER_SERVICE.to_owned()
            )]
        );
        let snap = seed_snapshot(&a, "v1");
        assert_eq!(snap.total_resources(), 22);
    }
}
