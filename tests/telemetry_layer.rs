//! `TelemetryLayer` end to end: a hyper-util client wrapped in the whole stack, calling real
//! hyper servers on 127.0.0.1, with spans captured per test and the pipeline exporting into an
//! `InMemoryExporter`. Synchronisation is by `flush`, `shutdown`, `wait_for_batches` and the
//! server's request log; the only waits are the short, configured retry backoffs.
mod common;
#[path = "common/spans.rs"]
mod spans;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Reply, ReplyBody, TestServer};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use kasal_telemetry::classify::{
    CircuitBreaker, CircuitBreakerConfig, CircuitOpen, Jitter, RetryPolicy,
};
use kasal_telemetry::trace::{ExecutionContext, OperationId, Route, SecretToken};
use kasal_telemetry::user_agent::{Product, UserAgent};
use kasal_telemetry::{
    BoxError, InMemoryExporter, ServiceBuilderExt, Telemetry, TelemetryBody, TelemetryBuilder,
    TelemetryLayer,
};
use spans::{Captured, SpanCapture, SpanData};
use tokio::time::{Instant, timeout};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tracing::instrument::WithSubscriber;

type Body = Full<Bytes>;

fn capture() -> (tracing::dispatcher::DefaultGuard, Captured) {
    let (dispatch, captured) = SpanCapture::dispatch();
    (tracing::dispatcher::set_default(&dispatch), captured)
}

/// A pipeline whose interval never fires during a test: exports happen on `flush`, `shutdown`,
/// a full batch or a terminal error only.
fn pipeline_builder(exporter: &InMemoryExporter) -> TelemetryBuilder {
    Telemetry::builder()
        .exporter(exporter.clone())
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
}

fn pipeline() -> (Telemetry, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    (pipeline_builder(&exporter).build(), exporter)
}

type HyperClient =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// A hyper-util client behind `layer` (a `TelemetryLayer`, with or without retry).
fn client<L>(layer: L) -> L::Service
where
    L: Layer<HyperClient>,
    L::Service: Service<Request<Body>, Response = Response<TelemetryBody<Incoming>>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send,
{
    layer.layer(common::client::<Body>())
}

fn get(url: &str) -> Request<Body> {
    Request::get(url).body(Full::default()).unwrap()
}

/// Calls once and reads the body to its end.
async fn send<S, B>(client: &S, request: Request<Body>) -> Result<(StatusCode, Bytes), BoxError>
where
    S: Service<Request<Body>, Response = Response<B>, Error = BoxError> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let response = client.clone().oneshot(request).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(Into::into)?
        .to_bytes();
    Ok((status, body))
}

fn call_span(captured: &Captured) -> SpanData {
    captured.only_span("HTTP")
}

#[track_caller]
fn assert_fields(span: &SpanData, expected: &[(&str, &str)]) {
    for (field, value) in expected {
        assert_eq!(
            span.field(field).as_deref(),
            Some(*value),
            "{field} in {span:#?}"
        );
    }
}

