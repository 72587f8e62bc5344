//! [`AttemptSpans`]: one child span per attempt of a retried call, between the retry layer and
//! the circuit breaker, so a trace shows each attempt and the wait before it.
//!
//! Only in the retry stack (`TelemetryLayer::retry`): without retry there is one attempt, and
//! the logical call span already is it. Each attempt span (`HTTP attempt`, target
//! `kasal_trace`) is a child of the call's span and ends when the attempt's response head (or
//! error) arrives; the last attempt's body is read under the call's span.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kasal_classify::{AsError, AttemptCounter, Classify, DefaultClassifier};
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;

/// Opens an `HTTP attempt` span around each call of `S`.
///
/// `pub` but unnameable (private module), like `BoxErrors`: it appears in
/// `TelemetryService<S, RetryPolicy>`'s types.
#[allow(unreachable_pub)]
#[derive(Clone, Debug)]
pub struct AttemptSpans<S> {
    inner: S,
    classifier: DefaultClassifier,
}

impl<S> AttemptSpans<S> {
    pub(crate) fn new(inner: S) -> Self {
        AttemptSpans {
            inner,
            classifier: DefaultClassifier::new(),
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for AttemptSpans<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: AsError,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AttemptFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The retry policy updates the counter after judging each attempt: before attempt n it
        // reads n - 1, with the wait it scheduled before this one.
        let counter = request.extensions().get::<AttemptCounter>();
        let resends = counter.map_or(0, AttemptCounter::get);
        let delay = counter
            .and_then(AttemptCounter::last_delay)
            .filter(|_| resends > 0);
        let span = attempt_span(resends, delay);
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        AttemptFuture {
            inner,
            span,
            classifier: self.classifier.clone(),
        }
    }
}

/// Opens the `HTTP attempt` span of attempt `resends + 1`, a child of the current span, with
/// the wait scheduled before it. Shared with the reqwest retry middleware.
pub(crate) fn attempt_span(resends: u32, delay: Option<Duration>) -> Span {
    tracing::info_span!(
        target: "kasal_trace",
        "HTTP attempt",
        kasal.attempt = i64::from(resends) + 1,
        http.request.resend_count = (resends > 0).then(|| i64::from(resends)),
        kasal.retry_delay_ms = delay.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        http.response.status_code = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// Records an attempt's response status (client rules: a 4xx or 5xx attempt failed).
pub(crate) fn attempt_response(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_client_error() || status.is_server_error() {
        span.record("error.type", status.as_str());
        span.record("otel.status_code", "ERROR");
    }
}

/// Records an attempt's failure without a response: its `error.type` (`_OTHER` if unnamed).
pub(crate) fn attempt_error(span: &Span, error_type: Option<&str>) {
    span.record("error.type", error_type.unwrap_or("_OTHER"));
    span.record("otel.status_code", "ERROR");
}

pin_project! {
    /// Response future of `AttemptSpans` (unnameable, like it).
    #[allow(unreachable_pub)]
    #[derive(Debug)]
    pub struct AttemptFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        classifier: DefaultClassifier,
    }
}

impl<F, ResBody, E> Future for AttemptFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: AsError,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            ready!(this.inner.poll(cx))
        };
        match &result {
            Ok(response) => attempt_response(this.span, response.status()),
            Err(error) => {
                let outcome = this.classifier.classify_error(error.as_error());
                attempt_error(this.span, outcome.error_type());
            }
        }
        // The attempt is over: close its span now, not when the retry future is dropped.
        *this.span = Span::none();
        Poll::Ready(result)
    }
}
