//! Mutual TLS on the xDS port (a real Envoy with a test CA; a client without a valid
//! certificate is refused; node ids must match certificates), and the connection limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nebucloud_xds::xds::TlsSettings;
use nebucloud_xds_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use nebucloud_xds_proto::envoy::service::discovery::v3::DiscoveryRequest;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

use crate::real_envoy::http_mesh;
use crate::scripted::*;
use crate::support::backend::HttpBackend;
use crate::support::envoy::{Envoy, EnvoyOptions, XdsMode};
use crate::support::{free_port, wait_until};

pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for localhost/127.0.0.1, and client certificates.
    pub(crate) fn new(clients: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct subjects: a leaf whose subject equals its issuer's looks self-signed.
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "nebucloud test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |name: &str, sans: Vec<SanType>| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, name);
            p.subject_alt_names = sans;
            let cert = p.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            "server",
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
        );
        for c in clients {
            leaf(c, vec![SanType::DnsName((*c).try_into().unwrap())]);
        }
        Pki { dir }
    }

    pub(crate) fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    pub(crate) fn settings(&self) -> TlsSettings {
        TlsSettings {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: Some(self.path("ca.pem")),
            authorize_node_ids: true,
        }
    }
}

pub(crate) async fn tls_channel(
    port: u16,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn first_cds(channel: Channel, node_id: &str) -> Result<usize, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(node(node_id)),
        type_url: T_CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let r = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer"))??;
    Ok(r.map_or(0, |r| r.resources.len()))
}

#[tokio::test]
async fn envoy_connects_over_mtls_and_clients_without_a_valid_certificate_are_refused() {
    let pki = Pki::new(&["envoy-tls", "intruder"]);
    let server = TestServer::start_with(|b| b.tls(pki.settings())).await;
    let backend = HttpBackend::start("tls-backend").await.unwrap();
    let port = free_port();
    server.cache.set(
        "envoy-tls",
        http_mesh(
            XdsMode::SotwAds,
            port,
            &[("backend", backend.port())],
            false,
        ),
    );
    let mut options = EnvoyOptions::new(server.addr.port(), "envoy-tls", XdsMode::SotwAds);
    options.xds_tls = Some((
        pki.path("ca.pem"),
        pki.path("envoy-tls.pem"),
        pki.path("envoy-tls.key"),
    ));
    let envoy = Envoy::start_with(options).await.unwrap();
    let body = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || Envoy::ok_body(port, "/").await.map(Some),
    )
    .await;
    assert_eq!(
        body.unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail())),
        "tls-backend"
    );

    // No client certificate: the handshake fails, nothing is served.
    let no_cert = match tls_channel(server.addr.port(), &pki.path("ca.pem"), None).await {
        Ok(ch) => first_cds(ch, "envoy-tls").await.map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(
        no_cert.is_err(),
        "a client without a certificate was served"
    );
    // A valid certificate may only claim the node id it names.
    let intruder = async || {
        tls_channel(
            server.addr.port(),
            &pki.path("ca.pem"),
            Some((&pki.path("intruder.pem"), &pki.path("intruder.key"))),
        )
        .await
        .unwrap()
    };
    let ch = intruder().await;
    let err = first_cds(ch, "envoy-tls").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("envoy-tls") && err.message().contains("intruder"),
        "{}",
        err.message()
    );
    let ch = intruder().await;
    server
        .cache
        .set("intruder", set(vec![res(T_CLUSTER, "c", "c")]));
    assert_eq!(first_cds(ch, "intruder").await.unwrap(), 1);
}

#[tokio::test]
async fn the_connection_over_the_limit_gets_a_clear_refusal_and_the_first_ones_keep_working() {
    let server = TestServer::start_with(|b| b.max_connections(2)).await;
    server.cache.set("n1", set(vec![res(T_CLUSTER, "c", "c")]));
    let mut a = Sotw::open(&server, node("n1")).await;
    a.request(T_CLUSTER, &[], "", "").await;
    let ra = a.recv().await;
    let mut b = Sotw::open(&server, node("n1")).await;
    b.request(T_CLUSTER, &[], "", "").await;
    let rb = b.recv().await;

    let refused = first_cds(server.channel().await, "n1").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("limit of 2 connections"),
        "{}",
        refused.message()
    );

    a.ack(&ra, &[]).await;
    b.ack(&rb, &[]).await;
    server.cache.set("n1", set(vec![res(T_CLUSTER, "c", "c2")]));
    assert_eq!(sotw_names(&a.recv().await), vec!["c2"]);
    assert_eq!(sotw_names(&b.recv().await), vec!["c2"]);
}

/// Over TLS too, the connection over the limit completes its handshake and gets the same
/// clear status instead of a reset; the admitted one keeps working.
#[tokio::test]
async fn over_tls_the_connection_over_the_limit_gets_a_clear_refusal() {
    let pki = Pki::new(&["n1"]);
    let server = TestServer::start_with(|b| b.tls(pki.settings()).max_connections(1)).await;
    server.cache.set("n1", set(vec![res(T_CLUSTER, "c", "c")]));
    let identity = Some((pki.path("n1.pem"), pki.path("n1.key")));
    let connect = async || {
        let id = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        tls_channel(server.addr.port(), &pki.path("ca.pem"), id).await
    };
    let admitted = connect().await.unwrap();
    assert_eq!(first_cds(admitted.clone(), "n1").await.unwrap(), 1);

    let over = connect().await.expect("the handshake completes");
    let refused = first_cds(over, "n1").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("limit of 1 connections"),
        "{}",
        refused.message()
    );

    // Mutual TLS holds at the limit too: a client without a certificate is refused at the
    // handshake and never learns the limit.
    let anonymous = match tls_channel(server.addr.port(), &pki.path("ca.pem"), None).await {
        Err(_) => None,
        Ok(channel) => Some(first_cds(channel, "n1").await),
    };
    assert!(
        !matches!(&anonymous, Some(Ok(_)))
            && !matches!(&anonymous, Some(Err(e)) if e.code() == Code::ResourceExhausted),
        "{anonymous:?}"
    );
    assert_eq!(first_cds(admitted, "n1").await.unwrap(), 1);
}
