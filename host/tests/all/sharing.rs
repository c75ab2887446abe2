//! Sharing by what a run read: nodes that differ only in fields no plugin read share one
//! chain run (counted), a node that differs in a field a plugin read gets its own, a plugin
//! that reads a metadata key for some nodes only is handled by keying each result by what its
//! run read, the transport is such a field, an input change recomputes a shared result once,
//! a plugin built against contract 0.1.0 shares nothing, and a reload's trial blames a shared
//! failure as it would its own.

use std::time::Duration;

use nebucloud_xds::pipeline::GroupStatus;
use nebucloud_xds::plugins::{PluginLimits, PluginPlan};
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::google::protobuf::{value::Kind, Struct, Value};

use crate::lifecycle::{cluster_names, configured};
use crate::scripted::*;
use crate::support::app::{plugin_entry, ConfigDir};
use crate::support::{plugin_wasm, wait_until};

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A node of `cluster` with these metadata strings.
fn node_of(id: &str, cluster: &str, metadata: &[(&str, &str)]) -> Node {
    let fields = metadata
        .iter()
        .map(|(k, v)| {
            let value = Value {
                kind: Some(Kind::StringValue((*v).into())),
            };
            ((*k).to_owned(), value)
        })
        .collect();
    Node {
        id: id.into(),
        cluster: cluster.into(),
        metadata: Some(Struct { fields }),
        user_agent_name: "envoy".into(),
        ..Node::default()
    }
}

/// A server whose chain is `plugin` with `config`, grouped as shipped, over the inputs
/// directory `inputs` (given as (file, text)).
async fn serve(plugin: &str, config: &str, inputs: &[(&str, String)]) -> (TestServer, ConfigDir) {
    let dir = ConfigDir::new();
    for (name, text) in inputs {
        dir.write_input(name, text);
    }
    let text = format!(
        "[pipeline]\ndebounce_ms = 10\n\n[inputs]\ndir = \"inputs\"\n\n{}",
        plugin_entry(plugin, &plugin_wasm(plugin), config)
    );
    let server = dir.serve(&text).await;
    (server, dir)
}

/// Every group, once each has a result.
async fn groups(server: &TestServer, n: usize) -> Vec<GroupStatus> {
    wait_until(WAIT, POLL, async || {
        let groups = server.pipeline().groups();
        let done = groups
            .iter()
            .filter(|g| g.runs + g.shared_results > 0)
            .count();
        anyhow::ensure!(groups.len() == n && done == n, "{groups:#?}");
        Ok(Some(groups))
    })
    .await
    .unwrap()
}

fn runs(groups: &[GroupStatus]) -> u64 {
    groups.iter().map(|g| g.runs).sum()
}

fn of<'a>(groups: &'a [GroupStatus], node: &str) -> &'a GroupStatus {
    groups.iter().find(|g| g.node_id == node).unwrap()
}

#[tokio::test]
async fn nodes_share_a_run_unless_they_differ_in_a_field_it_read() {
    let (server, _dir) = serve("reader", "{}", &[]).await;
    // Cluster `api`: the plugin reads the cluster only. Ids, metadata and locality differ.
    let api = [
        node_of("api-1", "api", &[("tier", "gold")]),
        node_of("api-2", "api", &[("tier", "silver"), ("zone", "z1")]),
        node_of("api-3", "api", &[]),
    ];
    let mut clients = Vec::new();
    for n in api {
        let mut c = Sotw::open(&server, n).await;
        configured(&mut c, &["api"]).await;
        clients.push(c);
    }
    let g = groups(&server, 3).await;
    assert_eq!(runs(&g), 1, "one run for three nodes: {g:#?}");
    assert!(
        g.iter()
            .all(|g| g.node_reads == ["cluster"] && g.sharing == 3),
        "{g:#?}"
    );

    // Cluster `web`: the plugin reads `tier` too, so it splits them by tier, and only by it.
    for (id, tier, want) in [
        ("web-1", "gold", "web-gold"),
        ("web-2", "gold", "web-gold"),
        ("web-3", "silver", "web-silver"),
    ] {
        let mut c = Sotw::open(&server, node_of(id, "web", &[("tier", tier), ("x", id)])).await;
        configured(&mut c, &[want]).await;
        clients.push(c);
    }
    let g = groups(&server, 6).await;
    assert_eq!(runs(&g), 3, "api, web-gold, web-silver: {g:#?}");
    let web = of(&g, "web-2");
    assert_eq!(web.node_reads, ["cluster", "metadata.tier"]);
    assert_eq!((web.shared_results, web.sharing), (1, 2));
    assert_eq!(of(&g, "web-3").sharing, 1);
    // An `api` node with a tier still shares the `api` result: that run never read the tier.
    let mut c = Sotw::open(&server, node_of("api-4", "api", &[("tier", "bronze")])).await;
    configured(&mut c, &["api"]).await;
    let g = groups(&server, 7).await;
    assert_eq!(runs(&g), 3, "{g:#?}");
}

