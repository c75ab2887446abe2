//! Embeds the nebucloud-xds host as a library, without plugins: the go-control-plane way.
//!
//! It builds a listener, a route table, a cluster and its endpoints with the guest SDK's
//! builders, puts them in the cache for one node group, and serves them over every xDS
//! transport on 127.0.0.1:18000. An Envoy bootstrapped against it (see the README) proxies
//! 127.0.0.1:10000 to the backend; a gRPC client resolving `xds:///greeter` reaches the same
//! backend.
//!
//! ```text
//! cargo run -p simple-server -- [--listen 127.0.0.1:18000] [--backend 127.0.0.1:8080]
//! ```

use std::net::SocketAddr;

use anyhow::Context;
use nebucloud_xds::{Cache, Resource, ResourceSet, XdsServer};
use nebucloud_xds_guest::build::{
    envoy_http_listener, grpc_api_listener, route_to_cluster, EdsCluster, LoadAssignment,
    RouteSource,
};

/// Every node is served from this one group: the example has one configuration.
const GROUP: &str = "everyone";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut listen: SocketAddr = "127.0.0.1:18000".parse()?;
    let mut backend: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.parse().with_context(|| format!("--listen {value}"))?,
            "--backend" => {
                backend = value
                    .parse()
                    .with_context(|| format!("--backend {value}"))?
            }
            other => anyhow::bail!("unknown flag {other}; flags: --listen ADDR --backend ADDR"),
        }
    }

    let cache = Cache::new();
    cache.set(GROUP, resources(backend)?);
    println!("serving xDS on {listen}: Envoy listener 127.0.0.1:10000 and gRPC target xds:///greeter → {backend}");
    XdsServer::builder(cache)
        .grouping(|_: &_| GROUP.to_owned())
        .build()
        .serve(listen)
        .await?;
    Ok(())
}

/// The resources: an HTTP listener for Envoy and an API listener for gRPC clients, both
/// routed to one cluster whose endpoint is the backend.
fn resources(backend: SocketAddr) -> anyhow::Result<ResourceSet> {
    let host = backend.ip().to_string();
    let cluster = EdsCluster::new("backend").http2().build();
    let endpoints = LoadAssignment::new("backend")
        .endpoint(host, backend.port())
        .build();
    let route = route_to_cluster("backend-route", "backend");
    let envoy = envoy_http_listener(
        "ingress",
        "127.0.0.1",
        10000,
        RouteSource::ads("backend-route"),
    );
    let grpc = grpc_api_listener("greeter", "backend-route");
    Ok(ResourceSet::new([
        Resource::from_message("backend", &cluster),
        Resource::from_message("backend", &endpoints),
        Resource::from_message("backend-route", &route),
        Resource::from_message("ingress", &envoy),
        Resource::from_message("greeter", &grpc),
    ])?)
}
