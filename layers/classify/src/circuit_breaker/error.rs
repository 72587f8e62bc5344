use std::fmt;
use std::sync::Arc;

/// The error a [`CircuitBreaker`](super::CircuitBreaker) returns while a host's circuit is open.
///
/// The request was not sent. Classified as terminal (`circuit_open`): retrying at once would be
/// rejected again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    /// The host (URI authority) whose circuit is open.
    pub host: Arc<str>,
}

impl CircuitOpen {
    /// A rejection for `host` (a URI authority, e.g. `example.cloud.databricks.com:443`).
    pub fn new(host: impl Into<Arc<str>>) -> Self {
        CircuitOpen { host: host.into() }
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit open for {}", self.host)
    }
}

impl std::error::Error for CircuitOpen {}
