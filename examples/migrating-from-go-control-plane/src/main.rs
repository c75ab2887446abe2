//! go-control-plane's example program, ported to nebucloud-xds: serves one Envoy fleet a
//! listener, a route, a cluster and its endpoints over ADS (and every other xDS transport).
//!
//! ```text
//! cargo run -p migrating-from-go-control-plane -- [--port 18000] [--listener-port 10000] \
//!     [--upstream 127.0.0.1:8080]
//! envoy -c examples/migrating-from-go-control-plane/envoy.yaml
//! curl http://127.0.0.1:10000/        # answered by the upstream
//! ```

use std::net::SocketAddr;

use anyhow::Context;
use migrating_from_go_control_plane::{server, snapshot, Logger, SERVICE_CLUSTER};
use nebucloud_xds::Cache;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut port: u16 = 18000;
    let mut listener_port: u16 = 10000;
    let mut upstream: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag} {value}");
        match flag.as_str() {
            "--port" => port = value.parse().with_context(bad)?,
            "--listener-port" => listener_port = value.parse().with_context(bad)?,
            "--upstream" => upstream = value.parse().with_context(bad)?,
            other => anyhow::bail!(
                "unknown flag {other}; flags: --port PORT --listener-port PORT --upstream ADDR"
            ),
        }
    }

    // cache.NewSnapshotCache + cache.NewSnapshot + snapshot.Consistent + SetSnapshot
    let cache = Cache::new();
    cache.set(SERVICE_CLUSTER, snapshot(listener_port, upstream)?);

    // server.NewServer + grpc.NewServer(options) + Register…Server + Serve
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    println!(
        "xDS on {addr}: Envoys of service cluster {SERVICE_CLUSTER:?} get a listener on \
         127.0.0.1:{listener_port} routed to {upstream}"
    );
    server(cache, Logger::default()).serve(addr).await?;
    Ok(())
}
