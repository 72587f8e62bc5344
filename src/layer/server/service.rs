//! [`ServerTelemetryService`]: the service [`ServerTelemetryLayer`](super::ServerTelemetryLayer)
//! builds.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, MatchedPath};
use http::{Extensions, Request, Response};
use http_body::Body;
use kasal_classify::AsError;
use kasal_trace::{CallSpan, ClientAddress, Direction, RecordCall, Route};
use tower_service::Service;

use super::body::ServerTelemetryBody;
use super::future::ServerResponseFuture;
use super::shared::Shared;
use crate::Telemetry;

/// A server wrapped by [`ServerTelemetryLayer`](super::ServerTelemetryLayer): each request runs
/// in its forwarded [`ExecutionContext`](crate::trace::ExecutionContext) and one server span,
/// and is recorded once when its response body ends.
///
/// Its error is the inner service's, unchanged; its response body is a
/// [`ServerTelemetryBody`] with the inner body's error.
pub struct ServerTelemetryService<S, R = Telemetry> {
    inner: S,
    shared: Arc<Shared<R>>,
}

impl<S, R> ServerTelemetryService<S, R> {
    pub(super) fn new(inner: S, shared: Arc<Shared<R>>) -> Self {
        ServerTelemetryService { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, R> Clone for ServerTelemetryService<S, R> {
    fn clone(&self) -> Self {
        ServerTelemetryService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for ServerTelemetryService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: AsError,
    ResBody: Body,
    R: RecordCall,
{
    type Response = Response<ServerTelemetryBody<ResBody, R>>;
    type Error = S::Error;
    type Future = ServerResponseFuture<S::Future, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let forwarded = shared
            .forwarded
            .context(request.headers(), shared.on_behalf_of);
        if let Some(rejected) = &forwarded.rejected {
            shared.rejections.count(rejected.reason);
        }
        let route = matched_route(request.extensions());
        add_client_address(request.extensions_mut());

        let context = forwarded.context;
        let shared = &self.shared;
        let inner = &mut self.inner;
        // Only the box leaves the scope beside the future: the future is moved as few times
        // as it can be (it holds the request, and axum moves it again).
        let mut started = None;
        let future = context.clone().sync_scope(|| {
            // Boxed at once: the call goes on in the response future, then the body.
            let call = started.insert(Box::new(CallSpan::start_with_route(
                &shared.product,
                Direction::Server,
                request.method(),
                request.uri(),
                request.headers(),
                request.extensions(),
                route.as_ref(),
            )));
            call.set_protocol_version(request.version());
            #[cfg(feature = "otel")]
            crate::layer::propagation::set_remote_parent(call.span(), request.headers());
            let _entered = call.span().enter();
            if let Some(rejected) = &forwarded.rejected {
                // Which header and why; never its value (it may be the token).
                tracing::debug!(
                    header = rejected.header.as_str(),
                    reason = rejected.reason.as_str(),
                    "forwarded header rejected: serving the request as the service"
                );
            }
            inner.call(request)
        });
        ServerResponseFuture::new(context.scope(future), started, self.shared.clone())
    }
}

/// `http.route` from axum's `MatchedPath`, shared from this thread's last one while it repeats
/// ([`Route::shared`]; a `Route` extension set by the user wins over it in
/// `CallSpan::start_with_route`). Not kept in the service: axum clones the route's service for
/// every request, so a cache there would start empty each time. Handed to the call, not
/// inserted into the request: that would cost an allocation and a map insert.
fn matched_route(extensions: &Extensions) -> Option<Route> {
    extensions
        .get::<MatchedPath>()
        .map(|matched| Route::shared(matched.as_str()))
}

/// `client.address` from axum's `ConnectInfo<SocketAddr>` (as a [`ClientAddress`], unless one
/// is set).
fn add_client_address(extensions: &mut Extensions) {
    if extensions.get::<ClientAddress>().is_none() {
        if let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<SocketAddr>>() {
            let peer = ClientAddress::from(*peer);
            extensions.insert(peer);
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for ServerTelemetryService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTelemetryService")
            .field("inner", &self.inner)
            .field("product", &self.shared.product)
            .finish_non_exhaustive()
    }
}
