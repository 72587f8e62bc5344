use std::fmt;
use std::sync::Arc;

/// The error a [`CircuitBreaker`](super::CircuitBreaker) returns while a host's circuit is open.
///
/// The request was not sent. Classified as terminal (`circuit_open`): retrying at once would be
/// rejected again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    /// The `host:port` whose circuit is open (never userinfo).
    pub host: Arc<str>,
}

impl CircuitOpen {
    /// A rejection for `host` (a URI authority, e.g. `example.cloud.databricks.com:443`).
    ///
    /// Userinfo (`user:password@`) is removed: the error's text reaches logs and exports.
    pub fn new(host: impl Into<Arc<str>>) -> Self {
        let host: Arc<str> = host.into();
        match host.rsplit_once('@') {
            Some((_, bare)) => CircuitOpen {
                host: Arc::from(bare),
            },
            None => CircuitOpen { host },
        }
    }
}

impl fmt::Display for CircuitOpen {
    /// `circuit open for host:port`, never with userinfo (even one set through the field).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self
            .host
            .rsplit_once('@')
            .map_or(&*self.host, |(_, host)| host);
        write!(f, "circuit open for {host}")
    }
}

impl std::error::Error for CircuitOpen {}
