//! The telemetry stack for reqwest (feature `reqwest`): reqwest-middleware middlewares over the
//! same call core, classification and pipeline as the tower layers.
//!
//! ```no_run
//! use kasal_telemetry::user_agent::Product;
//! use kasal_telemetry::{JsonLinesExporter, Telemetry};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = Telemetry::builder().exporter(JsonLinesExporter::stdout()).build();
//! let client = kasal_telemetry::reqwest::client(Product::Genie, &telemetry);
//!
//! let body = client
//!     .get("https://example.cloud.databricks.com/api/2.0/genie/spaces")
//!     .bearer_auth("dapi-never-recorded")
//!     .send()
//!     .await?
//!     .text()
//!     .await?; // the call is recorded here, when the body has been read
//! # let _ = body;
//! telemetry.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # The stack
//!
//! [`client`] and [`builder`] give a `reqwest_middleware` client with, outermost first:
//!
//! ```text
//!  app ─► TelemetryMiddleware ─► RetryMiddleware ─► (yours, e.g. CircuitBreakerMiddleware) ─► reqwest
//!         User-Agent, one span    attempts → http.request.resend_count,
//!         and one record per      Retry-After honoured
//!         logical call
//! ```
//!
//! - [`TelemetryMiddleware`]: the User-Agent (`kasal_<product>/<version>`, prepended to a
//!   request's own), one span per call with the OpenTelemetry HTTP client fields, the
//!   classification (success, retryable, terminal; `error.type`), and one
//!   [`CallRecord`](crate::CallRecord) into the [`Telemetry`] pipeline when the response body
//!   has been read to its end, fails, or is dropped. So latency covers the body, and a streamed
//!   body keeps the span open while it streams.
//! - [`RetryMiddleware`]: retries retryable failures (408, 429, 5xx but 501 and 505, timeouts,
//!   refused or reset connections) with backoff, waiting at least what `Retry-After` asks (up
//!   to 30 s); the span and the record count the attempts.
//! - [`CircuitBreakerMiddleware`]: a per-host [`CircuitBreaker`](kasal_classify::CircuitBreaker),
//!   shareable with tower clients.
//! - `ClassifierStrategy` (feature `reqwest-retry`): the same classification as a
//!   reqwest-retry `RetryableStrategy`, for those who keep reqwest-retry.
//!
//! The span, the record and the classification are made by the functions the tower
//! [`TelemetryLayer`](crate::TelemetryLayer) uses (kasal-trace's `CallSpan` and `TracedBody`,
//! kasal-classify's `DefaultClassifier`), so both stacks give the same spans and records for
//! the same exchange.
//!
//! # Per-request context
//!
//! The [`ExecutionContext`](crate::trace::ExecutionContext), [`OperationId`](crate::trace::OperationId)
//! and [`Route`](crate::trace::Route) of a call come from reqwest-middleware's request
//! extensions, else (context and operation) from the task-local context:
//!
//! ```no_run
//! # async fn run(client: reqwest_middleware::ClientWithMiddleware) -> reqwest_middleware::Result<()> {
//! use kasal_telemetry::trace::{ExecutionContext, OperationId, Route};
//!
//! let response = client
//!     .post("https://example.cloud.databricks.com/api/2.0/sql/statements")
//!     .with_extension(Route::new("/api/2.0/sql/statements"))
//!     .with_extension(OperationId::new("statement-42"))
//!     .with_extension(ExecutionContext::user("alice@example.com"))
//!     .body("{}")
//!     .send()
//!     .await?;
//! # let _ = response; Ok(()) }
//! ```
//!
//! # Errors
//!
//! Every middleware here returns reqwest-middleware's error unchanged (reqwest's own error for
//! a failed request, `Error::Middleware` holding a
//! [`CircuitOpen`](kasal_classify::CircuitOpen) for an open circuit), never a wrapper, and
//! never panics on bad input. reqwest's error kinds are classified in one place
//! (kasal-classify's `DefaultClassifier`): a timeout is retryable `timeout`; a refused
//! connection retryable `connect`; a reset one retryable `connection_reset`; a URL reqwest
//! cannot send (a scheme other than http or https) terminal `invalid_url`; too many redirects
//! terminal `redirect`; a body cut short retryable `incomplete_message`. A URL that does not
//! even parse fails in reqwest-middleware's `send` before any middleware runs: nothing is sent
//! and nothing is recorded.
//!
//! # TLS
//!
//! [`http_client`] is reqwest with rustls over the `ring` provider and the Mozilla root
//! certificates (as the crate's own exporter), so no C toolchain is needed. The feature turns
//! on reqwest's `rustls-no-provider`: a `reqwest::Client` built elsewhere in the process
//! without a TLS configuration then needs a rustls crypto provider installed, or reqwest's
//! default `rustls` feature, as reqwest documents.

mod body;
mod circuit_breaker;
mod error;
mod middleware;
mod retry;
#[cfg(feature = "reqwest-retry")]
mod retryable_strategy;

use std::sync::Arc;

use kasal_user_agent::Product;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

pub use circuit_breaker::CircuitBreakerMiddleware;
pub use middleware::{OperationIdHeader, TelemetryMiddleware};
pub use retry::RetryMiddleware;
#[cfg(feature = "reqwest-retry")]
pub use retryable_strategy::ClassifierStrategy;

use crate::Telemetry;

/// The one-line default: [`builder`]`(product, telemetry).build()`.
///
/// A client whose calls carry `User-Agent: kasal_<product>/<version>`, get one span each, are
/// retried when retryable (honouring `Retry-After`) and are recorded into `telemetry`.
pub fn client(product: Product, telemetry: &Telemetry) -> ClientWithMiddleware {
    builder(product, telemetry).build()
}

/// [`TelemetryMiddleware`] and the default [`RetryMiddleware`] over [`http_client`], to add
/// more middleware (inside the retry, e.g. a [`CircuitBreakerMiddleware`]) before `build()`.
pub fn builder(product: Product, telemetry: &Telemetry) -> ClientBuilder {
    let client = http_client().build().unwrap_or_else(|error| {
        // Unreachable: with a ready TLS configuration and no other setting, reqwest's `build`
        // has no failing step. Answer as reqwest's own default client would.
        tracing::warn!(target: "kasal_telemetry", %error, "reqwest client with rustls failed to build");
        reqwest::Client::default()
    });
    builder_with(client, product, telemetry)
}

/// [`TelemetryMiddleware`] and the default [`RetryMiddleware`] over your own `client` (its
/// timeouts, proxies, TLS).
pub fn builder_with(
    client: reqwest::Client,
    product: Product,
    telemetry: &Telemetry,
) -> ClientBuilder {
    ClientBuilder::new(client)
        .with(TelemetryMiddleware::new(product, telemetry.clone()))
        .with(RetryMiddleware::default())
}

/// reqwest's client builder with rustls over `ring` and the Mozilla (webpki) root certificates:
/// the transport of [`client`]. Add your settings (timeouts, pool) and hand the built client to
/// [`builder_with`].
pub fn http_client() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match tls_config() {
        Some(config) => builder.tls_backend_preconfigured(config),
        // Unreachable: ring supports rustls's safe default protocol versions.
        None => builder,
    }
}

/// TLS 1.2 and 1.3 with the `ring` provider and the webpki roots.
fn tls_config() -> Option<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Some(config)
}
