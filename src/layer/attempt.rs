//! [`AttemptSpans`]: one child span per attempt of a retried call, between the retry layer and
//! the circuit breaker, so a trace shows each attempt and the wait before it.
//!
//! Only in the retry stack (`TelemetryLayer::retry`): without retry there is one attempt, and
//! the logical call span already is it. Each attempt span (`HTTP attempt`, target
//! `kasal_trace`) is a child of the call's span and ends when the attempt's response head (or
//! error) arrives; the last attempt's body is read under the call's span.
//!
//! [`AttemptSpan`] is the rule for when an attempt has a span, the same for this stack and the
//! reqwest retry: a call answered at once has none (its call span is its one attempt, and it
//! pays for no second span); a retried call has one per attempt.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kasal_classify::RetryPolicy;
use kasal_classify::{AsError, AttemptCounter, Classify, DefaultClassifier, Outcome, Reason};
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Span;
use tracing::field::Empty;

/// The `HTTP attempt` span of one attempt, by the one rule both retry stacks follow:
///
/// - a resend's span opens as the attempt starts, with the wait scheduled before it, and
///   covers the attempt;
/// - the first attempt's opens only once its answer has arrived and another attempt follows
///   (so it carries its status or error, but no duration); a call answered at once has none.
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
    /// At the start of attempt `resends + 1`, `delay` being the wait scheduled before it.
    pub(crate) fn start(resends: u32, delay: Option<Duration>) -> Self {
        AttemptSpan((resends > 0).then(|| attempt_span(resends, delay)))
    }

    /// The span to enter while the attempt runs, if it has one yet.
    pub(crate) fn span(&self) -> Option<&Span> {
        self.0.as_ref()
    }

    /// The attempt's `answer` has arrived and `resent` says whether another attempt follows:
    /// records it on the attempt's span (the first attempt's is opened now if it is resent),
    /// which then closes.
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

/// Opens an `HTTP attempt` span around each call of `S`, by the [`AttemptSpan`] rule.
///
/// `pub` but unnameable (private module), like `BoxErrors`: it appears in
/// `TelemetryService<S, RetryPolicy>`'s types.
#[allow(unreachable_pub)]
#[derive(Clone, Debug)]
pub struct AttemptSpans<S> {
    inner: S,
    classifier: DefaultClassifier,
    /// The policy resends a retryable first attempt (it allows at least one retry).
    resends: bool,
}

impl<S> AttemptSpans<S> {
    pub(crate) fn new(inner: S, policy: &RetryPolicy) -> Self {
        let retryable = Outcome::Retryable {
            reason: Reason::Timeout,
            retry_after: None,
        };
        AttemptSpans {
            inner,
            classifier: DefaultClassifier::new(),
            resends: policy.next_delay(1, &retryable).is_some(),
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
        let span = AttemptSpan::start(resends, delay);
        let inner = match span.span() {
            Some(span) => {
                let _entered = span.enter();
                self.inner.call(request)
            }
            None => self.inner.call(request),
        };
        AttemptFuture {
            inner,
            span: Some(span),
            first: resends == 0,
            resends: self.resends,
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
        // This is the call's first attempt.
        first: bool,
        // The policy resends a retryable first attempt.
        resends: bool,
        classifier: DefaultClassifier,
    }
}

impl<F: std::fmt::Debug> std::fmt::Debug for AttemptFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptFuture")
            .field("inner", &self.inner)
            .field("first", &self.first)
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
        let Some(span) = this.span.take() else {
            return Poll::Ready(result);
        };
        // Whether a resend follows matters only for the first attempt (the others' spans are
        // open): the policy resends it exactly when it is retryable and retries are allowed.
        // (One whose request body cannot be replayed is sent once all the same.)
        let outcome = match &result {
            Ok(response) if *this.first && *this.resends => Some(
                this.classifier
                    .classify_response(response.status(), response.headers()),
            ),
            Ok(_) => None,
            Err(error) => Some(this.classifier.classify_error(error.as_error())),
        };
        let resent =
            *this.first && *this.resends && outcome.as_ref().is_some_and(Outcome::is_retryable);
        let answer = match &result {
            Ok(response) => Answer::Status(response.status()),
            Err(_) => Answer::Error(outcome.as_ref().and_then(Outcome::error_type)),
        };
        // The attempt is over: its span closes now, not when the retry future is dropped.
        span.answered(answer, resent);
        Poll::Ready(result)
    }
}
