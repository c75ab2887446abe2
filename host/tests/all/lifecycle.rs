//! A node group lives while its nodes do, plus a grace period: pod churn leaves nothing
//! behind, a unary fetch creates no permanent group, a failed group reruns only when what it
//! read changes and never blocks a reload, and a node that comes back with other metadata is
//! computed from what it sends now.

use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds::cache::Cache;
use nebucloud_xds::inputs::{parse_documents, DocKey, Document, InputStore, InputView};
use nebucloud_xds::pipeline::{Pipeline, PipelineOptions};
use nebucloud_xds::plugins::{PluginChain, PluginSlots};
use nebucloud_xds::xds::{ByIdentity, NodeGrouping};
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use nebucloud_xds_proto::envoy::service::discovery::v3::DiscoveryRequest;
use nebucloud_xds_proto::google::protobuf::{value::Kind, ListValue, Struct, Value};
use tonic::Code;

use crate::plugins_runtime::{engine, load};
use crate::scripted::*;
use crate::support::app::{plugin_entry, ConfigDir};
use crate::support::{plugin_wasm, wait_until};

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

fn service(name: &str, port: u16) -> Vec<Document> {
    let yaml = format!(
        "kind: Service\nname: {name}\nprotocol: http\nendpoints:\n  - {{ address: 127.0.0.1, port: {port} }}\n"
    );
    parse_documents(std::path::Path::new("s.yaml"), &yaml).unwrap()
}

fn with_metadata(id: &str, key: &str, value: Value) -> Node {
    let mut metadata = Struct::default();
    metadata.fields.insert(key.into(), value);
    Node {
        metadata: Some(metadata),
        ..node(id)
    }
}

/// A node whose metadata limits the mesh plugin to `services`.
fn reading(id: &str, services: &[&str]) -> Node {
    let values = services
        .iter()
        .map(|s| Value {
            kind: Some(Kind::StringValue((*s).into())),
        })
        .collect();
    let list = Value {
        kind: Some(Kind::ListValue(ListValue { values })),
    };
    with_metadata(id, "services", list)
}

/// A node the mesh plugin refuses: its `services` metadata is not a list.
fn refused(id: &str) -> Node {
    with_metadata(
        id,
        "services",
        Value {
            kind: Some(Kind::NumberValue(5.0)),
        },
    )
}

/// The server as `serve` builds it, with the test as its input source: it writes the store
/// and tells the pipeline what changed.
struct Mesh {
    server: TestServer,
    pipeline: Pipeline,
    slots: PluginSlots,
    store: Arc<InputStore>,
    _dir: ConfigDir,
}

/// mesh.wasm behind a pipeline whose groups are forgotten `grace` after their last stream;
/// `group_by` as the config writes it.
async fn mesh(grace: Duration, group_by: &str) -> Mesh {
    let pipeline = format!("debounce_ms = 10\ngroup_grace_ms = {}\n", grace.as_millis());
    mesh_with(&pipeline, group_by).await
}

/// mesh.wasm with these `[pipeline]` keys.
async fn mesh_with(pipeline: &str, group_by: &str) -> Mesh {
    let dir = ConfigDir::new();
    let config = format!(
        "[xds]\ngroup_by = \"{group_by}\"\n\n[pipeline]\n{pipeline}\n{}",
        plugin_entry("mesh", &plugin_wasm("mesh"), "{}")
    );
    let server = dir.serve(&config).await;
    let store = Arc::clone(server.inputs());
    store.replace_source("a", service("a", 8001));
    store.replace_source("b", service("b", 8002));
    Mesh {
        pipeline: server.pipeline().clone(),
        slots: server.slots().clone(),
        server,
        store,
        _dir: dir,
    }
}

impl Mesh {
    /// Groups in the pipeline, entries in the cache, node records: what churn must not grow.
    fn state(&self) -> (usize, usize, usize) {
        (
            self.pipeline.group_count(),
            self.server.cache.groups().len(),
            self.server.server.nodes().len(),
        )
    }

    async fn wait_for_state(&self, want: (usize, usize, usize)) {
        wait_until(WAIT, POLL, async || {
            let now = self.state();
            anyhow::ensure!(
                now == want,
                "groups, cache entries, nodes: {now:?}, want {want:?}"
            );
            Ok(Some(()))
        })
        .await
        .unwrap();
    }

    fn runs(&self, group: &str) -> u64 {
        self.pipeline.group(group).map_or(0, |g| g.runs)
    }

    /// Waits until the pipeline has completed a batch after now.
    async fn next_batch(&self, trigger: impl FnOnce()) {
        let mut batches = self.pipeline.batches();
        let before = *batches.borrow_and_update();
        trigger();
        tokio::time::timeout(WAIT, batches.wait_for(|n| *n > before))
            .await
            .expect("a batch ran")
            .unwrap();
    }
}

/// The names of the clusters in a CDS response.
pub(crate) fn cluster_names(
    resp: &nebucloud_xds_proto::envoy::service::discovery::v3::DiscoveryResponse,
) -> Vec<String> {
    use prost::Message;
    resp.resources
        .iter()
        .map(|a| {
            nebucloud_xds_proto::envoy::config::cluster::v3::Cluster::decode(a.value.clone())
                .unwrap()
                .name
        })
        .collect()
}

