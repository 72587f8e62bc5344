//! One OpenTelemetry-conventions span per HTTP call, the execution context it runs in, and the
//! redaction of everything that leaves the process.
//!
//! [`SpanLayer`] wraps any `tower::Service<http::Request<B>, Response = http::Response<ResBody>>`
//! (hyper-util's legacy `Client`, an axum router, a `service_fn`). Each call gets one span, which
//! stays open until the response body ends, and one [`CallRecord`] handed to a [`RecordCall`]
//! (the telemetry pipeline, or a closure).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::{Arc, Mutex};
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use kasal_trace::{CallRecord, ExecutionContext, SpanLayer};
//! use kasal_user_agent::Product;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let records = Arc::new(Mutex::new(Vec::<CallRecord>::new()));
//! let sink = records.clone();
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(SpanLayer::new(Product::Genie).recorder(move |record| {
//!         sink.lock().unwrap().push(record);
//!     }))
//!     .service(tower::service_fn(|_request: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
//!     }));
//!
//! let request = Request::get("https://example.cloud.databricks.com/api/2.0/genie?token=x")
//!     .body(Full::default())?;
//! let response = ExecutionContext::user("alice@example.com")
//!     .scope(async { client.ready().await?.call(request).await })
//!     .await?;
//! let body = response.into_body().collect().await?.to_bytes(); // the call ends here
//! assert_eq!(body, "hello");
//!
//! let records = records.lock().unwrap();
//! assert_eq!(records.len(), 1);
//! assert_eq!(records[0].status, Some(http::StatusCode::OK));
//! assert_eq!(records[0].response_bytes, 5);
//! assert_eq!(records[0].caller_id.as_deref(), Some("alice@example.com"));
//! # Ok(())
//! # }
//! ```
//!
//! # The span
//!
//! Tracing needs a static span name, so every call span is named `HTTP` (target `kasal_trace`)
//! and carries its real name in `otel.name`: `"{METHOD}"`, or `"{METHOD} {route}"` when the
//! request has a [`Route`] extension. `tracing-opentelemetry` exports `otel.name` as the span
//! name, as it does for tower-http users who follow the same convention. Fields, per the
//! OpenTelemetry HTTP semantic conventions:
//!
//! | field | value |
//! |---|---|
//! | `otel.kind` | `client` or `server` ([`Direction`]) |
//! | `otel.name` | `GET` or `GET /api/2.0/jobs/{id}` |
//! | `http.request.method`, `http.route` | the method; the route template if known |
//! | `url.full` | the URL with userinfo removed and every query value `REDACTED` ([`redact_uri`]) |
//! | `server.address`, `server.port` | from the URI (or `Host`), port defaulted from the scheme |
//! | `http.response.status_code` | the final status |
//! | `http.request.resend_count` | attempts − 1: from the `Attempts` response extension, or for an error without a response from the `AttemptCounter` request extension (0 if absent) |
//! | `http.response.body.size` | response body bytes read |
//! | `error.type` | on failure: the status (`"429"`) or a short name (`"connect"`, `"timeout"`) |
//! | `otel.status_code` | `ERROR` on failure; left unset on success, as the conventions ask |
//! | `kasal.product`, `kasal.outcome` | the product token; `success`, `retryable` or `terminal` |
//! | `kasal.operation_id` | from an [`OperationId`] request extension, else the context |
//! | `execution.context`, `caller.id`, `execution.obo_dev_fallback` | from the [`ExecutionContext`] |
//! | `kasal.body_cut_short` | `true` when the body was dropped before its end |
//! | `gen_ai.request.model`, `gen_ai.response.model` | model calls: the model asked for (the serving endpoint) and the one that answered |
//! | `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` | model calls: the tokens the response reported ([`Usage`]) |
//!
//! A failure is any outcome other than success on a client span; on a server span, only 5xx
//! answers and errors (a 4xx is the client's fault, per the conventions). The span's parent is
//! the current span when `call` is made; the inner service's future is polled inside it and the
//! body's frames are produced inside it, so events from the inner service and from the body's
//! producer are its children. The caller's own code between two polls of the body runs in the
//! caller's span, as always with `tracing`. No field ever holds a token: the context's
//! `user_token` is never read, URLs go through [`redact_uri`] and error messages through
//! [`redact()`].
//!
//! # When is the call recorded
//!
//! Exactly once per call, with [`RecordCall::record_call`]:
//!
//! - when the response body ends (a frame after which the body reports `is_end_stream`, or the
//!   end of the stream), with the bytes read and the latency from the start of the call;
//! - at once, when the response body is already empty (`is_end_stream()` on arrival: `HEAD`,
//!   `204`, `Content-Length: 0`);
//! - when the body yields an error: the error is classified with the layer's classifier, which
//!   replaces the outcome of the status;
//! - when the body is dropped before its end: outcome from the status, `kasal.body_cut_short`;
//! - at once, when the inner service returns an error (classified; no status).
//!
//! The span closes at the same moment. A call whose response future is dropped before the
//! response head arrives (cancelled, e.g. by a timeout outside this layer) is not recorded.
//! Errors from `poll_ready` pass through unrecorded.
//!
//! # Errors
//!
//! Nothing here adds an error: [`Traced`] returns its inner service's error and [`TracedBody`]
//! its inner body's, unchanged, as tower-http's `Trace` does. So the layer fits wherever the
//! inner service fits: on an axum `Router` (`Error = Infallible`) as on hyper-util's client.
//! Classifying an error needs it as `&(dyn Error + 'static)`: the error type implements
//! [`AsError`](kasal_classify::AsError) (done for `Infallible`, `BoxError`, hyper's, hyper-util's,
//! `io::Error`, and, behind features of kasal-classify, axum's and reqwest's; one line for your
//! own).
//!
//! # Other adapters
//!
//! The tower service is a thin adapter over the sans-IO [`CallSpan`] and the [`TracedBody`];
//! another client or server drives the same two, so its spans and records follow the same rules:
//! [`CallSpan::start`] from the request head, the inner call polled inside
//! [`CallSpan::span`], then [`CallSpan::classify_response`] and
//! [`TracedBody::new`] (or [`TracedBody::with_on_body_chunk`]) around the response body, or
//! [`CallSpan::fail`] for an error without a response, its record handed to
//! [`RecordCall::record_call`]. An [`OnBodyChunk`] hook sees each data chunk as it passes.
//!
//! # Execution context
//!
//! [`ExecutionContext::scope`] sets who the work runs for, in a tokio task-local; a request
//! extension of type [`ExecutionContext`] overrides it for one call. The context is read when
//! `call` is made, so make the call inside the scope (`ctx.scope(async { svc.call(req).await })`,
//! not `ctx.scope(svc.call(req))`). Spawned tasks do not inherit it: scope them again.
#![deny(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(missing_docs, rust_2018_idioms)]

mod body;
mod call;
mod client_address;
mod context;
mod future;
mod layer;
mod on_body_chunk;
mod record;
mod redact;
mod service;
mod usage;

pub use body::TracedBody;
pub use call::CallSpan;
pub use client_address::ClientAddress;
pub use context::{ExecutionContext, ExecutionMode, OperationId, Route, SecretToken};
pub use future::ResponseFuture;
pub use layer::SpanLayer;
pub use on_body_chunk::OnBodyChunk;
pub use record::{CallRecord, Direction, RecordCall};
pub use redact::{MAX_CHAIN_DEPTH, MAX_REDACTED_LEN, redact, redact_error, redact_uri};
pub use service::Traced;
pub use usage::{MAX_MODEL_LEN, Usage, is_model_serving_path, serving_endpoint_model, valid_model};

/// A boxed error, as tower's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
