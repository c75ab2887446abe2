//! `serve`: the control plane itself, from a config file or a resource directory, until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;

use nebucloud_xds::app::App;
use nebucloud_xds::config::Config;

/// Serves the plugin chain of `config`, or else the static resources of `resources`, until
/// a signal; `listen` and `admin_listen` override the config's addresses.
pub(crate) async fn serve(
    config: Option<&Path>,
    resources: Option<&Path>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    let app = match (config, resources) {
        (Some(path), _) => App::build(Config::load(path)?)
            .await?
            .watch_config(path.to_path_buf()),
        (None, Some(dir)) => App::with_resources(Config::default_for_resources(), dir)?,
        (None, None) => {
            anyhow::bail!("give --config FILE (plugins) or --resources DIR (static resources)")
        }
    };
    // Open xDS streams outlive a graceful shutdown: after GOAWAY they get the drain time to
    // finish, then the process exits and clients reconnect elsewhere, keeping their config.
    app.metrics(metrics)
        .spawn(listen, admin_listen)
        .await?
        .run_until(shutdown_signal())
        .await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    // A signal that cannot be watched must not look like one that arrived: it waits forever.
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot watch SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
