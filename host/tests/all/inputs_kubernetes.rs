//! The Kubernetes input source against a FAKE Kubernetes API server: no real API server can be
//! installed on this machine, so a small HTTP server on loopback answers the list and watch
//! requests of kube's watcher with recorded JSON, the way an API server does (list items
//! without `kind`, watch events as a stream of JSON lines, `Status` bodies on errors).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nebucloud_xds::config::{CustomResourceKind, KubernetesConfig};
use nebucloud_xds::inputs::{DocKey, InputStore, InputView, KubernetesSource, SourceStatus};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

type Body = BoxBody<Bytes, Infallible>;

/// What the fake API server answers to the next watch request of one resource.
enum WatchReply {
    /// These events, once the test opens the gate; then the watch ends (as a server timeout
    /// does) and the watcher re-watches from the last resource version.
    Events(Vec<Value>),
    /// An HTTP error with a `Status` body.
    Fail(u16),
}

/// One resource path, e.g. `/api/v1/services`.
struct Route {
    /// The list response (every list gets it).
    list: Value,
    /// While this is false, lists fail with 500 (not 503 or 429, which kube's client retries
    /// by itself before the watcher sees an error).
    list_up: Option<watch::Receiver<bool>>,
    /// Replies to successive watches; once they run out a watch stays open with no events.
    watches: VecDeque<WatchReply>,
}

/// A FAKE Kubernetes API server (none can be installed here): recorded list responses and
/// scripted watch streams, over real HTTP/1.1 on loopback.
#[derive(Clone)]
struct FakeApiServer {
    routes: Arc<Mutex<HashMap<String, Route>>>,
    gate: watch::Receiver<bool>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeApiServer {
    async fn start(
        routes: HashMap<String, Route>,
        gate: watch::Receiver<bool>,
    ) -> (FakeApiServer, SocketAddr) {
        let server = FakeApiServer {
            routes: Arc::new(Mutex::new(routes)),
            gate,
            requests: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = accept.clone();
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.answer(&req)) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (server, addr)
    }

    fn answer(&self, req: &Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let watching = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        self.requests
            .lock()
            .unwrap()
            .push(format!("{path}?{query}"));
        let mut routes = self.routes.lock().unwrap();
        let Some(route) = routes.get_mut(&path) else {
            return status(404);
        };
        if !watching {
            if route.list_up.as_ref().is_some_and(|up| !*up.borrow()) {
                return status(500);
            }
            return respond(Full::new(Bytes::from(route.list.to_string())).boxed());
        }
        match route.watches.pop_front() {
            None => respond(
                StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Infallible>>())
                    .boxed(),
            ),
            Some(WatchReply::Fail(code)) => status(code),
            Some(WatchReply::Events(events)) => {
                let mut gate = self.gate.clone();
                let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
                let body = futures::stream::once(async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Ok(Frame::data(Bytes::from(lines)))
                });
                respond(StreamBody::new(body).boxed())
            }
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn respond(body: Body) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn status(code: u16) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("fake API server says {code}"), "reason": "InternalError", "code": code,
    });
    let mut response = respond(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
    response
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({ "kind": format!("{kind}List"), "apiVersion": "v1", "metadata": { "resourceVersion": "100" }, "items": items })
}

fn route(list: Value, list_up: Option<watch::Receiver<bool>>, watches: Vec<WatchReply>) -> Route {
    Route {
        list,
        list_up,
        watches: watches.into(),
    }
}

fn meta(namespace: &str, name: &str, rv: &str) -> Value {
    json!({ "name": name, "namespace": namespace, "resourceVersion": rv, "uid": format!("uid-{name}") })
}

fn greeter_slice(rv: &str, endpoints: Value) -> Value {
    let mut metadata = meta("default", "greeter-abc", rv);
    metadata["labels"] = json!({ "kubernetes.io/service-name": "greeter" });
    json!({
        "metadata": metadata, "addressType": "IPv4",
        "ports": [{ "name": "grpc", "port": 50051, "protocol": "TCP" }],
        "endpoints": endpoints,
    })
}

fn key(kind: &str, name: &str) -> DocKey {
    DocKey::new(kind, name)
}

fn doc(store: &InputStore, kind: &str, name: &str) -> Option<Value> {
    store
        .get(kind, name)
        .map(|d| serde_json::from_str(&d.json).unwrap())
}

