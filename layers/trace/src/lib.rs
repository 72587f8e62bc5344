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
//! and carries its real name in `otel.name`, as the OpenTelemetry HTTP semantic conventions
//! name it: `"{method} {template}"` (client: the `url.template`; server: the `http.route`), else
//! `"{method}"`, with `HTTP` for a method the conventions do not know. `tracing-opentelemetry`
//! exports `otel.name` as the span name, `otel.kind` as its kind and `otel.status_code` /
//! `otel.status_description` as its status. Integers are recorded as `i64`: OpenTelemetry has no
//! unsigned type and the bridge would export a `u16` as a string. Fields:
//!
//! | field | client span | server span |
//! |---|---|---|
//! | `otel.kind` | `client` | `server` ([`Direction`]) |
//! | `otel.name` | `GET /api/2.0/jobs/get` or `GET` | `GET /items/{id}` or `GET` |
//! | `http.request.method` | the method; `_OTHER` if not one of the nine the conventions know | same |
//! | `http.request.method_original` | the method, only when `http.request.method` is `_OTHER` | same |
//! | `url.template` | from a [`Route`] request extension | — |
//! | `http.route` | — | from a [`Route`] request extension (the server adapter sets it) |
//! | `url.full` | the URL, userinfo removed, every query value `REDACTED` ([`redact_uri`]) | — |
//! | `url.path`, `url.scheme` | — | the path ([`redact()`]ed, no query); the scheme, `http` if the URI has none |
//! | `server.address`, `server.port` (`i64`) | from the URI (or `Host`), port defaulted from the scheme | same |
//! | `client.address` | — | from a [`ClientAddress`] request extension |
//! | `user_agent.original` | — | the `User-Agent` header, [`redact()`]ed |
//! | `network.protocol.version` | `1.0`, `1.1`, `2`, `3`: the response's version (the request's if none arrives) | same |
//! | `http.response.status_code` (`i64`) | the final status | same |
//! | `http.request.resend_count` (`i64`) | attempts − 1, only when > 0: from the `Attempts` response extension, or for an error without a response from the `AttemptCounter` request extension | same |
//! | `http.request.body.size`, `http.response.body.size` (`i64`) | opt-in ([`SpanLayer::body_sizes`]): `Content-Length` of the request; response bytes read | same |
//! | `error.type` | on failure: the status (`"429"`), else the error's short name (`"connect"`, `"timeout"`), else `_OTHER` | same |
//! | `otel.status_code` | `ERROR` for a 4xx, a 5xx or an error; unset otherwise, as the conventions ask | `ERROR` for a 5xx or an error (a 4xx is the client's fault) |
//! | `otel.status_description` | on an error: the redacted message (with its source chain) | same |
//! | `kasal.product`, `kasal.outcome` | the product token; `success`, `retryable` or `terminal` (the classifier's verdict) | same |
//! | `kasal.operation_id` | from an [`OperationId`] request extension, else the context | same |
//! | `execution.context`, `caller.id`, `execution.obo_dev_fallback` | from the [`ExecutionContext`] | same |
//! | `kasal.body_cut_short` | `true` when the body was dropped before its end | same |
//! | `gen_ai.request.model` | model calls: the serving endpoint of a `/serving-endpoints/{name}/invocations` request | same |
//! | `gen_ai.response.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` (`i64`) | model calls: the model that answered and the tokens it reported ([`Usage`]), recorded by a body hook | same |
//!
//! A span holds at most 32 fields (`tracing`'s limit) and this one declares 32: a new field
//! must replace one. The span's parent is the current span when `call` is made; the inner
//! service's future is polled inside it and the body's frames are produced inside it, so events
//! from the inner service and from the body's producer are its children. The caller's own code
//! between two polls of the body runs in the caller's span, as always with `tracing`. No field
//! ever holds a token: the context's `user_token` is never read, URLs, paths and user agents go
//! through [`redact_uri`] / [`redact()`], and error messages through [`redact_error`].
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
mod callsite;
mod client_address;
mod context;
mod forwarded;
mod future;
mod hooks;
mod last;
mod layer;
mod on_body_chunk;
mod record;
mod redact;
pub mod route;
mod service;
mod usage;

pub use body::TracedBody;
pub use call::{CallSpan, shared_authority};
pub use client_address::ClientAddress;
pub use context::{ExecutionContext, ExecutionMode, OperationId, Route, SecretToken};
pub use forwarded::{
    ForwardedContext, ForwardedHeaders, MAX_FORWARDED_HEADER_LEN, RejectReason, RejectedHeader,
    X_FORWARDED_ACCESS_TOKEN, X_FORWARDED_EMAIL, X_FORWARDED_PREFERRED_USERNAME, X_FORWARDED_USER,
};
pub use future::ResponseFuture;
pub use hooks::SharedHooks;
pub use layer::SpanLayer;
pub use on_body_chunk::OnBodyChunk;
pub use record::{CallRecord, Direction, RecordCall};
pub use redact::{MAX_CHAIN_DEPTH, MAX_REDACTED_LEN, redact, redact_error, redact_uri};
pub use service::Traced;
pub use usage::{MAX_MODEL_LEN, Usage, is_model_serving_path, serving_endpoint_model, valid_model};

/// A boxed error, as tower's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
