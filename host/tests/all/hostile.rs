//! Hostile clients: each row of the "what a client does" table of issue 11, against the real
//! binary where its log and `/metrics` are what is at stake, in process where the protocol
//! is. Each is refused or answered as documented, the server's state and log stay bounded,
//! and other clients are served meanwhile.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nebucloud_xds_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::process::Child;
use tonic::transport::Channel;
use tonic::Code;

use crate::admin::{admin, services, start_logging, write_config};
use crate::lifecycle::configured;
use crate::scripted::*;
use crate::support::{free_port, wait_until, within};

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// The real binary with the mesh plugin over one service, logging to `dir/server.log`.
struct Binary {
    xds: u16,
    admin: u16,
    _child: Child,
}

impl Binary {
    async fn start(dir: &Path) -> Self {
        std::fs::create_dir(dir.join("inputs")).unwrap();
        std::fs::write(
            dir.join("inputs/services.yaml"),
            services("127.0.0.1", 8080),
        )
        .unwrap();
        write_config(dir, free_port());
        let (xds, admin_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = start_logging(dir, xds, admin_port, Stdio::from(log)).await;
        wait_until(WAIT, POLL, async || {
            Ok((admin(admin_port, "/readyz").await?.0 == 200).then_some(()))
        })
        .await
        .unwrap();
        Binary {
            xds,
            admin: admin_port,
            _child: child,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.xds))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A node that is configured: it got and ACKed its clusters.
    async fn configured_client(&self, id: &str) -> Sotw {
        let mut c = Sotw::open_on(self.channel().await, node(id)).await;
        configured(&mut c, &["web"]).await;
        c
    }
}

fn log_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("server.log")).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_flood_with_megabyte_details_keeps_the_log_and_the_records_small() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start(dir.path()).await;
    let mut nacker = server.configured_client("nacker").await;
    // A version to reject: a client that asks again by name gets an answer to NACK.
    nacker.request(T_CLUSTER, &["web"], "", "").await;
    let r = nacker.recv().await;
    let before = log_bytes(dir.path());
    let detail = format!("rejected: {}", "x".repeat(1 << 20));
    for _ in 0..100 {
        nacker.nack(&r, &["web"], "", &detail).await;
    }
    // Every NACK was taken (the stream is alive, the record counts them).
    let (_, nodes) = wait_until(WAIT, POLL, async || {
        let (status, body) = admin(server.admin, "/debug/nodes/nacker").await?;
        let json: serde_json::Value = serde_json::from_str(&body)?;
        let nacks = json["types"][T_CLUSTER]["nacks"].as_u64().unwrap_or(0);
        Ok((nacks == 100).then_some((status, json)))
    })
    .await
    .unwrap();
    let kept = nodes["types"][T_CLUSTER]["last_nack"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        kept.len() <= 8 << 10,
        "the stored detail is cut: {} bytes",
        kept.len()
    );
    assert!(kept.contains("truncated"), "and says so");
    let logged = log_bytes(dir.path()) - before;
    assert!(
        logged < 256 << 10,
        "100 NACKs of 1 MB each logged {logged} bytes"
    );
    // The others are served meanwhile.
    server.configured_client("bystander").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_type_urls_never_become_metric_labels() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start(dir.path()).await;
    let channel = server.channel().await;
    let filler = "y".repeat(1024);
    let mut streams = Vec::new();
    for s in 0..20 {
        let mut c = Sotw::open_on(channel.clone(), node(&format!("typer-{s}"))).await;
        for t in 0..64 {
            c.request(&format!("x/{t}{filler}"), &[], "", "").await;
        }
        // A type it does serve is still answered on the same stream.
        configured(&mut c, &["web"]).await;
        streams.push(c);
    }
    // The operator's CSDS view and the inputs, on the admin port.
    let (status, csds) = admin(server.admin, "/debug/csds").await.unwrap();
    assert_eq!(status, 200, "{csds}");
    let csds: serde_json::Value = serde_json::from_str(&csds).unwrap();
    let ids: Vec<&str> = csds["config"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["node"]["id"].as_str())
        .collect();
    assert!(ids.contains(&"typer-0"), "{ids:?}");
    let (_, inputs) = admin(server.admin, "/debug/inputs").await.unwrap();
    let inputs: serde_json::Value = serde_json::from_str(&inputs).unwrap();
    assert_eq!(inputs["documents"], 1);
    assert_eq!(inputs["conflicts"], serde_json::json!([]));
    let (_, text) = admin(server.admin, "/metrics").await.unwrap();
    assert!(
        !text.contains(&filler[..64]),
        "a client's type URL is a label"
    );
    assert!(
        text.len() < 256 << 10,
        "/metrics grew to {} bytes",
        text.len()
    );
    server.configured_client("bystander").await;
}

#[tokio::test]
async fn a_delta_request_of_fifty_thousand_held_names_is_answered_and_others_are_served_meanwhile()
{
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_ENDPOINT, "e-0", "e-0")]));
    let names: Vec<String> = (0..50_000).map(|i| format!("e-{i}")).collect();
    let mut big = Delta::open(&s, node("n1")).await;
    big.send(DeltaDiscoveryRequest {
        type_url: T_ENDPOINT.into(),
        resource_names_subscribe: names.clone(),
        initial_resource_versions: names.iter().map(|n| (n.clone(), "v0".into())).collect(),
        ..Default::default()
    })
    .await;
    let bystander = async {
        let mut c = Sotw::open(&s, node("n1")).await;
        c.request(T_ENDPOINT, &["e-0"], "", "").await;
        assert_eq!(sotw_names(&c.recv().await), ["e-0"]);
        Ok(())
    };
    within(WAIT, "the bystander", bystander).await.unwrap();
    let r = within(WAIT, "the 50,000-name answer", async {
        Ok(big.recv().await)
    })
    .await
    .unwrap();
    // The one that exists is sent (the client's version is not ours); the rest do not exist.
    assert_eq!(delta_names(&r), ["e-0"]);
    assert_eq!(r.removed_resources.len(), 49_999);
}

#[tokio::test]
async fn huge_resource_names_are_refused_naming_the_limit_and_hold_nothing() {
    let s = TestServer::start().await;
    s.cache.set("n1", set(vec![res(T_ENDPOINT, "a", "a")]));
    let mut healthy = Sotw::open(&s, node("n1")).await;
    healthy.request(T_ENDPOINT, &["a"], "", "").await;
    healthy.recv().await;
    let huge = "n".repeat(4 << 20);
    for _ in 0..3 {
        let mut c = Delta::open(&s, node("n2")).await;
        c.send(DeltaDiscoveryRequest {
            type_url: T_ENDPOINT.into(),
            resource_names_subscribe: vec![huge.clone()],
            ..Default::default()
        })
        .await;
        let status = c.status().await;
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("max_name_bytes"),
            "{}",
            status.message()
        );
        let mut c = Sotw::open(&s, node("n2")).await;
        c.send(DiscoveryRequest {
            type_url: T_ENDPOINT.into(),
            resource_names: vec![huge.clone()],
            ..Default::default()
        })
        .await;
        let status = c.status().await;
        assert_eq!(status.code(), Code::ResourceExhausted);
    }
    // Nothing of them is held: the node records went with the streams.
    wait_until(WAIT, POLL, async || {
        Ok((s.server.nodes().get("n2").is_none()).then_some(()))
    })
    .await
    .unwrap();
    s.cache.set("n1", set(vec![res(T_ENDPOINT, "a", "a2")]));
    assert_eq!(
        sotw_names(&healthy.recv().await),
        ["a2"],
        "the healthy stream still gets changes"
    );
}