#[track_caller]
fn assert_unset(span: &SpanData, fields: &[&str]) {
    for field in fields {
        assert_eq!(span.field(field), None, "{field} in {span:#?}");
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy::new()
        .base_delay(Duration::from_millis(5))
        .jitter(Jitter::None)
}

/// A 127.0.0.1 port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn success_200_has_every_field_one_user_agent_and_a_rollup() {
    let (_guard, captured) = capture();
    let server = TestServer::start(|_, _| Reply::text(200, "hello")).await;
    let (telemetry, exporter) = pipeline();
    let client = client(TelemetryLayer::new(Product::Genie, telemetry.clone()));

    let mut request = get(&server.url("/api/2.0/genie/spaces/s1?page=2"));
    request
        .headers_mut()
        .insert("user-agent", "their-ua/1.2".parse().unwrap());
    request
        .extensions_mut()
        .insert(Route::new("/api/2.0/genie/spaces/{id}"));
    let (status, body) = send(&client, request).await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));

    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let user_agents = seen[0].header_all("user-agent");
    assert_eq!(user_agents, ["kasal_genie/0.1.0 their-ua/1.2"]);

    let span = call_span(&captured);
    let port = server.addr.port().to_string();
    let url = format!("http://127.0.0.1:{port}/api/2.0/genie/spaces/s1?page=REDACTED");
    assert_fields(
        &span,
        &[
            ("otel.kind", "client"),
            ("otel.name", "GET /api/2.0/genie/spaces/{id}"),
            ("http.request.method", "GET"),
            ("url.template", "/api/2.0/genie/spaces/{id}"),
            ("url.full", &url),
            ("server.address", "127.0.0.1"),
            ("server.port", &port),
            ("http.response.status_code", "200"),
            ("network.protocol.version", "1.1"),
            ("kasal.product", "genie"),
            ("kasal.outcome", "success"),
            ("execution.context", "service"),
            ("execution.obo_dev_fallback", "false"),
        ],
    );
    assert_unset(
        &span,
        &[
            "error.type",
            "otel.status_code",
            "caller.id",
            "kasal.operation_id",
            "http.route",
            "http.request.resend_count",
            "http.response.body.size",
        ],
    );
    assert!(span.closed);
    assert_eq!(span.target, "kasal_trace");

    telemetry.flush().await;
    let rollups = exporter.rollups();
    assert_eq!(rollups.len(), 1, "{rollups:#?}");
    let key = &rollups[0].key;
    assert_eq!(rollups[0].count, 1);
    assert_eq!(key.product, Product::Genie);
    assert_eq!(key.method, http::Method::GET);
    assert_eq!(
        key.host.as_ref().map(|h| h.as_str()),
        Some(&*server.authority())
    );
    assert_eq!(key.route.as_deref(), Some("/api/2.0/genie/spaces/{id}"));
    assert_eq!((key.status_class, key.outcome), (2, "success"));
}

#[tokio::test]
async fn custom_user_agent_and_service_builder_ext() {
    let (_guard, captured) = capture();
    let server = TestServer::always(204).await;
    let (telemetry, exporter) = pipeline();
    let user_agent = UserAgent::new(Product::Mcp)
        .with_version("1.2.3")
        .unwrap()
        .with_extra("client", "claude")
        .unwrap();
    let layer = TelemetryLayer::new(Product::Mcp, telemetry.clone()).user_agent(user_agent);
    let client = ServiceBuilder::new()
        .kasal_telemetry_layer(layer)
        .service(common::client::<Body>());
    send(&client, get(&server.url("/mcp"))).await.unwrap();
    let default = ServiceBuilder::new()
        .kasal_telemetry(Product::VectorSearch, telemetry.clone())
        .service(common::client::<Body>());
    send(&default, get(&server.url("/vs"))).await.unwrap();

    let seen = server.requests();
    assert_eq!(
        seen[0].header_all("user-agent"),
        ["kasal_mcp/1.2.3 client/claude"]
    );
    assert_eq!(
        seen[1].header_all("user-agent"),
        ["kasal_vectorsearch/0.1.0"]
    );
    let products: Vec<_> = captured
        .spans_named("HTTP")
        .iter()
        .map(|s| s.field("kasal.product").unwrap())
        .collect();
    assert_eq!(products, ["mcp", "vectorsearch"]);
    telemetry.flush().await;
    assert_eq!(exporter.total_calls(), 2);
}

