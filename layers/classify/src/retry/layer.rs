use tower_layer::Layer;

use super::{Retry, RetryPolicy};
use crate::classify::DefaultClassifier;

/// Retries retryable calls with backoff; see [`RetryPolicy`] for the rules and defaults.
///
/// The service it builds records the number of calls made in the response extensions as
/// [`Attempts`](super::Attempts).
#[derive(Clone, Debug)]
pub struct RetryLayer<C = DefaultClassifier> {
    policy: RetryPolicy<C>,
}

impl Default for RetryLayer {
    /// The default [`RetryPolicy`].
    fn default() -> Self {
        RetryLayer::new(RetryPolicy::new())
    }
}

impl<C> RetryLayer<C> {
    /// A layer retrying by `policy`.
    pub fn new(policy: RetryPolicy<C>) -> Self {
        RetryLayer { policy }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy<C> {
        &self.policy
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.policy.clone())
    }
}
