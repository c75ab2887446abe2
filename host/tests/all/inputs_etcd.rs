//! The etcd input source against a real etcd: changes reach a real Envoy, an etcd outage or
//! restart loses nothing, replicas on one etcd serve identical versions, and a broken value
//! keeps its key's last documents.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nebucloud_xds::inputs::{
    DocKey, EtcdSource, InputStore, InputView, SourceHealth, SourceStatus,
};
use nebucloud_xds::pipeline::Pipeline;
use nebucloud_xds_proto::envoy::config::cluster::v3::Cluster;
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use prost::Message;

use crate::real_plugins::{mesh_config, mesh_server};
use crate::scripted::{Sotw, TestServer, T_CLUSTER, T_ENDPOINT, T_LISTENER, T_ROUTE};
use crate::support::app::ConfigDir;
use crate::support::backend::HttpBackend;
use crate::support::envoy::{Envoy, XdsMode};
use crate::support::etcd::{Etcd, Partition};
use crate::support::{free_port, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
const WEB: &str = "/nx/services/web";

pub(crate) fn service(name: &str, port: u16) -> String {
    format!("kind: Service\nname: {name}\nprotocol: http\nendpoints:\n  - {{address: 127.0.0.1, port: {port}, zone: a}}\n")
}

/// Runs a source for `endpoint` into `store`, feeding `pipeline` if given.
pub(crate) fn start_source(
    endpoint: String,
    store: &Arc<InputStore>,
    pipeline: Option<Pipeline>,
) -> SourceHealth {
    let source = EtcdSource::new(vec![endpoint], "/nx/".into(), Arc::clone(store));
    let health = source.health();
    tokio::spawn(source.run(move |keys| {
        if let Some(p) = &pipeline {
            p.inputs_changed(keys);
        }
    }));
    health
}

pub(crate) async fn until(
    health: &SourceHealth,
    what: &str,
    holds: impl Fn(&SourceStatus) -> bool,
) -> SourceStatus {
    let got = wait_until(WAIT, POLL, async || {
        Ok(Some(health.status()).filter(|s| holds(s)))
    })
    .await;
    got.unwrap_or_else(|e| panic!("{what}: {e}; status {:?}", health.status()))
}

pub(crate) fn port_of(store: &InputStore, name: &str) -> Option<u64> {
    let doc = store.get("Service", name)?;
    let json: serde_json::Value = serde_json::from_str(&doc.json).ok()?;
    json["endpoints"][0]["port"].as_u64()
}

async fn envoy_reaches(port: u16, envoy: &Envoy, tag: &str) -> Duration {
    let started = Instant::now();
    let got = wait_until(WAIT, POLL, async || {
        Ok(Some(Envoy::ok_body(port, "/web/x").await?).filter(|b| b == tag))
    })
    .await;
    got.unwrap_or_else(|e| panic!("Envoy never reached {tag}: {e}\n{}", envoy.log_tail()));
    started.elapsed()
}

/// etcd holding service `web` at backend web-1, the mesh plugin's server fed by a source on
/// it, and a real Envoy that reaches web-1 through it; web-2 waits for a change.
struct EtcdMesh {
    etcd: Etcd,
    web1: HttpBackend,
    web2: HttpBackend,
    store: Arc<InputStore>,
    listener: u16,
    server: TestServer,
    pipeline: Pipeline,
    health: SourceHealth,
    envoy: Envoy,
    _dir: ConfigDir,
}

async fn etcd_mesh() -> EtcdMesh {
    let etcd = Etcd::start().await.unwrap();
    let (web1, web2) = (
        HttpBackend::start("web-1").await.unwrap(),
        HttpBackend::start("web-2").await.unwrap(),
    );
    etcd.put(WEB, &service("web", web1.port())).await.unwrap();
    let listener = free_port();
    let dir = ConfigDir::new();
    let server = mesh_server(listener, &dir).await;
    let (store, pipeline) = (Arc::clone(server.inputs()), server.pipeline().clone());
    // Its etcd source started by hand, not from `[inputs] etcd`: the tests hold its health.
    let health = start_source(etcd.endpoint(), &store, Some(pipeline.clone()));
    until(&health, "first sync", |s| s.connected).await;
    let envoy = Envoy::start(server.addr.port(), "envoy-etcd", XdsMode::SotwAds)
        .await
        .unwrap();
    envoy_reaches(listener, &envoy, "web-1").await;
    EtcdMesh {
        etcd,
        web1,
        web2,
        store,
        listener,
        server,
        pipeline,
        health,
        envoy,
        _dir: dir,
    }
}

#[tokio::test]
async fn etcd_update_reaches_a_real_envoy() {
    // The server and its config directory stay bound: dropped, the server stops.
    let EtcdMesh {
        etcd,
        web2,
        listener,
        envoy,
        server: _server,
        _dir,
        ..
    } = etcd_mesh().await;
    etcd.put(WEB, &service("web", web2.port())).await.unwrap();
    let took = envoy_reaches(listener, &envoy, "web-2").await;
    eprintln!("etcd put -> Envoy routes to the new backend: {took:?}");
}

#[tokio::test]
async fn etcd_restart_loses_nothing_and_the_host_recovers() {
    let EtcdMesh {
        mut etcd,
        web1,
        web2,
        store,
        listener,
        server,
        pipeline,
        health,
        envoy,
        _dir,
    } = etcd_mesh().await;
    let before = server.versions();

    etcd.stop();
    let stopped = Instant::now();
    let down = until(&health, "the outage is noticed", |s| !s.connected).await;
    eprintln!(
        "etcd killed -> source reports it down: {:?}",
        stopped.elapsed()
    );
    let error = down.last_error.unwrap();
    assert!(
        error.contains(&etcd.endpoint()),
        "the error names the endpoint: {error}"
    );
    // Several retries pass while etcd is away: nothing is lost, nothing recomputes, Envoy serves.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            port_of(&store, "web"),
            Some(u64::from(web1.port())),
            "the store keeps the last documents"
        );
        assert_eq!(
            Envoy::ok_body(listener, "/web/x").await.unwrap(),
            "web-1",
            "Envoy keeps working"
        );
    }
    assert_eq!(server.versions(), before, "an outage publishes nothing");
    assert!(pipeline.groups().iter().all(|g| g.last_error.is_none()));
    assert!(!health.is_connected());

    eprintln!("while away: {:?}", health.status().last_error);
    let restarting = Instant::now();
    etcd.restart().await.unwrap();
    let ready = restarting.elapsed();
    until(&health, "reconnect after the restart", |s| {
        s.connected && s.syncs >= 2
    })
    .await;
    eprintln!(
        "etcd restart: ready in {ready:?}, source synced again {:?} after the restart began",
        restarting.elapsed()
    );
    assert_eq!(
        port_of(&store, "web"),
        Some(u64::from(web1.port())),
        "the data dir survived the restart"
    );
    etcd.put(WEB, &service("web", web2.port())).await.unwrap();
    let took = envoy_reaches(listener, &envoy, "web-2").await;
    eprintln!("put after the restart -> Envoy: {took:?}");
}