/// Without `.retry()` the request body need not implement `TryCloneBody`: `Limited` does not.
#[tokio::test]
async fn without_retry_any_request_body_is_accepted() {
    type Unclonable = http_body_util::Limited<Body>;
    let server = TestServer::always(200).await;
    let (telemetry, exporter) = pipeline();
    let client =
        TelemetryLayer::new(Product::Jobs, telemetry.clone()).layer(common::client::<Unclonable>());
    let request = Request::post(server.url("/upload"))
        .body(http_body_util::Limited::new(
            Full::new(Bytes::from("abc")),
            1024,
        ))
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    telemetry.flush().await;
    assert_eq!(exporter.total_calls(), 1);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn retry_429_then_200_is_one_span_with_resend_count_1() {
    let (_guard, captured) = capture();
    let server = TestServer::start(|_, n| match n {
        0 => Reply::status(429).header("retry-after", "0"),
        _ => Reply::text(200, "ok"),
    })
    .await;
    let (telemetry, exporter) = pipeline();
    let layer = TelemetryLayer::new(Product::Jobs, telemetry.clone()).retry(fast_retry());
    let client = client(layer.clone());

    let mut request = get(&server.url("/api/2.1/jobs/run-now"));
    request
        .extensions_mut()
        .insert(OperationId::new("op-retry"));
    let (status, _) = send(&client, request).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    let seen = server.requests();
    assert_eq!(seen.len(), 2, "the server saw both attempts");
    for request in &seen {
        assert_eq!(request.header_all("user-agent"), ["kasal_jobs/0.1.0"]);
    }
    let span = call_span(&captured); // one span for both attempts
    assert_fields(
        &span,
        &[
            ("http.response.status_code", "200"),
            ("http.request.resend_count", "1"),
            ("kasal.outcome", "success"),
            ("kasal.operation_id", "op-retry"),
        ],
    );
    assert_unset(&span, &["error.type", "otel.status_code"]);

    // One child span per attempt, in order, each closed at its response head.
    let attempts = captured.spans_named("HTTP attempt");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert!(
        attempts
            .iter()
            .all(|a| a.parent == Some(span.index) && a.closed)
    );
    assert_fields(
        &attempts[0],
        &[
            ("kasal.attempt", "1"),
            ("http.response.status_code", "429"),
            ("error.type", "429"),
            ("otel.status_code", "ERROR"),
        ],
    );
    assert_unset(
        &attempts[0],
        &["http.request.resend_count", "kasal.retry_delay_ms"],
    );
    assert_fields(
        &attempts[1],
        &[
            ("kasal.attempt", "2"),
            ("http.request.resend_count", "1"),
            ("kasal.retry_delay_ms", "5"), // fast_retry: 5 ms base, no jitter
            ("http.response.status_code", "200"),
        ],
    );
    assert_unset(&attempts[1], &["error.type", "otel.status_code"]);

    telemetry.complete_operation(&OperationId::new("op-retry"));
    telemetry.flush().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1);
    let op = &operations[0];
    assert_eq!((op.calls, op.retries), (1, 1), "{op:#?}");
    assert_eq!(op.outcomes.success, 1);
    assert!(op.complete);
}

#[tokio::test]
async fn retried_connection_refused_reports_every_attempt() {
    let (_guard, captured) = capture();
    let addr = closed_port().await;
    let (telemetry, exporter) = pipeline();
    let layer = TelemetryLayer::new(Product::Lakebase, telemetry.clone()).retry(fast_retry());
    let mut request = get(&format!("http://{addr}/db"));
    request
        .extensions_mut()
        .insert(OperationId::new("op-refused"));

    let error = send(&client(layer), request).await.unwrap_err();
    assert!(
        error
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|e| e.is_connect()),
        "{error:?}"
    );

    // 1 + 3 attempts, all refused: no response carries them, the span still reports them.
    let span = call_span(&captured);
    assert_fields(
        &span,
        &[
            ("error.type", "connect"),
            ("kasal.outcome", "retryable"),
            ("http.request.resend_count", "3"),
        ],
    );
    let attempts = captured.spans_named("HTTP attempt");
    assert_eq!(attempts.len(), 4, "{attempts:#?}");
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.parent, Some(span.index));
        assert_eq!(attempt.field("kasal.attempt"), Some((n + 1).to_string()));
        assert_eq!(attempt.field("error.type").as_deref(), Some("connect"));
        // Exponential backoff from 5 ms: 5, 10, 20.
        let delay = (n > 0).then(|| (5u64 << (n - 1)).to_string());
        assert_eq!(attempt.field("kasal.retry_delay_ms"), delay, "{attempt:#?}");
    }
    telemetry.complete_operation(&OperationId::new("op-refused"));
    telemetry.flush().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1);
    assert_eq!(
        (operations[0].calls, operations[0].retries),
        (1, 3),
        "{operations:#?}"
    );
}

