//! The real proxyless gRPC clients (C-core through Python, grpc-js through Node) and their backend.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;
use tempfile::NamedTempFile;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::{client_script, file_tail, node_bin, node_path, python_bin, text_tail, within};

/// Which gRPC implementation speaks xDS to the server. Both use ADS, state of the world only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    /// gRPC C-core 1.85 through grpcio (`grpc_xds_client.py`).
    CCore,
    /// grpc-js 1.14 with @grpc/grpc-js-xds (`grpc_js_client.js`).
    GrpcJs,
}

impl ClientKind {
    /// Both clients, for tests that must hold for each.
    pub(crate) const ALL: [ClientKind; 2] = [Self::CCore, Self::GrpcJs];

    /// A short name for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::CCore => "c-core",
            Self::GrpcJs => "grpc-js",
        }
    }

    fn command(self) -> Command {
        match self {
            Self::CCore => {
                let mut cmd = Command::new(python_bin());
                cmd.arg("-u").arg(client_script("grpc_xds_client.py"));
                cmd
            }
            Self::GrpcJs => {
                let mut cmd = Command::new(node_bin());
                cmd.env("NODE_PATH", node_path())
                    .arg(client_script("grpc_js_client.js"));
                cmd
            }
        }
    }
}

/// One client process's arguments. Each output line is JSON: `{"ok":true,"who":"<port>"}`
/// (`/test.Echo/Who`), `{"ok":true,"status":"SERVING"}` (health mode) or
/// `{"ok":false,"code":"UNAVAILABLE","error":"..."}`; every line also has `t`, seconds since start.
#[derive(Debug, Clone)]
pub(crate) struct GrpcClient {
    kind: ClientKind,
    args: Vec<String>,
    timeout: Duration,
    rpcs: u32,
}

/// A finished one-shot client run.
#[derive(Debug, Clone)]
pub(crate) struct ClientRun {
    /// Exit status was 0: the first RPC succeeded within the timeout, and so did the rest.
    pub(crate) success: bool,
    /// Every JSON line printed, in order.
    pub(crate) lines: Vec<Value>,
    /// Everything the client logged on stderr.
    pub(crate) stderr: String,
}

impl GrpcClient {
    /// A client of `kind` with node id `node_id` asking `127.0.0.1:xds_port` for `xds:///target`.
    /// Defaults: node cluster "test", zone "a", 30 s to the first success, one RPC.
    pub(crate) fn new(kind: ClientKind, xds_port: u16, node_id: &str, target: &str) -> Self {
        let args = [
            "--xds".to_owned(),
            format!("127.0.0.1:{xds_port}"),
            "--node-id".to_owned(),
            node_id.to_owned(),
            "--target".to_owned(),
            target.to_owned(),
        ];
        Self {
            kind,
            args: args.into(),
            timeout: Duration::from_secs(30),
            rpcs: 1,
        }
    }

    /// Runs one client with the defaults and returns its first successful result, e.g.
    /// `{"ok":true,"who":"41234","t":0.4}`.
    pub(crate) async fn run_once(
        kind: ClientKind,
        xds_port: u16,
        node_id: &str,
        target: &str,
    ) -> anyhow::Result<Value> {
        Self::new(kind, xds_port, node_id, target).first_ok().await
    }

    /// `node.cluster`.
    pub(crate) fn cluster(self, cluster: &str) -> Self {
        self.arg("--cluster", cluster)
    }

    /// `node.locality.zone` (region is always "local").
    pub(crate) fn zone(self, zone: &str) -> Self {
        self.arg("--zone", zone)
    }

    /// Adds a string entry to `node.metadata`.
    pub(crate) fn metadata(self, key: &str, value: &str) -> Self {
        self.arg("--metadata", &format!("{key}={value}"))
    }

    /// How long the client retries before giving up on its first successful RPC. The clients'
    /// does-not-exist timer is 15 s, so a test of a missing resource needs more than that.
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes `n` RPCs in all once the first succeeds.
    pub(crate) fn rpcs(mut self, n: u32) -> Self {
        self.rpcs = n.max(1);
        self
    }

    /// Calls `grpc.health.v1.Health/Check` instead of `/test.Echo/Who`.
    pub(crate) fn health(mut self) -> Self {
        self.args.push("--health".to_owned());
        self
    }

    /// Turns on the client library's xDS traces (on stderr).
    pub(crate) fn trace(mut self) -> Self {
        self.args.push("--trace".to_owned());
        self
    }

    fn arg(mut self, flag: &str, value: &str) -> Self {
        self.args.extend([flag.to_owned(), value.to_owned()]);
        self
    }

