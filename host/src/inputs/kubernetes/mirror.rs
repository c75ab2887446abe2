//! What the Kubernetes source has put in the store, kept equal to the cluster one watch event
//! at a time: an object per document, and a mesh `Service` per Service and its EndpointSlices.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, TypeMeta};
use kube::runtime::watcher::Event;

use super::{mesh, Role, WatchTarget};
use crate::inputs::{DocKey, Document, InputStore};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An object's namespace (empty when cluster-scoped) and name.
type ObjectKey = (String, String);

/// The source's view of the cluster: what each watch has put in the store, and the Services
/// and EndpointSlices the mesh documents are derived from. Owned by the one task that runs
/// the watches, so it needs no lock.
pub(super) struct ClusterMirror {
    store: Arc<InputStore>,
    targets: Vec<WatchTarget>,
    watches: Vec<WatchState>,
    default_namespace: String,
    services: BTreeMap<ObjectKey, Service>,
    /// Slices by the Service (namespace, service name) they belong to, then by slice name.
    slices: BTreeMap<ObjectKey, BTreeMap<String, EndpointSlice>>,
    /// Each slice's Service, to move or drop it when its label changes or it goes.
    slice_owner: BTreeMap<ObjectKey, String>,
    /// Whether mesh documents are kept up to date (once Services and slices are listed).
    mesh_live: bool,
}

#[derive(Default)]
struct WatchState {
    /// The objects this watch has in the store.
    known: BTreeSet<ObjectKey>,
    /// Objects of a (re)list in progress; applied together when it completes.
    listing: Option<Vec<DynamicObject>>,
    synced: bool,
}

/// Keys that changed, and which Services' mesh documents to recompute.
#[derive(Default)]
struct Changes {
    keys: Vec<DocKey>,
    services: BTreeSet<ObjectKey>,
}

impl ClusterMirror {
    pub(super) fn new(
        targets: &[WatchTarget],
        default_namespace: String,
        store: Arc<InputStore>,
    ) -> Self {
        ClusterMirror {
            store,
            targets: targets.to_vec(),
            watches: targets.iter().map(|_| WatchState::default()).collect(),
            default_namespace,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slice_owner: BTreeMap::new(),
            mesh_live: false,
        }
    }

    /// Applies one event of watch `i`; returns the keys it changed, sorted.
    pub(super) fn apply(&mut self, i: usize, event: Event<DynamicObject>) -> Vec<DocKey> {
        let mut changes = Changes::default();
        match event {
            Event::Init => self.watches[i].listing = Some(Vec::new()),
            Event::InitApply(obj) => match &mut self.watches[i].listing {
                Some(listing) => listing.push(obj),
                None => self.upsert(i, obj, &mut changes),
            },
            Event::InitDone => {
                // A relist replaces the watch's objects: those not listed were deleted meanwhile.
                let listed = self.watches[i].listing.take().unwrap_or_default();
                let present: BTreeSet<ObjectKey> = listed.iter().filter_map(object_key).collect();
                let gone: Vec<ObjectKey> = self.watches[i]
                    .known
                    .difference(&present)
                    .cloned()
                    .collect();
                for key in gone {
                    self.remove(i, key, &mut changes);
                }
                for obj in listed {
                    self.upsert(i, obj, &mut changes);
                }
                self.watches[i].synced = true;
            }
            Event::Apply(obj) => self.upsert(i, obj, &mut changes),
            Event::Delete(obj) => {
                if let Some(key) = object_key(&obj) {
                    self.remove(i, key, &mut changes);
                }
            }
        }
        if !self.mesh_live && self.mesh_inputs_listed() {
            self.mesh_live = true;
            changes.services.extend(self.services.keys().cloned());
        }
        if self.mesh_live {
            for key in std::mem::take(&mut changes.services) {
                let docs = self.mesh_documents(&key);
                changes.keys.extend(
                    self.store
                        .replace_source(&format!("k8s:mesh:{}", document_name(&key)), docs),
                );
            }
        }
        changes.keys.sort();
        changes.keys.dedup();
        changes.keys
    }