#[tokio::test]
async fn forbidden_403_is_terminal_and_not_retried() {
    let (_guard, captured) = capture();
    let server = TestServer::always(403).await;
    let (telemetry, exporter) = pipeline();
    let layer = TelemetryLayer::new(Product::Secret, telemetry.clone()).retry(fast_retry());
    let (status, _) = send(
        &client(layer.clone()),
        get(&server.url("/api/2.0/secrets/get")),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(server.hits(), 1, "terminal: no retry");

    let span = call_span(&captured);
    assert_fields(
        &span,
        &[
            ("http.response.status_code", "403"),
            ("error.type", "403"),
            ("otel.status_code", "ERROR"),
            ("kasal.outcome", "terminal"),
            ("kasal.product", "secret"),
        ],
    );
    assert!(span.closed);

    telemetry.flush().await;
    let rollups = exporter.rollups();
    assert_eq!(rollups.len(), 1);
    assert_eq!(
        (rollups[0].key.status_class, rollups[0].key.outcome),
        (4, "terminal")
    );
}

#[tokio::test]
async fn connection_refused_is_retryable_connect_error() {
    let (_guard, captured) = capture();
    let addr = closed_port().await;
    let (telemetry, exporter) = pipeline();
    let client = client(TelemetryLayer::new(Product::Lakebase, telemetry.clone()));

    let error = send(&client, get(&format!("http://{addr}/db")))
        .await
        .unwrap_err();
    let client_error = error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .expect("the client's own error, boxed unchanged");
    assert!(client_error.is_connect());

    let span = call_span(&captured);
    let port = addr.port().to_string();
    assert_fields(
        &span,
        &[
            ("otel.kind", "client"),
            ("http.request.method", "GET"),
            ("server.address", "127.0.0.1"),
            ("server.port", &port),
            ("error.type", "connect"),
            ("otel.status_code", "ERROR"),
            ("kasal.outcome", "retryable"),
            ("kasal.product", "lakebase"),
            ("execution.context", "service"),
        ],
    );
    assert_unset(
        &span,
        &[
            "http.response.status_code",
            "http.response.body.size",
            "http.request.resend_count",
        ],
    );
    assert!(span.closed, "an error ends the call at once");

    telemetry.flush().await;
    let rollups = exporter.rollups();
    assert_eq!(rollups.len(), 1);
    assert_eq!(
        (rollups[0].key.status_class, rollups[0].key.outcome),
        (0, "retryable")
    );
}

/// A client whose response bodies log from inside every poll that yields a frame: if the call
/// span were not entered while the body is polled, these events would belong to the caller's span.
fn logging_client(
    layer: TelemetryLayer,
) -> impl Service<
    Request<Body>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = hyper::Error> + Unpin>,
    Error = BoxError,
> + Clone {
    let inner = ServiceBuilder::new()
        .map_response(|response: Response<hyper::body::Incoming>| {
            response.map(|body| {
                body.map_frame(|frame| {
                    tracing::info!("frame produced");
                    frame
                })
            })
        })
        .service(common::client::<Body>());
    layer.layer(inner)
}

type ChunkSender = tokio::sync::mpsc::Sender<Bytes>;

async fn channel_server() -> (TestServer, ChunkSender) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let server =
        TestServer::start(move |_, _| Reply::status(200).body(ReplyBody::Channel(rx.clone())))
            .await;
    (server, tx)
}

