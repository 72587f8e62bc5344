use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tower::BoxError;

use super::{CircuitBreaker, CircuitOpen, Permit};
use crate::classify::{AsError, Classify};

pin_project! {
    /// The response future of [`CircuitBreakerService`](super::CircuitBreakerService).
    ///
    /// Dropping it before it completes drops the [`Permit`] unrecorded: a cancelled half-open
    /// probe frees the probe slot.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
            breaker: CircuitBreaker<C>,
        },
        Rejected {
            error: Option<CircuitOpen>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn called(future: F, permit: Permit, breaker: CircuitBreaker<C>) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                breaker,
            },
        }
    }

    pub(super) fn rejected(error: CircuitOpen) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err(match error.take() {
                Some(open) => Box::new(open),
                None => "ResponseFuture polled after completion".into(),
            })),
            KindProj::Called {
                future,
                permit,
                breaker,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                let verdict = match &result {
                    Ok(res) => breaker.judge_response(res.status(), res.headers()),
                    Err(err) => breaker.judge_error(err.as_error()),
                };
                if let (Some(permit), Some(success)) = (permit.take(), verdict) {
                    breaker.record(permit, success);
                }
                Poll::Ready(result)
            }
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
