//! Connection admission on the xDS port: accepts at a bounded rate (a reconnect storm waits in
//! the kernel's backlog, never refused for it) and admits at most N connections at once; the
//! (N+1)th gets a clear gRPC status (`RESOURCE_EXHAUSTED`, naming the limit) on every call
//! instead of a reset — over TLS too, after a handshake — so operators see why.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use futures::{FutureExt, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How fast connections are accepted: `burst` at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcceptRate {
    pub(crate) per_second: u32,
    pub(crate) burst: u32,
}

/// Connections accepted per second after the burst, by default.
pub const DEFAULT_ACCEPT_RATE: u32 = 2_000;
/// Connections accepted at once, by default.
///
/// With [`DEFAULT_ACCEPT_RATE`]: a fleet of 10,000 proxies (what one server on 2 cores
/// configures in ~2.5 s, measured by the load generator) reconnects at once; a larger one is
/// admitted at a pace the server keeps up with instead of all at once.
pub const DEFAULT_ACCEPT_BURST: u32 = 10_000;

impl Default for AcceptRate {
    fn default() -> Self {
        AcceptRate {
            per_second: DEFAULT_ACCEPT_RATE,
            burst: DEFAULT_ACCEPT_BURST,
        }
    }
}

/// A token bucket over accepts.
struct TokenBucket {
    rate: AcceptRate,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: AcceptRate) -> Self {
        TokenBucket {
            rate,
            tokens: f64::from(rate.burst),
            last: Instant::now(),
        }
    }

    /// Takes a token at `now`, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let refill = now.duration_since(self.last).as_secs_f64() * f64::from(self.rate.per_second);
        self.tokens = (self.tokens + refill).min(f64::from(self.rate.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = (1.0 - self.tokens) / f64::from(self.rate.per_second);
            Err(Duration::from_secs_f64(missing).max(Duration::from_millis(1)))
        }
    }
}

/// A connection counted against the limit while it is open. The server can abort it (see
/// [`AdmittedConn::abort`]): its reads and writes then fail, so the transport drops it.
pub(crate) struct CountedConn {
    tcp: TcpStream,
    active: Arc<AtomicUsize>,
    abort: Arc<Abort>,
    /// Dropped with the connection: tells [`AdmittedConn::closed`].
    _closed: oneshot::Sender<()>,
}

/// What the server keeps of an admitted connection once the connection itself belongs to the
/// transport.
pub(crate) struct AdmittedConn {
    pub(crate) peer: SocketAddr,
    pub(crate) accepted: Instant,
    abort: Arc<Abort>,
    closed: oneshot::Receiver<()>,
}

impl AdmittedConn {
    /// Completes when the transport has dropped the connection.
    pub(crate) async fn closed(&mut self) {
        let _ = (&mut self.closed).await;
    }

    /// Fails the connection's reads and writes from now on: the transport ends it at once,
    /// whatever its streams are doing.
    pub(crate) fn abort(&self) {
        self.abort.aborted.store(true, Ordering::Release);
        self.abort.reader.wake();
    }
}

#[derive(Default)]
struct Abort {
    aborted: AtomicBool,
    /// The task reading the connection: woken by [`AdmittedConn::abort`], as a read never
    /// ends by itself on a silent peer.
    reader: AtomicWaker,
}

impl CountedConn {
    fn aborted(&self) -> io::Result<()> {
        if self.abort.aborted.load(Ordering::Acquire) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the server",
            ))
        } else {
            Ok(())
        }
    }
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
        self.abort.reader.register(cx.waker());
        self.aborted()?;
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.aborted()?;
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.aborted()?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Accepts connections at `rate`, admitting at most `max` at once; the others are answered
/// by [`refuse`], after a TLS handshake with `tls` on a TLS port. Every accept the rate held
/// back while a client was waiting adds one to `delayed`.
pub(crate) fn incoming(
    listener: TcpListener,
    max: Option<usize>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    rate: AcceptRate,
    delayed: Arc<AtomicU64>,
) -> impl Stream<Item = (CountedConn, AdmittedConn)> + Send + 'static {
    let active = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS));
    let mut bucket = TokenBucket::new(rate);
    async_stream::stream! {
        loop {
            let mut waited = false;
            while let Err(wait) = bucket.take(Instant::now()) {
                tokio::time::sleep(wait).await;
                waited = true;
            }
            // After a wait, a connection already in the backlog is one the rate delayed.
            let accepted = match listener.accept().now_or_never() {
                Some(accepted) => {
                    if waited {
                        delayed.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("xds_connections_accept_delayed_total").increment(1);
                    }
                    accepted
                }
                None => listener.accept().await,
            };
            let (tcp, peer) = match accepted {
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
            let abort = Arc::new(Abort::default());
            let (closed_tx, closed) = oneshot::channel();
            let conn = CountedConn {
                tcp,
                active: Arc::clone(&active),
                abort: Arc::clone(&abort),
                _closed: closed_tx,
            };
            yield (conn, AdmittedConn { peer, accepted: Instant::now(), abort, closed });
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
                .body(EmptyBody)
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(conn), service);
    let _ = conn.await;
}

/// A body with no data and no trailers (a trailers-only gRPC response).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_gives_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(AcceptRate {
            per_second: 10,
            burst: 3,
        });
        bucket.last = start;
        for _ in 0..3 {
            assert!(bucket.take(start).is_ok());
        }
        let wait = bucket.take(start).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(bucket.take(start + wait).is_ok());
        assert!(bucket.take(start + wait).is_err());
        // A long quiet spell refills the burst, no more.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.take(later).is_ok());
        }
        assert!(bucket.take(later).is_err());
    }
}
