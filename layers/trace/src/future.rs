//! [`ResponseFuture`]: polls the inner call inside the call's span.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use kasal_classify::{AsError, Classify};
use pin_project_lite::pin_project;

use crate::service::{Hooks, InFlight};
use crate::{CallSpan, OnBodyChunk, RecordCall, TracedBody};

pin_project! {
    /// Response future of [`Traced`](crate::Traced).
    ///
    /// Polls the inner future with the call's span entered. On a response, records the status,
    /// attempts and outcome on the span and hands the call to the [`TracedBody`]; on an error,
    /// classifies it, records the call at once and returns the error unchanged.
    /// Dropped before it completes (cancelled), it records nothing and the span closes.
    pub struct ResponseFuture<F, C, R, H = ()> {
        #[pin]
        inner: F,
        // Boxed: the call state is ~300 bytes, and this future and the response are moved
        // several times on their way to the caller; a box keeps those moves small.
        call: Option<InFlight<C, R, H>>,
    }
}

impl<F, C, R, H> ResponseFuture<F, C, R, H> {
    pub(crate) fn new(
        inner: F,
        call: Box<CallSpan>,
        hooks: Arc<Hooks<C, R>>,
        on_body_chunk: H,
    ) -> Self {
        ResponseFuture {
            inner,
            call: Some((call, hooks, on_body_chunk)),
        }
    }
}

impl<F, C, R, H, ResBody, E> Future for ResponseFuture<F, C, R, H>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: AsError,
    ResBody: Body,
    C: Classify,
    R: RecordCall,
    H: OnBodyChunk<ResBody::Data>,
{
    type Output = Result<Response<TracedBody<ResBody, R, C, H>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.call.as_ref().map(|(call, _, _)| call.span().enter());
            ready!(this.inner.poll(cx))
        };
        // Polled again after completion (a contract violation): pass the inner result through
        // untraced rather than panic.
        let Some((mut call, hooks, on_body_chunk)) = this.call.take() else {
            return Poll::Ready(result.map(|response| response.map(TracedBody::untraced)));
        };
        Poll::Ready(match result {
            Ok(response) => {
                call.set_protocol_version(response.version());
                call.classify_response(
                    &hooks.classifier,
                    response.status(),
                    response.headers(),
                    response.extensions(),
                );
                Ok(response.map(|body| TracedBody::from_shared(body, call, hooks, on_body_chunk)))
            }
            Err(error) => {
                hooks
                    .recorder
                    .record_call(call.fail(&hooks.classifier, error.as_error()));
                Err(error)
            }
        })
    }
}
