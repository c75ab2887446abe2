//! Who may read what through CSDS on the xDS port: under mutual TLS with node authorization a
//! client sees only the nodes its certificate allows; elsewhere than a loopback listener CSDS
//! is off unless configured; secret bodies are never shown unless configured.

use nebucloud_xds::xds::CsdsAccess;
use nebucloud_xds_proto::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use nebucloud_xds_proto::envoy::service::status::v3::{ClientStatusRequest, ClientStatusResponse};
use nebucloud_xds_proto::type_url::SECRET;
use tonic::transport::Channel;
use tonic::Code;

use crate::scripted::*;
use crate::tls_limits::{tls_channel, Pki};
use crate::xds_port_services::only;

fn ids(r: &ClientStatusResponse) -> Vec<String> {
    r.config
        .iter()
        .filter_map(|c| c.node.as_ref().map(|n| n.id.clone()))
        .collect()
}

async fn csds(
    channel: Channel,
    req: ClientStatusRequest,
) -> Result<ClientStatusResponse, tonic::Status> {
    ClientStatusDiscoveryServiceClient::new(channel)
        .fetch_client_status(req)
        .await
        .map(tonic::Response::into_inner)
}

/// A stream of `id` over its own certificate, holding its clusters and secrets.
async fn connected(s: &TestServer, pki: &Pki, id: &str) -> (Channel, Sotw) {
    let channel = tls_channel(
        s.addr.port(),
        &pki.path("ca.pem"),
        Some((
            &pki.path(&format!("{id}.pem")),
            &pki.path(&format!("{id}.key")),
        )),
    )
    .await
    .unwrap();
    let mut c = Sotw::open_on(channel.clone(), node(id)).await;
    for t in [T_CLUSTER, SECRET] {
        c.request(t, &[], "", "").await;
        let r = c.recv().await;
        c.ack(&r, &[]).await;
    }
    (channel, c)
}

#[tokio::test]
async fn under_mtls_a_client_reads_through_csds_only_the_nodes_its_certificate_allows() {
    let pki = Pki::new(&["node-a", "node-b"]);
    let s = TestServer::start_with(|b| b.tls(pki.settings())).await;
    for id in ["node-a", "node-b"] {
        s.cache.set(
            id,
            set(vec![
                res(T_CLUSTER, "c", id),
                res(SECRET, "key", "private-key-bytes"),
            ]),
        );
    }
    let (a, _sa) = connected(&s, &pki, "node-a").await;
    let (b, _sb) = connected(&s, &pki, "node-b").await;

    // node-b sees itself, never node-a: not with {} and not naming node-a exactly.
    let all = csds(b.clone(), ClientStatusRequest::default())
        .await
        .unwrap();
    assert_eq!(ids(&all), ["node-b"]);
    let named = csds(b, only("node-a")).await.unwrap();
    assert!(
        ids(&named).is_empty(),
        "node-b read node-a: {:?}",
        ids(&named)
    );

    // node-a reads node-a, with cluster bodies but not the secret's.
    let mine = csds(a, only("node-a")).await.unwrap();
    assert_eq!(ids(&mine), ["node-a"]);
    let configs = &mine.config[0].generic_xds_configs;
    let cluster = configs.iter().find(|c| c.type_url == T_CLUSTER).unwrap();
    assert!(cluster.xds_config.is_some());
    let secret = configs.iter().find(|c| c.type_url == SECRET).unwrap();
    assert_eq!(secret.name, "key");
    assert!(secret.xds_config.is_none(), "a secret's body was shown");
}

#[tokio::test]
async fn csds_is_off_where_it_could_leak_unless_configured_and_secret_bodies_only_when_asked() {
    // Auto on routes whose address is unknown (mounted by an embedder): refused.
    let s = TestServer::start().await;
    s.cache
        .set("n1", set(vec![res(SECRET, "key", "private-key-bytes")]));
    let mut c = Sotw::open(&s, node("n1")).await;
    c.request(SECRET, &[], "", "").await;
    c.recv().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = s.server.routes();
    tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
        routes,
        tokio_stream::wrappers::TcpListenerStream::new(listener),
    ));
    let mounted = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = csds(mounted, ClientStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("xds.csds"),
        "{}",
        refused.message()
    );
    // The loopback listener's own port answers, without the secret's body.
    let local = csds(s.channel().await, ClientStatusRequest::default())
        .await
        .unwrap();
    let secret = &local.config[0].generic_xds_configs[0];
    assert!(secret.xds_config.is_none());
    // The operator's view (the admin port) is the same answer, for every node.
    assert_eq!(
        ids(&s.server.client_status(&ClientStatusRequest::default())),
        ["n1"]
    );

    // Off: refused even on loopback. On with secrets: bodies shown.
    let off = TestServer::start_with(|b| b.csds(CsdsAccess::Off)).await;
    let refused = csds(off.channel().await, ClientStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let shown = TestServer::start_with(|b| b.csds(CsdsAccess::On).csds_secrets(true)).await;
    shown
        .cache
        .set("n1", set(vec![res(SECRET, "key", "private-key-bytes")]));
    let mut c = Sotw::open(&shown, node("n1")).await;
    c.request(SECRET, &[], "", "").await;
    c.recv().await;
    let r = csds(shown.channel().await, ClientStatusRequest::default())
        .await
        .unwrap();
    assert!(r.config[0].generic_xds_configs[0].xds_config.is_some());
}