#[tokio::test]
async fn the_transport_is_a_field_a_plugin_reads_and_each_transport_gets_its_own_config() {
    let (server, _dir) = serve("reader", "{ transport = true }", &[]).await;
    let node = node_of("same", "api", &[]);
    let mut sotw = Sotw::open(&server, node.clone()).await;
    configured(&mut sotw, &["api-ads-sotw"]).await;
    let mut delta = Delta::open(&server, node).await;
    delta.subscribe(T_CLUSTER, &[], &[]).await;
    let r = delta.recv().await;
    let names: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["api-ads-delta"]);
    let g = groups(&server, 2).await;
    assert_eq!(runs(&g), 2, "{g:#?}");
    let transports: Vec<&str> = g.iter().map(|g| g.transport.as_str()).collect();
    assert_eq!(transports, ["ADS SotW", "ADS Delta"]);
    assert!(
        g.iter().all(|g| g.node_reads == ["cluster", "transport"]),
        "{g:#?}"
    );
}

#[tokio::test]
async fn an_input_change_recomputes_a_shared_result_once_and_every_node_gets_it() {
    let (server, dir) = serve("mesh", "{}", &[("a.yaml", service_yaml("a", 8001))]).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = Sotw::open(&server, node_of(&format!("n{i}"), "x", &[])).await;
        c.request(T_CLUSTER, &[], "", "").await;
        wait_for_cluster(&mut c, "a").await;
        clients.push(c);
    }
    let before = runs(&groups(&server, 5).await);
    assert_eq!(before, 1, "five nodes that mesh sees alike");
    // A real file edit: the inputs watch sees it.
    dir.write_input("b.yaml", &service_yaml("b", 8002));
    for c in &mut clients {
        let r = c.recv().await;
        assert_eq!(cluster_names(&r), ["a", "b"]);
    }
    let after = runs(&groups(&server, 5).await);
    assert_eq!(after, 2, "one more run for the change, shared by all five");
}

#[tokio::test]
async fn a_plugin_built_against_contract_0_1_reads_every_field_and_shares_nothing() {
    let (server, _dir) = serve("legacy", "{}", &[]).await;
    for id in ["old-1", "old-2"] {
        let mut c = Sotw::open(&server, node_of(id, "api", &[])).await;
        configured(&mut c, &["api"]).await;
    }
    let g = groups(&server, 2).await;
    assert_eq!(runs(&g), 2, "{g:#?}");
    assert!(
        g.iter().all(|g| g.node_reads == ["*"] && g.sharing == 1),
        "{g:#?}"
    );
}

fn service_yaml(name: &str, port: u16) -> String {
    format!(
        "kind: Service\nname: {name}\nprotocol: http\nendpoints:\n  - {{ address: 127.0.0.1, port: {port} }}\n"
    )
}

/// Reads responses (ACKing each) until one lists cluster `name`.
async fn wait_for_cluster(c: &mut Sotw, name: &str) {
    loop {
        let r = c.recv().await;
        c.ack(&r, &[]).await;
        if cluster_names(&r).iter().any(|n| n == name) {
            return;
        }
    }
}

