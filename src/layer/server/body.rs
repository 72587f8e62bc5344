//! [`ServerTelemetryBody`] and [`ScopedBody`]: the response body, produced inside the
//! request's span and execution context.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use kasal_classify::DefaultClassifier;
use kasal_trace::{ExecutionContext, TracedBody};
use pin_project_lite::pin_project;

use crate::Telemetry;

/// The response body of a [`ServerTelemetryService`](super::ServerTelemetryService): the
/// handler's body, produced inside the request's execution context ([`ScopedBody`]) and server
/// span, which stays open until the body ends (or is dropped); the server call is recorded
/// then. Its error is the handler's body's, unchanged.
pub type ServerTelemetryBody<B, R = Telemetry> = TracedBody<ScopedBody<B>, R, DefaultClassifier>;

pin_project! {
    /// A body polled inside an [`ExecutionContext`]: a streamed response whose producer makes
    /// outgoing calls makes them for the request's caller.
    pub struct ScopedBody<B> {
        #[pin]
        inner: B,
        context: ExecutionContext,
    }
}

impl<B> ScopedBody<B> {
    /// `inner`, polled with `context` as the current execution context.
    pub fn new(inner: B, context: ExecutionContext) -> Self {
        ScopedBody { inner, context }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The context the body is polled in.
    pub fn context(&self) -> &ExecutionContext {
        &self.context
    }
}

impl<B: Body> Body for ScopedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        // A body at its end answers `None` without doing any work: no context to set.
        if this.inner.is_end_stream() {
            return this.inner.poll_frame(cx);
        }
        // A task-local is set by value: one clone per frame (a few reference counts).
        let inner = this.inner;
        this.context.clone().sync_scope(|| inner.poll_frame(cx))
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ScopedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedBody")
            .field("inner", &self.inner)
            .field("context", &self.context)
            .finish()
    }
}
