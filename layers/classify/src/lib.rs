//! Classify HTTP outcomes as success, retryable or terminal; retry with backoff; guard hosts
//! with a circuit breaker.
//!
//! One classification, many adapters. [`DefaultClassifier`] implements one classification table
//! (1xx-3xx success; 408, 429, 500, 502, 503, 504 and transient network errors retryable; the
//! rest terminal) as plain functions ([`Classify::classify_response`] on a status and headers,
//! [`Classify::classify_error`] on an error chain, [`parse_retry_after`] on a header value), and
//! every middleware here reads the same [`Outcome`]:
//!
//! - [`RetryLayer`]: tower's retry over [`RetryPolicy`]: 3 retries, exponential backoff
//!   (100 ms base, 1 s cap, full jitter), `Retry-After` honoured up to 30 s, only requests whose
//!   body can be replayed ([`TryCloneBody`]); the call count lands in the response as
//!   [`Attempts`].
//! - [`CircuitBreakerLayer`]: a per-host [`CircuitBreaker`] (5 failures open it for 60 s, then
//!   one probe at a time, 2 successes close it); an open circuit fails at once with
//!   [`CircuitOpen`].
//! - `TowerHttpClassifier` (features `tower-http-07`, `tower-http-06`): the same outcomes for
//!   tower-http's `TraceLayer`, 0.7 or 0.6.
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use kasal_classify::{Classify, DefaultClassifier};
//!
//! let classifier = DefaultClassifier::new();
//! let outcome = classifier.classify_response(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new());
//! assert!(outcome.is_retryable());
//! assert_eq!(outcome.error_type(), Some("503"));
//! ```
//!
//! Nothing here panics, blocks, or turns a malformed header into an application error.
#![deny(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(missing_docs, rust_2018_idioms)]

mod circuit_breaker;
mod classify;
mod outcome;
#[cfg(feature = "reqwest")]
mod reqwest;
mod retry;
mod retry_after;
#[cfg(any(feature = "tower-http-06", feature = "tower-http-07"))]
mod tower_http;

pub use crate::circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakerService, CircuitOpen,
    CircuitState, Permit,
};
pub use crate::classify::{AsError, Classify, DEFAULT_MAX_RETRY_AFTER, DefaultClassifier};
pub use crate::outcome::{Outcome, Reason};
pub use crate::retry::{
    AttemptCounter, Attempts, Backoff, Jitter, Retry, RetryLayer, RetryPolicy, TryCloneBody,
    clone_request,
};
pub use crate::retry_after::{MalformedRetryAfter, parse_retry_after};
#[cfg(any(feature = "tower-http-06", feature = "tower-http-07"))]
pub use crate::tower_http::TowerHttpClassifier;

/// Response futures of the services in this crate.
pub mod future {
    pub use crate::circuit_breaker::ResponseFuture as CircuitBreakerFuture;
    pub use crate::retry::ResponseFuture as RetryFuture;
}
