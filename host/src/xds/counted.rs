//! Counts a connection's open gRPC streams: a request holds a guard until its response body
//! has ended (a stream when it ends, unary calls after their trailers, any call when the
//! client resets it), so HTTP/2 pings, which are bytes read, never count as activity.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::body::{Frame, SizeHint};
use tokio::sync::watch;
use tonic::codegen::Service;

use super::router::{Call, XdsRoutes};

/// Streams open on a connection now, and opened since it was accepted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Streams {
    pub(crate) open: usize,
    pub(crate) opened: u64,
}

pub(crate) struct StreamCount(pub(crate) watch::Sender<Streams>);

impl Default for StreamCount {
    fn default() -> Self {
        StreamCount(watch::Sender::new(Streams::default()))
    }
}

impl StreamCount {
    /// Counts a stream open until the returned guard is dropped.
    pub(crate) fn open(self: &Arc<Self>) -> OpenStream {
        self.0.send_modify(|s| {
            s.open += 1;
            s.opened += 1;
        });
        OpenStream(Arc::clone(self))
    }
}

pub(crate) struct OpenStream(Arc<StreamCount>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0 .0.send_modify(|s| s.open -= 1);
    }
}

/// Routes whose every call is counted as an open stream until its response body is dropped.
#[derive(Clone)]
pub(crate) struct CountStreams {
    pub(crate) routes: XdsRoutes,
    pub(crate) streams: Arc<StreamCount>,
}

impl Service<http::Request<tonic::body::Body>> for CountStreams {
    type Response = http::Response<CountedBody>;
    type Error = Infallible;
    type Future = CountedCall;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.routes, cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> CountedCall {
        CountedCall {
            open: Some(self.streams.open()),
            call: self.routes.call(req),
        }
    }
}

/// A call whose stream is counted from the request on.
pub(crate) struct CountedCall {
    call: Call,
    open: Option<OpenStream>,
}

impl Future for CountedCall {
    type Output = Result<http::Response<CountedBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(Pin::new(&mut self.call).poll(cx))?;
        let open = self.open.take();
        Poll::Ready(Ok(response.map(|body| CountedBody { body, _open: open })))
    }
}

/// A response body that keeps its stream counted until the transport drops it: at its end,
/// or when the client resets the stream.
pub(crate) struct CountedBody {
    body: tonic::body::Body,
    _open: Option<OpenStream>,
}

impl hyper::body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