#[tokio::test]
async fn keys_deleted_while_the_source_was_cut_off_are_removed_when_it_returns() {
    let etcd = Etcd::start().await.unwrap();
    let mut proxy = Partition::new(&etcd).await.unwrap();
    etcd.put("/nx/services/a", &service("a", 1001))
        .await
        .unwrap();
    etcd.put("/nx/services/b", &service("b", 1002))
        .await
        .unwrap();
    // Wired by hand: the etcd source alone, into a store, with no server.
    let store = Arc::new(InputStore::new());
    let health = start_source(proxy.endpoint(), &store, None);
    until(&health, "first sync", |s| s.connected).await;
    assert_eq!(store.list("Service").len(), 2);

    proxy.cut();
    until(&health, "the cut is noticed", |s| !s.connected).await;
    etcd.delete("/nx/services/b").await.unwrap();
    etcd.put("/nx/services/c", &service("c", 1003))
        .await
        .unwrap();
    proxy.heal().await.unwrap();
    until(&health, "reconnect", |s| s.connected && s.syncs >= 2).await;
    let names: Vec<String> = store.list("Service").into_iter().map(|d| d.name).collect();
    assert_eq!(names, vec!["a", "c"]);
}

/// What a scripted ADS client with `node` is served: the version of each type.
pub(crate) async fn served_versions(
    server: &TestServer,
    node: Node,
) -> BTreeMap<&'static str, String> {
    let mut ads = Sotw::open(server, node).await;
    ads.request(T_CLUSTER, &[], "", "").await;
    let clusters = ads.recv().await;
    let names: Vec<String> = clusters
        .resources
        .iter()
        .map(|a| Cluster::decode(&a.value[..]).unwrap().name)
        .collect();
    assert!(!names.is_empty(), "the mesh chain served no cluster");
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    ads.request(T_ENDPOINT, &names, "", "").await;
    let endpoints = ads.recv().await;
    ads.request(T_LISTENER, &[], "", "").await;
    let listeners = ads.recv().await;
    ads.request(T_ROUTE, &["ingress"], "", "").await;
    let routes = ads.recv().await;
    [clusters, endpoints, listeners, routes]
        .into_iter()
        .map(|r| (type_name(&r.type_url), r.version_info))
        .collect()
}

