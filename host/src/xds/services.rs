//! The tonic services: ADS and every per-type discovery service, each a thin door into the
//! one stream implementation.

use std::sync::Arc;

use nebucloud_xds_proto::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use nebucloud_xds_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use nebucloud_xds_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use nebucloud_xds_proto::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use nebucloud_xds_proto::envoy::service::endpoint::v3::locality_endpoint_discovery_service_server::{
    LocalityEndpointDiscoveryService, LocalityEndpointDiscoveryServiceServer,
};
use nebucloud_xds_proto::envoy::service::extension::v3::extension_config_discovery_service_server::{
    ExtensionConfigDiscoveryService, ExtensionConfigDiscoveryServiceServer,
};
use nebucloud_xds_proto::envoy::service::listener::v3::listener_discovery_service_server::{
    ListenerDiscoveryService, ListenerDiscoveryServiceServer,
};
use nebucloud_xds_proto::envoy::service::route::v3::route_discovery_service_server::{
    RouteDiscoveryService, RouteDiscoveryServiceServer,
};
use nebucloud_xds_proto::envoy::service::route::v3::scoped_routes_discovery_service_server::{
    ScopedRoutesDiscoveryService, ScopedRoutesDiscoveryServiceServer,
};
use nebucloud_xds_proto::envoy::service::route::v3::virtual_host_discovery_service_server::{
    VirtualHostDiscoveryService, VirtualHostDiscoveryServiceServer,
};
use nebucloud_xds_proto::envoy::service::runtime::v3::runtime_discovery_service_server::{
    RuntimeDiscoveryService, RuntimeDiscoveryServiceServer,
};
use nebucloud_xds_proto::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use nebucloud_xds_proto::type_url;
use futures::StreamExt;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use nebucloud_xds_proto::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer;

use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use super::context::{check_node, Scope};
use super::csds::Csds;
use super::delta::DeltaStream;
use super::router::{Handler, RoutesBuilder, XdsRoutes};
use super::shared::Shared;
use super::sotw::SotwStream;
use super::stream::{serve, Caller, ResponseStream};
use super::subscription::{select, SubscriptionState};
use super::wire::{SotwCodec, SotwResponse};

/// One door: a scope (ADS, or one type) over the shared server state.
#[derive(Clone)]
pub(crate) struct Door {
    shared: Arc<Shared>,
    scope: Scope,
}

