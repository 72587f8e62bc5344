//! # Sending to OpenTelemetry
//!
//! Spans go through [`tracing-opentelemetry`](https://docs.rs/tracing-opentelemetry) to your
//! tracer provider; the pipeline's rollups go as metrics to an OpenTelemetry Collector over
//! OTLP/HTTP with [`OtlpExporter`] (feature `otlp`), next to the Databricks exporter if you
//! like ([`FanOut`](super::FanOut)), or through your own `MeterProvider` with
//! [`HttpMetrics`](crate::metrics::HttpMetrics) (feature `otel`). Many replicas, one Collector,
//! whatever backend the Collector forwards to.
//!
//! ```no_run
//! use kasal_telemetry::export::{FanOut, OtlpExporter};
//! use kasal_telemetry::{DatabricksExporter, Telemetry};
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt as _;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let span_exporter = opentelemetry_sdk::testing::trace::NoopSpanExporter::new();
//! // Spans: any span exporter (e.g. opentelemetry-otlp's) behind tracing-opentelemetry.
//! let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
//!     .with_batch_exporter(span_exporter)
//!     .build();
//! let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("my-app"));
//! tracing::subscriber::set_global_default(tracing_subscriber::registry().with(otel_layer))?;
//!
//! // Metrics: the rollups, to the Collector named by OTEL_EXPORTER_OTLP_ENDPOINT, and to Databricks.
//! let otlp = OtlpExporter::builder().header("authorization", "Bearer collector-token").gzip(true).build()?;
//! let databricks = DatabricksExporter::builder("adb-123.4.azuredatabricks.net").build()?;
//! let telemetry = Telemetry::builder()
//!     .exporter(FanOut::new().exporter(databricks).exporter(otlp))
//!     .build();
//! // ... TelemetryLayer::new(product, telemetry.clone()) on your clients ...
//! telemetry.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## What is sent
//!
//! Each batch's rollups become one `ExportMetricsServiceRequest` (protobuf, `POST
//! {endpoint}`, `Content-Type: application/x-protobuf`) with delta-temporality histograms, one
//! data point per rollup (its window is the point's start and end time), and one per usage
//! rollup and token type:
//!
//! | metric | unit | buckets |
//! |---|---|---|
//! | `http.client.request.duration` | `s` | 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10 |
//! | `http.server.request.duration` | `s` | the same |
//! | `gen_ai.client.token.usage` | `{token}` | 1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864 |
//!
//! | attribute | on | value |
//! |---|---|---|
//! | `http.request.method` | both | `GET`, `POST`, ... or `_OTHER` |
//! | `http.response.status_code` | both | integer, when a response arrived |
//! | `server.address` / `server.port` | both | the host; the port when the URL had one |
//! | `url.template` | client | the route template (given, or inferred by [`route`](crate::route)); never a raw path |
//! | `http.route` | server | the matched route |
//! | `error.type` | both | status code (client 4xx/5xx, server 5xx), short error name, or `_OTHER` |
//! | `kasal.product` | both | the Kasal product (`genie`, `vectorsearch`, ...) |
//!
//! `gen_ai.client.token.usage` carries `gen_ai.token.type` (`input`, `output`),
//! `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
//! `gen_ai.response.model` and `kasal.product`; per (product, model, window) and token type,
//! its bucket counts, min, max and sum are the usage rollup's per-call
//! [`TokenHistogram`](crate::event::TokenHistogram) (each call in its bucket; count = the calls
//! that reported tokens of that type), as [`HttpMetrics`](crate::metrics::HttpMetrics) records
//! them.
//!
//! Resource: `service.name` from `OTEL_SERVICE_NAME` (else `unknown_service`), plus
//! `OTEL_RESOURCE_ATTRIBUTES` and [`resource_attribute`](OtlpExporterBuilder::resource_attribute).
//! Scope: `kasal-telemetry` with the crate's version. Operation summaries (calls with an
//! `OperationId`) are not metrics and are not sent.
//!
//! ## Configuration, as every OpenTelemetry SDK reads it
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` | the full URL (used as is) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL; `/v1/metrics` is appended (default `http://localhost:4318`) |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `..._METRICS_HEADERS` | `key=value,key2=value2` (values percent-decoded) |
//! | `OTEL_EXPORTER_OTLP_COMPRESSION`, `..._METRICS_COMPRESSION` | `gzip` or `none` |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `..._METRICS_TIMEOUT` | per-attempt timeout in ms (default 10000) |
//!
//! Builder settings win over the environment.
//!
//! ## Delivery
//!
//! The request goes through the same stack as the Databricks exporter's: per-host circuit
//! breaker → retry (3 retries, 100 ms base doubling to 1 s, 100 ms jitter, `Retry-After`
//! honoured, never on 4xx other than 429) → `User-Agent: kasal_telemetry/<version>` →
//! per-attempt timeout → hyper-util + rustls (or your transport). A batch that still fails (5xx,
//! connection refused, breaker open, deadline) is **kept** in a bounded backlog (4 MiB by
//! default) and sent, in order and before newer batches, on the next export; past the bound the
//! oldest are dropped and counted. A 4xx other than 429 drops the batch (counted): resending
//! it would fail the same way. Each encoded request is sent until one attempt is answered
//! 2xx and never after, so a batch is not delivered twice (unless a 2xx is lost on the way
//! back, as with any at-least-once protocol).
//!
//! The pipeline counts a call that only parked its batch in the backlog as a failed export
//! ([`OtlpError::Deferred`]); [`OtlpExporter::stats`] tells what actually reached the Collector.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use kasal_trace::{Direction, redact_error};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
    metric::Data,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tower::ServiceExt;

