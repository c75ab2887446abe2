//! An HTTP/1.1 upstream that answers every request 200 with its tag, so tests see who answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A backend on 127.0.0.1 (port chosen by the OS). Every request gets `200` with body = tag and
/// header `x-backend: tag`; keep-alive is honoured, as Envoy reuses upstream connections.
/// Stops when dropped.
pub(crate) struct HttpBackend {
    port: u16,
    tag: String,
    seen: Arc<Seen>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct Seen {
    count: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

impl HttpBackend {
    /// Binds 127.0.0.1:0 and starts serving; the port is known on return.
    pub(crate) async fn start(tag: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Seen::default());
        let accept = tokio::spawn(accept_loop(listener, tag.to_owned(), seen.clone()));
        Ok(Self {
            port,
            tag: tag.to_owned(),
            seen,
            accept,
        })
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The tag it answers with.
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// Requests answered so far.
    pub(crate) fn requests(&self) -> usize {
        self.seen.count.load(Ordering::SeqCst)
    }

    /// Request lines seen so far (`GET /path HTTP/1.1`) with their `Host`, oldest first.
    pub(crate) fn request_log(&self) -> Vec<String> {
        self.seen
            .requests
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        // Open connections are separate tasks; they end when their peer closes.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, tag: String, seen: Arc<Seen>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve(stream, tag.clone(), seen.clone()));
    }
}

/// Serves requests on one connection until the peer closes or asks to.
async fn serve(mut stream: TcpStream, tag: String, seen: Arc<Seen>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let Some(head_end) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let mut content_length = 0usize;
        let mut host = String::new();
        let mut close = false;
        let mut chunked = false;
        for (name, value) in lines.filter_map(|l| l.split_once(':')) {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.parse().unwrap_or(0),
                "host" => host = value.to_owned(),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "transfer-encoding" => chunked = true,
                _ => {}
            }
        }
        // Skip the request body: it is never looked at.
        let body_end = head_end + 4 + content_length;
        while buf.len() < body_end {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        buf.drain(..body_end);

        seen.count.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut log) = seen.requests.lock() {
            log.push(format!("{request_line} host={host}"));
        }
        // A chunked request body is not parsed: answer, then close to stay in sync.
        let close = close || chunked;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
             x-backend: {tag}\r\n{}\r\n{tag}",
            tag.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Reads until `buf` holds a full header block; returns the offset of its `\r\n\r\n`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end);
        }
        if buf.len() > 64 * 1024 || !read_more(stream, buf).await {
            return None;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