#[tokio::test]
async fn streamed_body_keeps_the_span_open_and_its_polls_are_children() {
    let (_guard, captured) = capture();
    let (server, chunks) = channel_server().await;
    let (telemetry, exporter) = pipeline();
    let client = logging_client(TelemetryLayer::new(Product::Llm, telemetry.clone()));
    let consumer = tracing::info_span!("consumer");
    let _in_consumer = consumer.enter();

    let response = client
        .clone()
        .oneshot(get(&server.url("/serving-endpoints/x/invocations")))
        .await
        .unwrap();
    let mut body = response.into_body();

    chunks.send(Bytes::from_static(b"abc")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "abc");
    assert!(!call_span(&captured).closed, "open while the body is read");
    telemetry.flush().await;
    assert_eq!(telemetry.stats().accepted, 0, "not recorded before the end");

    tracing::info!("consumer between polls");
    chunks.send(Bytes::from_static(b"defg")).await.unwrap();
    drop(chunks);
    let mut rest = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            rest.extend_from_slice(&data);
        }
    }
    assert_eq!(rest, b"defg");

    let span = call_span(&captured);
    assert!(span.closed, "closed once the body ended");
    let produced = captured.events_with_message("frame produced");
    assert!(produced.len() >= 2, "{produced:#?}");
    assert!(
        produced.iter().all(|e| e.parent == Some(span.index)),
        "events while polling the body are the call span's children: {produced:#?}"
    );
    assert_eq!(span.parent, Some(captured.only_span("consumer").index));
    let between = captured.events_with_message("consumer between polls");
    assert_eq!(
        between[0].parent,
        Some(captured.only_span("consumer").index)
    );

    telemetry.flush().await;
    assert_eq!(exporter.total_calls(), 1);
}

#[tokio::test]
async fn dropping_the_body_early_closes_the_span_and_records_once() {
    let (_guard, captured) = capture();
    let (server, chunks) = channel_server().await;
    let (telemetry, exporter) = pipeline();
    let client = logging_client(TelemetryLayer::new(Product::Llm, telemetry.clone()));
    let response = client
        .clone()
        .oneshot(get(&server.url("/stream")))
        .await
        .unwrap();
    let mut body = response.into_body();
    chunks.send(Bytes::from_static(b"abc")).await.unwrap();
    body.frame().await.unwrap().unwrap();
    assert!(!call_span(&captured).closed);

    drop(body);
    let span = call_span(&captured);
    assert!(span.closed, "dropping the body closes the span");
    assert_fields(
        &span,
        &[
            ("kasal.body_cut_short", "true"),
            ("kasal.outcome", "success"),
        ],
    );
    drop(chunks);
    telemetry.flush().await;
    assert_eq!(exporter.total_calls(), 1, "recorded once");
    assert_eq!(telemetry.stats().accepted, 1);
}

const SECRETS: [&str; 3] = [
    "dapi0123456789abcdef-header",
    "dapi0123456789abcdef-query",
    "dapi0123456789abcdef-context",
];

