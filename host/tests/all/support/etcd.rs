//! A real etcd for tests: one member on loopback with free ports and a temporary data dir,
//! that a test can stop, restart on the same data, or cut off behind a proxy. Killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use etcd_client::Client;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{file_tail, free_port, wait_until};

/// One etcd member on 127.0.0.1.
pub(crate) struct Etcd {
    child: Option<Child>,
    data: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd (from `$ETCD`, else `PATH`) and waits until it answers.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let mut etcd = Etcd {
            child: None,
            data,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn().await?;
        Ok(etcd)
    }

    /// The client URL, for an `EtcdSource`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd (as a crash would); the data dir stays for [`restart`](Self::restart).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data dir.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn().await
    }

    /// Writes `key`.
    pub(crate) async fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.client().await?.put(key, value, None).await?;
        Ok(())
    }

    /// Deletes `key`.
    pub(crate) async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.client().await?.delete(key, None).await?;
        Ok(())
    }

    /// The last lines of etcd's log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        file_tail(&self.log_path(), 30)
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let connect = Client::connect([self.endpoint()], None);
        Ok(tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| anyhow!("connecting to etcd timed out"))??)
    }

    fn log_path(&self) -> PathBuf {
        self.data.path().join("etcd.log")
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = std::env::var_os("ETCD").map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&bin)
            .args(["--name", "test", "--data-dir"])
            .arg(self.data.path().join("member"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &format!("test={peer}"),
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {}: run host/tests/etcd.sh to install etcd",
                    bin.display()
                )
            })?;
        self.child = Some(child);
        let ready = wait_until(
            Duration::from_secs(20),
            Duration::from_millis(50),
            async || {
                let mut client = self.client().await?;
                let status =
                    tokio::time::timeout(Duration::from_secs(2), client.status()).await??;
                Ok((status.leader() != 0).then_some(()))
            },
        )
        .await;
        ready.map_err(|e| anyhow!("etcd did not become ready: {e}\n{}", self.log_tail()))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy in front of etcd, so that a test can take etcd away from one client while
/// others (the test itself) keep using it.
pub(crate) struct Partition {
    port: u16,
    accept: JoinHandle<()>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    upstream: u16,
}

impl Partition {
    /// A proxy to `etcd`, passing traffic.
    pub(crate) async fn new(etcd: &Etcd) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let links = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(Self::accept(listener, etcd.client_port, Arc::clone(&links)));
        Ok(Partition {
            port,
            accept,
            links,
            upstream: etcd.client_port,
        })
    }

    /// The proxy's URL, to give the client under test.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones.
    pub(crate) fn cut(&mut self) {
        self.accept.abort();
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Passes traffic again, on the same port.
    pub(crate) async fn heal(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await?;
        self.accept = tokio::spawn(Self::accept(
            listener,
            self.upstream,
            Arc::clone(&self.links),
        ));
        Ok(())
    }

    async fn accept(listener: TcpListener, upstream: u16, links: Arc<Mutex<Vec<JoinHandle<()>>>>) {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let link = tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
            links.lock().unwrap().push(link);
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.cut();
    }
}
