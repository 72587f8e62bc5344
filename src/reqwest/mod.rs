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
//!  app ─► TelemetryMiddleware.retry(..) ───────────────► (yours, e.g. CircuitBreakerMiddleware) ─► reqwest
//!         User-Agent, one span    attempts → http.request.resend_count,
//!         and one record per      Retry-After honoured (the same as a
//!         logical call            RetryMiddleware after it)
//! ```
//!
//! and [`RecordInvalidUrls`], which records a URL that does not parse.
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
//! even parse fails in reqwest-middleware's `send` before any middleware runs: nothing is sent,
//! and [`RecordInvalidUrls`] records it once, terminal `invalid_url`, when the request is
//! created.
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
mod in_span;
mod invalid_url;
mod middleware;
mod retry;
#[cfg(feature = "reqwest-retry")]
mod retryable_strategy;

use std::sync::Arc;

use http::HeaderValue;
use kasal_classify::RetryPolicy;
use kasal_user_agent::Product;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

pub use circuit_breaker::CircuitBreakerMiddleware;
pub use invalid_url::RecordInvalidUrls;
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

/// [`TelemetryMiddleware`] with the default retry over [`http_client`] (see [`builder_with`]),
/// to add more middleware (inside the retry, e.g. a [`CircuitBreakerMiddleware`]) before
/// `build()`.
pub fn builder(product: Product, telemetry: &Telemetry) -> ClientBuilder {
    let client = http_client().build().unwrap_or_else(|error| {
        // Unreachable: with a ready TLS configuration and no other setting, reqwest's `build`
        // has no failing step. Answer as reqwest's own default client would.
        tracing::warn!(target: "kasal_telemetry", %error, "reqwest client with rustls failed to build");
        reqwest::Client::default()
    });
    builder_with(client, product, telemetry)
}

/// [`TelemetryMiddleware`] with the default retry ([`TelemetryMiddleware::retry`], the same as
/// a [`RetryMiddleware`] after it) over your own `client` (its timeouts, proxies, TLS), and
/// [`RecordInvalidUrls`] so a URL that does not parse is recorded too.
///
/// If `client` has a User-Agent of its own (`reqwest::ClientBuilder::user_agent`), it is read
/// here, once, and ours is prepended to it on every request without one:
/// `kasal_<product>/<version> their-app/1.2`.
pub fn builder_with(
    client: reqwest::Client,
    product: Product,
    telemetry: &Telemetry,
) -> ClientBuilder {
    let mut middleware =
        TelemetryMiddleware::new(product.clone(), telemetry.clone()).retry(RetryPolicy::new());
    if let Some(theirs) = user_agent_of(&client) {
        middleware = middleware.client_user_agent(&theirs);
    }
    ClientBuilder::new(client)
        .with_init(RecordInvalidUrls::new(product, telemetry.clone()))
        .with(middleware)
}

/// The User-Agent `client` adds to requests without one, if any.
///
/// reqwest has no getter for a client's default headers, but its `Debug` output lists them
/// (`default_headers: {"user-agent": "their-app/1.2", ..}`, each value as `HeaderValue`'s
/// `Debug` writes it): this reads that, once per stack built. A test guards the format; if
/// it ever changes, `None` (the client's own User-Agent is then replaced, not prepended to).
fn user_agent_of(client: &reqwest::Client) -> Option<HeaderValue> {
    let text = format!("{client:?}");
    let map = &text[text.find("default_headers: {")? + "default_headers: {".len()..];
    let mut rest = map;
    loop {
        let name_and_rest = rest.strip_prefix('"')?;
        let end = name_and_rest.find('"')?;
        let (name, after) = (&name_and_rest[..end], &name_and_rest[end + 1..]);
        let after = after.strip_prefix(": ")?;
        let (value, after) = debug_header_value(after)?;
        if name == "user-agent" {
            return value.and_then(|bytes| HeaderValue::from_bytes(&bytes).ok());
        }
        rest = after.strip_prefix(", ")?;
    }
}

/// One `HeaderValue` as its `Debug` writes it, and what follows: `Sensitive` (unreadable:
/// `None`), or the value quoted, with `"` as `\"` and bytes that are not visible ASCII as
/// `\x..` (any other backslash is the value's own).
fn debug_header_value(text: &str) -> Option<(Option<Vec<u8>>, &str)> {
    if let Some(rest) = text.strip_prefix("Sensitive") {
        return Some((None, rest));
    }
    let bytes = text.strip_prefix('"')?.as_bytes();
    let mut value = Vec::with_capacity(bytes.len().min(512));
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some((Some(value), &text[i + 2..])),
            b'\\' if bytes.get(i + 1) == Some(&b'"') => {
                value.push(b'"');
                i += 2;
            }
            b'\\' if bytes.get(i + 1) == Some(&b'x') => {
                let hex: Vec<u8> = bytes[i + 2..]
                    .iter()
                    .take(2)
                    .take_while(|b| b.is_ascii_hexdigit())
                    .copied()
                    .collect();
                let escaped = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .filter(|b| !(0x20..0x7f).contains(b) && *b != b'\t');
                match escaped {
                    Some(byte) => {
                        value.push(byte);
                        i += 2 + hex.len();
                    }
                    None => {
                        value.push(b'\\');
                        i += 1;
                    }
                }
            }
            byte => {
                value.push(byte);
                i += 1;
            }
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails loudly if reqwest changes the `Debug` output `user_agent_of` reads.
    #[test]
    fn a_clients_own_user_agent_is_read_from_its_debug_output() {
        let with = |ua: &str| {
            http_client()
                .user_agent(ua)
                .default_headers(
                    [(
                        http::header::ACCEPT_LANGUAGE,
                        HeaderValue::from_static("en"),
                    )]
                    .into_iter()
                    .collect(),
                )
                .build()
                .unwrap()
        };
        for ua in [
            "their-app/1.2",
            "odd \"quoted\" \\x41 back\\slash\ttab",
            "x",
        ] {
            assert_eq!(
                user_agent_of(&with(ua)),
                Some(HeaderValue::from_str(ua).unwrap()),
                "{ua}"
            );
        }
        let opaque = HeaderValue::from_bytes(b"caf\xe9/1").unwrap();
        let client = http_client().user_agent(opaque.clone()).build().unwrap();
        assert_eq!(user_agent_of(&client), Some(opaque));
        assert_eq!(user_agent_of(&http_client().build().unwrap()), None);
    }
}