#[tokio::test]
async fn user_context_reaches_the_span_and_no_token_text_leaves() {
    let (_guard, captured) = capture();
    let server = TestServer::start(|_, _| Reply::text(200, "{}")).await;
    let (telemetry, exporter) = pipeline();
    let client = client(TelemetryLayer::new(Product::Genie, telemetry.clone()));
    let context = ExecutionContext::user("alice@x")
        .with_user_token(SecretToken::new(SECRETS[2]))
        .with_operation_id(OperationId::new("op-alice"));

    let mut request = Request::get(server.url(&format!("/api?token={}&x=1", SECRETS[1])))
        .header("authorization", format!("Bearer {}", SECRETS[0]))
        .body(Full::default())
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-access-token", SECRETS[2].parse().unwrap());
    let response = context
        .scope(async {
            tracing::info!(context = ?ExecutionContext::current(), "calling");
            send(&client, request).await
        })
        .await;
    response.unwrap();
    // A failing call in the same context: its error message is recorded too.
    let refused = format!("http://{}/api?token={}", closed_port().await, SECRETS[1]);
    let context = ExecutionContext::user("alice@x")
        .with_user_token(SecretToken::new(SECRETS[2]))
        .with_operation_id(OperationId::new("op-alice"));
    context
        .scope(async { send(&client, get(&refused)).await })
        .await
        .unwrap_err();

    // The layer does not touch the app's own credentials on the wire.
    let seen = server.requests();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {}", SECRETS[0]))
    );

    let spans = captured.spans_named("HTTP");
    assert_eq!(spans.len(), 2);
    for span in &spans {
        assert_fields(
            span,
            &[
                ("execution.context", "user"),
                ("caller.id", "alice@x"),
                ("kasal.operation_id", "op-alice"),
            ],
        );
    }

    telemetry.complete_operation(&OperationId::new("op-alice"));
    telemetry.flush().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1);
    assert_eq!(operations[0].caller_id.as_deref(), Some("alice@x"));
    assert_eq!(operations[0].calls, 2);
    assert_eq!(operations[0].errors.len(), 1, "{operations:#?}");

    let exported = format!("{:?}", exporter.batches());
    let traced = captured.all_text().join("\n");
    assert!(traced.contains("alice@x") && exported.contains("alice@x"));
    for text in [&exported, &traced] {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
        assert!(!text.contains("dapi"), "token text leaked into {text}");
        assert!(!text.contains("Bearer"), "credential leaked into {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_contexts_never_mix() {
    const TASKS: usize = 1_000;
    let (dispatch, captured) = SpanCapture::dispatch();
    let server = TestServer::start(|_, _| Reply::text(200, "ok")).await;
    let exporter = InMemoryExporter::new();
    let telemetry = pipeline_builder(&exporter)
        .queue_capacity(4 * TASKS)
        .build();
    // ONE client, shared by every task.
    let client = client(TelemetryLayer::new(Product::Agent, telemetry.clone()));
    // Every task starts, then they all go at once; in-flight connections are capped.
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(128));
    let base = server.url("");

    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (client, start, in_flight) = (client.clone(), start.clone(), in_flight.clone());
            let url = format!("{base}/u/{i}");
            let context = ExecutionContext::user(format!("user-{i}"))
                .with_user_token(SecretToken::new(format!("dapi-secret-{i}")))
                .with_operation_id(OperationId::new(format!("op-{i}")));
            let task = context.scope(async move {
                start.wait().await;
                tokio::task::yield_now().await;
                let _permit = in_flight.acquire().await.unwrap();
                // The task's own context, read again after the awaits.
                let mine = ExecutionContext::current().caller_id;
                let (status, _) = send(&client, get(&url)).await?;
                Ok::<_, BoxError>((status, mine))
            });
            tokio::spawn(task.with_subscriber(dispatch.clone()))
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let (status, mine) = task.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(mine.as_deref(), Some(&*format!("user-{i}")));
    }
    for i in 0..TASKS {
        telemetry.complete_operation(&OperationId::new(format!("op-{i}")));
    }
    telemetry.flush().await;

    let operations = exporter.operations();
    assert_eq!(operations.len(), TASKS);
    for op in &operations {
        let n = op.operation_id.as_str().strip_prefix("op-").unwrap();
        assert_eq!(
            op.caller_id.as_deref(),
            Some(&*format!("user-{n}")),
            "{op:#?}"
        );
        assert_eq!((op.calls, op.outcomes.success), (1, 1));
    }
    let spans = captured.spans_named("HTTP");
    assert_eq!(spans.len(), TASKS);
    for span in &spans {
        let op = span.field("kasal.operation_id").unwrap();
        let n = op.strip_prefix("op-").unwrap();
        assert_eq!(span.field("caller.id"), Some(format!("user-{n}")));
        assert_eq!(
            span.field("url.full").unwrap(),
            server.url(&format!("/u/{n}"))
        );
    }
    let traced = captured.all_text().join("\n");
    assert!(!traced.contains("dapi-secret"));
    assert!(!format!("{:?}", exporter.batches()).contains("dapi-secret"));
}

