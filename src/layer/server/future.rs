//! [`ServerResponseFuture`]: runs the handler inside the request's span and execution context.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use kasal_classify::AsError;
use kasal_trace::{CallSpan, ExecutionContext, RecordCall, TracedBody};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;

use super::body::{ScopedBody, ServerTelemetryBody};
use super::shared::Shared;

pin_project! {
    /// Response future of [`ServerTelemetryService`](super::ServerTelemetryService).
    ///
    /// Polls the handler with the server span entered and the request's
    /// [`ExecutionContext`] set. On a response, records its head on the span and hands the
    /// call, and the context, to the [`ServerTelemetryBody`]; on an error, records the call at
    /// once and returns the error unchanged. Dropped before it completes, it records nothing
    /// and the span closes.
    pub struct ServerResponseFuture<F, R> {
        #[pin]
        inner: TaskLocalFuture<ExecutionContext, F>,
        // Boxed: the call is ~350 bytes, and axum moves this future several times.
        call: Option<Box<CallSpan>>,
        shared: Arc<Shared<R>>,
    }
}

impl<F, R> ServerResponseFuture<F, R> {
    #[inline]
    pub(super) fn new(
        inner: TaskLocalFuture<ExecutionContext, F>,
        call: Option<Box<CallSpan>>,
        shared: Arc<Shared<R>>,
    ) -> Self {
        ServerResponseFuture {
            inner,
            call,
            shared,
        }
    }
}

impl<F, R, ResBody, E> Future for ServerResponseFuture<F, R>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: AsError,
    ResBody: Body,
    R: RecordCall,
{
    type Output = Result<Response<ServerTelemetryBody<ResBody, R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(call) = this.call.as_ref() else {
            // Polled after completion: a contract violation. Never panic; never wake.
            return Poll::Pending;
        };
        let result = {
            let _entered = call.span().enter();
            ready!(this.inner.as_mut().poll(cx))
        };
        let Some(mut call) = this.call.take() else {
            return Poll::Pending;
        };
        let shared = &**this.shared;
        Poll::Ready(match result {
            Ok(response) => {
                call.classify_response(
                    shared.hooks.classifier(),
                    response.status(),
                    response.headers(),
                    response.extensions(),
                );
                // The handler is done: its context goes on with the body that streams its
                // response.
                let context = this.inner.take_value().unwrap_or_default();
                Ok(response.map(|body| {
                    TracedBody::with_shared_hooks(
                        ScopedBody::new(body, context),
                        call,
                        shared.hooks.clone(),
                        (),
                    )
                }))
            }
            Err(error) => {
                let record = call.fail(shared.hooks.classifier(), error.as_error());
                shared.hooks.recorder().record_call(record);
                Err(error)
            }
        })
    }
}

impl<F, R> std::fmt::Debug for ServerResponseFuture<F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerResponseFuture")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}