/// Configured: the client got and ACKed its clusters.
pub(crate) async fn configured(client: &mut Sotw, names: &[&str]) {
    client.request(T_CLUSTER, &[], "", "").await;
    let r = client.recv().await;
    assert_eq!(cluster_names(&r), names);
    client.ack(&r, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churned_nodes_are_forgotten_after_the_grace_period_and_a_live_node_keeps_its_updates() {
    let mesh = mesh(Duration::from_millis(200), "identity").await;
    let mut live = Sotw::open(&mesh.server, reading("live", &["a"])).await;
    configured(&mut live, &["a"]).await;
    live.request(T_ENDPOINT, &["a"], "", "").await;
    let endpoints = live.recv().await;
    live.ack(&endpoints, &["a"]).await;
    let baseline = mesh.state();
    assert_eq!(baseline, (1, 1, 1));

    let channel = mesh.server.channel().await;
    for round in 0..3u64 {
        for batch in 0..5 {
            let clients = (0..200).map(|i| {
                let channel = channel.clone();
                async move {
                    let id = format!("pod-{round}-{batch}-{i}");
                    let mut c = Sotw::open_on(channel, reading(&id, &["b"])).await;
                    configured(&mut c, &["b"]).await;
                    c
                }
            });
            let open = futures::future::join_all(clients).await;
            assert!(mesh.state().2 > 200, "a node record per connected node");
            drop(open);
        }
        // Every churned group goes after the grace period; the live one stays.
        mesh.wait_for_state(baseline).await;
        assert_eq!(mesh.pipeline.evicted_groups(), (round + 1) * 1000);
    }

    // The live node still gets what it reads, at once.
    mesh.store.replace_source("a", service("a", 9001));
    mesh.pipeline
        .inputs_changed(vec![DocKey::new("Service", "a")]);
    let r = live.recv().await;
    assert_eq!(r.type_url, T_ENDPOINT, "the endpoint moved, nothing else");
    assert_ne!(
        r.version_info, endpoints.version_info,
        "a new version was pushed"
    );
}

#[tokio::test]
async fn a_group_is_forgotten_when_its_last_stream_closes_with_no_grace_and_computed_afresh() {
    let mesh = mesh(Duration::ZERO, "identity").await;
    let mut c = Sotw::open(&mesh.server, reading("n", &["a"])).await;
    configured(&mut c, &["a"]).await;
    drop(c);
    mesh.wait_for_state((0, 0, 0)).await;
    let mut c = Sotw::open(&mesh.server, reading("n", &["a"])).await;
    configured(&mut c, &["a"]).await;
    let group = ByIdentity.group_of(&reading("n", &["a"]));
    assert_eq!(mesh.runs(&group), 1, "a fresh group, computed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_makes_no_permanent_group_and_a_failed_group_neither_reruns_nor_blocks_a_reload() {
    let mesh = mesh(Duration::from_millis(500), "identity").await;
    let mut healthy = Sotw::open(&mesh.server, reading("healthy", &["a"])).await;
    configured(&mut healthy, &["a"]).await;

    let bad = refused("bad");
    let group = ByIdentity.group_of(&bad);
    let mut cds = ClusterDiscoveryServiceClient::new(mesh.server.channel().await);
    let fetch = DiscoveryRequest {
        node: Some(bad.clone()),
        ..DiscoveryRequest::default()
    };
    let status = cds.fetch_clusters(fetch.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let error = wait_until(WAIT, POLL, async || {
        Ok(mesh.pipeline.group(&group).and_then(|g| g.last_error))
    })
    .await
    .unwrap();
    assert!(error.contains("plugin mesh on node bad"), "{error}");

    // Repeated demands are coalesced: no run per fetch.
    for _ in 0..5 {
        let status = cds.fetch_clusters(fetch.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    assert_eq!(
        mesh.runs(&group),
        1,
        "a failed group is not rerun per fetch"
    );
    // It read nothing before failing: an input change does not rerun it.
    mesh.next_batch(|| {
        mesh.store.replace_source("b", service("b", 9002));
        mesh.pipeline
            .inputs_changed(vec![DocKey::new("Service", "b")]);
    })
    .await;
    assert_eq!(
        mesh.runs(&group),
        1,
        "a change it did not read does not rerun it"
    );

    // A group that already fails with the current chain cannot block a reload.
    let outcome = mesh.slots.reload("mesh", None).await;
    assert!(outcome.is_ok(), "{outcome:?}");

    // No stream holds it: it goes after the grace period, and only the healthy group stays.
    wait_until(WAIT, POLL, async || {
        Ok(mesh.pipeline.group(&group).is_none().then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(mesh.state(), (1, 1, 1));
}

#[tokio::test]
async fn a_node_that_comes_back_with_other_metadata_is_computed_from_what_it_sends_now() {
    let mesh = mesh(Duration::from_secs(60), "node-id").await;
    let mut first = Sotw::open(&mesh.server, reading("same-id", &["a"])).await;
    configured(&mut first, &["a"]).await;
    drop(first);
    let mut again = Sotw::open(&mesh.server, reading("same-id", &["b"])).await;
    configured(&mut again, &["b"]).await;
    // Another node of the group (by id, the same id) with yet other metadata.
    let mut third = Sotw::open(&mesh.server, reading("same-id", &["a", "b"])).await;
    configured(&mut third, &["a", "b"]).await;
}

#[tokio::test]
async fn past_max_groups_a_new_group_is_refused_naming_the_limit_until_one_is_forgotten() {
    let pipeline = "debounce_ms = 10\ngroup_grace_ms = 100\nmax_groups = 2\n";
    let mesh = mesh_with(pipeline, "identity").await;
    let mut first = Sotw::open(&mesh.server, reading("first", &["a"])).await;
    configured(&mut first, &["a"]).await;
    let mut second = Sotw::open(&mesh.server, reading("second", &["a"])).await;
    configured(&mut second, &["a"]).await;
    // A third identity: refused, by stream and by fetch; the first two are served meanwhile.
    let mut third = Sotw::open(&mesh.server, reading("third", &["a"])).await;
    third.request(T_CLUSTER, &[], "", "").await;
    let status = third.status().await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("pipeline.max_groups"),
        "{}",
        status.message()
    );
    let mut cds = ClusterDiscoveryServiceClient::new(mesh.server.channel().await);
    let fetch = DiscoveryRequest {
        node: Some(reading("fourth", &["a"])),
        ..DiscoveryRequest::default()
    };
    let status = cds.fetch_clusters(fetch).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(mesh.pipeline.group_count(), 2);
    // One leaves; after its grace the third is admitted.
    drop(second);
    wait_until(WAIT, POLL, async || {
        Ok((mesh.pipeline.group_count() == 1).then_some(()))
    })
    .await
    .unwrap();
    let mut third = Sotw::open(&mesh.server, reading("third", &["a"])).await;
    configured(&mut third, &["a"]).await;
    first.expect_quiet().await;
}

#[tokio::test]
async fn a_transiently_failing_group_is_retried_with_backoff_while_it_has_streams() {
    let dir = ConfigDir::new();
    let looping = plugin_entry("looping", &plugin_wasm("bad_endless_loop"), "{}");
    let config =
        format!("[xds]\ngroup_by = \"node-id\"\n\n{looping}limits = {{ deadline_ms = 20 }}\n");
    let server = dir.serve(&config).await;
    let pipeline = server.pipeline();
    let mut c = Sotw::open(&server, node("slow")).await;
    c.request(T_CLUSTER, &[], "", "").await;
    // Its deadline is hit every time, without any input change: it is retried (200, 400,
    // 800 ms, …), not left failed until something it read changes.
    let runs = wait_until(WAIT, POLL, async || {
        Ok(pipeline
            .group("slow")
            .filter(|g| g.runs >= 3)
            .map(|g| g.runs))
    })
    .await
    .unwrap();
    assert!(runs >= 3);
    let error = pipeline.group("slow").and_then(|g| g.last_error).unwrap();
    assert!(error.contains("deadline"), "{error}");
}

// Wired by hand: the pipeline alone, with no server, calling what a reload's canary calls.
#[tokio::test]
async fn a_result_computed_for_an_earlier_node_is_not_published_after_the_node_changed() {
    let engine = engine();
    let mesh_plugin = load(&engine, "mesh", serde_json::json!({}));
    let chain = PluginChain::new(vec![mesh_plugin]);
    let store = Arc::new(InputStore::new());
    store.replace_source("a", service("a", 8001));
    store.replace_source("b", service("b", 8002));
    let inputs = Arc::clone(&store) as Arc<dyn InputView>;
    let cache = Cache::new();
    let pipeline = Pipeline::start(
        cache.clone(),
        chain.clone(),
        Arc::clone(&inputs),
        PipelineOptions::default(),
    );
    let mut batches = pipeline.batches();
    let before = *batches.borrow_and_update();
    let earlier = reading("same", &["a"]);
    pipeline.stream_opened("g", &earlier).unwrap();
    tokio::time::timeout(WAIT, batches.wait_for(|n| *n > before))
        .await
        .unwrap()
        .unwrap();
    // A reload's canary computes for the node it saw; then the node comes back changed.
    let generation = pipeline.input_generation();
    let stale = chain.run(&earlier, Arc::clone(&inputs));
    let now = reading("same", &["b"]);
    pipeline.stream_opened("g", &now).unwrap();
    pipeline.install_chain(chain.clone(), generation, vec![("g".into(), stale)]);
    let want = chain.run(&now, Arc::clone(&inputs)).unwrap().resources;
    wait_until(WAIT, POLL, async || {
        Ok(cache
            .get("g")
            .filter(|s| s.version() == want.version())
            .map(|_| ()))
    })
    .await
    .expect("the changed node's own result");
    // And it stays: the stale result does not land after it (a batch takes well under this).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cache.get("g").unwrap().version(), want.version());
}
