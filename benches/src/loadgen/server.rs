//! The server under test as a child process: started, told to change its inputs, asked how
//! many node groups it holds, read from `/proc` for memory and CPU, and stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::servers::GroupCount;
use crate::stats::{cpu_seconds, rss_bytes};

/// A running `bench-server`.
pub struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Where it serves xDS.
    pub addr: SocketAddr,
    /// What setting up its resources added to its resident memory, in bytes (as it measured).
    pub setup_bytes: u64,
    /// Its process id.
    pub pid: u32,
}

impl ServerProcess {
    /// Starts `bin` with `args` and waits for its `ready` line.
    pub async fn spawn(bin: &Path, args: &[String]) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut stdout = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), stdout.next_line())
            .await
            .context("the server was not ready within 120 s")??
            .context("the server exited before it was ready")?;
        let mut words = line.split_whitespace();
        let (Some("ready"), Some(addr), Some(setup)) = (words.next(), words.next(), words.next())
        else {
            anyhow::bail!("unexpected first line from the server: {line:?}");
        };
        Ok(ServerProcess {
            child,
            stdin,
            stdout,
            addr: addr.parse()?,
            setup_bytes: setup.parse()?,
            pid,
        })
    }

    /// Sends one command line.
    pub async fn send(&mut self, command: &str) -> anyhow::Result<()> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Waits for the server's answer to an `update`: when its data path saw the change (Unix
    /// time in ns), if that is later than the answer's request.
    pub async fn updated(&mut self) -> anyhow::Result<Option<u64>> {
        match self.stdout.next_line().await? {
            Some(l) if l.starts_with("updated") => {
                Ok(l.split_whitespace().nth(2).and_then(|w| w.parse().ok()))
            }
            other => anyhow::bail!("unexpected answer from the server: {other:?}"),
        }
    }

    /// How many node groups (or per-node snapshots) the server holds now, and how many it
    /// has forgotten.
    pub async fn groups(&mut self) -> anyhow::Result<GroupCount> {
        self.send("groups").await?;
        let line = self.stdout.next_line().await?;
        line.as_deref()
            .and_then(GroupCount::parse)
            .with_context(|| format!("unexpected answer to `groups`: {line:?}"))
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> u64 {
        rss_bytes(self.pid).unwrap_or(0)
    }

    /// CPU time used so far, in seconds.
    pub fn cpu(&self) -> f64 {
        cpu_seconds(self.pid).unwrap_or(0.0)
    }

    /// Asks it to stop, and kills it if it does not within two seconds.
    pub async fn stop(mut self) {
        let _ = self.send("quit").await;
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The `bench-server` binary: beside this executable (both are built by the same cargo run).
pub fn default_server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test executables live in `deps/`; the binaries one level up.
    [dir.join("bench-server"), dir.join("../bench-server")]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join("bench-server"))
}
