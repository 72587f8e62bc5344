//! [`ResponseFuture`]: polls the inner call inside the call's span.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use kasal_classify::Classify;
use pin_project_lite::pin_project;

use crate::service::Hooks;
use crate::{BoxError, CallSpan, RecordCall, TracedBody};

pin_project! {
    /// Response future of [`Traced`](crate::Traced).
    ///
    /// Polls the inner future with the call's span entered. On a response, records the status,
    /// attempts and outcome on the span and hands the call to the [`TracedBody`]; on an error,
    /// classifies it, records the call at once and returns the error (boxed, otherwise unchanged).
    /// Dropped before it completes (cancelled), it records nothing and the span closes.
    pub struct ResponseFuture<F, C, R> {
        #[pin]
        inner: F,
        // Boxed: the call state is ~300 bytes, and this future and the response are moved
        // several times on their way to the caller; a box keeps those moves small.
        call: Option<(Box<CallSpan>, Arc<Hooks<C, R>>)>,
    }
}

impl<F, C, R> ResponseFuture<F, C, R> {
    pub(crate) fn new(inner: F, call: CallSpan, hooks: Arc<Hooks<C, R>>) -> Self {
        ResponseFuture {
            inner,
            call: Some((Box::new(call), hooks)),
        }
    }
}

impl<F, C, R, ResBody, E> Future for ResponseFuture<F, C, R>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: Body,
    C: Classify,
    R: RecordCall,
{
    type Output = Result<Response<TracedBody<ResBody, R, C>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.call.as_ref() {
            Some((call, _)) => {
                let _entered = call.span().enter();
                ready!(this.inner.poll(cx))
            }
            None => return Poll::Ready(Err(polled_after_completion())),
        };
        let Some((mut call, hooks)) = this.call.take() else {
            return Poll::Ready(Err(polled_after_completion()));
        };
        Poll::Ready(match result {
            Ok(response) => {
                let outcome = hooks
                    .classifier
                    .classify_response(response.status(), response.headers());
                call.on_response(response.status(), response.extensions(), outcome);
                Ok(response.map(|body| TracedBody::new(body, call, hooks)))
            }
            Err(error) => {
                let error: BoxError = error.into();
                let outcome = hooks.classifier.classify_error(&*error);
                call.on_error(&*error, outcome);
                hooks.recorder.record_call(call.finish());
                Err(error)
            }
        })
    }
}

/// Polling a finished future is a contract violation: answer with an error, never panic.
fn polled_after_completion() -> BoxError {
    "kasal_trace::ResponseFuture polled after completion".into()
}