use kasal_classify::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, Jitter, RetryPolicy,
};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::databricks::client::{self, HttpClient, Transport};
use crate::event::Batch;
use crate::metrics::{
    AttributeValue, DURATION_BOUNDARIES_S, GEN_AI_CLIENT_TOKEN_USAGE, HTTP_CLIENT_REQUEST_DURATION,
    HTTP_SERVER_REQUEST_DURATION, TOKEN_BOUNDARIES, attribute_values, token_attribute_values,
    token_histograms,
};

/// Default backlog bound: encoded requests kept for a later attempt.
const DEFAULT_BACKLOG_BYTES: usize = 4 * 1024 * 1024;

/// Longest answer body read (an `ExportMetricsServiceResponse` is tiny).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why [`OtlpExporterBuilder::build`] refused the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpConfigError {
    /// The endpoint is not an absolute `http` or `https` URL.
    #[error("invalid OTLP endpoint: {0}")]
    Endpoint(String),
    /// A header name or value is not valid HTTP.
    #[error("invalid OTLP header: {0}")]
    Header(String),
    /// The default TLS client could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Why one export did not deliver its batch now. Seen only by the pipeline, which counts it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// The Collector did not take it yet (5xx or 429 after retries, transport error, breaker
    /// open, deadline): it waits in the backlog for the next export.
    #[error("OTLP export deferred: {0}")]
    Deferred(String),
    /// A 4xx other than 429: the batch was dropped.
    #[error("OTLP endpoint rejected the batch ({0})")]
    Rejected(StatusCode),
    /// The backlog was over its bound: the batch (or older ones) were dropped.
    #[error("OTLP backlog full; {0} requests dropped")]
    BacklogFull(u64),
}

/// Counters of an [`OtlpExporter`] (shared by its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtlpStats {
    /// Requests the Collector answered 2xx.
    pub requests_sent: u64,
    /// Histogram data points (rollups, and usage rollups per token type) in those requests.
    pub points_sent: u64,
    /// Calls (histogram counts) in those requests.
    pub calls_sent: u64,
    /// Data points the Collector reported as rejected in a partial success.
    pub points_rejected_by_collector: u64,
    /// Export attempts that left a request in the backlog.
    pub deferred: u64,
    /// Requests dropped on a 4xx other than 429.
    pub requests_rejected: u64,
    /// Requests dropped because the backlog was over its bound.
    pub requests_dropped: u64,
    /// Requests waiting in the backlog now.
    pub backlog_requests: u64,
}

/// Exports the pipeline's rollups to an OpenTelemetry Collector over OTLP/HTTP (protobuf).
/// Cheap to clone; clones share the client, the breaker, the backlog and the counters. See the
/// [module docs](self).
#[derive(Clone)]
pub struct OtlpExporter {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Uri,
    headers: HeaderMap,
    gzip: bool,
    deadline: Duration,
    resource: Resource,
    client: HttpClient,
    backlog: Mutex<Backlog>,
    max_backlog_bytes: usize,
    counters: Counters,
}

