//! The server side (feature `axum`): [`ServerTelemetryLayer`] and its service
//! [`ServerTelemetryService`], for axum's `Router::layer` / `route_layer` and any tower HTTP
//! server.
//!
//! For each request, the layer:
//!
//! 1. reads who the request runs for from the headers a Databricks Apps proxy forwards
//!    ([`ForwardedHeaders`](crate::trace::ForwardedHeaders)): `X-Forwarded-Access-Token`
//!    present → `User`, `caller.id` from `X-Forwarded-Email`, else `X-Forwarded-User`, else
//!    `X-Forwarded-Preferred-Username`; absent → `Service` with the configured
//!    service-principal id (in development mode, an on-behalf-of route without a token also
//!    sets `execution.obo_dev_fallback = true`). A forwarded header that is longer than 8 KiB,
//!    not UTF-8, empty or sent twice gives the `Service` context and is counted
//!    ([`ServerTelemetryLayer::rejections`]): never a panic, never an error response;
//! 2. opens one server span (kasal-trace's [`CallSpan`](crate::trace::CallSpan),
//!    `otel.kind = server`, named `"{METHOD} {route}"` with `http.route` from axum's
//!    `MatchedPath`, `client.address` from axum's `ConnectInfo<SocketAddr>`) and, with feature
//!    `otel`, makes it continue the trace of an incoming `traceparent` (a malformed one starts
//!    a new trace);
//! 3. runs the handler inside that span and inside [`ExecutionContext::scope`](crate::trace::ExecutionContext::scope), so outgoing
//!    calls made by the handler on a [`TelemetryLayer`](crate::TelemetryLayer) client are
//!    children of the server span and carry the request's context, and the user's token is
//!    at hand as a [`SecretToken`](crate::trace::SecretToken) in
//!    `ExecutionContext::current().user_token`;
//! 4. keeps the span open, and the context set, while the response body streams, and records
//!    one server [`CallRecord`](crate::CallRecord) when it ends (or is dropped).
//!
//! The service's error is its inner service's, unchanged (`Infallible` for axum), so it fits
//! `Router::layer`. Put it there (or on `route_layer`), not around the whole router as a
//! `ServiceBuilder` layer: axum routes before `Router::layer`s run, so `MatchedPath` (and with it
//! `http.route`) is known there, and not outside the router (the span is then named `"{METHOD}"`). The token is never recorded: not on the span, not in the record, not in
//! a log line.
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use kasal_telemetry::trace::ExecutionContext;
//! use kasal_telemetry::user_agent::Product;
//! use kasal_telemetry::{InMemoryExporter, ServerTelemetryLayer, Telemetry};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let telemetry = Telemetry::builder().exporter(InMemoryExporter::new()).build();
//! let app = Router::new()
//!     .route(
//!         "/whoami",
//!         get(|| async { ExecutionContext::current().caller_id.unwrap_or_default().to_string() }),
//!     )
//!     .layer(ServerTelemetryLayer::new(Product::Agent, telemetry).service_principal_id("sp-1"));
//!
//! let request = http::Request::get("/whoami")
//!     .header("x-forwarded-access-token", "dapi-never-recorded")
//!     .header("x-forwarded-email", "alice@example.com")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
//! assert_eq!(body, "alice@example.com");
//! # }
//! ```
//!
//! # Context across tasks
//!
//! A task spawned from the handler with `tokio::spawn` has no context and no span; spawn it
//! with [`kasal_telemetry::spawn`](crate::spawn) (or `spawn_blocking`, or
//! `.in_current_context()`), see [`task`](crate::task).
//!
//! # Across services (feature `otel`)
//!
//! The incoming `traceparent`/`tracestate` are read with OpenTelemetry's *global* text map
//! propagator (`opentelemetry::global::set_text_map_propagator`, e.g. the SDK's
//! `TraceContextPropagator`) and set as the server span's remote parent through
//! `tracing-opentelemetry`; the client layer injects the current call span's context the same
//! way. With the default (no-op) global propagator nothing is read or sent.

mod body;
mod future;
mod layer;
mod rejections;
mod service;
mod shared;

pub use body::{ScopedBody, ServerTelemetryBody};
pub use future::ServerResponseFuture;
pub use layer::ServerTelemetryLayer;
pub use rejections::HeaderRejections;
pub use service::ServerTelemetryService;
