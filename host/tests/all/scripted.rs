//! A scripted xDS client: sends exactly the requests a test names and reads every response,
//! to pin the server's protocol behaviour down request by request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nebucloud_xds::app::{App, Running};
use nebucloud_xds::inputs::InputStore;
use nebucloud_xds::pipeline::Pipeline;
use nebucloud_xds::plugins::PluginSlots;
use nebucloud_xds::{Cache, Resource, ResourceSet, XdsServer};
use nebucloud_xds_proto::envoy::config::core::v3::Node;
use nebucloud_xds_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use nebucloud_xds_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use nebucloud_xds_proto::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

pub const T_CLUSTER: &str = nebucloud_xds_proto::type_url::CLUSTER;
pub const T_ENDPOINT: &str = nebucloud_xds_proto::type_url::ENDPOINT;
pub const T_LISTENER: &str = nebucloud_xds_proto::type_url::LISTENER;
pub const T_ROUTE: &str = nebucloud_xds_proto::type_url::ROUTE;

/// A server on a free loopback port, stopped when dropped: a bare [`XdsServer`] over a cache
/// the test fills, or the whole server as `serve` builds it ([`TestServer::app`]).
pub struct TestServer {
    pub addr: SocketAddr,
    pub server: XdsServer,
    pub cache: Cache,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    app: Option<Running>,
}

impl TestServer {
    /// The version of every group's current resources: equal before and after means nothing
    /// was published.
    pub fn versions(&self) -> Vec<String> {
        self.cache
            .groups()
            .iter()
            .filter_map(|g| self.cache.get(g))
            .map(|s| s.version().to_owned())
            .collect()
    }

    pub async fn start() -> Self {
        Self::start_with(|b| b).await
    }

    /// A bare xDS server over a cache the test fills, built by `f`.
    // Wired by hand: the protocol tests pin down the xDS layer alone; the whole server is
    // `TestServer::app`.
    pub async fn start_with(
        f: impl FnOnce(nebucloud_xds::xds::XdsServerBuilder) -> nebucloud_xds::xds::XdsServerBuilder,
    ) -> Self {
        let cache = Cache::new();
        let server = f(XdsServer::builder(cache.clone())).build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = server.clone();
        tokio::spawn(async move {
            let _ = s
                .serve_with_shutdown(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestServer {
            addr,
            server,
            cache,
            stop: Some(stop),
            app: None,
        }
    }

    /// Serves `app` (built by `App` from a config, as `serve` builds it) on loopback ports the
    /// kernel picks, xDS and admin.
    pub async fn app(app: App) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let running = app.spawn(Some(any), Some(any)).await.unwrap();
        TestServer {
            addr: running.xds_addr,
            server: running.server().clone(),
            cache: running.server().cache().clone(),
            stop: None,
            app: Some(running),
        }
    }

    /// The whole server, when built by `App`.
    pub fn running(&self) -> &Running {
        self.app.as_ref().expect("a server built by App")
    }

    /// The pipeline of a server built by `App` with plugins.
    pub fn pipeline(&self) -> &Pipeline {
        self.running().pipeline().expect("a server with plugins")
    }

    /// The plugin slots of a server built by `App` with plugins.
    pub fn slots(&self) -> &PluginSlots {
        self.running().plugins().expect("a server with plugins")
    }

    /// The input store of a server built by `App` with plugins: a test that is an input source
    /// of its own writes it, then tells the pipeline what changed.
    pub fn inputs(&self) -> &Arc<InputStore> {
        self.running().inputs().expect("a server with plugins")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn ads(&self) -> AggregatedDiscoveryServiceClient<Channel> {
        AggregatedDiscoveryServiceClient::new(self.channel().await)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        cluster: "test".into(),
        ..Node::default()
    }
}

pub fn node_with_features(id: &str, features: &[&str]) -> Node {
    Node {
        client_features: features.iter().map(|f| (*f).to_owned()).collect(),
        ..node(id)
    }
}

/// A resource whose body is arbitrary bytes: the server never decodes what it serves.
pub fn res(type_url: &str, name: &str, body: &str) -> Resource {
    Resource::new(type_url, name, body.as_bytes().to_vec())
}

pub fn set(resources: Vec<Resource>) -> ResourceSet {
    ResourceSet::new(resources).unwrap()
}

pub fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing was sent" is watched for. Long enough for a response already decided to
/// arrive on loopback many times over; asserting absence, not speed.
pub const QUIET: Duration = Duration::from_millis(300);

/// One SotW stream.
pub struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    pub node: Node,
    first: bool,
}

impl Sotw {
    pub async fn open(server: &TestServer, node: Node) -> Self {
        Self::open_on(server.channel().await, node).await
    }

    /// A stream on an existing connection: many streams share one HTTP/2 connection.
    pub async fn open_on(channel: Channel, node: Node) -> Self {
        let (tx, rx_req) = mpsc::channel(16);
        let rx = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(ReceiverStream::new(rx_req))
            .await
            .unwrap()
            .into_inner();
        Sotw {
            tx,
            rx,
            node,
            first: true,
        }
    }

    pub async fn send(&mut self, mut req: DiscoveryRequest) {
        if self.first {
            req.node = Some(self.node.clone());
            self.first = false;
        }
        self.tx.send(req).await.unwrap();
    }

    /// Subscribes (or re-subscribes) to `names` of `type_url`, answering `nonce`.
    pub async fn request(&mut self, type_url: &str, names: &[&str], version: &str, nonce: &str) {
        self.send(DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: self::names(names),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        })
        .await;
    }

    pub async fn ack(&mut self, resp: &DiscoveryResponse, names: &[&str]) {
        self.request(&resp.type_url, names, &resp.version_info, &resp.nonce)
            .await;
    }

    pub async fn nack(
        &mut self,
        resp: &DiscoveryResponse,
        names: &[&str],
        kept_version: &str,
        message: &str,
    ) {
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            resource_names: self::names(names),
            version_info: kept_version.into(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    pub async fn recv(&mut self) -> DiscoveryResponse {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(r))) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// The stream's end status, which must arrive.
    pub async fn status(&mut self) -> tonic::Status {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Err(status)) => status,
            other => panic!("expected the stream to end with a status, got {other:?}"),
        }
    }

