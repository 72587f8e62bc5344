//! [`ClassifierStrategy`]: kasal-classify's outcomes as a reqwest-retry `RetryableStrategy`
//! (feature `reqwest-retry`).

use kasal_classify::{Classify, DefaultClassifier, Outcome};
use reqwest_retry::{Retryable, RetryableStrategy};

use super::error::classify_result;

/// A reqwest-retry [`RetryableStrategy`] that asks a [`Classify`] (by default the
/// [`DefaultClassifier`], the one every stack here uses): success is not retried, a retryable
/// outcome is [`Retryable::Transient`], a terminal one [`Retryable::Fatal`].
///
/// Unlike reqwest-retry's default strategy it retries 502, 503 and 504 but not 501 or 505,
/// reads a reset or refused connection and an incomplete message as transient, and never a
/// redirect loop or an invalid URL. reqwest-retry still schedules the retries by its own
/// policy and does not honour `Retry-After`; [`RetryMiddleware`](super::RetryMiddleware)
/// does, and also reports the attempts to the span and the record.
///
/// ```
/// use kasal_telemetry::reqwest::ClassifierStrategy;
/// use reqwest_retry::{RetryTransientMiddleware, policies::ExponentialBackoff};
///
/// let policy = ExponentialBackoff::builder().build_with_max_retries(3);
/// let retry = RetryTransientMiddleware::new_with_policy_and_strategy(
///     policy,
///     ClassifierStrategy::default(),
/// );
/// # let _ = retry;
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClassifierStrategy<C = DefaultClassifier> {
    classifier: C,
}

impl<C> ClassifierStrategy<C> {
    /// The strategy over `classifier`.
    pub fn new(classifier: C) -> Self {
        ClassifierStrategy { classifier }
    }
}

impl<C: Classify> RetryableStrategy for ClassifierStrategy<C> {
    fn handle(&self, result: &reqwest_middleware::Result<reqwest::Response>) -> Option<Retryable> {
        match classify_result(&self.classifier, result) {
            Outcome::Success => None,
            Outcome::Retryable { .. } => Some(Retryable::Transient),
            Outcome::Terminal { .. } => Some(Retryable::Fatal),
        }
    }
}
