//! [`CircuitBreakerMiddleware`]: a per-host circuit breaker for reqwest-middleware clients,
//! sharing its state with the tower stack's.

use http::Extensions;
use kasal_classify::{CircuitBreaker, Classify};
use reqwest::{Request, Response};
use reqwest_middleware::{Error, Middleware, Next, Result};

use super::error::inner_error;

/// Guards each attempt with a [`CircuitBreaker`] (per host: the URL's `host:port`).
///
/// The breaker is kasal-classify's, so one breaker can guard a reqwest client and a tower
/// client together (clones share state): 5 consecutive failures (a retryable outcome, any 5xx,
/// a transport error) open a host's circuit for 60 s, then one probe at a time is let through
/// and 2 successes close it. While open, the call fails at once, without a request, with
/// reqwest-middleware's `Error::Middleware` holding a
/// [`CircuitOpen`](kasal_classify::CircuitOpen) (classified terminal, `circuit_open`).
#[derive(Clone, Debug)]
pub struct CircuitBreakerMiddleware<C = kasal_classify::DefaultClassifier> {
    breaker: CircuitBreaker<C>,
}

impl<C> CircuitBreakerMiddleware<C> {
    /// Guards calls with `breaker`.
    pub fn new(breaker: CircuitBreaker<C>) -> Self {
        CircuitBreakerMiddleware { breaker }
    }

    /// The shared breaker.
    pub fn breaker(&self) -> &CircuitBreaker<C> {
        &self.breaker
    }
}

#[async_trait::async_trait]
impl<C: Classify> Middleware for CircuitBreakerMiddleware<C> {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let permit = match authority(request.url()) {
            Some(host) => self.breaker.try_acquire(host).map_err(Error::middleware)?,
            None => return next.run(request, extensions).await,
        };
        let result = next.run(request, extensions).await;
        let verdict = match &result {
            Ok(response) => self
                .breaker
                .judge_response(response.status(), response.headers()),
            Err(error) => self.breaker.judge_error(inner_error(error)),
        };
        if let Some(success) = verdict {
            self.breaker.record(permit, success);
        }
        result
    }
}

/// `host[:port]` as the tower breaker keys it (the port only when the URL names one).
fn authority(url: &reqwest::Url) -> Option<&str> {
    url.host_str()?;
    Some(&url[url::Position::BeforeHost..url::Position::AfterPort])
}
