//! Harness for integration tests: the server as `serve` builds it, where the real xDS clients
//! live, free ports, and polling.
#![allow(dead_code)] // Each test module uses its own subset of the harness.

pub(crate) mod app;
pub(crate) mod backend;
pub(crate) mod clients;
pub(crate) mod envoy;
pub(crate) mod etcd;
pub(crate) mod http;

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::anyhow;

/// The repository root: the parent of the `host/` crate these tests belong to.
pub(crate) fn repo_root() -> PathBuf {
    let host = Path::new(env!("CARGO_MANIFEST_DIR"));
    host.parent().unwrap_or(host).to_path_buf()
}

/// `.deps/` at the repo root, where `make deps` installs the real clients.
pub(crate) fn deps_dir() -> PathBuf {
    repo_root().join(".deps")
}

/// `host/tests/clients/`, the client and backend scripts.
pub(crate) fn clients_dir() -> PathBuf {
    repo_root().join("host/tests/clients")
}

/// Envoy 1.40's binary (`.deps/envoy/bin/envoy`). Panics with a hint if `make deps` has not run.
pub(crate) fn envoy_bin() -> PathBuf {
    installed(deps_dir().join("envoy/bin/envoy"))
}

/// The Python interpreter of the venv that has grpcio, grpcio-health-checking and xds-protos.
pub(crate) fn python_bin() -> PathBuf {
    installed(deps_dir().join("py/bin/python"))
}

/// The `node` to run grpc-js with: `$NODE` if set, else `node` from `PATH`.
pub(crate) fn node_bin() -> PathBuf {
    std::env::var_os("NODE").map_or_else(|| PathBuf::from("node"), PathBuf::from)
}

/// The `NODE_PATH` under which grpc-js and grpc-js-xds resolve (`.deps/node/node_modules`).
pub(crate) fn node_path() -> PathBuf {
    let modules = deps_dir().join("node/node_modules");
    installed(modules.join("@grpc/grpc-js-xds/package.json"));
    modules
}

/// A path inside `host/tests/clients/` that must exist (it is committed, not installed).
pub(crate) fn client_script(name: &str) -> PathBuf {
    let path = clients_dir().join(name);
    assert!(path.exists(), "client script {} is missing", path.display());
    path
}

fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run `make deps` first (at {})",
        path.display(),
        repo_root().display()
    );
    path
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a process that must be told its
/// port (Envoy's listeners, the server binary). Prefer binding port 0 where the thing under
/// test can report its port.
///
/// Ports come from the 12,000 below the kernel's ephemeral range (read from
/// `/proc/sys/net/ipv4/ip_local_port_range`), each handed out once per test process: a port
/// from `bind(…:0)` is an ephemeral one, which the kernel may also give to any outgoing
/// connection's local end — with thousands of connections in flight across the tests, that
/// raced now and then before the caller bound it. Without room below the range, port 0 it is.
pub(crate) fn free_port() -> u16 {
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| {
            r.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
        })
        .unwrap_or(32_768);
    if ephemeral_low >= SPAN + 1_024 {
        let low = ephemeral_low - SPAN;
        let start = std::process::id() % SPAN;
        for _ in 0..SPAN {
            let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
            let Ok(port) = u16::try_from(low + offset) else {
                break;
            };
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"),
    }
}

/// A channel to a server starting on `127.0.0.1:port`, once it accepts connections.
pub(crate) async fn channel_when_up(port: u16, wait: Duration) -> tonic::transport::Channel {
    wait_until(wait, Duration::from_millis(50), async || {
        Ok(
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))?
                .connect()
                .await
                .ok(),
        )
    })
    .await
    .unwrap()
}

/// Calls `probe` every `interval` until it returns `Ok(Some(value))`, and returns that value.
///
/// `Ok(None)` and `Err(_)` both mean "not yet" (a server still starting answers with errors).
/// After `timeout` it fails, carrying the last error seen so the test message says why.
pub(crate) async fn wait_until<T>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last_error = match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if tokio::time::Instant::now() + interval > deadline {
            let why = match last_error {
                Some(e) => format!("last error: {e:#}"),
                None => "condition never held".to_owned(),
            };
            return Err(anyhow!(
                "timed out after {timeout:?} ({attempts} tries): {why}"
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs `fut` with a deadline, naming `what` in the error.
pub(crate) async fn within<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {timeout:?}"))?
}

/// The last `lines` lines of a text file, for failure messages ("" if it cannot be read).
pub(crate) fn file_tail(path: &Path, lines: usize) -> String {
    text_tail(&std::fs::read_to_string(path).unwrap_or_default(), lines)
}

/// The last `lines` lines of `text`.
pub(crate) fn text_tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The wasm file of a plugin built by `make plugins` (into `NX_PLUGIN_DIR`, by default the
/// repository's `build/plugins`).
pub(crate) fn plugin_wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("NX_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("build/plugins"));
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: run `make plugins` first",
        path.display()
    );
    path
}