fn type_name(type_url: &str) -> &'static str {
    [
        (T_CLUSTER, "cds"),
        (T_ENDPOINT, "eds"),
        (T_LISTENER, "lds"),
        (T_ROUTE, "rds"),
    ]
    .into_iter()
    .find_map(|(t, n)| (t == type_url).then_some(n))
    .unwrap_or("other")
}

#[tokio::test]
async fn two_replicas_on_one_etcd_serve_identical_versions() {
    let etcd = Etcd::start().await.unwrap();
    etcd.put(WEB, &service("web", 8080)).await.unwrap();
    etcd.put("/nx/services/api", &service("api", 8081))
        .await
        .unwrap();
    let listener = free_port();
    let mut replicas = Vec::new();
    let mut dirs = Vec::new();
    let from_etcd = format!(
        "etcd = {{ endpoints = [\"{}\"], prefix = \"/nx/\" }}\n",
        etcd.endpoint()
    );
    for _ in 0..2 {
        let dir = ConfigDir::new();
        let server = dir.serve(&mesh_config(listener, &from_etcd)).await;
        let store = Arc::clone(server.inputs());
        // The first sync: both services are in.
        wait_until(WAIT, POLL, async || {
            Ok(
                (port_of(&store, "web").is_some() && port_of(&store, "api").is_some())
                    .then_some(()),
            )
        })
        .await
        .unwrap();
        replicas.push((server, store));
        dirs.push(dir);
    }
    let node = || Node {
        id: "replica-test".into(),
        cluster: "test".into(),
        user_agent_name: "envoy".into(),
        ..Node::default()
    };
    let first = served_versions(&replicas[0].0, node()).await;
    assert_eq!(
        first,
        served_versions(&replicas[1].0, node()).await,
        "replicas disagree"
    );
    assert_eq!(first.len(), 4);

    // After a change both converge on the same new versions.
    let published: Vec<_> = replicas.iter().map(|(s, _)| s.versions()).collect();
    etcd.put(WEB, &service("web", 9090)).await.unwrap();
    for ((server, store), before) in replicas.iter().zip(&published) {
        wait_until(WAIT, POLL, async || {
            Ok((port_of(store, "web") == Some(9090) && server.versions() != *before).then_some(()))
        })
        .await
        .unwrap();
    }
    let second = served_versions(&replicas[0].0, node()).await;
    assert_eq!(
        second,
        served_versions(&replicas[1].0, node()).await,
        "replicas disagree after a change"
    );
    assert_ne!(
        first["eds"], second["eds"],
        "the endpoint change must show in EDS"
    );
    assert_eq!(first["cds"], second["cds"], "clusters did not change");
}

#[tokio::test]
async fn a_broken_value_keeps_its_keys_last_documents_and_the_error_names_the_key() {
    let etcd = Etcd::start().await.unwrap();
    etcd.put(WEB, &service("web", 1001)).await.unwrap();
    // Wired by hand: the etcd source alone, recording what it would tell the pipeline.
    let store = Arc::new(InputStore::new());
    let changes = Arc::new(Mutex::new(Vec::new()));
    let source = EtcdSource::new(vec![etcd.endpoint()], "/nx/".into(), Arc::clone(&store));
    let health = source.health();
    let seen = Arc::clone(&changes);
    tokio::spawn(source.run(move |keys| seen.lock().unwrap().extend(keys)));
    until(&health, "first sync", |s| s.connected).await;

    etcd.put(WEB, "kind: Service\nname: [web\n").await.unwrap();
    let status = until(&health, "the broken value is reported", |s| {
        !s.invalid.is_empty()
    })
    .await;
    let reason = &status.invalid[WEB];
    assert!(reason.contains("line"), "the reason says where: {reason}");
    assert!(status.connected, "a broken value is not an outage");
    assert_eq!(
        port_of(&store, "web"),
        Some(1001),
        "the key keeps its last documents"
    );

    // Other keys keep flowing, and fixing the value clears the error.
    etcd.put("/nx/services/api", &service("api", 1002))
        .await
        .unwrap();
    etcd.put(WEB, &service("web", 1003)).await.unwrap();
    until(&health, "the fix is taken", |s| s.invalid.is_empty()).await;
    wait_until(WAIT, POLL, async || {
        Ok(
            (port_of(&store, "web") == Some(1003) && port_of(&store, "api") == Some(1002))
                .then_some(()),
        )
    })
    .await
    .unwrap();
    let keys = changes.lock().unwrap().clone();
    assert!(keys.contains(&DocKey::new("Service", "api")), "{keys:?}");
}
