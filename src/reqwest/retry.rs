//! [`RetryMiddleware`]: retries retryable calls, honouring `Retry-After`, and reports the
//! attempts to the [`TelemetryMiddleware`](super::TelemetryMiddleware) around it.

use http::Extensions;
use kasal_classify::{AttemptCounter, Attempts, DefaultClassifier, Outcome, RetryPolicy};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};

use super::error::classify_result;
use super::in_span::InSpan;
use crate::layer::attempt::{Answer, AttemptSpan};

/// Retries calls that failed in a retryable way, by a [`RetryPolicy`] (the tower stack's):
/// 3 retries by default, exponential backoff (100 ms base, 1 s cap, full jitter), and the
/// server's `Retry-After` (delta-seconds or HTTP date) honoured up to 30 s.
///
/// What is retryable is the [`DefaultClassifier`]'s call: 408, 429, 500, 502, 503, 504, a
/// timeout, a refused or reset connection; never a 4xx such as 403, an invalid URL or a
/// redirect loop. A request whose body is a stream cannot be replayed and is sent once.
///
/// The last attempt's response or error is returned unchanged (reqwest-middleware's error, not
/// a wrapper). The number of attempts goes into the request's extensions as [`Attempts`]
/// (and into an [`AttemptCounter`] there, if any), where the
/// [`TelemetryMiddleware`](super::TelemetryMiddleware) reads it: the span's
/// `http.request.resend_count` and the record's `attempts`. Put it after (inside) that
/// middleware, and before a [`CircuitBreakerMiddleware`](super::CircuitBreakerMiddleware), so
/// each attempt asks the breaker; or use [`TelemetryMiddleware::retry`](super::TelemetryMiddleware::retry),
/// which does the same inside the telemetry middleware.
///
/// A retried call has one `HTTP attempt` child span per attempt. Without feature `otel` a
/// call answered at once has none (its call span is its one attempt); with `otel` each attempt
/// has its own from its start and sends it downstream as `traceparent`, as the tower stack
/// does.
#[derive(Clone, Debug)]
pub struct RetryMiddleware {
    policy: RetryPolicy,
    classifier: DefaultClassifier,
}

impl Default for RetryMiddleware {
    /// The default [`RetryPolicy`].
    fn default() -> Self {
        RetryMiddleware::new(RetryPolicy::new())
    }
}

impl RetryMiddleware {
    /// Retries by `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryMiddleware {
            policy,
            classifier: DefaultClassifier::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

#[async_trait::async_trait]
impl Middleware for RetryMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let (
            Attempted {
                result, attempts, ..
            },
            extensions,
        ) = with_retries(&self.policy, &self.classifier, request, extensions, next).await;
        if let Some(counter) = extensions.get::<AttemptCounter>() {
            counter.set(attempts);
        }
        extensions.insert(Attempts(attempts));
        result
    }
}

/// What [`with_retries`] ends with: the last attempt's result and its classification (made
/// once, for the retry and the call alike), and the number of attempts.
pub(super) struct Attempted {
    pub(super) result: Result<Response>,
    pub(super) outcome: Outcome,
    pub(super) attempts: u32,
}

/// Runs the rest of the chain until the call succeeds, fails for good, or `policy` says stop;
/// hands `extensions` back with what it ends with. Shared by [`RetryMiddleware`] and the
/// [`TelemetryMiddleware`](super::TelemetryMiddleware)'s own retry.
///
/// The attempts' `HTTP attempt` spans follow the rule of both stacks ([`AttemptSpan`]): none
/// for a call answered at once, one per attempt for a call retried.
///
/// Laid out so the future stays small (it is boxed with the middleware's): across the wait
/// before a resend only the request to send is kept, and across an attempt only its copy.
pub(super) async fn with_retries<'e>(
    policy: &RetryPolicy,
    classifier: &DefaultClassifier,
    mut request: Request,
    extensions: &'e mut Extensions,
    next: Next<'_>,
) -> (Attempted, &'e mut Extensions) {
    let mut attempts: u32 = 0;
    let mut waited = None;
    loop {
        let delay = {
            // A copy for the next attempt, taken before this one consumes the request.
            let replay = replay_of(&request);
            // With feature `otel` each attempt sends its span downstream (`traceparent`), so
            // every attempt has one from its start; without, the first attempt's opens only
            // if it is resent.
            let span = AttemptSpan::start(attempts, waited, SENDS_TRACE_CONTEXT);
            attempts = attempts.saturating_add(1);
            #[cfg(feature = "otel")]
            if let Some(span) = span.span() {
                crate::layer::propagation::inject(span, request.headers_mut());
            }
            let run = next.clone().run(request, extensions);
            let result = match span.span() {
                Some(span) => InSpan { span, inner: run }.await,
                None => run.await,
            };
            let outcome = classify_result(classifier, &result);
            let delay = replay
                .as_ref()
                .and_then(|_| policy.next_delay(attempts, &outcome));
            let answer = match &result {
                Ok(response) => Answer::Status(response.status()),
                Err(_) => Answer::Error(outcome.error_type()),
            };
            span.answered(answer, delay.is_some());
            match (delay, replay) {
                (Some(delay), Some(replay)) => {
                    request = replay;
                    // The failed response (and its connection) goes before we wait.
                    drop(result);
                    delay
                }
                _ => {
                    let attempted = Attempted {
                        result,
                        outcome,
                        attempts,
                    };
                    return (attempted, extensions);
                }
            }
        };
        // Boxed: the timer's state is large and needed only by a call retried.
        Box::pin(tokio::time::sleep(delay)).await;
        waited = Some(delay);
    }
}

