//! [`TracedBody`]: the response body that keeps the call's span open and records the call once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use kasal_classify::{Classify, DefaultClassifier};
use pin_project_lite::pin_project;

use crate::service::Hooks;
use crate::{BoxError, CallSpan, RecordCall};

pin_project! {
    /// Response body of [`Traced`](crate::Traced).
    ///
    /// Enters the call's span on every poll, so work done while producing the body (and events it
    /// emits) is parented to the call. Counts data bytes. Records the call exactly once: at the end
    /// of the stream, on a body error (classified with the layer's classifier), or, if it is
    /// dropped first, when it is dropped (outcome from the response status,
    /// `kasal.body_cut_short = true`). The span closes at that moment.
    ///
    /// Errors are boxed into [`BoxError`] unchanged (downcast to get the inner body's error).
    pub struct TracedBody<B, R, C = DefaultClassifier>
    where
        R: RecordCall,
    {
        #[pin]
        inner: B,
        call: OpenCall<R, C>,
    }
}

impl<B, R: RecordCall, C> TracedBody<B, R, C> {
    pub(crate) fn new(inner: B, call: Box<CallSpan>, hooks: Arc<Hooks<C, R>>) -> Self
    where
        B: Body,
    {
        let mut call = OpenCall {
            call: Some(call),
            hooks,
        };
        // An empty body (HEAD, 204, Content-Length: 0) may never be polled: end the call now.
        if inner.is_end_stream() {
            call.finish();
        }
        TracedBody { inner, call }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B, R, C> Body for TracedBody<B, R, C>
where
    B: Body,
    B::Error: Into<BoxError>,
    R: RecordCall,
    C: Classify,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = {
            let _entered = this.call.call.as_ref().map(|call| call.span().enter());
            this.inner.as_mut().poll_frame(cx)
        };
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let (Some(call), Some(data)) = (this.call.call.as_mut(), frame.data_ref()) {
                    call.on_body_bytes(data.remaining() as u64);
                }
                if this.inner.is_end_stream() {
                    this.call.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                let error: BoxError = error.into();
                if let Some(call) = this.call.call.as_mut() {
                    let outcome = this.call.hooks.classifier.classify_error(&*error);
                    call.on_error(&*error, outcome);
                }
                this.call.finish();
                Poll::Ready(Some(Err(error)))
            }
            None => {
                this.call.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: std::fmt::Debug, R: RecordCall, C> std::fmt::Debug for TracedBody<B, R, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedBody")
            .field("inner", &self.inner)
            .field("call", &self.call.call)
            .finish()
    }
}

/// The call until it is recorded; records it (as cut short) if dropped before.
struct OpenCall<R: RecordCall, C> {
    call: Option<Box<CallSpan>>,
    hooks: Arc<Hooks<C, R>>,
}

impl<R: RecordCall, C> OpenCall<R, C> {
    /// Records the call if not done yet, and closes its span.
    fn finish(&mut self) {
        if let Some(call) = self.call.take() {
            self.hooks.recorder.record_call(call.finish());
        }
    }
}

impl<R: RecordCall, C> Drop for OpenCall<R, C> {
    fn drop(&mut self) {
        if let Some(call) = self.call.as_mut() {
            call.on_cut_short();
            self.finish();
        }
    }
}