    fn command(&self, extra: &[String]) -> Command {
        let mut cmd = self.kind.command();
        cmd.args(&self.args)
            .args(extra)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the client to completion and returns all it printed.
    pub(crate) async fn run(&self) -> anyhow::Result<ClientRun> {
        let extra = [
            "--timeout".to_owned(),
            self.timeout.as_secs_f64().to_string(),
            "--rpcs".to_owned(),
            self.rpcs.to_string(),
        ];
        let child = self
            .command(&extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let child = child.with_context(|| format!("spawning the {} client", self.kind.name()))?;
        let limit = self.timeout + Duration::from_secs(10 + 2 * u64::from(self.rpcs));
        let what = format!("{} client", self.kind.name());
        let output = within(limit, &what, async { Ok(child.wait_with_output().await?) }).await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let lines = stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}"))
            })
            .collect::<anyhow::Result<Vec<Value>>>()?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        Ok(ClientRun {
            success: output.status.success(),
            lines,
            stderr,
        })
    }

    /// Runs the client and returns its first result, or an error with its last line and the
    /// tail of its log if it never got a successful RPC.
    pub(crate) async fn first_ok(&self) -> anyhow::Result<Value> {
        let run = self.run().await?;
        match run.lines.first() {
            Some(first) if run.success => Ok(first.clone()),
            _ => Err(anyhow!(
                "{} client failed: {}\n--- stderr (tail) ---\n{}",
                self.kind.name(),
                run.lines
                    .last()
                    .map_or_else(|| "no output".to_owned(), Value::to_string),
                text_tail(&run.stderr, 30),
            )),
        }
    }

    /// Starts the client making one RPC every 200 ms for `duration`, every result on its own line.
    pub(crate) fn watch(&self, duration: Duration) -> anyhow::Result<ClientWatch> {
        let stderr = NamedTempFile::new()?;
        let extra = ["--watch".to_owned(), duration.as_secs_f64().to_string()];
        let mut child = self
            .command(&extra)
            .stdout(Stdio::piped())
            .stderr(stderr.reopen()?)
            .spawn()
            .with_context(|| format!("spawning the {} client", self.kind.name()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("client stdout not piped"))?;
        Ok(ClientWatch {
            kind: self.kind,
            child,
            lines: BufReader::new(stdout).lines(),
            stderr,
        })
    }
}

/// A client in `--watch` mode. Killed on drop.
pub(crate) struct ClientWatch {
    kind: ClientKind,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: NamedTempFile,
}

impl ClientWatch {
    /// The next result line, or `None` once the client has finished.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<Value>> {
        let Some(line) = self.lines.next_line().await? else {
            return Ok(None);
        };
        let value = serde_json::from_str(&line);
        Ok(Some(value.with_context(|| {
            format!("{} client printed {line:?}", self.kind.name())
        })?))
    }

    /// Skips results until one satisfies `accept`, waiting at most `timeout`.
    pub(crate) async fn next_matching(
        &mut self,
        timeout: Duration,
        accept: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let mut last = None;
        let found = tokio::time::timeout(timeout, async {
            while let Some(value) = self.next().await? {
                if accept(&value) {
                    return Ok(value);
                }
                last = Some(value);
            }
            bail!("client finished")
        })
        .await;
        let last = last.map_or_else(|| "none".to_owned(), |v| v.to_string());
        match found {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.context(format!("no matching result; last: {last}"))),
            Err(_) => bail!("no matching result within {timeout:?}; last: {last}"),
        }
    }

    /// Reads the remaining results until the client exits.
    pub(crate) async fn finish(mut self) -> anyhow::Result<Vec<Value>> {
        let mut rest = Vec::new();
        while let Some(value) = self.next().await? {
            rest.push(value);
        }
        self.child.wait().await?;
        Ok(rest)
    }

    /// Stops the client now and returns every result it printed that was not read yet.
    pub(crate) async fn stop(mut self) -> anyhow::Result<Vec<Value>> {
        self.child.start_kill()?;
        self.child.wait().await?;
        let mut rest = Vec::new();
        while let Some(value) = self.next().await? {
            rest.push(value);
        }
        Ok(rest)
    }

    /// The last lines the client logged on stderr.
    pub(crate) fn stderr_tail(&self) -> String {
        file_tail(self.stderr.path(), 30)
    }
}

/// The backend port that answered a `/test.Echo/Who` result line, if it succeeded.
pub(crate) fn who(result: &Value) -> Option<&str> {
    result["who"].as_str()
}

/// `grpc_backend.py`: health SERVING and `/test.Echo/Who` answering its tag (by default its
/// port), on 127.0.0.1. Killed on drop.
pub(crate) struct GrpcBackend {
    child: Child,
    port: u16,
    stderr: NamedTempFile,
}

impl GrpcBackend {
    /// Starts a backend on a free port whose `Who` answer is its port.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        Self::spawn(None).await
    }

    /// Starts a backend on a free port whose `Who` answer is `tag`.
    pub(crate) async fn start_tagged(tag: &str) -> anyhow::Result<Self> {
        Self::spawn(Some(tag)).await
    }

    async fn spawn(tag: Option<&str>) -> anyhow::Result<Self> {
        let stderr = NamedTempFile::new()?;
        let mut cmd = Command::new(python_bin());
        cmd.arg("-u").arg(client_script("grpc_backend.py")).arg("0");
        if let Some(tag) = tag {
            cmd.args(["--tag", tag]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen()?)
            .kill_on_drop(true)
            .spawn()
            .context("spawning grpc_backend.py")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("backend stdout not piped"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = within(Duration::from_secs(15), "grpc_backend.py READY", async {
            let line = lines.next_line().await?.unwrap_or_default();
            let port = line
                .strip_prefix("READY ")
                .and_then(|p| p.trim().parse().ok());
            port.ok_or_else(|| anyhow!("expected `READY <port>`, got {line:?}"))
        })
        .await;
        match ready {
            Ok(port) => Ok(Self {
                child,
                port,
                stderr,
            }),
            Err(e) => Err(e.context(file_tail(stderr.path(), 20))),
        }
    }

    /// The port it serves on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The backend's stderr so far, last lines.
    pub(crate) fn stderr_tail(&self) -> String {
        file_tail(self.stderr.path(), 20)
    }

    /// Stops it now (rather than on drop), e.g. to test failover.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
