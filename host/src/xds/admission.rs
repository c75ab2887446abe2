//! Connection admission on the xDS port: at most N connections at once. The (N+1)th gets a
//! clear gRPC status (`RESOURCE_EXHAUSTED`, naming the limit) on every call instead of a
//! reset — over TLS too, after a handshake — so operators see why, and the first N keep
//! working.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection counted against the limit while it is open.
pub(crate) struct CountedConn {
    tcp: TcpStream,
    active: Arc<AtomicUsize>,
}

impl Drop for CountedConn {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("xds_connections").decrement(1.0);
    }
}

impl Connected for CountedConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for CountedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Accepts connections, admitting at most `max` at once; the others are answered by
/// [`refuse`], after a TLS handshake with `tls` on a TLS port.
pub(crate) fn incoming(
    listener: TcpListener,
    max: Option<usize>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) -> impl Stream<Item = io::Result<CountedConn>> + Send + 'static {
    let active = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS));
    async_stream::stream! {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Transient (e.g. out of file descriptors): back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if let Some(max) = max {
                if active.load(Ordering::Relaxed) >= max {
                    metrics::counter!("xds_connections_refused_total").increment(1);
                    tracing::warn!(%peer, max, "connection refused: at the connection limit");
                    // A flood of refusals may not take the server's descriptors or CPU: past
                    // MAX_REFUSALS at once, over-limit connections are just closed.
                    let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() else {
                        continue;
                    };
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let answer = async {
                            match tls {
                                None => refuse(tcp, max).await,
                                Some(config) => {
                                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                                    if let Ok(stream) = acceptor.accept(tcp).await {
                                        refuse(stream, max).await;
                                    }
                                }
                            }
                        };
                        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer).await;
                        drop(permit);
                    });
                    continue;
                }
            }
            active.fetch_add(1, Ordering::Relaxed);
            metrics::gauge!("xds_connections").increment(1.0);
            yield Ok(CountedConn { tcp, active: Arc::clone(&active) });
        }
    }
}

/// How long an over-limit connection may take to handshake and be answered, in all.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How many over-limit connections are answered at once.
const MAX_REFUSALS: usize = 64;

/// Answers every call on an over-limit connection with `RESOURCE_EXHAUSTED`, then closes it.
async fn refuse<S>(conn: S, max: usize)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let message = format!("this server is at its limit of {max} connections; try another replica");
    let service = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
        let message = message.clone();
        async move {
            http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", "8")
                .header("grpc-message", message.replace(' ', "%20"))
                .body(http_body_util_empty())
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(conn), service);
    let _ = conn.await;
}

/// An empty HTTP body (trailers-only gRPC response).
fn http_body_util_empty() -> EmptyBody {
    EmptyBody
}

/// A body with no data and no trailers.
pub(crate) struct EmptyBody;

impl hyper::body::Body for EmptyBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }
}
