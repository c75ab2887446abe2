//! `nodes` and `dump`: what a running server holds, read from its admin API over plain
//! HTTP/1.1, with the bearer token if the server wants one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The environment variable that names the token file when `--token-file` is not given.
const TOKEN_FILE_ENV: &str = "NEBUCLOUD_XDS_ADMIN_TOKEN_FILE";

/// Prints each node connected to the server at `admin`: its group and streams, and per
/// resource type the versions sent and ACKed, its state and the last NACK.
pub(crate) async fn nodes(admin: SocketAddr, token_file: Option<&Path>) -> anyhow::Result<()> {
    let nodes: serde_json::Value =
        serde_json::from_str(&get(admin, token_file, "/debug/nodes").await?)?;
    for n in nodes.as_array().into_iter().flatten() {
        println!(
            "{}  group={}  streams={}",
            n["node_id"].as_str().unwrap_or("?"),
            n["group"].as_str().unwrap_or("?"),
            n["streams"]
        );
        for (t, st) in n["types"].as_object().into_iter().flatten() {
            let short = t.rsplit('.').next().unwrap_or(t);
            let nack = st["last_nack"]["message"]
                .as_str()
                .map(|m| format!("  last NACK: {m}"))
                .unwrap_or_default();
            println!(
                "  {short:<24} sent={} acked={} state={}{nack}",
                st["sent_version"], st["acked_version"], st["state"]
            );
        }
    }
    Ok(())
}

/// Prints what the server at `admin` serves `node`, as pretty JSON.
pub(crate) async fn dump(
    admin: SocketAddr,
    token_file: Option<&Path>,
    node: &str,
) -> anyhow::Result<()> {
    let body = get(admin, token_file, &format!("/debug/nodes/{node}/config")).await?;
    let json: serde_json::Value = serde_json::from_str(&body)?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// GETs a path from a running server's admin API, naming it in `Host` (the server refuses
/// other names) and with the bearer token if there is one; an error status becomes an error
/// with the server's message.
async fn get(admin: SocketAddr, token_file: Option<&Path>, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token_file = token_file
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(TOKEN_FILE_ENV).map(PathBuf::from));
    let authorization = match token_file {
        Some(file) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the token file {}", file.display()))?;
            let token = text.trim();
            anyhow::ensure!(
                !token.is_empty() && !token.contains(char::is_whitespace),
                "the token file {} holds no token (one line, no spaces)",
                file.display()
            );
            format!("Authorization: Bearer {token}\r\n")
        }
        None => String::new(),
    };
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("cannot reach the admin API at {admin}"))?;
    // `SocketAddr` shows as `127.0.0.1:18001` or `[::1]:18001`: the form `Host` takes.
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    anyhow::ensure!(status == "200", "{path}: HTTP {status}: {}", body.trim());
    Ok(body.to_owned())
}
