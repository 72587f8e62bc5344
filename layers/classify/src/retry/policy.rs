use std::time::Duration;

use http::{Request, Response};

use super::{AttemptCounter, Attempts, Backoff, Jitter, TryCloneBody, clone_request};
use crate::classify::{AsError, Classify, DefaultClassifier};
use crate::outcome::Outcome;

/// The tower [`Policy`](tower::retry::Policy) behind [`RetryLayer`](crate::RetryLayer).
///
/// Classification decides, the policy only schedules: a call is retried only when the classifier
/// says [`Outcome::Retryable`], at most `max_retries` times, after an exponential, jittered
/// backoff or the server's `Retry-After` (capped), whichever is longer. Requests whose body cannot
/// be cloned ([`TryCloneBody`]) are sent once.
///
/// Defaults: 3 retries, 100 ms base, 1 s cap, [`Jitter::Full`], `Retry-After` honoured up to 30 s.
///
/// ```
/// use std::time::Duration;
/// use kasal_classify::{Jitter, RetryLayer, RetryPolicy};
///
/// // The exporter's settings: additive 100 ms jitter.
/// let layer = RetryLayer::new(RetryPolicy::new().jitter(Jitter::Up(Duration::from_millis(100))));
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicy<C = DefaultClassifier> {
    classifier: C,
    max_retries: u32,
    backoff: Backoff,
    max_retry_after: Duration,
    /// Calls made so far for the current request (tower clones the policy per request).
    attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new()
    }
}

impl RetryPolicy {
    /// The default policy over the [`DefaultClassifier`].
    pub fn new() -> Self {
        RetryPolicy::with_classifier(DefaultClassifier::new())
    }
}

impl<C> RetryPolicy<C> {
    /// The default policy over `classifier`.
    pub fn with_classifier(classifier: C) -> Self {
        RetryPolicy {
            classifier,
            max_retries: 3,
            backoff: Backoff::default(),
            max_retry_after: Duration::from_secs(30),
            attempts: 0,
        }
    }

    /// Replaces the classifier.
    pub fn classifier<C2>(self, classifier: C2) -> RetryPolicy<C2> {
        RetryPolicy {
            classifier,
            max_retries: self.max_retries,
            backoff: self.backoff,
            max_retry_after: self.max_retry_after,
            attempts: 0,
        }
    }

    /// Retries after the first call (default 3, so at most 4 calls).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The first backoff delay, doubled for each further retry (default 100 ms).
    pub fn base_delay(mut self, base: Duration) -> Self {
        self.backoff = self.backoff.base(base);
        self
    }

    /// The cap on the exponential backoff, before jitter (default 1 s).
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.backoff = self.backoff.max(max);
        self
    }

    /// The jitter (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.backoff = self.backoff.jitter(jitter);
        self
    }

    /// The longest `Retry-After` honoured (default 30 s); longer requests wait this long.
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// The backoff schedule.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Sans-IO decision: after `attempts` calls (1 = the first) ended in `outcome`, how long to
    /// wait before the next one, or `None` to stop.
    pub fn next_delay(&self, attempts: u32, outcome: &Outcome) -> Option<Duration> {
        let Outcome::Retryable { retry_after, .. } = outcome else {
            return None;
        };
        if attempts == 0 || attempts > self.max_retries {
            return None;
        }
        let backoff = self.backoff.delay(attempts - 1);
        Some(match retry_after {
            Some(asked) => backoff.max((*asked).min(self.max_retry_after)),
            None => backoff,
        })
    }
}

impl<C, ReqBody, ResBody, E> tower::retry::Policy<Request<ReqBody>, Response<ResBody>, E>
    for RetryPolicy<C>
where
    C: Classify,
    ReqBody: TryCloneBody,
    E: AsError,
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<ReqBody>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        self.attempts = self.attempts.saturating_add(1);
        let outcome = match result {
            Ok(res) => self
                .classifier
                .classify_response(res.status(), res.headers()),
            Err(err) => self.classifier.classify_error(err.as_error()),
        };
        let delay = self.next_delay(self.attempts, &outcome);
        if let Some(counter) = req.extensions().get::<AttemptCounter>() {
            counter.set(self.attempts);
            counter.set_delay(delay);
        }
        match delay {
            Some(delay) => Some(tokio::time::sleep(delay)),
            None => {
                if let Ok(res) = result {
                    res.extensions_mut().insert(Attempts(self.attempts));
                }
                None
            }
        }
    }

    fn clone_request(&mut self, req: &Request<ReqBody>) -> Option<Request<ReqBody>> {
        clone_request(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Reason;
    use http::StatusCode;

    fn retryable(retry_after: Option<Duration>) -> Outcome {
        Outcome::Retryable {
            reason: Reason::Status(StatusCode::SERVICE_UNAVAILABLE),
            retry_after,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn retries_only_retryable_outcomes_up_to_the_limit() {
        let p = RetryPolicy::new().jitter(Jitter::None);
        assert_eq!(p.next_delay(1, &Outcome::Success), None);
        let terminal = Outcome::Terminal {
            reason: Reason::Status(StatusCode::FORBIDDEN),
        };
        assert_eq!(p.next_delay(1, &terminal), None);
        assert_eq!(p.next_delay(1, &retryable(None)), Some(100 * MS));
        assert_eq!(p.next_delay(2, &retryable(None)), Some(200 * MS));
        assert_eq!(p.next_delay(3, &retryable(None)), Some(400 * MS));
        assert_eq!(p.next_delay(4, &retryable(None)), None);
        let p = p.max_retries(0);
        assert_eq!(p.next_delay(1, &retryable(None)), None);
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let p = RetryPolicy::new().jitter(Jitter::None);
        let asked = Some(Duration::from_secs(2));
        assert_eq!(
            p.next_delay(1, &retryable(asked)),
            Some(Duration::from_secs(2))
        );
        // Shorter than the backoff: the backoff stands.
        assert_eq!(p.next_delay(3, &retryable(Some(MS))), Some(400 * MS));
        assert_eq!(
            p.next_delay(1, &retryable(Some(Duration::ZERO))),
            Some(100 * MS)
        );
        let p = p.max_retry_after(Duration::from_secs(1));
        assert_eq!(
            p.next_delay(1, &retryable(Some(Duration::from_secs(60)))),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn full_jitter_delays_stay_under_the_ceiling() {
        let p = RetryPolicy::new();
        for attempt in 1..=3 {
            let ceiling = p.backoff().ceiling(attempt - 1);
            for _ in 0..200 {
                let d = p.next_delay(attempt, &retryable(None)).unwrap();
                assert!(d <= ceiling);
            }
        }
    }
}
