//! Composable tower layers that attribute, trace, classify and report the calls a Kasal service
//! makes to Databricks APIs.
//!
//! One layer, [`TelemetryLayer`], turns any tower HTTP client (hyper-util's legacy `Client`, or
//! any `Service<http::Request<B>>`) into a client whose calls carry the product's User-Agent,
//! get one OpenTelemetry-conventions span each, are classified (success, retryable, terminal),
//! optionally retried and guarded by a circuit breaker, and are recorded into the shared
//! [`Telemetry`] pipeline, which folds them into rollups and operation summaries for an exporter.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use kasal_telemetry::user_agent::Product;
//! use kasal_telemetry::{InMemoryExporter, Telemetry, TelemetryLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kasal_telemetry::BoxError> {
//! // One pipeline per process, shared by every client (clones are cheap).
//! let exporter = InMemoryExporter::new();
//! let telemetry = Telemetry::builder().exporter(exporter.clone()).build();
//!
//! // Any `Service<http::Request<B>>` will do; here, an in-process one that checks our header.
//! let client = tower::service_fn(|request: Request<Full<Bytes>>| async move {
//!     let user_agent = request.headers()["user-agent"].to_str().unwrap_or_default();
//!     assert!(user_agent.starts_with("kasal_genie/"));
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
//! });
//! let mut client = ServiceBuilder::new()
//!     .layer(TelemetryLayer::new(Product::Genie, telemetry.clone()))
//!     .service(client);
//!
//! let request = Request::get("https://example.cloud.databricks.com/api/2.0/genie/spaces")
//!     .body(Full::default())?;
//! let response = client.ready().await?.call(request).await?;
//! let body = response.into_body().collect().await?.to_bytes(); // the call is recorded here
//! assert_eq!(body, "{}");
//!
//! telemetry.flush().await;
//! let rollups = exporter.rollups();
//! assert_eq!(rollups.len(), 1);
//! assert_eq!(rollups[0].count, 1);
//! assert_eq!(rollups[0].key.product, Product::Genie);
//! assert_eq!(rollups[0].key.outcome, "success");
//! # Ok(())
//! # }
//! ```
//!
//! # The hyper recipe
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use kasal_telemetry::classify::{CircuitBreaker, CircuitBreakerConfig, RetryPolicy};
//! use kasal_telemetry::trace::{ExecutionContext, OperationId, Route};
//! use kasal_telemetry::user_agent::{Product, UserAgent};
//! use kasal_telemetry::{JsonLinesExporter, Telemetry, TelemetryLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), kasal_telemetry::BoxError> {
//! let telemetry = Telemetry::builder().exporter(JsonLinesExporter::stdout()).build();
//!
//! // hyper-util's client (add a TLS connector such as hyper-rustls for https).
//! let hyper_client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let layer = TelemetryLayer::new(Product::Mcp, telemetry.clone())
//!     .user_agent(UserAgent::new(Product::Mcp).with_extra("client", "claude")?)
//!     .retry(RetryPolicy::new().max_retries(2))
//!     .circuit_breaker(CircuitBreaker::new(CircuitBreakerConfig::new()));
//! let client = ServiceBuilder::new().layer(layer).service(hyper_client);
//!
//! // Who the call is for, and which operation it belongs to.
//! let context = ExecutionContext::user("alice@example.com")
//!     .with_operation_id(OperationId::new("mcp-session-42"));
//! let mut request = http::Request::post("http://127.0.0.1:8080/api/2.0/mcp/tools/call")
//!     .header("authorization", "Bearer dapi-never-recorded")
//!     .body(Full::new(Bytes::from_static(b"{}")))?;
//! request.extensions_mut().insert(Route::new("/api/2.0/mcp/tools/call"));
//!
//! let response = context
//!     .scope(async { client.clone().oneshot(request).await })
//!     .await?;
//! let _body = response.into_body().collect().await?;
//!
//! telemetry.complete_operation(&OperationId::new("mcp-session-42"));
//! telemetry.shutdown().await; // at exit: export what is left, within 2 s
//! # Ok(())
//! # }
//! ```
//!
//! # The reqwest and MCP recipes
//!
//! With feature `reqwest`, `kasal_telemetry::reqwest::client(Product::Genie, &telemetry)` is a
//! reqwest-middleware client with the same User-Agent, spans, classification, retries and
//! records as [`TelemetryLayer`]; `kasal_telemetry::reqwest::builder(..)` adds your own
//! middleware. With feature `mcp`, `kasal_telemetry::mcp::McpClient::new(&telemetry)` is an rmcp
//! `StreamableHttpClient` for `StreamableHttpClientTransport::with_client(..)`: every MCP session
//! becomes one operation summary. The module docs hold the examples.
//!
//! # Layer order
//!
//! ```text
//!  app ─► TelemetryLayer ───────────────────────────────────────────────────────────► client
//!         │ UserAgentLayer   User-Agent: kasal_<product>/<version> [extras] [theirs]
//!         │ SpanLayer        one span per logical call (INFO, `HTTP`, otel.name "GET /route"),
//!         │   │              lives until the body ends; records one CallRecord ──► Telemetry
//!         │   │ RetryLayer           (optional) attempts → http.request.resend_count
//!         │   │   │ CircuitBreakerLayer  (optional) per host; open = CircuitOpen, no request
//!         ▼   ▼   ▼
//! ```
//!
//! The span sits outside retry and circuit breaker, so one span and one record cover every
//! attempt of a call; the breaker sits inside retry, so each attempt asks it. Errors reach the
//! app as [`BoxError`] holding the client's error or a
//! [`CircuitOpen`](classify::CircuitOpen), unchanged: downcast them.
//!
//! # Execution context: call inside the scope
//!
//! The [`ExecutionContext`](trace::ExecutionContext) (user or service, caller id, operation) is
//! read **when `call` is made**, from a request extension or else the task-local set by
//! `scope`. So make the call inside the scope:
//!
//! ```text
//! ctx.scope(async { client.call(request).await }).await   // right: call runs in the scope
//! ctx.scope(client.call(request)).await                   // wrong: call ran before the scope
//! ```
//!
//! `tokio::spawn`ed tasks do not inherit the context or the span: spawn with [`spawn`] /
//! [`spawn_blocking`] or wrap the future in `.in_current_context()` (see [`task`] for why a
//! global "current token" is wrong). Tokens in the context (`SecretToken`), `Authorization`
//! headers and `token=` query values never reach a span field, an event or an exported record.
//!
//! # The axum recipe (feature `axum`)
//!
//! `Router::new().route(..).layer(ServerTelemetryLayer::new(product, telemetry))` (or
//! `route_layer`): each request runs in the execution context its forwarded headers give
//! (`X-Forwarded-Access-Token`, `X-Forwarded-Email`), inside one server span; calls the handler
//! makes through a [`TelemetryLayer`] client are its children and carry its caller. See
//! `layer::server` and `examples/axum_server.rs`. With feature `otel`, `traceparent` is read
//! and written through the global OpenTelemetry propagator.
//!
//! # Crates
//!
//! The layers live in their own crates, re-exported here: [`user_agent`] (`kasal-user-agent`),
//! [`classify`] (`kasal-classify`), [`trace`] (`kasal-trace`). The pipeline is [`pipeline`];
//! its exporters are in [`export`] ([`DatabricksExporter`] for production, [`JsonLinesExporter`]
//! and [`InMemoryExporter`] for development and tests), with [`credentials`] and the
//! [`FeatureFlagCache`] that gates export.
//!
//! Model calls (products `llm`, `embedding`, `agent` to model-serving paths, by default) have
//! their token usage read from the response as it streams past ([`usage`]): it lands on the
//! [`CallRecord`], on the span (`gen_ai.*`), in per-(product, model, window) [`UsageRollup`]s
//! and in the [`OperationSummary`] of an agent run.
#![deny(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod credentials;
pub mod event;
pub mod export;
pub mod layer;
#[cfg(feature = "mcp")]
pub mod mcp;
#[cfg(feature = "otel")]
pub mod metrics;
pub mod pipeline;
#[cfg(feature = "reqwest")]
pub mod reqwest;
pub mod task;
pub mod usage;

pub use credentials::{Credentials, EnvToken, StaticToken};
pub use event::{
    Batch, CallRecord, ErrorEntry, OperationSummary, OutcomeCounts, Rollup, RollupKey, UsageRollup,
};
pub use export::databricks::FeatureFlagCache;
pub use export::databricks::{DatabricksExporter, validate_host};
pub use export::{InMemoryExporter, JsonLinesExporter};
#[doc(inline)]
pub use kasal_classify as classify;
#[doc(inline)]
pub use kasal_trace as trace;
pub use kasal_trace::route;
#[doc(inline)]
pub use kasal_user_agent as user_agent;
#[cfg(feature = "axum")]
pub use layer::server::{
    HeaderRejections, ServerTelemetryBody, ServerTelemetryLayer, ServerTelemetryService,
};
pub use layer::{ServiceBuilderExt, TelemetryBody, TelemetryLayer, TelemetryService};
pub use pipeline::{ConfigError, Stats, Telemetry, TelemetryBuilder};
pub use task::{ContextFutureExt, InContext, spawn, spawn_blocking};
pub use tower::BoxError;

/// The README's examples, compiled as doctests so the README stays honest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