#[tokio::test]
async fn rollups_sum_to_the_calls_and_operations_fold_on_completion() {
    let server = TestServer::start(|request, _| match request.uri.path() {
        "/missing" => Reply::status(404),
        _ => Reply::text(200, "ok"),
    })
    .await;
    let (telemetry, exporter) = pipeline();
    let client = client(TelemetryLayer::new(Product::Dashboard, telemetry.clone()));
    const PLAIN: u64 = 30;
    for i in 0..PLAIN {
        let path = if i % 10 == 0 { "/missing" } else { "/found" };
        send(&client, get(&server.url(path))).await.unwrap();
    }
    // An operation: two calls by request extension, one by context.
    let op = OperationId::new("op-dash");
    for _ in 0..2 {
        let mut request = get(&server.url("/found"));
        request.extensions_mut().insert(op.clone());
        send(&client, request).await.unwrap();
    }
    ExecutionContext::service()
        .with_operation_id(op.clone())
        .scope(async { send(&client, get(&server.url("/found"))).await })
        .await
        .unwrap();

    telemetry.flush().await;
    let rollups = exporter.rollups();
    assert_eq!(rollups.iter().map(|r| r.count).sum::<u64>(), PLAIN);
    let terminal: u64 = rollups
        .iter()
        .filter(|r| r.key.outcome == "terminal")
        .map(|r| r.count)
        .sum();
    assert_eq!(terminal, 3);
    assert!(exporter.operations().is_empty(), "pending until complete");

    telemetry.complete_operation(&op);
    telemetry.flush().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1);
    assert_eq!(operations[0].operation_id, op);
    assert_eq!(
        (operations[0].calls, operations[0].outcomes.success),
        (3, 3)
    );
    assert_eq!(operations[0].product, Product::Dashboard);
    assert_eq!(operations[0].bytes, 6);
    assert_eq!(exporter.total_calls(), PLAIN + 3);
}

#[tokio::test]
async fn terminal_error_in_an_operation_is_exported_within_100ms() {
    let server = TestServer::start(|request, _| match request.uri.path() {
        "/forbidden" => Reply::status(403),
        _ => Reply::status(503),
    })
    .await;
    let (telemetry, exporter) = pipeline();
    let client = client(TelemetryLayer::new(Product::Volume, telemetry.clone()));
    let call = |path: &str, op: &str| {
        let mut request = get(&server.url(path));
        request.extensions_mut().insert(OperationId::new(op));
        send(&client, request)
    };
    call("/busy", "op-waits").await.unwrap();
    call("/busy", "op-fails").await.unwrap();
    call("/forbidden", "op-fails").await.unwrap();
    let start = Instant::now();
    timeout(Duration::from_millis(100), exporter.wait_for_batches(1))
        .await
        .expect("terminal error exported within 100 ms, without a flush");
    assert!(start.elapsed() < Duration::from_millis(100));
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1, "the retryable operation waits");
    assert_eq!(operations[0].operation_id.as_str(), "op-fails");
    assert_eq!(operations[0].outcomes.terminal, 1);
    assert_eq!(operations[0].outcomes.retryable, 1);
    let types: Vec<_> = operations[0]
        .errors
        .iter()
        .map(|e| &*e.error_type)
        .collect();
    assert_eq!(types.len(), 2, "{types:?}");
    assert!(types.contains(&"403") && types.contains(&"503"));

    telemetry.flush().await;
    assert_eq!(
        exporter.operations().len(),
        1,
        "still waiting for completion"
    );
    telemetry.complete_operation(&OperationId::new("op-waits"));
    telemetry.flush().await;
    assert_eq!(exporter.operations().len(), 2);
}

