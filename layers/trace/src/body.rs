//! [`TracedBody`]: the response body that keeps the call's span open and records the call once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use kasal_classify::{AsError, Classify, DefaultClassifier};
use pin_project_lite::pin_project;

use crate::service::{Hooks, InFlight};
use crate::{CallSpan, OnBodyChunk, RecordCall, SharedHooks};

pin_project! {
    /// A response body that keeps its call's span open and records the call once.
    ///
    /// The response body of [`Traced`](crate::Traced), and the body every adapter wraps (the
    /// reqwest middleware around reqwest's body, the server layer around the router's): build
    /// one from a [`CallSpan`] with [`new`](Self::new) or [`with_on_body_chunk`](Self::with_on_body_chunk).
    ///
    /// Enters the call's span on every poll, so work done while producing the body (and events it
    /// emits) is parented to the call. Counts data bytes and shows each data chunk to the
    /// [`OnBodyChunk`] hook `H`. Records the call exactly once: at once if the body is already
    /// empty when wrapped, at the end of the stream, on a body error (classified with `C`), or,
    /// if it is dropped first, when it is dropped (outcome from the response status,
    /// `kasal.body_cut_short = true`). The span closes at that moment.
    ///
    /// Errors pass through unchanged (`B::Error`).
    pub struct TracedBody<B, R, C = DefaultClassifier, H = ()>
    where
        R: RecordCall,
    {
        #[pin]
        inner: B,
        call: OpenCall<R, C, H>,
    }
}

impl<B, R, C> TracedBody<B, R, C>
where
    B: Body,
    R: RecordCall,
    C: Classify,
{
    /// Wraps `inner`, the body of the response whose head `call` has seen
    /// ([`CallSpan::classify_response`]); `classifier` classifies a body error, `recorder`
    /// receives the record. An already empty body is recorded at once.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Extensions, HeaderMap, Method, StatusCode, Uri};
    /// use http_body_util::{BodyExt, Full};
    /// use kasal_classify::DefaultClassifier;
    /// use kasal_trace::{CallRecord, CallSpan, Direction, TracedBody};
    /// use kasal_user_agent::Product;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let classifier = DefaultClassifier::new();
    /// let (tx, rx) = std::sync::mpsc::channel::<CallRecord>();
    /// let recorder = move |record: CallRecord| tx.send(record).unwrap_or(());
    ///
    /// // An adapter drives the call without tower:
    /// let uri = Uri::from_static("https://example.com/api/2.0/jobs/list");
    /// let mut call = CallSpan::start(
    ///     &Product::Jobs, Direction::Client, &Method::GET, &uri, &HeaderMap::new(), &Extensions::new(),
    /// );
    /// call.classify_response(&classifier, StatusCode::OK, &HeaderMap::new(), &Extensions::new());
    /// let body = TracedBody::new(Full::new(Bytes::from("[]")), call, classifier, recorder);
    /// body.collect().await.unwrap();
    ///
    /// let record = rx.recv().unwrap();
    /// assert_eq!(record.status, Some(StatusCode::OK));
    /// assert_eq!(record.response_bytes, 2);
    /// # }
    /// ```
    /// `call` may come boxed (`Box<CallSpan>`): it is kept in a box, and a boxed one is not
    /// moved again.
    pub fn new(inner: B, call: impl Into<Box<CallSpan>>, classifier: C, recorder: R) -> Self {
        TracedBody::with_on_body_chunk(inner, call, classifier, recorder, ())
    }
}

