//! The `nebucloud-xds` command: serves xDS to Envoy and gRPC clients.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use nebucloud_xds::cache::load_resource_dir;
use nebucloud_xds::xds::{ByCluster, ByNodeId};
use nebucloud_xds::{Cache, XdsServer};

/// An xDS control plane whose configuration logic is user code.
#[derive(Parser)]
#[command(name = "nebucloud-xds", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve xDS (ADS and per-type, SotW and Delta) on one gRPC port.
    Serve(ServeArgs),
    /// Check a resource directory and print what each group would be served.
    CheckResources {
        /// The directory: one sub-directory per node group.
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address of the xDS gRPC port.
    #[arg(long, default_value = "127.0.0.1:18000")]
    listen: SocketAddr,
    /// Serve the resources in this directory: `DIR/<group>/*.{yaml,json}`, each resource in
    /// Envoy's JSON form with `@type`.
    #[arg(long)]
    resources: Option<PathBuf>,
    /// How a node maps to a group.
    #[arg(long, value_enum, default_value_t = GroupBy::NodeId)]
    group_by: GroupBy,
}

#[derive(Clone, Copy, ValueEnum)]
enum GroupBy {
    /// One group per `node.id`.
    NodeId,
    /// One group per `node.cluster`.
    Cluster,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Human => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::CheckResources { dir } => {
            let groups = load_resource_dir(&dir)?;
            for (group, set) in &groups {
                println!(
                    "{group}: {} resources, version {}",
                    set.len(),
                    set.version()
                );
                for r in set.iter() {
                    println!("  {} {} ({})", r.type_url(), r.name(), r.version());
                }
            }
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cache = Cache::new();
    if let Some(dir) = &args.resources {
        let groups = load_resource_dir(dir).context("loading resources")?;
        for (group, set) in groups {
            tracing::info!(%group, resources = set.len(), version = set.version(), "serving group");
            cache.set(&group, set);
        }
    }
    let builder = XdsServer::builder(cache);
    let builder = match args.group_by {
        GroupBy::NodeId => builder.grouping(ByNodeId),
        GroupBy::Cluster => builder.grouping(ByCluster),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %args.listen, "serving xDS");
    builder
        .build()
        .serve_with_shutdown(listener, shutdown_signal())
        .await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