#[tokio::test]
async fn shutdown_exports_everything_accepted() {
    let server = TestServer::always(200).await;
    let (telemetry, exporter) = pipeline();
    let client = client(TelemetryLayer::new(Product::Mlflow, telemetry.clone()));
    for i in 0..40 {
        let mut request = get(&server.url("/runs"));
        if i % 4 == 0 {
            request
                .extensions_mut()
                .insert(OperationId::new(format!("op-{}", i % 3)));
        }
        send(&client, request).await.unwrap();
    }
    let stats = telemetry.shutdown().await;
    assert_eq!((stats.accepted, stats.dropped), (40, 0));
    assert_eq!(exporter.total_calls(), 40);
    assert_eq!(
        exporter.operations().len(),
        3,
        "pending operations emitted too"
    );
    assert!(exporter.operations().iter().all(|op| !op.complete));
}

#[tokio::test]
async fn tiny_queue_and_stalled_exporter_never_slow_calls() {
    let server = TestServer::always(200).await;
    let exporter = InMemoryExporter::paused();
    let telemetry = pipeline_builder(&exporter)
        .queue_capacity(2)
        .batch_size(1)
        .export_timeout(Duration::from_secs(60))
        .build();
    let layer = TelemetryLayer::new(Product::Deployment, telemetry.clone());
    let client = client(layer.clone());
    let mut offered = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let mut request = get(&server.url("/deploy"));
        request
            .extensions_mut()
            .insert(OperationId::new(format!("op-{i}")));
        telemetry.complete_operation(&OperationId::new(format!("op-{i}")));
        let start = Instant::now();
        send(&client, request).await.unwrap();
        slowest = slowest.max(start.elapsed());
        offered += 1;
    }
    // The exporter is stuck for a minute: calls never wait for it.
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    // A burst with no await point in between (an in-process service answering at once):
    // the aggregator cannot drain the queue of 2, so most of it is dropped, and counted.
    let mut burst = layer.layer(tower::service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"x"))))
    }));
    for i in 0..100 {
        let mut request = get("http://127.0.0.1/burst");
        request
            .extensions_mut()
            .insert(OperationId::new(format!("burst-{i}")));
        let response = burst.ready().await.unwrap().call(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        offered += 1;
    }
    let stats = telemetry.stats();
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.accepted + stats.dropped, offered, "{stats:?}");
    assert!(exporter.batches().is_empty());
}

#[tokio::test]
async fn open_circuit_fails_at_once_without_a_request() {
    let (_guard, captured) = capture();
    let server = TestServer::always(503).await;
    let (telemetry, exporter) = pipeline();
    let breaker =
        CircuitBreaker::new(CircuitBreakerConfig::new().open_for(Duration::from_secs(60)));
    let layer = TelemetryLayer::new(Product::PowerBi, telemetry.clone()).circuit_breaker(breaker);
    let client = client(layer.clone());
    for _ in 0..5 {
        let (status, _) = send(&client, get(&server.url("/report"))).await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(server.hits(), 5);

    let error = send(&client, get(&server.url("/report")))
        .await
        .unwrap_err();
    let open = error.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
    assert_eq!(&*open.host, server.authority());
    assert_eq!(server.hits(), 5, "the server saw no request");

    let spans = captured.spans_named("HTTP");
    assert_eq!(spans.len(), 6);
    assert_fields(
        &spans[5],
        &[
            ("kasal.outcome", "terminal"),
            ("error.type", "circuit_open"),
            ("otel.status_code", "ERROR"),
        ],
    );
    assert_unset(
        &spans[5],
        &["http.response.status_code", "http.request.resend_count"],
    );
    assert!(
        spans[..5]
            .iter()
            .all(|s| s.field("error.type").as_deref() == Some("503"))
    );

    telemetry.flush().await;
    let rollups = exporter.rollups();
    let rejected: Vec<_> = rollups.iter().filter(|r| r.key.status_class == 0).collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        (rejected[0].count, rejected[0].key.outcome),
        (1, "terminal")
    );
    assert_eq!(exporter.total_calls(), 6);
}
