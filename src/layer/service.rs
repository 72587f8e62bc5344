//! [`TelemetryService`]: the service [`TelemetryLayer`](super::TelemetryLayer) builds.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use kasal_classify::{
    AttemptCounter, CircuitBreakerService, DefaultClassifier, RetryPolicy, TryCloneBody,
};
use kasal_trace::{Traced, TracedBody};
use kasal_user_agent::SetUserAgent;
use tower::BoxError;
use tower::util::Either;
use tower_service::Service;

use super::box_error::BoxErrors;
use super::propagation::Propagate;
use super::retry_mode::RetryMode;
use crate::Telemetry;
use crate::usage::ReadUsage;

/// The response body of a [`TelemetryService`]: the client's body, keeping the call's span open
/// until it ends (or is dropped) and recording the call then. Its error is the client body's,
/// unchanged (`hyper::Error` for hyper-util's client).
///
/// For model calls it also reads the token usage as the body passes ([`ReadUsage`]).
pub type TelemetryBody<B> = TracedBody<B, Telemetry, DefaultClassifier, ReadUsage>;

/// The client, its errors boxed, optionally behind a circuit breaker.
type Guarded<S> = Either<CircuitBreakerService<BoxErrors<S>>, BoxErrors<S>>;
/// ...inside one span per logical call (around every attempt), with our User-Agent.
type Stack<A> = SetUserAgent<Traced<A, DefaultClassifier, Telemetry, ReadUsage>>;
/// The whole stack for client `S` in retry mode `R`.
type Inner<S, R> = Stack<<R as RetryMode>::Service<Propagate<Guarded<S>>>>;

/// An HTTP client wrapped by [`TelemetryLayer`](super::TelemetryLayer): User-Agent, one span
/// and one [`CallRecord`](crate::CallRecord) per logical call, optional retry and circuit
/// breaker.
///
/// `R` is `()` without retry (any request body) or
/// [`RetryPolicy`] after [`TelemetryLayer::retry`](super::TelemetryLayer::retry) (the request
/// body must implement [`TryCloneBody`]; the client must be `Clone`).
///
/// Errors are [`BoxError`]s holding the client's error (or a
/// [`CircuitOpen`](kasal_classify::CircuitOpen)) unchanged: downcast them. The response body
/// is a [`TelemetryBody`].
///
/// The [`ExecutionContext`](crate::trace::ExecutionContext) is read when `call` is made: call
/// inside the scope (`ctx.scope(async { svc.call(req).await })`), not
/// `ctx.scope(svc.call(req))`.
pub struct TelemetryService<S, R: RetryMode = ()> {
    inner: Inner<S, R>,
}

impl<S, R: RetryMode> TelemetryService<S, R> {
    pub(super) fn new(inner: Inner<S, R>) -> Self {
        TelemetryService { inner }
    }
}

impl<S, R: RetryMode> Clone for TelemetryService<S, R>
where
    Inner<S, R>: Clone,
{
    fn clone(&self) -> Self {
        TelemetryService {
            inner: self.inner.clone(),
        }
    }
}

impl<S, R: RetryMode> fmt::Debug for TelemetryService<S, R>
where
    Inner<S, R>: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryService")
            .field("inner", &self.inner)
            .finish()
    }
}

/// Without retry: any request body.
impl<S, B, ResBody> Service<Request<B>> for TelemetryService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
    // The usage hook recognises `Bytes` chunks (to keep them by reference) through `Any`.
    ResBody::Data: 'static,
{
    type Response = Response<TelemetryBody<ResBody>>;
    type Error = BoxError;
    type Future = <Inner<S, ()> as Service<Request<B>>>::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.inner.call(request)
    }
}

/// With retry: the body must be replayable (or say it is not, and be sent once).
impl<S, B, ResBody> Service<Request<B>> for TelemetryService<S, RetryPolicy>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: TryCloneBody,
    ResBody: Body,
    ResBody::Data: 'static,
{
    type Response = Response<TelemetryBody<ResBody>>;
    type Error = BoxError;
    type Future = <Inner<S, RetryPolicy> as Service<Request<B>>>::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // A call that fails after retries has no response to carry `Attempts`: the retry
        // policy counts them here instead.
        if request.extensions().get::<AttemptCounter>().is_none() {
            request.extensions_mut().insert(AttemptCounter::new());
        }
        self.inner.call(request)
    }
}