    fn upsert(&mut self, i: usize, obj: DynamicObject, changes: &mut Changes) {
        let Some(key) = object_key(&obj) else { return };
        let (resource, role) = (&self.targets[i].resource, self.targets[i].role);
        let kind = format!("k8s/{}", resource.kind);
        let json = match object_json(resource, obj) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(%kind, name = %document_name(&key), error = %e, "kubernetes object skipped");
                return;
            }
        };
        match role {
            Role::Service => match serde_json::from_value::<Service>(json.clone()) {
                Ok(service) => {
                    self.services.insert(key.clone(), service);
                    changes.services.insert(key.clone());
                }
                Err(e) => {
                    tracing::warn!(service = %document_name(&key), error = %e, "Service not understood: no mesh document");
                    self.services.remove(&key);
                    changes.services.insert(key.clone());
                }
            },
            Role::EndpointSlice => {
                self.unlink_slice(&key, changes);
                match serde_json::from_value::<EndpointSlice>(json.clone()) {
                    Ok(slice) => {
                        if let Some(svc) = slice
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(SERVICE_NAME_LABEL))
                            .cloned()
                        {
                            let owner = (key.0.clone(), svc.clone());
                            self.slices
                                .entry(owner.clone())
                                .or_default()
                                .insert(key.1.clone(), slice);
                            self.slice_owner.insert(key.clone(), svc);
                            changes.services.insert(owner);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(slice = %document_name(&key), error = %e, "EndpointSlice not understood: ignored")
                    }
                }
            }
            Role::Other => {}
        }
        let doc = Document {
            kind,
            name: document_name(&key),
            json: json.to_string().into(),
        };
        changes.keys.extend(
            self.store
                .replace_source(&self.source_name(i, &key), vec![doc]),
        );
        self.watches[i].known.insert(key);
    }

    fn remove(&mut self, i: usize, key: ObjectKey, changes: &mut Changes) {
        changes.keys.extend(
            self.store
                .replace_source(&self.source_name(i, &key), Vec::new()),
        );
        match self.targets[i].role {
            Role::Service => {
                self.services.remove(&key);
                changes.services.insert(key.clone());
            }
            Role::EndpointSlice => self.unlink_slice(&key, changes),
            Role::Other => {}
        }
        self.watches[i].known.remove(&key);
    }

    fn unlink_slice(&mut self, slice: &ObjectKey, changes: &mut Changes) {
        let Some(svc) = self.slice_owner.remove(slice) else {
            return;
        };
        let owner = (slice.0.clone(), svc);
        if let Some(slices) = self.slices.get_mut(&owner) {
            slices.remove(&slice.1);
            if slices.is_empty() {
                self.slices.remove(&owner);
            }
        }
        changes.services.insert(owner);
    }

    /// Whether every watch has completed its first list.
    pub(super) fn all_listed(&self) -> bool {
        self.watches.iter().all(|w| w.synced)
    }

    fn mesh_inputs_listed(&self) -> bool {
        self.targets
            .iter()
            .zip(&self.watches)
            .all(|(t, w)| t.role == Role::Other || w.synced)
    }

    /// The mesh `Service` of Service `key`, or none when it does not exist.
    fn mesh_documents(&self, key: &ObjectKey) -> Vec<Document> {
        let Some(service) = self.services.get(key) else {
            return Vec::new();
        };
        let name = mesh::mesh_name(&key.0, &key.1, &self.default_namespace);
        let slices = self.slices.get(key).into_iter().flat_map(BTreeMap::values);
        let json = mesh::mesh_service(&name, service, slices);
        vec![Document {
            kind: "Service".to_owned(),
            name,
            json: json.to_string().into(),
        }]
    }

    fn source_name(&self, i: usize, key: &ObjectKey) -> String {
        format!(
            "k8s:{}:{}",
            self.targets[i].resource.kind,
            document_name(key)
        )
    }
}

