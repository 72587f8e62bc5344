//! [`RetryMiddleware`]: retries retryable calls, honouring `Retry-After`, and reports the
//! attempts to the [`TelemetryMiddleware`](super::TelemetryMiddleware) around it.

use http::Extensions;
use kasal_classify::{AttemptCounter, Attempts, DefaultClassifier, RetryPolicy};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};

use super::error::classify_result;
use super::middleware::InSpan;
use crate::layer::attempt::{attempt_error, attempt_response, attempt_span};

/// Retries calls that failed in a retryable way, by a [`RetryPolicy`] (the tower stack's):
/// 3 retries by default, exponential backoff (100 ms base, 1 s cap, full jitter), and the
/// server's `Retry-After` (delta-seconds or HTTP date) honoured up to 30 s.
///
/// What is retryable is the [`DefaultClassifier`]'s call: 408, 429, 500, 502, 503, 504, a
/// timeout, a refused or reset connection; never a 4xx such as 403, an invalid URL or a
/// redirect loop. A request whose body is a stream cannot be replayed and is sent once.
///
/// The last attempt's response or error is returned unchanged (reqwest-middleware's error, not
/// a wrapper). The number of attempts goes into the request's extensions as
/// [`Attempts`] and into its [`AttemptCounter`], where the
/// [`TelemetryMiddleware`](super::TelemetryMiddleware) reads it: the span's
/// `http.request.resend_count` and the record's `attempts`. Put it after (inside) that
/// middleware, and before a [`CircuitBreakerMiddleware`](super::CircuitBreakerMiddleware), so
/// each attempt asks the breaker.
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
        let mut request = request;
        let mut attempts: u32 = 0;
        let mut waited = None;
        loop {
            // A copy for the next attempt, taken before this one consumes the request. Buffered
            // bodies are reference-counted bytes: copying them copies no payload.
            let replay = request.try_clone();
            // One `HTTP attempt` child span per attempt, as the tower stack's retry.
            let span = attempt_span(attempts, waited);
            attempts = attempts.saturating_add(1);
            let result = InSpan {
                span: &span,
                inner: next.clone().run(request, extensions),
            }
            .await;
            if let Some(counter) = extensions.get::<AttemptCounter>() {
                counter.set(attempts);
            }
            let outcome = classify_result(&self.classifier, &result);
            match &result {
                Ok(response) => attempt_response(&span, response.status()),
                Err(_) => attempt_error(&span, outcome.error_type()),
            }
            drop(span);
            let delay = replay
                .as_ref()
                .and_then(|_| self.policy.next_delay(attempts, &outcome));
            match (delay, replay) {
                (Some(delay), Some(replay)) => {
                    // The failed response (and its connection) goes before we wait.
                    drop(result);
                    tokio::time::sleep(delay).await;
                    waited = Some(delay);
                    request = replay;
                }
                _ => {
                    extensions.insert(Attempts(attempts));
                    return result;
                }
            }
        }
    }
}
