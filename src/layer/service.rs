//! [`TelemetryService`]: the service [`TelemetryLayer`](super::TelemetryLayer) builds.

use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use kasal_classify::{
    AttemptCounter, CircuitBreakerService, DefaultClassifier, Retry, TryCloneBody,
};
use kasal_trace::{Traced, TracedBody};
use kasal_user_agent::SetUserAgent;
use tower::BoxError;
use tower::util::Either;
use tower_service::Service;

use super::box_error::BoxErrors;
use crate::Telemetry;

/// The response body of a [`TelemetryService`]: the client's body, keeping the call's span open
/// until it ends (or is dropped) and recording the call then. Its error is a [`BoxError`].
pub type TelemetryBody<B> = TracedBody<B, Telemetry, DefaultClassifier>;

/// The client, its errors boxed, optionally behind a circuit breaker.
type Guarded<S> = Either<CircuitBreakerService<BoxErrors<S>>, BoxErrors<S>>;
/// ...optionally retried.
type Attempted<S> = Either<Retry<Guarded<S>>, Guarded<S>>;
/// ...inside one span per logical call, with our User-Agent.
type Stack<S> = SetUserAgent<Traced<Attempted<S>, DefaultClassifier, Telemetry>>;

/// An HTTP client wrapped by [`TelemetryLayer`](super::TelemetryLayer): User-Agent, one span
/// and one [`CallRecord`](crate::CallRecord) per logical call, optional retry and circuit
/// breaker.
///
/// Errors are [`BoxError`]s holding the client's error (or a
/// [`CircuitOpen`](kasal_classify::CircuitOpen)) unchanged: downcast them. The response body
/// is a [`TelemetryBody`].
///
/// The [`ExecutionContext`](crate::trace::ExecutionContext) is read when `call` is made: call
/// inside the scope (`ctx.scope(async { svc.call(req).await })`), not
/// `ctx.scope(svc.call(req))`.
#[derive(Clone, Debug)]
pub struct TelemetryService<S> {
    inner: Stack<S>,
    /// With retry: give each request an [`AttemptCounter`], so a call that ends in an error
    /// still reports its attempts (no response carries them then).
    count_attempts: bool,
}

impl<S> TelemetryService<S> {
    pub(super) fn new(inner: Stack<S>, count_attempts: bool) -> Self {
        TelemetryService {
            inner,
            count_attempts,
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for TelemetryService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: TryCloneBody,
    ResBody: Body,
{
    type Response = Response<TelemetryBody<ResBody>>;
    type Error = BoxError;
    type Future = <Stack<S> as Service<Request<B>>>::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if self.count_attempts && request.extensions().get::<AttemptCounter>().is_none() {
            request.extensions_mut().insert(AttemptCounter::new());
        }
        self.inner.call(request)
    }
}
