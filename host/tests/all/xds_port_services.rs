//! The other services on the xDS port: CSDS reports what each client holds (synced, NACKed
//! with the error), gRPC health says SERVING, reflection lists the discovery services.

use nebucloud_xds_proto::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use nebucloud_xds_proto::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use nebucloud_xds_proto::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use nebucloud_xds_proto::envoy::service::status::v3::{
    ClientConfigStatus, ClientStatusRequest, ConfigStatus,
};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::scripted::*;

pub(crate) fn only(id: &str) -> ClientStatusRequest {
    ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(id.into())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn csds_reports_synced_and_nacked_resources_per_node() {
    let s = TestServer::start().await;
    s.cache.set(
        "good",
        set(vec![res(T_CLUSTER, "a", "a"), res(T_CLUSTER, "b", "b")]),
    );
    s.cache.set("bad", set(vec![res(T_LISTENER, "l", "l")]));
    let mut good = Sotw::open(&s, node("good")).await;
    good.request(T_CLUSTER, &[], "", "").await;
    let r = good.recv().await;
    good.ack(&r, &[]).await;
    let mut bad = Sotw::open(&s, node("bad")).await;
    bad.request(T_LISTENER, &[], "", "").await;
    let r = bad.recv().await;
    bad.nack(&r, &[], "", "listener l: no filter chains").await;
    good.expect_quiet().await;

    let mut csds = ClientStatusDiscoveryServiceClient::new(s.channel().await);
    let all = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.config.len(), 2);
    let g = csds
        .fetch_client_status(only("good"))
        .await
        .unwrap()
        .into_inner();
    let configs = &g.config[0].generic_xds_configs;
    assert_eq!(
        configs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert!(configs
        .iter()
        .all(|c| c.config_status == ConfigStatus::Synced as i32
            && c.client_status == ClientConfigStatus::ClientAcked as i32));
    assert!(configs[0].xds_config.is_some());
    let b = csds
        .fetch_client_status(only("bad"))
        .await
        .unwrap()
        .into_inner();
    let l = &b.config[0].generic_xds_configs[0];
    assert_eq!(
        (l.config_status, l.client_status),
        (
            ConfigStatus::Error as i32,
            ClientConfigStatus::ClientNacked as i32
        )
    );
    assert_eq!(
        l.error_state.as_ref().map(|e| e.details.as_str()),
        Some("listener l: no filter chains")
    );
    let none = csds
        .fetch_client_status(only("nobody"))
        .await
        .unwrap()
        .into_inner();
    assert!(none.config.is_empty());
}

#[tokio::test]
async fn grpc_health_says_serving_and_reflection_lists_the_discovery_services() {
    let s = TestServer::start().await;
    let mut health = HealthClient::new(s.channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: "envoy.service.discovery.v3.AggregatedDiscoveryService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(s.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("{resp:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names
            .iter()
            .any(|n| n == "envoy.service.discovery.v3.AggregatedDiscoveryService"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n == "envoy.service.status.v3.ClientStatusDiscoveryService"),
        "{names:?}"
    );
}