#[derive(Default)]
struct Backlog {
    queue: VecDeque<Pending>,
    bytes: usize,
    next_seq: u64,
}

/// One encoded request waiting to be delivered.
struct Pending {
    seq: u64,
    body: Bytes,
    points: u64,
    calls: u64,
}

#[derive(Default)]
struct Counters {
    requests_sent: AtomicU64,
    points_sent: AtomicU64,
    calls_sent: AtomicU64,
    points_rejected_by_collector: AtomicU64,
    deferred: AtomicU64,
    requests_rejected: AtomicU64,
    requests_dropped: AtomicU64,
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("endpoint", &self.inner.endpoint)
            .field("gzip", &self.inner.gzip)
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// Starts a builder; unset settings come from the `OTEL_EXPORTER_OTLP_*` variables.
    pub fn builder() -> OtlpExporterBuilder {
        OtlpExporterBuilder::default()
    }

    /// The metrics endpoint requests go to.
    pub fn endpoint(&self) -> &Uri {
        &self.inner.endpoint
    }

    /// Counters so far.
    pub fn stats(&self) -> OtlpStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Relaxed);
        OtlpStats {
            requests_sent: get(&c.requests_sent),
            points_sent: get(&c.points_sent),
            calls_sent: get(&c.calls_sent),
            points_rejected_by_collector: get(&c.points_rejected_by_collector),
            deferred: get(&c.deferred),
            requests_rejected: get(&c.requests_rejected),
            requests_dropped: get(&c.requests_dropped),
            backlog_requests: self.inner.lock().queue.len() as u64,
        }
    }

    /// Tries to deliver what waits in the backlog now (the next export does it anyway).
    /// Returns how many requests are still waiting.
    pub async fn retry_backlog(&self) -> usize {
        let inner = self.inner.clone();
        let last = inner.lock().next_seq;
        let _ = inner.deliver_up_to(last).await;
        inner.lock().queue.len()
    }

    /// Encodes a batch's rollups and usage rollups as one OTLP metrics request (what this
    /// exporter posts). `None` when the batch has neither.
    pub fn encode(&self, batch: &Batch) -> Option<ExportMetricsServiceRequest> {
        encode(batch, &self.inner.resource).map(|(request, _)| request)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one encoded request; returns its sequence number and how many older requests
    /// were dropped to keep the bound.
    fn enqueue(&self, body: Bytes, points: u64, calls: u64) -> (u64, u64) {
        let mut backlog = self.lock();
        let seq = backlog.next_seq;
        backlog.next_seq += 1;
        backlog.bytes += body.len();
        backlog.queue.push_back(Pending {
            seq,
            body,
            points,
            calls,
        });
        let mut dropped = 0;
        // The newest request always stays, whatever its size.
        while backlog.bytes > self.max_backlog_bytes && backlog.queue.len() > 1 {
            let Some(oldest) = backlog.queue.pop_front() else {
                break;
            };
            backlog.bytes -= oldest.body.len();
            dropped += 1;
        }
        drop(backlog);
        self.counters.requests_dropped.fetch_add(dropped, Relaxed);
        (seq, dropped)
    }

    /// Takes the oldest waiting request with a sequence number up to `last`.
    fn take_next(&self, last: u64) -> Option<Pending> {
        let mut backlog = self.lock();
        if backlog.queue.front()?.seq > last {
            return None;
        }
        let pending = backlog.queue.pop_front()?;
        backlog.bytes -= pending.body.len();
        Some(pending)
    }

    /// Puts a request back at the front (it was not delivered).
    fn put_back(&self, pending: Pending) {
        let mut backlog = self.lock();
        backlog.bytes += pending.body.len();
        backlog.queue.push_front(pending);
    }

    /// Sends waiting requests in order, oldest first, up to sequence `last`; stops at the first
    /// that the Collector did not take. Returns the outcome of each finished request by
    /// sequence, and the error that stopped it (if any).
    async fn deliver_up_to(self: &Arc<Self>, last: u64) -> Result<Vec<(u64, Delivery)>, OtlpError> {
        let mut done = Vec::new();
        while let Some(pending) = self.take_next(last) {
            // Back in the queue if this future is dropped (pipeline deadline) mid-send.
            let mut guard = InFlight {
                inner: self,
                pending: Some(pending),
            };
            let body = guard
                .pending
                .as_ref()
                .map(|p| p.body.clone())
                .unwrap_or_default();
            match self.send(body).await {
                Ok(delivery) => {
                    if let Some(pending) = guard.pending.take() {
                        if let Delivery::Accepted { rejected_points } = delivery {
                            let c = &self.counters;
                            c.requests_sent.fetch_add(1, Relaxed);
                            c.points_sent.fetch_add(pending.points, Relaxed);
                            c.calls_sent.fetch_add(pending.calls, Relaxed);
                            c.points_rejected_by_collector
                                .fetch_add(rejected_points, Relaxed);
                        } else {
                            self.counters.requests_rejected.fetch_add(1, Relaxed);
                        }
                        done.push((pending.seq, delivery));
                    }
                }
                Err(error) => {
                    // The guard puts it back, at the front.
                    drop(guard);
                    self.counters.deferred.fetch_add(1, Relaxed);
                    return Err(error);
                }
            }
        }
        Ok(done)
    }

    /// One request through the export stack.
    async fn send(&self, body: Bytes) -> Result<Delivery, OtlpError> {
        let request = self.request(body)?;
        let outcome =
            tokio::time::timeout(self.deadline, self.client.clone().oneshot(request)).await;
        match outcome {
            Ok(Ok(response)) => {
                let status = response.status();
                if status.is_success() {
                    let rejected_points =
                        ExportMetricsServiceResponse::decode(response.into_body())
                            .ok()
                            .and_then(|answer| answer.partial_success)
                            .map_or(0, |partial| {
                                u64::try_from(partial.rejected_data_points).unwrap_or(0)
                            });
                    tracing::debug!(%status, "OTLP metrics exported");
                    Ok(Delivery::Accepted { rejected_points })
                } else if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                    tracing::debug!(%status, "OTLP metrics rejected; request dropped");
                    Ok(Delivery::Rejected(status))
                } else {
                    tracing::debug!(%status, "OTLP export failed after retries; kept for later");
                    Err(OtlpError::Deferred(format!("status {status}")))
                }
            }
            Ok(Err(error)) => {
                let message = redact_error(&*error);
                tracing::debug!(error = %message, "OTLP export failed; kept for later");
                Err(OtlpError::Deferred(message))
            }
            Err(_elapsed) => {
                tracing::debug!(deadline = ?self.deadline, "OTLP export timed out; kept for later");
                Err(OtlpError::Deferred("deadline".to_owned()))
            }
        }
    }

    fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, OtlpError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .body(Full::new(body))
            .map_err(|error| OtlpError::Deferred(error.to_string()))?;
        let headers = request.headers_mut();
        headers.extend(self.headers.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        if self.gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Ok(request)
    }

    async fn export(self: Arc<Self>, batch: Batch) -> Result<(), OtlpError> {
        let Some((request, points)) = encode(&batch, &self.resource) else {
            return Ok(());
        };
        let calls = batch.rollups.iter().map(|rollup| rollup.count).sum();
        let mut body = request.encode_to_vec();
        if self.gzip {
            body = gzip(&body);
        }
        let (seq, dropped) = self.enqueue(Bytes::from(body), points, calls);
        let delivered = self.deliver_up_to(seq).await?;
        match delivered.iter().find(|(done, _)| *done == seq) {
            Some((_, Delivery::Accepted { .. })) => Ok(()),
            Some((_, Delivery::Rejected(status))) => Err(OtlpError::Rejected(*status)),
            // Dropped from the backlog by the bound before it could be sent.
            None => Err(OtlpError::BacklogFull(dropped)),
        }
    }
}