fn object_key(obj: &DynamicObject) -> Option<ObjectKey> {
    let name = obj.metadata.name.clone().filter(|n| !n.is_empty())?;
    Some((obj.metadata.namespace.clone().unwrap_or_default(), name))
}

/// `<namespace>/<name>`, or `<name>` for a cluster-scoped object.
fn document_name((namespace, name): &ObjectKey) -> String {
    if namespace.is_empty() {
        name.clone()
    } else {
        format!("{namespace}/{name}")
    }
}

/// The object as JSON: `apiVersion` and `kind` always present (list responses leave them out
/// of their items), `metadata.managedFields` dropped (server bookkeeping, large, churning).
fn object_json(
    resource: &ApiResource,
    mut obj: DynamicObject,
) -> Result<serde_json::Value, serde_json::Error> {
    obj.types = Some(TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    obj.metadata.managed_fields = None;
    serde_json::to_value(obj)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inputs::InputView;
    use crate::inputs::KubernetesConfig;

    const SERVICES: usize = 0;
    const SLICES: usize = 1;

    fn service(name: &str) -> DynamicObject {
        serde_json::from_value(json!({ "metadata": { "name": name, "namespace": "default" }, "spec": { "ports": [{ "port": 80 }] } })).unwrap()
    }

    fn slice(name: &str, service: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "default", "labels": { SERVICE_NAME_LABEL: service } },
            "addressType": "IPv4", "ports": [{ "port": 8080 }], "endpoints": [{ "addresses": ["10.0.0.1"] }],
        }))
        .unwrap()
    }

    fn keys(pairs: &[(&str, &str)]) -> Vec<DocKey> {
        pairs.iter().map(|(k, n)| DocKey::new(*k, *n)).collect()
    }

    fn list(m: &mut ClusterMirror, i: usize, objects: Vec<DynamicObject>) -> Vec<DocKey> {
        let mut changed = m.apply(i, Event::Init);
        for o in objects {
            changed.extend(m.apply(i, Event::InitApply(o)));
        }
        changed.extend(m.apply(i, Event::InitDone));
        changed
    }

    #[test]
    fn mesh_services_wait_for_both_lists_and_a_relist_drops_what_vanished() {
        let store = Arc::new(InputStore::new());
        let targets = super::super::watch_targets(&KubernetesConfig::default());
        let mut m = ClusterMirror::new(&targets, "default".into(), Arc::clone(&store));
        let changed = list(&mut m, SERVICES, vec![service("a"), service("b")]);
        assert_eq!(
            changed,
            keys(&[("k8s/Service", "default/a"), ("k8s/Service", "default/b")])
        );
        assert!(
            store.get("Service", "a").is_none(),
            "no mesh Service before its endpoints are listed"
        );

        let changed = list(&mut m, SLICES, vec![slice("a-1", "a")]);
        assert_eq!(
            changed,
            keys(&[
                ("Service", "a"),
                ("Service", "b"),
                ("k8s/EndpointSlice", "default/a-1")
            ])
        );
        let a: serde_json::Value =
            serde_json::from_str(&store.get("Service", "a").unwrap().json).unwrap();
        assert_eq!(
            a["endpoints"],
            json!([{ "address": "10.0.0.1", "port": 8080, "weight": 1 }])
        );

        // `b` was deleted while the watch was down: the relist removes it and its mesh Service.
        assert_eq!(
            list(&mut m, SERVICES, vec![service("a")]),
            keys(&[("Service", "b"), ("k8s/Service", "default/b")])
        );
        assert!(store.get("Service", "b").is_none());
        // A slice relabelled to another Service leaves the first one without endpoints.
        assert_eq!(
            m.apply(SLICES, Event::Apply(slice("a-1", "c"))),
            keys(&[("Service", "a"), ("k8s/EndpointSlice", "default/a-1")])
        );
        assert_eq!(
            m.apply(SERVICES, Event::Delete(service("a"))),
            keys(&[("Service", "a"), ("k8s/Service", "default/a")])
        );
        assert_eq!(store.len(), 1);
    }
}
