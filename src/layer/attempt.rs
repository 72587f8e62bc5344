//! [`AttemptSpans`]: one child span per attempt of a retried call, between the retry layer and
//! the circuit breaker, so a trace shows each attempt and the wait before it.
//!
//! Only in the retry stack (`TelemetryLayer::retry`): without retry there is one attempt, and
//! the logical call span already is it. Each attempt span (`HTTP attempt`, target
//! `kasal_trace`) is a child of the call's span and ends when the attempt's response head (or
//! error) arrives; the last attempt's body is read under the call's span.
//!
//! [`AttemptSpan`] is the one rule for when an attempt has a span, for this stack and the
//! reqwest retry alike.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kasal_classify::{AsError, AttemptCounter, Classify, DefaultClassifier, Outcome};
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;

/// The `HTTP attempt` span of one attempt of a call made with retry, by the one rule both
/// retry stacks follow:
///
/// - a resend's span opens as the attempt starts, with the wait scheduled before it, and
///   covers the attempt;
/// - the first attempt's opens as it starts too where the stack sends the current span
///   downstream as the request's parent (`traceparent`: the tower stack, and the reqwest stack
///   with feature `otel`), so that each attempt is the parent of what the server does with it;
///   elsewhere (the reqwest stack without `otel`) it opens only
///   once its answer has arrived and another attempt follows (it carries its status or error,
///   not a duration), so a call answered at once pays for no second span.
///
/// Each span closes when its attempt's answer has been recorded on it.
pub(crate) struct AttemptSpan(Option<Span>);

/// What an attempt ended with, as its span records it.
pub(crate) enum Answer<'a> {
    /// A response head with this status.
    Status(StatusCode),
    /// An error without a response, with its `error.type` (`_OTHER` if `None`).
    Error(Option<&'a str>),
}

impl AttemptSpan {
    /// At the start of attempt `resends + 1`, `delay` being the wait scheduled before it;
    /// `sent_downstream`: the stack sends the current span as the request's parent.
    pub(crate) fn start(resends: u32, delay: Option<Duration>, sent_downstream: bool) -> Self {
        AttemptSpan((resends > 0 || sent_downstream).then(|| attempt_span(resends, delay)))
    }

    /// The span to enter while the attempt runs, if it has one yet.
    pub(crate) fn span(&self) -> Option<&Span> {
        self.0.as_ref()
    }

    /// The attempt's `answer` has arrived and `resent` says whether another attempt follows:
    /// records it on the attempt's span (a first attempt's not opened yet is opened now if it
    /// is resent), which then closes.
    pub(crate) fn answered(self, answer: Answer<'_>, resent: bool) {
        let span = match self.0 {
            Some(span) => span,
            None if resent => attempt_span(0, None),
            None => return,
        };
        match answer {
            Answer::Status(status) => attempt_response(&span, status),
            Answer::Error(error_type) => attempt_error(&span, error_type),
        }
    }
}

/// Opens an `HTTP attempt` span around each call of `S`, by the [`AttemptSpan`] rule: this
/// stack sends each attempt's span downstream (`traceparent`), so every attempt has one from
/// its start.
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
        let span = AttemptSpan::start(resends, delay, true);
        let inner = {
            let _entered = span.span().map(Span::enter);
            self.inner.call(request)
        };
        AttemptFuture {
            inner,
            span: Some(span),
            classifier: self.classifier.clone(),
        }
    }
}

/// Opens the `HTTP attempt` span of attempt `resends + 1`, a child of the current span, with
/// the wait scheduled before it.
fn attempt_span(resends: u32, delay: Option<Duration>) -> Span {
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
fn attempt_response(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_client_error() || status.is_server_error() {
        span.record("error.type", status.as_str());
        span.record("otel.status_code", "ERROR");
    }
}

/// Records an attempt's failure without a response: its `error.type` (`_OTHER` if unnamed).
fn attempt_error(span: &Span, error_type: Option<&str>) {
    span.record("error.type", error_type.unwrap_or("_OTHER"));
    span.record("otel.status_code", "ERROR");
}

pin_project! {
    /// Response future of `AttemptSpans` (unnameable, like it).
    #[allow(unreachable_pub)]
    pub struct AttemptFuture<F> {
        #[pin]
        inner: F,
        // `None` once the attempt's answer is recorded.
        span: Option<AttemptSpan>,
        classifier: DefaultClassifier,
    }
}

impl<F: std::fmt::Debug> std::fmt::Debug for AttemptFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptFuture")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
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
            let _entered = this
                .span
                .as_ref()
                .and_then(AttemptSpan::span)
                .map(Span::enter);
            ready!(this.inner.poll(cx))
        };
        if let Some(span) = this.span.take() {
            let outcome = match &result {
                Ok(_) => None,
                Err(error) => Some(this.classifier.classify_error(error.as_error())),
            };
            let answer = match &result {
                Ok(response) => Answer::Status(response.status()),
                Err(_) => Answer::Error(outcome.as_ref().and_then(Outcome::error_type)),
            };
            // Every attempt of this stack has its span from its start: whether a resend
            // follows changes nothing. The attempt is over: its span closes now, not when the
            // retry future is dropped.
            span.answered(answer, false);
        }
        Poll::Ready(result)
    }
}
