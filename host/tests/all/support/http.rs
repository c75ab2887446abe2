//! A minimal HTTP/1.1 client for Envoy's admin API and listeners (no hyper in the tests).

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::within;

/// An HTTP/1.1 response read to the end of the connection.
#[derive(Debug, Clone)]
pub(crate) struct HttpResponse {
    /// Status code.
    pub(crate) status: u16,
    /// Headers in order, names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    /// Body, de-chunked, as text (invalid UTF-8 replaced).
    pub(crate) body: String,
}

impl HttpResponse {
    /// First value of a header, by lower-case name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on 127.0.0.1:`port` with `Connection: close`; at most 10 s.
pub(crate) async fn http_get(port: u16, path: &str, host: &str) -> anyhow::Result<HttpResponse> {
    http_request(port, "GET", path, &[("Host", host)], b"").await
}

/// `method path` on 127.0.0.1:`port` with exactly `headers` (give `Host`: it may be omitted or
/// wrong on purpose), `body` with its `Content-Length`, and `Connection: close`; at most 10 s.
pub(crate) async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("User-Agent: nebucloud-xds-tests\r\nConnection: close\r\n\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(body);
    let what = format!("{method} 127.0.0.1:{port}{path}");
    within(Duration::from_secs(10), &what, async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(&request).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw).with_context(|| what.clone())
    })
    .await
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| anyhow!("no end of headers in {raw:?}"))?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: String::new(),
    };
    let mut body = raw[end + 4..].to_vec();
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.contains("chunked"))
    {
        body = dechunk(&body)?;
    } else if let Some(len) = response
        .header("content-length")
        .and_then(|l| l.parse().ok())
    {
        body.truncate(len);
    }
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n").ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_field = std::str::from_utf8(&rest[..eol])?;
        let size_hex = size_field.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_field:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_body_with_extensions() -> anyhow::Result<()> {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n\
                    5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        let response = parse_response(raw)?;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-a"), Some("b"));
        assert_eq!(response.body, "hello, world");
        Ok(())
    }

    #[test]
    fn honours_content_length_and_rejects_garbage() -> anyhow::Result<()> {
        let response =
            parse_response(b"HTTP/1.1 503 Unavailable\r\ncontent-length: 2\r\n\r\nokEXTRA")?;
        assert_eq!((response.status, response.body.as_str()), (503, "ok"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        Ok(())
    }
}
