//! The server's gRPC services behind one path router: `/package.Service/Method` goes to the
//! handler of that method if it has one of its own (the SotW streams), else to the service of
//! that name; anything else is answered `UNIMPLEMENTED`. A plain tower service, so
//! that the core does not need tonic's `Routes` (which brings axum into every embedder's build).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Body as HttpBody;
use tonic::body::Body;
use tonic::codegen::{Service, StdError};
use tonic::server::NamedService;

/// A call in flight: the response of one gRPC method.
pub(crate) type Call =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// Answers the calls of a service or of one method.
pub(crate) type Handler = Box<dyn Fn(http::Request<Body>) -> Call + Send + Sync>;

/// Every gRPC service of an [`XdsServer`](super::XdsServer), as one tower service to serve
/// with tonic's `Server::serve_with_incoming` (or mount under another HTTP/2 server).
#[derive(Clone)]
pub struct XdsRoutes {
    services: Arc<HashMap<&'static str, Handler>>,
    /// Methods served apart from their service, by path: these come first.
    methods: Arc<HashMap<String, Handler>>,
}

impl std::fmt::Debug for XdsRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.services.keys().collect();
        names.sort();
        let mut methods: Vec<_> = self.methods.keys().collect();
        methods.sort();
        f.debug_struct("XdsRoutes")
            .field("services", &names)
            .field("methods", &methods)
            .finish()
    }
}

/// Collects the services of [`XdsRoutes`].
#[derive(Default)]
pub(crate) struct RoutesBuilder {
    services: HashMap<&'static str, Handler>,
    methods: HashMap<String, Handler>,
}

impl RoutesBuilder {
    /// Routes the calls of `S::NAME` to `svc`.
    pub(crate) fn add<S>(mut self, svc: S) -> Self
    where
        S: NamedService
            + Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let handler: Handler = Box::new(move |req| {
            // Generated tonic services are always ready: each call gets its own clone.
            let mut svc = svc.clone();
            Box::pin(svc.call(req))
        });
        self.services.insert(S::NAME, handler);
        self
    }

    /// Routes the calls of one method (`path`: `/package.Service/Method`) to `handler` rather
    /// than to its service's.
    pub(crate) fn method(mut self, path: String, handler: Handler) -> Self {
        self.methods.insert(path, handler);
        self
    }

    pub(crate) fn build(self) -> XdsRoutes {
        XdsRoutes {
            services: Arc::new(self.services),
            methods: Arc::new(self.methods),
        }
    }
}

impl XdsRoutes {
    /// The paths of the methods served apart from their service.
    #[cfg(test)]
    pub(crate) fn method_paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.methods.keys().map(String::as_str).collect();
        paths.sort_unstable();
        paths
    }
}

/// The service part of a gRPC path, `/package.Service/Method`.
fn service_name(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(service)
}

impl<B> Service<http::Request<B>> for XdsRoutes
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Call;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Call {
        let path = req.uri().path();
        let handler = self
            .methods
            .get(path)
            .or_else(|| service_name(path).and_then(|name| self.services.get(name)));
        match handler {
            Some(handler) => handler(req.map(Body::new)),
            // The path is the client's: not echoed.
            None => Box::pin(std::future::ready(Ok(tonic::Status::unimplemented(
                "no such gRPC service on this server",
            )
            .into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::service_name;

    #[test]
    fn the_service_is_the_first_path_segment_of_a_method_path() {
        assert_eq!(
            service_name(
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
            ),
            Some("envoy.service.discovery.v3.AggregatedDiscoveryService")
        );
        for bad in ["", "/", "//M", "/S/", "/S", "S/M", "/S/M/extra"] {
            assert_eq!(service_name(bad), None, "{bad:?}");
        }
    }
}
