use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::{ResponseFuture, RetryPolicy, TryCloneBody};
use crate::classify::{AsError, Classify, DefaultClassifier};

/// A service that retries retryable calls; see [`RetryLayer`](super::RetryLayer).
///
/// tower's [`Retry`](tower::retry::Retry) over a [`RetryPolicy`], plus the guarantee that every
/// response carries [`Attempts`](super::Attempts) (also when the request could not be retried).
#[derive(Clone, Debug)]
pub struct Retry<S, C = DefaultClassifier> {
    inner: tower::retry::Retry<RetryPolicy<C>, S>,
}

impl<S, C> Retry<S, C> {
    /// Retries calls to `inner` by `policy`.
    pub fn new(inner: S, policy: RetryPolicy<C>) -> Self {
        Retry {
            inner: tower::retry::Retry::new(policy, inner),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for Retry<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: AsError,
    C: Classify,
    ReqBody: TryCloneBody,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future =
        ResponseFuture<tower::retry::future::ResponseFuture<RetryPolicy<C>, S, Request<ReqBody>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        ResponseFuture::new(self.inner.call(req))
    }
}
