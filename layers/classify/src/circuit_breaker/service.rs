use std::task::{Context, Poll};

use http::{Request, Response};
use tower::BoxError;
use tower_service::Service;

use super::{CircuitBreaker, ResponseFuture};
use crate::classify::{Classify, DefaultClassifier};

/// A service guarded by a per-host [`CircuitBreaker`]; see [`CircuitBreakerLayer`].
///
/// The host is the request URI's authority. While a host's circuit is open the call fails at
/// once with a [`CircuitOpen`](super::CircuitOpen) (boxed as `tower::BoxError`) and the inner
/// service is not called.
///
/// [`CircuitBreakerLayer`]: super::CircuitBreakerLayer
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S, C = DefaultClassifier> {
    inner: S,
    breaker: CircuitBreaker<C>,
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Guards `inner` with `breaker`.
    pub fn new(inner: S, breaker: CircuitBreaker<C>) -> Self {
        CircuitBreakerService { inner, breaker }
    }

    /// The shared breaker.
    pub fn breaker(&self) -> &CircuitBreaker<C> {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreakerService<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    C: Classify,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let host = req.uri().authority().map_or("", |a| a.as_str());
        match self.breaker.try_acquire(host) {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.breaker.clone())
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