    pub async fn expect_quiet(&mut self) {
        if let Ok(r) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {r:?}");
        }
    }
}

/// Names in a SotW response (resources are plain `Any`s here).
pub fn sotw_names(resp: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    resp.resources
        .iter()
        .map(|a| {
            if a.type_url == nebucloud_xds_proto::type_url::RESOURCE_WRAPPER {
                nebucloud_xds_proto::envoy::service::discovery::v3::Resource::decode(
                    a.value.clone(),
                )
                .unwrap()
                .name
            } else {
                String::from_utf8(a.value.to_vec()).unwrap_or_default()
            }
        })
        .collect()
}

/// One delta stream.
pub struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    pub node: Node,
    first: bool,
}

impl Delta {
    pub async fn open(server: &TestServer, node: Node) -> Self {
        let (tx, rx_req) = mpsc::channel(16);
        let rx = server
            .ads()
            .await
            .delta_aggregated_resources(ReceiverStream::new(rx_req))
            .await
            .unwrap()
            .into_inner();
        Delta {
            tx,
            rx,
            node,
            first: true,
        }
    }

    pub async fn send(&mut self, mut req: DeltaDiscoveryRequest) {
        if self.first {
            req.node = Some(self.node.clone());
            self.first = false;
        }
        self.tx.send(req).await.unwrap();
    }

    pub async fn subscribe(&mut self, type_url: &str, sub: &[&str], unsub: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: names(sub),
            resource_names_unsubscribe: names(unsub),
            ..Default::default()
        })
        .await;
    }

    pub async fn ack(&mut self, resp: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(r))) => r,
            other => panic!("expected a delta response, got {other:?}"),
        }
    }

    pub async fn status(&mut self) -> tonic::Status {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Err(status)) => status,
            other => panic!("expected the stream to end with a status, got {other:?}"),
        }
    }

    pub async fn expect_quiet(&mut self) {
        if let Ok(r) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {r:?}");
        }
    }
}

/// `(name, version)` of each resource in a delta response, sorted.
pub fn delta_names(resp: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut v: Vec<String> = resp.resources.iter().map(|r| r.name.clone()).collect();
    v.sort();
    v
}

impl Sotw {
    /// The next response, or None when the stream ended.
    pub async fn recv_raw(&mut self) -> Option<DiscoveryResponse> {
        self.rx.message().await.ok().flatten()
    }
}