/// Whether each request carries its span as `traceparent` (feature `otel`): then each attempt
/// of a retried call has its span from its start, to be the parent the server sees.
const SENDS_TRACE_CONTEXT: bool = cfg!(feature = "otel");

/// The rest of the chain run once, as [`with_retries`] reports it: for the
/// [`TelemetryMiddleware`](super::TelemetryMiddleware) without a retry of its own, the attempts
/// being those a `RetryMiddleware` further in left in `extensions` (failed calls included).
pub(super) async fn once<'e>(
    classifier: &DefaultClassifier,
    request: Request,
    extensions: &'e mut Extensions,
    next: Next<'_>,
) -> (Attempted, &'e mut Extensions) {
    let result = next.run(request, extensions).await;
    let attempted = Attempted {
        outcome: classify_result(classifier, &result),
        result,
        attempts: extensions.get::<Attempts>().map_or(1, |a| a.0.max(1)),
    };
    (attempted, extensions)
}

/// A copy of `request` to send again, `None` if it cannot be (its body is a stream).
///
/// `Request::try_clone` gives the copy an extension map holding its timeout even when there
/// is none (three allocations per call, dropped unused). A request without a body, the
/// common case, is copied here from its public parts instead: method, URL, headers, version
/// and timeout, which is all a reqwest 0.13 request holds. One with a body goes through
/// `try_clone`, the only way to share its bytes (a buffered body is reference-counted: no
/// payload is copied).
fn replay_of(request: &Request) -> Option<Request> {
    if request.body().is_some() {
        return request.try_clone();
    }
    let mut copy = Request::new(request.method().clone(), request.url().clone());
    *copy.headers_mut() = request.headers().clone();
    *copy.version_mut() = request.version();
    if let Some(timeout) = request.timeout() {
        *copy.timeout_mut() = Some(*timeout);
    }
    Some(copy)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The copy is the request `try_clone` gives, part for part, with and without a timeout
    /// and a body.
    #[test]
    fn a_replay_is_the_request_try_clone_gives() {
        let client = super::super::http_client().build().unwrap();
        let requests = [
            client
                .get("http://127.0.0.1:1/api/2.0/jobs/list?page=2")
                .header("x-a", "b")
                .header("x-a", "c")
                .version(http::Version::HTTP_2)
                .build()
                .unwrap(),
            client
                .delete("https://example.com/a")
                .timeout(Duration::from_millis(1500))
                .build()
                .unwrap(),
            client
                .post("https://example.com/b")
                .body("{}")
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap(),
        ];
        for request in &requests {
            let (ours, theirs) = (replay_of(request).unwrap(), request.try_clone().unwrap());
            assert_eq!(ours.method(), theirs.method());
            assert_eq!(ours.url(), theirs.url());
            assert_eq!(ours.headers(), theirs.headers());
            assert_eq!(ours.version(), theirs.version());
            assert_eq!(ours.timeout(), theirs.timeout());
            assert_eq!(
                ours.body().map(reqwest::Body::as_bytes),
                theirs.body().map(reqwest::Body::as_bytes)
            );
        }
        assert_eq!(requests[1].timeout(), Some(&Duration::from_millis(1500)));
    }
}