/// How the Collector answered one request.
#[derive(Clone, Copy, Debug)]
enum Delivery {
    Accepted { rejected_points: u64 },
    Rejected(StatusCode),
}

/// A request being sent: put back at the front of the backlog unless delivered.
struct InFlight<'a> {
    inner: &'a Inner,
    pending: Option<Pending>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.inner.put_back(pending);
        }
    }
}

/// The future of [`OtlpExporter::call`](tower::Service::call).
pub struct OtlpFuture {
    inner: Pin<Box<dyn Future<Output = Result<(), OtlpError>> + Send>>,
}

impl fmt::Debug for OtlpFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpFuture").finish_non_exhaustive()
    }
}

impl Future for OtlpFuture {
    type Output = Result<(), OtlpError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl tower_service::Service<Batch> for OtlpExporter {
    type Response = ();
    type Error = OtlpError;
    type Future = OtlpFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), OtlpError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> OtlpFuture {
        OtlpFuture {
            inner: Box::pin(self.inner.clone().export(batch)),
        }
    }
}

/// Builds an [`OtlpExporter`]. Unset settings come from the environment (see the
/// [module docs](self)) unless [`ignore_env`](Self::ignore_env) was called.
#[derive(Default)]
pub struct OtlpExporterBuilder {
    endpoint: Option<String>,
    headers: Vec<(String, String)>,
    gzip: Option<bool>,
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    retry: Option<RetryPolicy>,
    breaker: Option<CircuitBreakerConfig>,
    max_backlog_bytes: Option<usize>,
    resource: Vec<(String, String)>,
    client: Option<HttpClient>,
    ignore_env: bool,
}

