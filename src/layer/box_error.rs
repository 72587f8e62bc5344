//! [`BoxErrors`]: the innermost adapter, turning the client's error into a [`BoxError`] so the
//! optional retry and circuit-breaker branches share one error type.
//!
//! tower's `Either` wants the same error on both sides, and the circuit breaker's is a
//! `BoxError`. `tower::util::MapErr` would need its function type written in
//! `TelemetryService<S>`, which cannot name `S::Error` (that depends on the request type), so
//! this small adapter boxes through `Into` instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::BoxError;
use tower_service::Service;

/// Boxes the errors of `S`, otherwise unchanged (downcast to get the client's error back).
///
/// `pub` but unnameable (private module): it appears inside `TelemetryService`'s `Future` type,
/// which must not hold a crate-private type, and users have no reason to name it.
#[allow(unreachable_pub)]
#[derive(Clone, Debug)]
pub struct BoxErrors<S> {
    inner: S,
}

impl<S> BoxErrors<S> {
    pub(crate) fn new(inner: S) -> Self {
        BoxErrors { inner }
    }
}

impl<S, Request> Service<Request> for BoxErrors<S>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxErrorsFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        BoxErrorsFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Response future of `BoxErrors` (unnameable, like `BoxErrors`).
    #[allow(unreachable_pub)]
    #[derive(Debug)]
    pub struct BoxErrorsFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> Future for BoxErrorsFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(ready!(self.project().inner.poll(cx)).map_err(Into::into))
    }
}
