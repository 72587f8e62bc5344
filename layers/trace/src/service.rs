//! [`Traced`]: the service that opens one span per call and records the call.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use kasal_classify::{Classify, DefaultClassifier};
use kasal_user_agent::Product;
use tower_service::Service;

use crate::{BoxError, CallSpan, Direction, RecordCall, ResponseFuture, TracedBody};

/// Middleware that opens one span per HTTP call and records a [`CallRecord`](crate::CallRecord)
/// when the call ends. Built by [`SpanLayer`](crate::SpanLayer); see the [crate docs](crate).
#[derive(Clone)]
pub struct Traced<S, C = DefaultClassifier, R = ()> {
    pub(crate) inner: S,
    pub(crate) product: Product,
    pub(crate) direction: Direction,
    pub(crate) hooks: Arc<Hooks<C, R>>,
}

/// What a call needs once its response arrives: the classifier and the recorder, behind one
/// `Arc` so each call takes one reference count, not one per hook (both are usually `Arc`s).
#[derive(Debug)]
pub(crate) struct Hooks<C, R> {
    pub(crate) classifier: C,
    pub(crate) recorder: R,
}

impl<S, C, R> Traced<S, C, R> {
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

impl<S, C, R, ReqBody, ResBody> Service<Request<ReqBody>> for Traced<S, C, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
    C: Classify,
    R: RecordCall,
{
    type Response = Response<TracedBody<ResBody, R, C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let call = CallSpan::start(
            &self.product,
            self.direction,
            request.method(),
            request.uri(),
            request.headers(),
            request.extensions(),
        );
        let inner = {
            let _entered = call.span().enter();
            self.inner.call(request)
        };
        ResponseFuture::new(inner, call, self.hooks.clone())
    }
}

impl<S: fmt::Debug, C: fmt::Debug, R> fmt::Debug for Traced<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traced")
            .field("inner", &self.inner)
            .field("product", &self.product)
            .field("direction", &self.direction)
            .field("classifier", &self.hooks.classifier)
            .finish_non_exhaustive()
    }
}