impl fmt::Debug for OtlpExporterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporterBuilder")
            .field("endpoint", &self.endpoint)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl OtlpExporterBuilder {
    /// The full metrics URL (`http://collector:4318/v1/metrics`), used as is.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Adds a header to every request (authentication for a Collector or a vendor endpoint).
    /// Values are marked sensitive: they never appear in logs.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Gzip the request bodies (`Content-Encoding: gzip`). Default: off, or
    /// `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`.
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = Some(gzip);
        self
    }

    /// Per-attempt timeout (default 10 s, or `OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Deadline for one request with all its retries (default 20 s; keep it under the
    /// pipeline's `export_timeout`).
    pub fn export_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Retry policy of each request (default: the Databricks exporter's: 3 retries, 100 ms base
    /// doubling to a 1 s cap, up to 100 ms of jitter, Retry-After honoured, never on 4xx).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Circuit breaker around every request with its retries (default
    /// `CircuitBreakerConfig::new()`: opens after 5 consecutive failed exports, 60 s open,
    /// closes after 2 successful probes).
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// Bound of the backlog of undelivered requests, in encoded bytes (default 4 MiB).
    pub fn max_backlog_bytes(mut self, bytes: usize) -> Self {
        self.max_backlog_bytes = Some(bytes);
        self
    }

    /// Adds a resource attribute (`service.name`, `service.instance.id`, ...).
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.resource.push((key.into(), value.into()));
        self
    }

    /// The HTTP transport (default: hyper-util with rustls). Any tower service taking
    /// `http::Request<Full<Bytes>>`; it gets the exporter's retry, breaker and timeout around it.
    pub fn client(mut self, service: impl Transport) -> Self {
        self.client = Some(client::boxed(service));
        self
    }

    /// Do not read `OTEL_*` variables (tests, or a configuration that must not change).
    pub fn ignore_env(mut self) -> Self {
        self.ignore_env = true;
        self
    }

    /// Builds the exporter.
    pub fn build(self) -> Result<OtlpExporter, OtlpConfigError> {
        self.build_with(|name| std::env::var(name).ok())
    }

    fn build_with(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<OtlpExporter, OtlpConfigError> {
        let env = |name: &str| if self.ignore_env { None } else { env(name) };
        let endpoint = self
            .endpoint
            .clone()
            .unwrap_or_else(|| endpoint_from_env(&env));
        let endpoint: Uri = endpoint
            .parse()
            .map_err(|_| OtlpConfigError::Endpoint(endpoint.clone()))?;
        if !matches!(endpoint.scheme_str(), Some("http" | "https")) || endpoint.host().is_none() {
            return Err(OtlpConfigError::Endpoint(endpoint.to_string()));
        }

        let mut headers = HeaderMap::new();
        let from_env = signal_env(&env, "HEADERS")
            .map(|list| parse_headers(&list))
            .unwrap_or_default();
        for (name, value) in from_env.into_iter().chain(self.headers.iter().cloned()) {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| OtlpConfigError::Header(name.clone()))?;
            let mut value = HeaderValue::try_from(value.as_str())
                .map_err(|_| OtlpConfigError::Header(name.to_string()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }

        let gzip = self.gzip.unwrap_or_else(|| {
            signal_env(&env, "COMPRESSION").is_some_and(|value| value.trim() == "gzip")
        });
        let timeout = self.timeout.unwrap_or_else(|| {
            signal_env(&env, "TIMEOUT")
                .and_then(|ms| ms.trim().parse().ok())
                .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
        });
        let transport = match self.client {
            Some(client) => client,
            None => client::https_transport().map_err(|e| OtlpConfigError::Tls(e.to_string()))?,
        };
        let retry = self.retry.unwrap_or_else(|| {
            RetryPolicy::new()
                .base_delay(Duration::from_millis(100))
                .max_delay(Duration::from_secs(1))
                .jitter(Jitter::Up(Duration::from_millis(100)))
        });
        let breaker = CircuitBreaker::new(self.breaker.unwrap_or_default());
        // Breaker outermost: one failed request (with all its retries) counts once.
        let client = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(CircuitBreakerLayer::new(breaker))
                .service(client::export_stack(transport, timeout, retry)),
        );

        let mut resource = vec![(
            "service.name".to_owned(),
            env("OTEL_SERVICE_NAME").unwrap_or_else(|| "unknown_service".to_owned()),
        )];
        if let Some(list) = env("OTEL_RESOURCE_ATTRIBUTES") {
            resource.extend(parse_headers(&list));
        }
        resource.extend(self.resource);
        // Later entries win, as in the SDKs.
        let mut attributes: Vec<KeyValue> = Vec::new();
        for (key, value) in resource {
            attributes.retain(|kv| kv.key != key);
            attributes.push(string_kv(key, value));
        }

        Ok(OtlpExporter {
            inner: Arc::new(Inner {
                endpoint,
                headers,
                gzip,
                deadline: self.deadline.unwrap_or(Duration::from_secs(20)),
                resource: Resource {
                    attributes,
                    ..Default::default()
                },
                client,
                backlog: Mutex::new(Backlog::default()),
                max_backlog_bytes: self.max_backlog_bytes.unwrap_or(DEFAULT_BACKLOG_BYTES),
                counters: Counters::default(),
            }),
        })
    }
}