/// A reload's trial shares results too, and a failure it shares is held against each group
/// that takes it as if it had run there: a new chain that fails for a cluster is refused when
/// any node of that cluster works now, even if the failure was first computed for a node the
/// current chain fails too.
#[tokio::test]
async fn a_trial_holds_a_shared_failure_against_every_group_that_works_now() {
    let (server, _dir) = serve("mesh", "{}", &[("a.yaml", service_yaml("a", 8001))]).await;
    let bad_services = Value {
        kind: Some(Kind::NumberValue(5.0)),
    };
    let mut clients = Vec::new();
    let channel = server.channel().await;
    // Many that fail now, so that the trial most likely meets one before the one that works
    // (it goes through the groups in no set order).
    for i in 0..29 {
        let mut n = node_of(&format!("bad-{i}"), "web", &[]);
        n.metadata = Some(Struct {
            fields: [("services".to_owned(), bad_services.clone())].into(),
        });
        let mut c = Sotw::open_on(channel.clone(), n).await;
        c.request(T_CLUSTER, &[], "", "").await;
        clients.push(c);
    }
    let mut good = Sotw::open(&server, node_of("good", "web", &[])).await;
    configured(&mut good, &["a"]).await;
    let g = groups(&server, 30).await;
    let failing = g.iter().filter(|g| g.last_error.is_some()).count();
    assert_eq!(failing, 29, "{g:#?}");

    let plan = |name: &str, wasm: &str, config: serde_json::Value| PluginPlan {
        name: name.into(),
        path: plugin_wasm(wasm),
        config,
        limits: PluginLimits::default(),
    };
    let chain = vec![
        plan(
            "reader",
            "reader",
            serde_json::json!({"fail_cluster": "web"}),
        ),
        plan("mesh", "mesh", serde_json::json!({})),
    ];
    let refused = server.slots().reconfigure(chain).await.unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("canary on group good") && message.contains("on node good"),
        "{message}"
    );
}

/// What a node is served with sharing is what a run of the chain for that node alone gives:
/// for Envoys and gRPC clients with and without metadata, each group's set equals a fresh
/// per-node run's, resource for resource.
#[tokio::test]
async fn a_shared_result_is_what_a_run_for_the_node_alone_gives() {
    let (server, _dir) = serve(
        "mesh",
        "{}",
        &[
            ("a.yaml", service_yaml("a", 8001)),
            ("b.yaml", service_yaml("b", 8002)),
        ],
    )
    .await;
    let channel = server.channel().await;
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(node_of(&format!("envoy-{i}"), "web", &[("zone", "z1")]));
        let mut grpc = node_of(&format!("grpc-{i}"), "api", &[]);
        grpc.user_agent_name = "gRPC Python".into();
        nodes.push(grpc);
    }
    let mut only_b = node_of("envoy-b", "web", &[]);
    only_b.metadata = Some(Struct {
        fields: [(
            "services".to_owned(),
            Value {
                kind: Some(Kind::ListValue(
                    nebucloud_xds_proto::google::protobuf::ListValue {
                        values: vec![Value {
                            kind: Some(Kind::StringValue("b".into())),
                        }],
                    },
                )),
            },
        )]
        .into(),
    });
    nodes.push(only_b);
    let mut clients = Vec::new();
    for n in &nodes {
        let mut c = Sotw::open_on(channel.clone(), n.clone()).await;
        c.request(T_CLUSTER, &[], "", "").await;
        c.recv().await;
        clients.push(c);
    }
    let g = groups(&server, nodes.len()).await;
    assert!(runs(&g) < nodes.len() as u64, "some were shared: {g:#?}");
    let chain = server.pipeline().chain();
    let inputs = server.pipeline().inputs();
    for status in &g {
        let node = nodes.iter().find(|n| n.id == status.node_id).unwrap();
        let alone = chain.run(node, inputs.clone()).unwrap().resources;
        let served = server.cache.get(&status.group).unwrap();
        let versions = |set: &nebucloud_xds::ResourceSet| {
            set.iter()
                .map(|r| {
                    (
                        r.type_url().to_owned(),
                        r.name().to_owned(),
                        r.version().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(&served), versions(&alone), "{}", status.node_id);
    }
}
