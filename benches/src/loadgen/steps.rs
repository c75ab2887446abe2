//! The steps every run is made of: opening connections paced by the server, waiting for a
//! condition on every node, and timing one change until every node ACKed it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};

use super::client::NodeProgress;
use super::server::ServerProcess;
use super::Update;
use crate::stats::{unix_ns, Summary};

/// The run's clock: node progress is recorded in ns since `at`; the server reports Unix time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Epoch {
    pub(super) at: Instant,
    unix_ns: u64,
}

impl Epoch {
    pub(super) fn now() -> Self {
        Epoch {
            at: Instant::now(),
            unix_ns: unix_ns(SystemTime::now()),
        }
    }

    /// Now, in ns since the epoch.
    fn elapsed_ns(self) -> u64 {
        u64::try_from(self.at.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A Unix time (ns) as ns since the epoch.
    fn since_unix(self, unix_ns: u64) -> u64 {
        unix_ns.saturating_sub(self.unix_ns)
    }
}

/// Makes change `k` (an input revision, or with `plugin_file` the next policy version copied
/// over the watched file) and waits until every node ACKed it or `timeout` passed. Per node,
/// the time from the change (or from when the server saw it, if it says) to its ACK.
pub(super) async fn timed_change(
    server: &mut ServerProcess,
    label: &str,
    k: u32,
    plugin_file: Option<(&Path, &[PathBuf])>,
    progress: &[NodeProgress],
    epoch: Epoch,
    timeout: Duration,
) -> anyhow::Result<(Update, Vec<f64>)> {
    let cpu_before = server.cpu();
    let own_before = own_cpu();
    let mut t0 = epoch.elapsed_ns();
    match plugin_file {
        None => {
            server.send(&format!("update {k}")).await?;
            if let Some(seen) = server.updated().await? {
                t0 = t0.max(epoch.since_unix(seen));
            }
        }
        // Written in place, as `cp` does: the server's settle window must see it whole.
        Some((file, versions)) => {
            let version = &versions[k as usize % versions.len()];
            std::fs::copy(version, file)
                .with_context(|| format!("{} -> {}", version.display(), file.display()))?;
        }
    }
    // The initial configuration is the marker's first content.
    let want = k + 1;
    wait(
        label,
        &format!("update {k} ACKed"),
        timeout,
        progress,
        |p| p.marker_versions.load(Ordering::Relaxed) >= want,
    )
    .await;
    let samples: Vec<f64> = progress
        .iter()
        .filter(|p| p.marker_versions.load(Ordering::Relaxed) >= want)
        .map(|p| p.marker_ack_ns.load(Ordering::Relaxed).saturating_sub(t0) as f64 / 1e6)
        .collect();
    let update = Update {
        acked: samples.len(),
        per_node: Summary::of(&samples),
        server_cpu_s: server.cpu() - cpu_before,
        loadgen_cpu_s: own_cpu() - own_before,
    };
    Ok((update, samples))
}

/// Opens `n` HTTP/2 connections, 64 at a time. Each counts as open once the server answered
/// a gRPC health check on it: a TCP connect alone completes in the kernel's accept queue, and
/// racing ahead of the server's accept loop overflows it (the dropped handshakes then wait for
/// a one-second SYN retransmit), which would measure the kernel rather than the server.
pub(super) async fn connect(addr: std::net::SocketAddr, n: usize) -> anyhow::Result<Vec<Channel>> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30));
    let open = |endpoint: Endpoint| async move {
        let channel = endpoint.connect().await?;
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await?;
        anyhow::Ok(channel)
    };
    futures::stream::iter((0..n).map(|_| open(endpoint.clone())))
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Waits until `done` holds for every node that has not failed, printing progress on stderr.
pub(super) async fn wait(
    label: &str,
    what: &str,
    timeout: Duration,
    progress: &[NodeProgress],
    done: impl Fn(&NodeProgress) -> bool,
) {
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let (ok, failed) = progress.iter().fold((0, 0), |(ok, failed), p| {
            if done(p) {
                (ok + 1, failed)
            } else if p.failed.load(Ordering::Relaxed) {
                (ok, failed + 1)
            } else {
                (ok, failed)
            }
        });
        let finished = ok + failed == progress.len();
        if finished || started.elapsed() > timeout || last_print.elapsed() > Duration::from_secs(1)
        {
            eprintln!(
                "[{label}] {what}: {ok}/{} ({failed} failed) after {:.1} s",
                progress.len(),
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        if finished || started.elapsed() > timeout {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn own_cpu() -> f64 {
    crate::stats::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