/// `OTEL_EXPORTER_OTLP_METRICS_<what>`, else `OTEL_EXPORTER_OTLP_<what>`.
fn signal_env(env: &impl Fn(&str) -> Option<String>, what: &str) -> Option<String> {
    env(&format!("OTEL_EXPORTER_OTLP_METRICS_{what}"))
        .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{what}")))
        .filter(|value| !value.trim().is_empty())
}

/// The metrics URL from the environment, as the OpenTelemetry SDKs build it.
fn endpoint_from_env(env: &impl Fn(&str) -> Option<String>) -> String {
    if let Some(url) = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").filter(|u| !u.trim().is_empty()) {
        return url.trim().to_owned();
    }
    let base = env("OTEL_EXPORTER_OTLP_ENDPOINT")
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "http://localhost:4318".to_owned());
    format!("{}/v1/metrics", base.trim().trim_end_matches('/'))
}

/// `k=v,k2=v2` with percent-decoded values (the W3C baggage-like format the SDKs read).
fn parse_headers(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_owned(), percent_decode(value.trim())))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn string_kv(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

fn key_values(values: Vec<(&'static str, AttributeValue)>) -> Vec<KeyValue> {
    values
        .into_iter()
        .map(|(name, value)| KeyValue {
            key: name.to_owned(),
            value: Some(AnyValue {
                value: Some(match value {
                    AttributeValue::Str(text) => Value::StringValue(text),
                    AttributeValue::Int(number) => Value::IntValue(number),
                }),
            }),
            ..Default::default()
        })
        .collect()
}

/// One data point per rollup, in one histogram per direction, and one per usage rollup and
/// token type in `gen_ai.client.token.usage`; with the number of points. `None` when there is
/// no point.
fn encode(batch: &Batch, resource: &Resource) -> Option<(ExportMetricsServiceRequest, u64)> {
    let mut client = Vec::new();
    let mut server = Vec::new();
    for rollup in batch.rollups.iter().filter(|rollup| rollup.count > 0) {
        let point = HistogramDataPoint {
            attributes: key_values(attribute_values(&rollup.key)),
            start_time_unix_nano: unix_nanos(rollup.window_start),
            time_unix_nano: unix_nanos(rollup.window_end),
            count: rollup.count,
            sum: Some(rollup.latency_sum.as_secs_f64()),
            bucket_counts: rollup.histogram.to_vec(),
            explicit_bounds: DURATION_BOUNDARIES_S.to_vec(),
            min: Some(rollup.latency_min.as_secs_f64()),
            max: Some(rollup.latency_max.as_secs_f64()),
            ..Default::default()
        };
        match rollup.key.direction {
            Direction::Client => client.push(point),
            Direction::Server => server.push(point),
        }
    }
    let mut tokens = Vec::new();
    for usage in &batch.usage {
        for (token_type, histogram) in
            token_histograms(&usage.input_histogram, &usage.output_histogram)
        {
            tokens.push(HistogramDataPoint {
                attributes: key_values(token_attribute_values(
                    &usage.product,
                    &usage.model,
                    token_type,
                )),
                start_time_unix_nano: unix_nanos(usage.window_start),
                time_unix_nano: unix_nanos(usage.window_end),
                count: histogram.count(),
                sum: Some(histogram.sum as f64),
                bucket_counts: histogram.buckets.to_vec(),
                explicit_bounds: TOKEN_BOUNDARIES.to_vec(),
                min: Some(histogram.min as f64),
                max: Some(histogram.max as f64),
                ..Default::default()
            });
        }
    }
    let points = (client.len() + server.len() + tokens.len()) as u64;
    if points == 0 {
        return None;
    }
    let histogram = |name: &str, description: &str, unit: &str, data_points| Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        data: Some(Data::Histogram(Histogram {
            data_points,
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    };
    let mut metrics = Vec::with_capacity(3);
    if !client.is_empty() {
        metrics.push(histogram(
            HTTP_CLIENT_REQUEST_DURATION,
            "Duration of HTTP client requests.",
            "s",
            client,
        ));
    }
    if !server.is_empty() {
        metrics.push(histogram(
            HTTP_SERVER_REQUEST_DURATION,
            "Duration of HTTP server requests.",
            "s",
            server,
        ));
    }
    if !tokens.is_empty() {
        metrics.push(histogram(
            GEN_AI_CLIENT_TOKEN_USAGE,
            "Number of input and output tokens used.",
            "{token}",
            tokens,
        ));
    }
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "kasal-telemetry".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Some((request, points))
}

fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn endpoint_from_the_environment_like_the_sdks() {
        assert_eq!(
            endpoint_from_env(&env_of(&[])),
            "http://localhost:4318/v1/metrics"
        );
        assert_eq!(
            endpoint_from_env(&env_of(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://c:4318/"
            )])),
            "http://c:4318/v1/metrics"
        );
        assert_eq!(
            endpoint_from_env(&env_of(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "https://m.example/custom"
                ),
            ])),
            "https://m.example/custom"
        );
    }

    #[test]
    fn headers_compression_and_timeout_from_the_environment() {
        let exporter = OtlpExporter::builder()
            .build_with(env_of(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "api-key=a%20b, x-tenant=t1,broken",
                ),
                ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip"),
                ("OTEL_SERVICE_NAME", "orders"),
                ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
            ]))
            .unwrap();
        let inner = &exporter.inner;
        assert_eq!(inner.endpoint, "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(inner.headers["api-key"], "a b");
        assert_eq!(inner.headers["x-tenant"], "t1");
        assert!(inner.headers["api-key"].is_sensitive());
        assert!(inner.gzip);
        let keys: Vec<_> = inner
            .resource
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(keys, ["service.name", "deployment.environment"]);

        // Builder settings win; ignore_env reads nothing.
        let exporter = OtlpExporter::builder()
            .endpoint("http://127.0.0.1:9/v1/metrics")
            .gzip(false)
            .ignore_env()
            .build_with(env_of(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]))
            .unwrap();
        assert!(!exporter.inner.gzip);
        assert!(exporter.inner.headers.is_empty());
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        for endpoint in ["not a url", "ftp://c/v1/metrics", "/v1/metrics"] {
            let error = OtlpExporter::builder()
                .endpoint(endpoint)
                .ignore_env()
                .build()
                .unwrap_err();
            assert!(matches!(error, OtlpConfigError::Endpoint(_)), "{endpoint}");
        }
        let error = OtlpExporter::builder()
            .endpoint("http://127.0.0.1:4318/v1/metrics")
            .header("bad header", "x")
            .ignore_env()
            .build()
            .unwrap_err();
        assert!(matches!(error, OtlpConfigError::Header(_)));
    }
}