impl<B, R, C, H> TracedBody<B, R, C, H>
where
    B: Body,
    R: RecordCall,
    C: Classify,
    H: OnBodyChunk<B::Data>,
{
    /// As [`new`](Self::new), with `on_body_chunk` shown every data chunk (see [`OnBodyChunk`]).
    pub fn with_on_body_chunk(
        inner: B,
        call: impl Into<Box<CallSpan>>,
        classifier: C,
        recorder: R,
        on_body_chunk: H,
    ) -> Self {
        let hooks = Arc::new(Hooks {
            classifier,
            recorder,
        });
        TracedBody::from_shared(inner, call.into(), hooks, on_body_chunk)
    }

    /// As [`with_on_body_chunk`](Self::with_on_body_chunk), with the classifier and the
    /// recorder shared by every call of the adapter (one reference count per call, where
    /// [`new`](Self::new) allocates them afresh).
    pub fn with_shared_hooks(
        inner: B,
        call: impl Into<Box<CallSpan>>,
        hooks: SharedHooks<C, R>,
        on_body_chunk: H,
    ) -> Self {
        TracedBody::from_shared(inner, call.into(), hooks.0, on_body_chunk)
    }

    /// The layer's way in: the classifier and recorder shared by every call of a service.
    pub(crate) fn from_shared(
        inner: B,
        call: Box<CallSpan>,
        hooks: Arc<Hooks<C, R>>,
        mut on_body_chunk: H,
    ) -> Self {
        on_body_chunk.on_body_start(&inner.size_hint());
        let mut call = OpenCall {
            call: Some((call, hooks, on_body_chunk)),
            on_finish: <H as OnBodyChunk<B::Data>>::on_finish,
        };
        // An empty body (HEAD, 204, Content-Length: 0) may never be polled: end the call now.
        if inner.is_end_stream() {
            call.finish();
        }
        TracedBody { inner, call }
    }

    /// A body whose call has already been recorded (or never was): polls `inner` untraced.
    pub(crate) fn untraced(inner: B) -> Self {
        TracedBody {
            inner,
            call: OpenCall {
                call: None,
                on_finish: <H as OnBodyChunk<B::Data>>::on_finish,
            },
        }
    }
}

impl<B, R: RecordCall, C, H> TracedBody<B, R, C, H> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The call, until it is recorded.
    pub fn call(&self) -> Option<&CallSpan> {
        self.call.call.as_ref().map(|(call, _, _)| &**call)
    }
}

impl<B, R, C, H> Body for TracedBody<B, R, C, H>
where
    B: Body,
    B::Error: AsError,
    R: RecordCall,
    C: Classify,
    H: OnBodyChunk<B::Data>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = {
            let _entered = this
                .call
                .call
                .as_ref()
                .map(|(call, _, _)| call.span().enter());
            this.inner.as_mut().poll_frame(cx)
        };
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let (Some((call, _, hook)), Some(data)) =
                    (this.call.call.as_mut(), frame.data_ref())
                {
                    call.on_body_bytes(data.remaining() as u64);
                    hook.on_body_chunk(data, call);
                }
                if this.inner.is_end_stream() {
                    this.call.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                if let Some((call, hooks, _)) = this.call.call.as_mut() {
                    call.classify_error(&hooks.classifier, error.as_error());
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

impl<B: std::fmt::Debug, R: RecordCall, C, H> std::fmt::Debug for TracedBody<B, R, C, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedBody")
            .field("inner", &self.inner)
            .field("call", &self.call())
            .finish_non_exhaustive()
    }
}

/// The call until it is recorded; records it (as cut short) if dropped before.
struct OpenCall<R: RecordCall, C, H> {
    /// The call, the shared classifier and recorder, and this body's hook; `None` once recorded.
    call: Option<InFlight<C, R, H>>,
    /// `H::on_finish` for the body's `Data` type, captured where that type is known, so `Drop`
    /// (which cannot name it) calls the same hook.
    on_finish: fn(&mut H, &mut CallSpan),
}

impl<R: RecordCall, C, H> OpenCall<R, C, H> {
    /// Records the call if not done yet (after the hook's `on_finish`), and closes its span.
    fn finish(&mut self) {
        if let Some((mut call, hooks, mut hook)) = self.call.take() {
            (self.on_finish)(&mut hook, &mut call);
            hooks.recorder.record_call(call.finish_boxed());
        }
    }
}

impl<R: RecordCall, C, H> Drop for OpenCall<R, C, H> {
    fn drop(&mut self) {
        if let Some((call, _, _)) = self.call.as_mut() {
            call.on_cut_short();
            self.finish();
        }
    }
}
