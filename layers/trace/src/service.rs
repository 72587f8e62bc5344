//! [`Traced`]: the service that opens one span per call and records the call.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use kasal_classify::{AsError, Classify, DefaultClassifier};
use kasal_user_agent::Product;
use tower_service::Service;

use crate::{CallSpan, Direction, OnBodyChunk, RecordCall, ResponseFuture, TracedBody};

/// Middleware that opens one span per HTTP call and records a [`CallRecord`](crate::CallRecord)
/// when the call ends. Built by [`SpanLayer`](crate::SpanLayer); see the [crate docs](crate).
///
/// Its error is the inner service's, unchanged (nothing here adds an error), so it fits where
/// the inner service fits (axum's `Router::layer` asks for `Error: Into<Infallible>`).
#[derive(Clone)]
pub struct Traced<S, C = DefaultClassifier, R = (), H = ()> {
    pub(crate) inner: S,
    pub(crate) product: Product,
    pub(crate) direction: Direction,
    pub(crate) hooks: Arc<Hooks<C, R>>,
    /// Cloned into each call's response body.
    pub(crate) on_body_chunk: H,
    /// Opt-in `http.request.body.size` / `http.response.body.size`.
    pub(crate) body_sizes: bool,
}

/// What a call needs once its response arrives: the classifier and the recorder, behind one
/// `Arc` so each call takes one reference count, not one per hook (both are usually `Arc`s).
#[derive(Debug)]
pub(crate) struct Hooks<C, R> {
    pub(crate) classifier: C,
    pub(crate) recorder: R,
}

/// A call in flight between the response future and the body: the call (boxed: ~300 bytes, moved
/// several times on its way to the caller), the shared hooks, and this call's body hook.
pub(crate) type InFlight<C, R, H> = (Box<CallSpan>, Arc<Hooks<C, R>>, H);

impl<S, C, R, H> Traced<S, C, R, H> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, R, H, ReqBody, ResBody> Service<Request<ReqBody>> for Traced<S, C, R, H>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: AsError,
    ResBody: Body,
    C: Classify,
    R: RecordCall,
    H: OnBodyChunk<ResBody::Data> + Clone,
{
    type Response = Response<TracedBody<ResBody, R, C, H>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C, R, H>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // Boxed at once: the call goes on in the response future, then the body, and is
        // moved no more.
        let mut call = Box::new(CallSpan::start(
            &self.product,
            self.direction,
            request.method(),
            request.uri(),
            request.headers(),
            request.extensions(),
        ));
        call.set_protocol_version(request.version());
        if self.body_sizes {
            call.record_body_sizes(content_length(request.headers()));
        }
        let inner = {
            let _entered = call.span().enter();
            self.inner.call(request)
        };
        ResponseFuture::new(inner, call, self.hooks.clone(), self.on_body_chunk.clone())
    }
}

/// The request body's size from its `Content-Length` header, if any.
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl<S: fmt::Debug, C: fmt::Debug, R, H> fmt::Debug for Traced<S, C, R, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traced")
            .field("inner", &self.inner)
            .field("product", &self.product)
            .field("direction", &self.direction)
            .field("classifier", &self.hooks.classifier)
            .finish_non_exhaustive()
    }
}
