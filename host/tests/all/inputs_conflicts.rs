//! One document defined by two sources (a file and a real etcd key): two replicas that saw
//! the definitions in opposite orders serve identical versions, show the same conflict, and
//! fall back to the remaining definition when either one is deleted.

use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds::inputs::{InputStore, SourceHealth};
use nebucloud_xds::pipeline::Pipeline;
use nebucloud_xds_proto::envoy::config::core::v3::Node;

use crate::inputs_etcd::{port_of, served_versions, service, start_source, until};
use crate::real_plugins::mesh_server;
use crate::scripted::TestServer;
use crate::support::app::ConfigDir;
use crate::support::etcd::Etcd;
use crate::support::{free_port, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
const WEB: &str = "/nx/services/web";

/// One host as `serve` builds it: the mesh chain over a store that its inputs directory and
/// (once started) etcd feed.
struct Replica {
    server: TestServer,
    pipeline: Pipeline,
    store: Arc<InputStore>,
    dir: ConfigDir,
}

impl Replica {
    async fn start(listener: u16) -> Replica {
        let dir = ConfigDir::new();
        let server = mesh_server(listener, &dir).await;
        Replica {
            pipeline: server.pipeline().clone(),
            store: Arc::clone(server.inputs()),
            server,
            dir,
        }
    }

    /// Writes this replica's copy of `name` into the inputs directory the server watches.
    fn write_file(&self, name: &str, text: &str) {
        self.dir.write_input(name, text);
    }

    /// Starts the etcd source by hand, not from `[inputs] etcd`: the test chooses which source
    /// a replica sees first.
    async fn watch_etcd(&self, etcd: &Etcd) -> SourceHealth {
        let health = start_source(etcd.endpoint(), &self.store, Some(self.pipeline.clone()));
        until(&health, "first sync", |s| s.connected).await;
        health
    }

    /// Waits until the store holds `web` at `port` with `conflicts` conflicts, and the served
    /// versions have moved past `before` (when given).
    async fn holds(&self, port: u64, conflicts: usize, before: Option<&Vec<String>>) {
        let got = wait_until(WAIT, POLL, async || {
            Ok((port_of(&self.store, "web") == Some(port)
                && self.store.conflicts().len() == conflicts
                && before.is_none_or(|b| self.server.versions() != *b))
            .then_some(()))
        })
        .await;
        got.unwrap_or_else(|e| {
            panic!(
                "web never at {port} with {conflicts} conflicts: {e}; web at {:?}, {:?}",
                port_of(&self.store, "web"),
                self.store.conflicts()
            )
        });
    }
}

fn node() -> Node {
    Node {
        id: "conflict-test".into(),
        cluster: "test".into(),
        user_agent_name: "envoy".into(),
        ..Node::default()
    }
}

#[tokio::test]
async fn replicas_that_saw_two_definitions_in_opposite_orders_serve_identical_versions() {
    let etcd = Etcd::start().await.unwrap();
    let listener = free_port();
    let (from_file, from_etcd) = (service("web", 8080), service("web", 9090));

    // Replica one reads the file first, then etcd.
    let one = Replica::start(listener).await;
    one.write_file("web.yaml", &from_file);
    one.holds(8080, 0, None).await;
    etcd.put(WEB, &from_etcd).await.unwrap();
    one.watch_etcd(&etcd).await;
    one.holds(9090, 1, None).await;

    // Replica two reads etcd first, then its copy of the file.
    let two = Replica::start(listener).await;
    two.watch_etcd(&etcd).await;
    two.holds(9090, 0, None).await;
    two.write_file("web.yaml", &from_file);
    two.holds(9090, 1, None).await;

    let conflicts = one.store.conflicts();
    assert_eq!(
        conflicts,
        two.store.conflicts(),
        "replicas report one conflict"
    );
    assert_eq!(conflicts[0].winner, format!("etcd:{WEB}"), "{conflicts:?}");
    assert_eq!(conflicts[0].sources[1], "file:web.yaml", "{conflicts:?}");
    let first = served_versions(&one.server, node()).await;
    assert_eq!(
        first,
        served_versions(&two.server, node()).await,
        "replicas disagree"
    );

    // Deleting the winning definition falls back to the file's, on both.
    let before = [one.server.versions(), two.server.versions()];
    etcd.delete(WEB).await.unwrap();
    one.holds(8080, 0, Some(&before[0])).await;
    two.holds(8080, 0, Some(&before[1])).await;
    let second = served_versions(&one.server, node()).await;
    assert_eq!(second, served_versions(&two.server, node()).await);
    assert_ne!(first["eds"], second["eds"], "the fallback shows in EDS");

    // And deleting the file while etcd defines it again keeps etcd's.
    let before = [one.server.versions(), two.server.versions()];
    etcd.put(WEB, &service("web", 9091)).await.unwrap();
    one.holds(9091, 1, Some(&before[0])).await;
    two.holds(9091, 1, Some(&before[1])).await;
    let before = [one.server.versions(), two.server.versions()];
    for r in [&one, &two] {
        std::fs::remove_file(r.dir.input("web.yaml")).unwrap();
    }
    one.holds(9091, 0, None).await;
    two.holds(9091, 0, None).await;
    assert_eq!(
        [one.server.versions(), two.server.versions()],
        before,
        "dropping the losing definition changes no served version"
    );
    assert_eq!(
        served_versions(&one.server, node()).await,
        served_versions(&two.server, node()).await
    );
}
