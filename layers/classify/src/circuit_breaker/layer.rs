use tower_layer::Layer;

use super::{CircuitBreaker, CircuitBreakerService};
use crate::classify::DefaultClassifier;

/// Wraps a service in a [`CircuitBreakerService`] sharing one [`CircuitBreaker`].
///
/// Every service the layer builds shares the breaker's state: a host that fails through one
/// client clone is guarded for all of them.
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    breaker: CircuitBreaker<C>,
}

impl Default for CircuitBreakerLayer {
    /// A layer over a fresh breaker with the default configuration.
    fn default() -> Self {
        CircuitBreakerLayer::new(CircuitBreaker::default())
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// A layer over `breaker` (clones share its state).
    pub fn new(breaker: CircuitBreaker<C>) -> Self {
        CircuitBreakerLayer { breaker }
    }

    /// The shared breaker, to inspect [`CircuitBreaker::state`].
    pub fn breaker(&self) -> &CircuitBreaker<C> {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone())
    }
}
