//! [`TelemetryLayer`]: the client stack in one layer.

use kasal_classify::{CircuitBreaker, CircuitBreakerService, RetryPolicy};
use kasal_trace::SpanLayer;
use kasal_user_agent::{Product, SetUserAgent, UserAgent};
use tower::util::Either;
use tower_layer::Layer;

use super::box_error::BoxErrors;
use super::propagation::propagate;
use super::retry_mode::RetryMode;
use super::service::TelemetryService;
use crate::Telemetry;
use crate::usage::{ReadUsage, UsageReading};

/// Turns an HTTP client into an attributed, traced, classified and recorded client.
///
/// One layer composes, outermost first:
///
/// 1. [`UserAgentLayer`](kasal_user_agent::UserAgentLayer): `User-Agent: kasal_<product>/<version> …` on every request;
/// 2. [`SpanLayer`]: one span per logical call, recorded into the [`Telemetry`] pipeline when
///    the response body ends (or at once for an error);
/// 3. [`RetryLayer`](kasal_classify::RetryLayer), if [`retry`](Self::retry) was set: the span
///    covers every attempt and reports `http.request.resend_count`, and each attempt gets a
///    child span `HTTP attempt` (`kasal.attempt`, `http.request.resend_count`,
///    `kasal.retry_delay_ms`: the wait before it, `http.response.status_code`, `error.type`);
/// 4. [`CircuitBreakerLayer`](kasal_classify::CircuitBreakerLayer), if
///    [`circuit_breaker`](Self::circuit_breaker) was set: each attempt asks the breaker first;
///
/// then the client. Everything is configured here, at build time: the service it builds never
/// panics and never fails because of telemetry. See the [crate docs](crate) for an example.
///
/// `R` says whether it retries: `()` (the default: request bodies of any type) or, after
/// [`retry`](Self::retry), [`RetryPolicy`] (request bodies must implement
/// [`TryCloneBody`](kasal_classify::TryCloneBody)).
#[derive(Clone, Debug)]
pub struct TelemetryLayer<R = ()> {
    user_agent: UserAgent,
    telemetry: Telemetry,
    retry: R,
    circuit_breaker: Option<CircuitBreaker>,
    usage: UsageReading,
}

impl TelemetryLayer {
    /// Attributes calls to `product` (User-Agent `kasal_<product>/<crate version>`, spans and
    /// records) and records them into `telemetry`. No retry, no circuit breaker.
    pub fn new(product: Product, telemetry: Telemetry) -> Self {
        TelemetryLayer {
            user_agent: UserAgent::new(product),
            telemetry,
            retry: (),
            circuit_breaker: None,
            usage: UsageReading::Auto,
        }
    }
}

impl<R> TelemetryLayer<R> {
    /// Sends `user_agent` (a custom version or extras) instead of the default one. Spans and
    /// records are attributed to its product.
    pub fn user_agent(mut self, user_agent: UserAgent) -> Self {
        self.user_agent = user_agent;
        self
    }

    /// Retries retryable failures by `policy`, inside the span: one span and one record per
    /// logical call, with the attempts made. The request body must implement
    /// [`TryCloneBody`](kasal_classify::TryCloneBody) (streaming bodies are sent once).
    pub fn retry(self, policy: RetryPolicy) -> TelemetryLayer<RetryPolicy> {
        TelemetryLayer {
            user_agent: self.user_agent,
            telemetry: self.telemetry,
            retry: policy,
            circuit_breaker: self.circuit_breaker,
            usage: self.usage,
        }
    }

    /// Guards every attempt with `breaker` (per host; clones share state, so one breaker can
    /// guard several clients). An open circuit fails the attempt at once with
    /// [`CircuitOpen`](kasal_classify::CircuitOpen), without a request.
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.circuit_breaker = Some(breaker);
        self
    }

    /// Which calls have their token usage read from the response body
    /// ([`UsageReading::Auto`] by default: calls of the `llm`, `embedding` and `agent` products
    /// to model-serving paths). The body reaches the caller unchanged either way.
    pub fn usage(mut self, reading: UsageReading) -> Self {
        self.usage = reading;
        self
    }
}

impl<S, R: RetryMode> Layer<S> for TelemetryLayer<R> {
    type Service = TelemetryService<S, R>;

    fn layer(&self, client: S) -> Self::Service {
        let client = BoxErrors::new(client);
        let guarded = match &self.circuit_breaker {
            Some(breaker) => Either::Left(CircuitBreakerService::new(client, breaker.clone())),
            None => Either::Right(client),
        };
        // Inside each attempt's span (with retry), so `traceparent` names the attempt.
        let attempted = self.retry.wrap(propagate(guarded));
        let traced = SpanLayer::new(self.user_agent.product().clone())
            .recorder(self.telemetry.clone())
            .on_body_chunk(ReadUsage::new(
                self.user_agent.product(),
                self.usage,
                &self.telemetry,
            ))
            .layer(attempted);
        TelemetryService::new(SetUserAgent::new(traced, self.user_agent.clone()))
    }
}