/// Waits (at most 20 s) for a status that satisfies `f`.
async fn status_where(
    rx: &mut watch::Receiver<SourceStatus>,
    f: impl FnMut(&SourceStatus) -> bool,
) -> SourceStatus {
    let seen = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(f)).await;
    seen.expect("timed out waiting for the source's health")
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_against_fake_api_server_maps_services_and_endpoint_slices() {
    let mut greeter = json!({
        "metadata": meta("default", "greeter", "10"),
        "spec": { "ports": [{ "name": "grpc", "port": 50051, "targetPort": 50051, "protocol": "TCP" }] },
    });
    greeter["metadata"]["managedFields"] = json!([{ "manager": "kubectl", "operation": "Apply" }]);
    let cart = json!({ "metadata": meta("shop", "cart", "11"), "spec": { "ports": [{ "name": "http-web", "port": 80, "targetPort": 8080 }] } });
    let slice = greeter_slice(
        "12",
        json!([
            { "addresses": ["10.0.0.1"], "conditions": { "ready": true }, "zone": "z1" },
            { "addresses": ["10.0.0.2"], "conditions": { "ready": false }, "zone": "z2" },
        ]),
    );
    let mut cart_slice = json!({
        "metadata": meta("shop", "cart-xyz", "13"), "addressType": "IPv4",
        "ports": [{ "name": "http-web", "port": 8080 }],
        "endpoints": [{ "addresses": ["10.1.0.1"], "conditions": { "ready": true } }],
    });
    cart_slice["metadata"]["labels"] = json!({ "kubernetes.io/service-name": "cart" });
    let settings =
        json!({ "metadata": meta("default", "settings", "14"), "data": { "retries": "3" } });
    let widget = json!({ "metadata": meta("default", "w1", "15"), "spec": { "size": 3 } });

    let mut moved = greeter_slice(
        "101",
        json!([
            { "addresses": ["10.0.0.1"], "conditions": { "ready": true }, "zone": "z1" },
            { "addresses": ["10.0.0.2"], "conditions": { "ready": false }, "zone": "z2" },
            { "addresses": ["10.0.0.3"], "conditions": { "ready": true }, "zone": "z2" },
        ]),
    );
    moved["apiVersion"] = json!("discovery.k8s.io/v1");
    moved["kind"] = json!("EndpointSlice");
    let mut deleted = settings.clone();
    deleted["metadata"]["resourceVersion"] = json!("102");
    deleted["apiVersion"] = json!("v1");
    deleted["kind"] = json!("ConfigMap");

    let (configmaps_up, list_up) = watch::channel(false);
    let routes = HashMap::from([
        // The Service watch ends once the gate opens; re-watching then fails once.
        (
            "/api/v1/services".to_owned(),
            route(
                list("Service", vec![greeter, cart]),
                None,
                vec![WatchReply::Events(vec![]), WatchReply::Fail(500)],
            ),
        ),
        (
            "/apis/discovery.k8s.io/v1/endpointslices".to_owned(),
            route(
                list("EndpointSlice", vec![slice, cart_slice]),
                None,
                vec![WatchReply::Events(vec![
                    json!({ "type": "MODIFIED", "object": moved }),
                ])],
            ),
        ),
        // ConfigMap lists fail until the test says otherwise; the watcher retries with backoff.
        (
            "/api/v1/configmaps".to_owned(),
            route(
                list("ConfigMap", vec![settings]),
                Some(list_up),
                vec![WatchReply::Events(vec![
                    json!({ "type": "DELETED", "object": deleted }),
                ])],
            ),
        ),
        (
            "/apis/example.com/v1/widgets".to_owned(),
            route(list("Widget", vec![widget]), None, vec![]),
        ),
    ]);
    let (gate_tx, gate) = watch::channel(false);
    let (server, addr) = FakeApiServer::start(routes, gate).await;

    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let config = KubernetesConfig {
        custom: vec![CustomResourceKind {
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            namespaced: true,
        }],
        ..KubernetesConfig::default()
    };
    // Wired by hand: the Kubernetes source alone against a fake API server, with no server.
    let store = Arc::new(InputStore::new());
    let source = KubernetesSource::new(client, &config, Arc::clone(&store));
    let health = source.health();
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    tokio::spawn(source.run(move |keys| changes_tx.send(keys).unwrap()));

    // 0. ConfigMaps cannot be listed: an ambient error, the source is not up, the rest is served.
    let mut rx = health.subscribe();
    let failing = status_where(&mut rx, |s| s.last_error.is_some()).await;
    assert!(!failing.connected);
    let error = failing.last_error.unwrap_or_default();
    assert!(
        error.contains("ConfigMap in all namespaces") && error.contains("500"),
        "{error}"
    );
    let others = tokio::time::timeout(Duration::from_secs(20), async {
        while store.len() < 7 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    others.await.expect("the other kinds are listed meanwhile");
    assert!(!health.is_connected() && store.get("k8s/ConfigMap", "default/settings").is_none());
    configmaps_up.send(true).unwrap();

    // 1. The initial lists: one document per object, plus a mesh Service per Service.
    status_where(&mut rx, |s| s.connected).await;
    let mut initial = BTreeSet::new();
    while let Ok(keys) = changes.try_recv() {
        initial.extend(keys);
    }
    let expected: BTreeSet<_> = [
        key("Service", "greeter"),
        key("Service", "shop.cart"),
        key("k8s/ConfigMap", "default/settings"),
        key("k8s/EndpointSlice", "default/greeter-abc"),
        key("k8s/EndpointSlice", "shop/cart-xyz"),
        key("k8s/Service", "default/greeter"),
        key("k8s/Service", "shop/cart"),
        key("k8s/Widget", "default/w1"),
    ]
    .into();
    assert_eq!(initial, expected);
    assert_eq!(store.len(), 8);

    let svc = doc(&store, "k8s/Service", "default/greeter").unwrap();
    assert_eq!(
        (svc["apiVersion"].as_str(), svc["kind"].as_str()),
        (Some("v1"), Some("Service")),
        "list items get their type back"
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], 50051);
    assert!(
        svc["metadata"].get("managedFields").is_none(),
        "managedFields are dropped: {svc}"
    );
    let w = doc(&store, "k8s/Widget", "default/w1").unwrap();
    assert_eq!(
        (w["apiVersion"].as_str(), w["spec"]["size"].as_i64()),
        (Some("example.com/v1"), Some(3))
    );
    assert_eq!(
        doc(&store, "k8s/ConfigMap", "default/settings").unwrap()["data"]["retries"],
        "3"
    );
    // The mesh plugin's `Service` shape: only ready endpoints, the slice's (target) port.
    assert_eq!(
        doc(&store, "Service", "greeter").unwrap(),
        json!({ "kind": "Service", "name": "greeter", "protocol": "grpc",
                "endpoints": [{ "address": "10.0.0.1", "port": 50051, "zone": "z1", "weight": 1 }] })
    );
    assert_eq!(
        doc(&store, "Service", "shop.cart").unwrap(),
        json!({ "kind": "Service", "name": "shop.cart", "protocol": "http",
                "endpoints": [{ "address": "10.1.0.1", "port": 8080, "weight": 1 }] })
    );

    // 2. Watch events: a slice gains a ready endpoint, a ConfigMap is deleted.
    gate_tx.send(true).unwrap();
    let mut calls = BTreeSet::new();
    while calls.len() < 2 {
        let keys = tokio::time::timeout(Duration::from_secs(20), changes.recv())
            .await
            .expect("no change after the watch events");
        calls.insert(keys.unwrap());
    }
    let want: BTreeSet<Vec<DocKey>> = [
        vec![
            key("Service", "greeter"),
            key("k8s/EndpointSlice", "default/greeter-abc"),
        ],
        vec![key("k8s/ConfigMap", "default/settings")],
    ]
    .into();
    assert_eq!(calls, want);
    assert!(store.get("k8s/ConfigMap", "default/settings").is_none());
    assert_eq!(
        doc(&store, "Service", "greeter").unwrap()["endpoints"],
        json!([{ "address": "10.0.0.1", "port": 50051, "zone": "z1", "weight": 1 },
               { "address": "10.0.0.3", "port": 50051, "zone": "z2", "weight": 1 }])
    );

    // 3. The Service watch ends and re-watching fails: an ambient error that keeps the documents.
    let down = status_where(&mut rx, |s| !s.connected).await;
    assert!(
        down.last_error
            .as_deref()
            .is_some_and(|e| e.contains("Service in all namespaces")),
        "{down:?}"
    );
    assert_eq!(store.len(), 7);
    assert!(store.get("k8s/Service", "default/greeter").is_some());
    assert_eq!(
        doc(&store, "Service", "greeter").unwrap()["endpoints"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        changes.try_recv().is_err(),
        "a failed watch changes no document"
    );

    let requests = server.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.starts_with("/api/v1/configmaps?") && !r.contains("watch="))
            .count()
            >= 2,
        "{requests:#?}"
    );
    assert!(requests.iter().any(
        |r| r.starts_with("/apis/discovery.k8s.io/v1/endpointslices?")
            && r.contains("resourceVersion=100")
    ));
}
