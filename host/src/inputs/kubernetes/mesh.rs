//! The mesh view of a Kubernetes Service: its ready endpoints in the `Service` document shape
//! that the bundled mesh plugin reads, so that plugin serves a cluster unchanged.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

/// The mesh name of Service `namespace/name`: bare in the default namespace, else
/// `<namespace>.<name>`. Unambiguous, since neither namespaces nor Service names contain dots.
pub(super) fn mesh_name(namespace: &str, name: &str, default_namespace: &str) -> String {
    if namespace == default_namespace {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

/// The mesh `Service` document for `service` and the EndpointSlices that name it.
///
/// The Service's first TCP port is the one served: its protocol comes from its `appProtocol`,
/// else its name's prefix, else gRPC; each endpoint's port is the matching slice port (the
/// target port). Only ready endpoints count (a missing `ready` means ready, as the API says).
/// Endpoints are sorted and deduplicated, so the document, and the versions computed from it,
/// do not change with the order slices arrive in.
pub(super) fn mesh_service<'a>(
    name: &str,
    service: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Value {
    let port = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .and_then(|ports| {
            ports
                .iter()
                .find(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
        });
    let mut endpoints = BTreeSet::new();
    if let Some(port) = port {
        for slice in slices {
            let Some(target) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == port.name.as_deref().unwrap_or(""))
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
            else {
                continue;
            };
            for endpoint in slice.endpoints.iter().flatten() {
                if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for address in &endpoint.addresses {
                    endpoints.insert((address.clone(), target, endpoint.zone.clone()));
                }
            }
        }
    }
    let endpoints: Vec<Value> = endpoints
        .into_iter()
        .map(|(address, port, zone)| {
            let mut e = json!({ "address": address, "port": port, "weight": 1 });
            if let Some(zone) = zone {
                e["zone"] = Value::String(zone);
            }
            e
        })
        .collect();
    let protocol = port.map_or("grpc", protocol_of);
    json!({ "kind": "Service", "name": name, "protocol": protocol, "endpoints": endpoints })
}

/// `grpc` or `http`. HTTP/2 cleartext (`h2c`, `http2…`) counts as `grpc`, which to the mesh
/// plugin means "HTTP/2 to the endpoints"; anything else starting with `http` is HTTP/1.1.
fn protocol_of(port: &ServicePort) -> &'static str {
    fn classify(s: &str) -> Option<&'static str> {
        let s = s.to_ascii_lowercase();
        let s = s.strip_prefix("kubernetes.io/").unwrap_or(&s);
        if s.starts_with("grpc") || s.starts_with("h2c") || s.starts_with("http2") {
            Some("grpc")
        } else if s.starts_with("http") {
            Some("http")
        } else {
            None
        }
    }
    port.app_protocol
        .as_deref()
        .and_then(classify)
        .or_else(|| port.name.as_deref().and_then(classify))
        .unwrap_or("grpc")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ports: Value) -> Service {
        serde_json::from_value(json!({ "metadata": { "name": "s" }, "spec": { "ports": ports } }))
            .unwrap()
    }

    fn slice(ports: Value, endpoints: Value) -> EndpointSlice {
        serde_json::from_value(json!({ "metadata": { "name": "s-1" }, "addressType": "IPv4", "ports": ports, "endpoints": endpoints }))
            .unwrap()
    }

    #[test]
    fn protocol_comes_from_app_protocol_then_port_name_then_defaults_to_grpc() {
        let cases = [
            (
                json!([{ "port": 80, "appProtocol": "http", "name": "grpc" }]),
                "http",
            ),
            (
                json!([{ "port": 80, "appProtocol": "kubernetes.io/h2c" }]),
                "grpc",
            ),
            (json!([{ "port": 80, "name": "http-web" }]), "http"),
            (json!([{ "port": 80, "name": "http2" }]), "grpc"),
            (json!([{ "port": 80, "name": "grpc-api" }]), "grpc"),
            (json!([{ "port": 80, "name": "metrics" }]), "grpc"),
            (
                json!([{ "port": 53, "protocol": "UDP", "name": "http" }, { "port": 80, "name": "web" }]),
                "grpc",
            ),
        ];
        for (ports, want) in cases {
            let doc = mesh_service("s", &service(ports.clone()), []);
            assert_eq!(doc["protocol"], want, "{ports}");
        }
    }

    #[test]
    fn only_ready_endpoints_of_the_served_port_count_sorted_and_deduplicated() {
        let svc = service(
            json!([{ "port": 80, "name": "http", "targetPort": 8080 }, { "port": 9090, "name": "metrics" }]),
        );
        let ports = json!([{ "name": "metrics", "port": 9090 }, { "name": "http", "port": 8080 }]);
        let a = slice(
            ports.clone(),
            json!([
                { "addresses": ["10.0.0.2"], "conditions": { "ready": true }, "zone": "z1" },
                { "addresses": ["10.0.0.9"], "conditions": { "ready": false }, "zone": "z1" },
                { "addresses": ["10.0.0.1"] },
            ]),
        );
        let b = slice(
            ports,
            json!([{ "addresses": ["10.0.0.2"], "conditions": { "ready": true }, "zone": "z1" }]),
        );
        let other_port = slice(
            json!([{ "name": "grpc", "port": 7000 }]),
            json!([{ "addresses": ["10.0.0.5"] }]),
        );
        let doc = mesh_service("shop.web", &svc, [&b, &a, &other_port]);
        assert_eq!(
            doc,
            json!({
                "kind": "Service", "name": "shop.web", "protocol": "http",
                "endpoints": [
                    { "address": "10.0.0.1", "port": 8080, "weight": 1 },
                    { "address": "10.0.0.2", "port": 8080, "zone": "z1", "weight": 1 },
                ],
            })
        );
    }

    #[test]
    fn services_outside_the_default_namespace_are_qualified() {
        assert_eq!(mesh_name("default", "greeter", "default"), "greeter");
        assert_eq!(mesh_name("shop", "cart", "default"), "shop.cart");
    }
}