impl Door {
    fn sotw(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Response<ResponseStream<SotwResponse>> {
        let (caller, requests) = Caller::of(&self.shared, req);
        Response::new(serve::<SotwStream>(
            Arc::clone(&self.shared),
            self.scope,
            caller,
            requests,
        ))
    }

    /// The SotW stream as whole messages, for the generated services' trait (which the
    /// server's routes do not reach: they serve SotW streams with [`SotwCodec`]).
    fn sotw_messages(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Response<ResponseStream<DiscoveryResponse>> {
        self.sotw(req)
            .map(|s| Box::pin(s.map(|r| r.map(|r| r.message()))) as ResponseStream<_>)
    }

    fn delta(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Response<ResponseStream<DeltaDiscoveryResponse>> {
        let (caller, requests) = Caller::of(&self.shared, req);
        Response::new(serve::<DeltaStream>(
            Arc::clone(&self.shared),
            self.scope,
            caller,
            requests,
        ))
    }

    /// The unary `Fetch*` form: the current State-of-the-World answer, no stream state.
    fn fetch(&self, req: Request<DiscoveryRequest>) -> Result<Response<DiscoveryResponse>, Status> {
        let (caller, mut req) = Caller::of(&self.shared, req);
        let type_url = self.scope.resolve(&req.type_url)?;
        let node = req
            .node
            .as_ref()
            .filter(|n| !n.id.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument("a fetch request must carry the node with its id")
            })?;
        check_node(&self.shared.limits, node)?;
        if let Some(name) = req
            .resource_names
            .iter()
            .find(|n| n.len() > self.shared.limits.max_name_bytes)
        {
            return Err(Status::resource_exhausted(format!(
                "a resource name of {} bytes is over this server's max_name_bytes of {}",
                name.len(),
                self.shared.limits.max_name_bytes
            )));
        }
        if req.resource_names.len() > self.shared.limits.max_names_per_type {
            return Err(Status::resource_exhausted(format!(
                "fetch of {} names exceeds this server's limit of {}",
                req.resource_names.len(),
                self.shared.limits.max_names_per_type
            )));
        }
        caller.identity.authorize(&node.id)?;
        // Served from the node's own group (the one its ADS stream has, under `ByIdentity`).
        let group = self.shared.grouping.group_of(node);
        if let Some(callbacks) = &self.shared.callbacks {
            callbacks.on_fetch_request(&caller.fetch(&req, &group, &type_url))?;
        }
        if let Some(observer) = &self.shared.observer {
            observer.node_fetched(&group, node)?;
        }
        let set = self.shared.cache.get(&group).ok_or_else(|| {
            Status::unavailable(format!(
                "no configuration is computed yet for node {} (group {group})",
                node.id
            ))
        })?;
        let mut sub = SubscriptionState::default();
        let names = match &self.shared.callbacks {
            // The callbacks see the request as it came, after the answer too.
            Some(_) => req.resource_names.clone(),
            None => std::mem::take(&mut req.resource_names),
        };
        sub.apply_sotw(names);
        let (version, resources) = select(&set, &type_url, &sub);
        let response = DiscoveryResponse {
            version_info: version,
            resources: resources.iter().map(|r| r.to_any()).collect(),
            type_url,
            ..DiscoveryResponse::default()
        };
        if let Some(callbacks) = &self.shared.callbacks {
            let fetch = caller.fetch(&req, &group, &response.type_url);
            callbacks.on_fetch_response(&fetch, &response);
        }
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Door {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(self.sotw_messages(req))
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(self.delta(req))
    }
}

/// Implements a per-type service (SotW stream, delta stream, fetch) on [`Door`].
macro_rules! per_type_service {
    ($trait:ident { $sotw_ty:ident $sotw:ident, $delta_ty:ident $delta:ident, $fetch:ident }) => {
        #[tonic::async_trait]
        impl $trait for Door {
            type $sotw_ty = ResponseStream<DiscoveryResponse>;
            type $delta_ty = ResponseStream<DeltaDiscoveryResponse>;

            async fn $sotw(
                &self,
                req: Request<Streaming<DiscoveryRequest>>,
            ) -> Result<Response<Self::$sotw_ty>, Status> {
                Ok(self.sotw_messages(req))
            }

            async fn $delta(
                &self,
                req: Request<Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<Response<Self::$delta_ty>, Status> {
                Ok(self.delta(req))
            }

            async fn $fetch(
                &self,
                req: Request<DiscoveryRequest>,
            ) -> Result<Response<DiscoveryResponse>, Status> {
                self.fetch(req)
            }
        }
    };
    ($trait:ident { $delta_ty:ident $delta:ident }) => {
        #[tonic::async_trait]
        impl $trait for Door {
            type $delta_ty = ResponseStream<DeltaDiscoveryResponse>;

            async fn $delta(
                &self,
                req: Request<Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<Response<Self::$delta_ty>, Status> {
                Ok(self.delta(req))
            }
        }
    };
}

per_type_service!(ClusterDiscoveryService { StreamClustersStream stream_clusters, DeltaClustersStream delta_clusters, fetch_clusters });
per_type_service!(EndpointDiscoveryService { StreamEndpointsStream stream_endpoints, DeltaEndpointsStream delta_endpoints, fetch_endpoints });
per_type_service!(ListenerDiscoveryService { StreamListenersStream stream_listeners, DeltaListenersStream delta_listeners, fetch_listeners });
per_type_service!(RouteDiscoveryService { StreamRoutesStream stream_routes, DeltaRoutesStream delta_routes, fetch_routes });
per_type_service!(ScopedRoutesDiscoveryService { StreamScopedRoutesStream stream_scoped_routes, DeltaScopedRoutesStream delta_scoped_routes, fetch_scoped_routes });
per_type_service!(SecretDiscoveryService { StreamSecretsStream stream_secrets, DeltaSecretsStream delta_secrets, fetch_secrets });
per_type_service!(RuntimeDiscoveryService { StreamRuntimeStream stream_runtime, DeltaRuntimeStream delta_runtime, fetch_runtime });
per_type_service!(ExtensionConfigDiscoveryService { StreamExtensionConfigsStream stream_extension_configs, DeltaExtensionConfigsStream delta_extension_configs, fetch_extension_configs });
per_type_service!(VirtualHostDiscoveryService { DeltaVirtualHostsStream delta_virtual_hosts });
per_type_service!(LocalityEndpointDiscoveryService { DeltaLocalityEndpointsStream delta_locality_endpoints });

/// Every discovery service, CSDS, gRPC health and reflection, with the server's message size
/// limits applied. `loopback`: the port is reachable from this machine only (CSDS's `auto`).
pub(crate) fn routes(shared: &Arc<Shared>, health: HealthReporter, loopback: bool) -> XdsRoutes {
    let door = |scope| Door {
        shared: Arc::clone(shared),
        scope,
    };
    let max = shared.max_message_bytes;
    macro_rules! svc {
        ($server:ident, $scope:expr) => {
            $server::new(door($scope))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max)
        };
    }
    // Every discovery service; its SotW stream method, where it has one, is served apart:
    // with responses encoded once per set (`wire.rs`).
    let mut routes = RoutesBuilder::default();
    macro_rules! discovery {
        ($($server:ident $scope:expr $(, $sotw:literal)?;)*) => {$(
            routes = routes.add(svc!($server, $scope));
            $(
                let path = format!("/{}/{}", $server::<Door>::NAME, $sotw);
                routes = routes.method(path, sotw_method(door($scope), max));
            )?
        )*};
    }
    discovery! {
        AggregatedDiscoveryServiceServer Scope::Aggregated, "StreamAggregatedResources";
        ClusterDiscoveryServiceServer Scope::Single(type_url::CLUSTER), "StreamClusters";
        EndpointDiscoveryServiceServer Scope::Single(type_url::ENDPOINT), "StreamEndpoints";
        LocalityEndpointDiscoveryServiceServer Scope::Single(type_url::LB_ENDPOINT);
        ListenerDiscoveryServiceServer Scope::Single(type_url::LISTENER), "StreamListeners";
        RouteDiscoveryServiceServer Scope::Single(type_url::ROUTE), "StreamRoutes";
        ScopedRoutesDiscoveryServiceServer
            Scope::Single(type_url::SCOPED_ROUTE), "StreamScopedRoutes";
        VirtualHostDiscoveryServiceServer Scope::Single(type_url::VIRTUAL_HOST);
        SecretDiscoveryServiceServer Scope::Single(type_url::SECRET), "StreamSecrets";
        RuntimeDiscoveryServiceServer Scope::Single(type_url::RUNTIME), "StreamRuntime";
        ExtensionConfigDiscoveryServiceServer
            Scope::Single(type_url::EXTENSION_CONFIG), "StreamExtensionConfigs";
    }
    routes
        .add(
            ClientStatusDiscoveryServiceServer::new(Csds::new(Arc::clone(shared), loopback))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add(HealthServer::new(HealthService::from_health_reporter(
            health,
        )))
        .add(reflection())
        .build()
}

/// A SotW stream method of `door`'s scope, served with [`SotwCodec`] and the server's message
/// size limits, as a generated service would.
fn sotw_method(door: Door, max: usize) -> Handler {
    Box::new(move |req| {
        let method = SotwMethod(door.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(SotwCodec)
                .apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.streaming(method, req).await)
        })
    })
}

/// A SotW stream call of one door.
struct SotwMethod(Door);

impl tonic::server::StreamingService<DiscoveryRequest> for SotwMethod {
    type Response = SotwResponse;
    type ResponseStream = ResponseStream<SotwResponse>;
    type Future = std::future::Ready<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, req: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        std::future::ready(Ok(self.0.sotw(req)))
    }
}

/// Server reflection over every Envoy API service and message (and gRPC health).
fn reflection() -> tonic_reflection::server::v1::ServerReflectionServer<
    impl tonic_reflection::server::v1::ServerReflection,
> {
    let with_envoy = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nebucloud_xds_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    match with_envoy {
        Ok(r) => r,
        Err(e) => {
            // The descriptors are embedded at build time, so this is a build defect; serve
            // reflection of the health service rather than none.
            tracing::error!(error = %e, "reflection over the Envoy descriptors failed");
            let fallback = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1();
            match fallback {
                Ok(r) => r,
                Err(_) => tonic_reflection::server::Builder::configure()
                    .build_v1()
                    .unwrap_or_else(|_| unreachable!()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cache, XdsServer};

    #[test]
    fn every_sotw_stream_method_of_the_envoy_api_answers_with_shared_encodings() {
        let pool = prost_reflect::DescriptorPool::decode(nebucloud_xds_proto::FILE_DESCRIPTOR_SET)
            .unwrap();
        let mut sotw: Vec<String> = pool
            .services()
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            // Envoy's own services (the descriptors also hold ratelimit's, not served here).
            .filter(|m| m.parent_service().full_name().starts_with("envoy.service."))
            .filter(|m| m.is_client_streaming() && m.is_server_streaming())
            .filter(|m| m.input().full_name() == "envoy.service.discovery.v3.DiscoveryRequest")
            .map(|m| format!("/{}/{}", m.parent_service().full_name(), m.name()))
            .collect();
        sotw.sort();
        let routes = XdsServer::builder(Cache::new()).build().routes();
        assert_eq!(routes.method_paths(), sotw);
    }
}
