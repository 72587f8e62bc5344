//! The reqwest stack end to end (feature `reqwest`): reqwest-middleware clients with
//! `TelemetryMiddleware` and `RetryMiddleware` calling real servers on 127.0.0.1, spans
//! captured per test, the pipeline exporting into an `InMemoryExporter`. The behaviours the
//! tower stack is tested for run through both stacks (`common/stacks.rs`), and must agree.
mod common;
#[path = "common/spans.rs"]
mod spans;
#[path = "common/stacks.rs"]
mod stacks;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::raw_server::RawServer;
use common::{Reply, ReplyBody, TestServer};
use kasal_telemetry::classify::{
    CircuitBreaker, CircuitBreakerConfig, CircuitOpen, Jitter, RetryPolicy,
};
use kasal_telemetry::reqwest::{
    CircuitBreakerMiddleware, RetryMiddleware, TelemetryMiddleware, http_client,
};
use kasal_telemetry::trace::{ExecutionContext, OperationId, Route, SecretToken};
use kasal_telemetry::user_agent::{Product, UserAgent};
use kasal_telemetry::{InMemoryExporter, Telemetry, TelemetryLayer};
use reqwest_middleware::ClientBuilder;
use spans::{Captured, SpanCapture, SpanData};
use stacks::{Answer, Call, Stack};
use tokio::sync::mpsc;
use tokio::time::Instant;

fn capture() -> (tracing::dispatcher::DefaultGuard, Captured) {
    let (dispatch, captured) = SpanCapture::dispatch();
    (tracing::dispatcher::set_default(&dispatch), captured)
}

/// A pipeline that exports on `flush`, `shutdown` or a terminal error only.
fn pipeline() -> (Telemetry, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    let telemetry = Telemetry::builder()
        .exporter(exporter.clone())
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
        .build();
    (telemetry, exporter)
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy::new()
        .base_delay(Duration::from_millis(5))
        .jitter(Jitter::None)
}

fn reqwest_stack(telemetry: &Telemetry) -> stacks::Reqwest {
    stacks::reqwest(Product::Genie, telemetry, fast_retry())
}

fn tower_stack(telemetry: &Telemetry) -> impl Stack {
    stacks::tower(TelemetryLayer::new(Product::Genie, telemetry.clone()).retry(fast_retry()))
}

/// A 127.0.0.1 port nothing listens on.
async fn closed_port() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
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

/// The span fields both stacks set.
const FIELDS: &[&str] = &[
    "otel.kind",
    "otel.name",
    "otel.status_code",
    "http.request.method",
    "http.route",
    "url.template",
    "url.full",
    "server.address",
    "server.port",
    "http.response.status_code",
    "network.protocol.version",
    "http.request.resend_count",
    "http.response.body.size",
    "error.type",
    "kasal.product",
    "kasal.outcome",
    "kasal.operation_id",
    "kasal.body_cut_short",
    "execution.context",
    "caller.id",
    "execution.obo_dev_fallback",
];

fn fields(span: &SpanData) -> Vec<(&'static str, Option<String>)> {
    FIELDS.iter().map(|f| (*f, span.field(f))).collect()
}

// ---------------------------------------------------------------------------------------
// User-Agent

async fn user_agents_seen(stack: &impl Stack) -> Vec<Vec<String>> {
    let server = TestServer::always(200).await;
    let url = server.url("/api/2.0/genie/spaces");
    for call in [
        Call::get(&url),
        Call::get(&url).user_agent("their-ua/1.2"),
        Call::get(&url).user_agent("kasal_genie/9.9.9 already/1"),
    ] {
        let answer = stack.call(call).await;
        assert_eq!(answer.status, Some(200), "{answer:?}");
    }
    server
        .requests()
        .iter()
        .map(|r| r.header_all("user-agent"))
        .collect()
}

#[tokio::test]
async fn user_agent_rules_are_the_tower_stacks() {
    let (telemetry, _exporter) = pipeline();
    let through_reqwest = user_agents_seen(&reqwest_stack(&telemetry)).await;
    let through_tower = user_agents_seen(&tower_stack(&telemetry)).await;
    assert_eq!(
        through_reqwest,
        [
            vec!["kasal_genie/0.1.0".to_owned()],
            vec!["kasal_genie/0.1.0 their-ua/1.2".to_owned()],
            vec!["kasal_genie/9.9.9 already/1".to_owned()],
        ]
    );
    assert_eq!(through_reqwest, through_tower);
}

#[tokio::test]
async fn a_reqwest_client_with_its_own_user_agent() {
    let server = TestServer::always(200).await;
    let (telemetry, _exporter) = pipeline();
    let own = || http_client().user_agent("their-app/1.2").build().unwrap();
    // reqwest adds a client-wide User-Agent only to requests without one, after the
    // middleware: the stack reads it from the client once and prepends ours to it.
    let plain = kasal_telemetry::reqwest::builder_with(own(), Product::Genie, &telemetry).build();
    plain.get(server.url("/a")).send().await.unwrap();
    // The application's token carried in ours, as an extra.
    let with_extra = ClientBuilder::new(own())
        .with(
            TelemetryMiddleware::new(Product::Genie, telemetry.clone()).user_agent(
                UserAgent::new(Product::Genie)
                    .with_extra("their-app", "1.2")
                    .unwrap(),
            ),
        )
        .build();
    with_extra.get(server.url("/b")).send().await.unwrap();
    // A per-request User-Agent is kept after ours, as in the tower stack.
    plain
        .get(server.url("/c"))
        .header("user-agent", "per-request/2")
        .send()
        .await
        .unwrap();
    // By hand: the middleware told the client's User-Agent.
    let by_hand = ClientBuilder::new(own())
        .with(
            TelemetryMiddleware::new(Product::Genie, telemetry.clone())
                .client_user_agent(&http::HeaderValue::from_static("their-app/1.2")),
        )
        .build();
    by_hand.get(server.url("/d")).send().await.unwrap();
    // Told before our own User-Agent changes: still prepended, with the new one.
    let versioned = ClientBuilder::new(own())
        .with(
            TelemetryMiddleware::new(Product::Genie, telemetry.clone())
                .client_user_agent(&http::HeaderValue::from_static("their-app/1.2"))
                .user_agent(
                    UserAgent::new(Product::Genie)
                        .with_version("9.9.9")
                        .unwrap(),
                ),
        )
        .build();
    versioned.get(server.url("/e")).send().await.unwrap();
    let seen: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header_all("user-agent"))
        .collect();
    assert_eq!(
        seen,
        [
            vec!["kasal_genie/0.1.0 their-app/1.2".to_owned()],
            vec!["kasal_genie/0.1.0 their-app/1.2".to_owned()],
            vec!["kasal_genie/0.1.0 per-request/2".to_owned()],
            vec!["kasal_genie/0.1.0 their-app/1.2".to_owned()],
            vec!["kasal_genie/9.9.9 their-app/1.2".to_owned()],
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Spans

async fn span_of(stack: &impl Stack, url: &str) -> SpanData {
    let (_guard, captured) = capture();
    let call = Call::get(url)
        .route("/api/2.0/genie/spaces/{id}")
        .operation("op-1")
        .context(ExecutionContext::user("alice@example.com"));
    let answer = stack.call(call).await;
    assert_eq!(&answer.body[..], b"hello");
    call_span(&captured)
}

#[tokio::test]
async fn span_fields_are_the_tower_stacks() {
    let server = TestServer::start(|_, _| Reply::text(200, "hello")).await;
    let url = server.url("/api/2.0/genie/spaces/s1?token=dapi123&page=2");
    let (telemetry, _exporter) = pipeline();
    let reqwest_span = span_of(&reqwest_stack(&telemetry), &url).await;
    let tower_span = span_of(&tower_stack(&telemetry), &url).await;

    let port = server.addr.port().to_string();
    let full =
        format!("http://127.0.0.1:{port}/api/2.0/genie/spaces/s1?token=REDACTED&page=REDACTED");
    assert_fields(
        &reqwest_span,
        &[
            ("otel.kind", "client"),
            ("otel.name", "GET /api/2.0/genie/spaces/{id}"),
            ("http.request.method", "GET"),
            ("url.template", "/api/2.0/genie/spaces/{id}"),
            ("url.full", &full),
            ("server.address", "127.0.0.1"),
            ("server.port", &port),
            ("http.response.status_code", "200"),
            ("network.protocol.version", "1.1"),
            ("kasal.product", "genie"),
            ("kasal.outcome", "success"),
            ("kasal.operation_id", "op-1"),
            ("execution.context", "user"),
            ("caller.id", "alice@example.com"),
        ],
    );
    for unset in ["error.type", "http.route", "http.request.resend_count"] {
        assert_eq!(reqwest_span.field(unset), None, "{unset}");
    }
    assert!(reqwest_span.closed);
    assert_eq!(fields(&reqwest_span), fields(&tower_span));
}

/// The reqwest middleware opens its span from the parts its `Url` has parsed, not from an
/// `http::Uri`: every shape of URL gives the tower stack's span, and no userinfo leaves.
#[tokio::test]
async fn every_url_shape_gives_the_tower_stacks_span() {
    let server = TestServer::start(|_, _| Reply::text(200, "hello")).await;
    let port = server.addr.port();
    let (telemetry, _exporter) = pipeline();
    for url in [
        format!("http://user:secret@127.0.0.1:{port}/api/2.0/genie/spaces/s1?token=x&y=%20z"),
        format!("http://localhost:{port}/api/2.0/genie/spaces/s1#fragment"),
        format!("http://127.0.0.1:{port}/api/2.0/genie/spaces/caf%C3%A9?"),
        format!("http://127.0.0.1:{port}/api/2.0/genie/spaces/s1?a&b=&=c"),
        format!("HTTP://127.0.0.1:{port}/api/2.0/genie/spaces/01ef"),
    ] {
        let reqwest_span = span_of(&reqwest_stack(&telemetry), &url).await;
        let tower_span = span_of(&tower_stack(&telemetry), &url).await;
        assert_eq!(fields(&reqwest_span), fields(&tower_span), "{url}");
        let full = reqwest_span.field("url.full").unwrap_or_default();
        assert!(full.starts_with("http://"), "{full}");
        assert!(!full.contains("secret") && !full.contains('#'), "{full}");
        assert_eq!(reqwest_span.field("server.port"), Some(port.to_string()));
    }
}

#[tokio::test]
async fn the_task_local_context_reaches_the_span_and_no_token_leaves() {
    let (_guard, captured) = capture();
    let server = TestServer::always(200).await;
    let (telemetry, _exporter) = pipeline();
    let client = kasal_telemetry::reqwest::client(Product::Genie, &telemetry);
    let context = ExecutionContext::user("bob@example.com")
        .with_user_token(SecretToken::new("dapi-secret-user-token"));
    let response = context
        .scope(async {
            client
                .get(server.url("/x?access_token=dapi-secret-query"))
                .bearer_auth("dapi-secret-header")
                .send()
                .await
        })
        .await
        .unwrap();
    response.bytes().await.unwrap();
    let span = call_span(&captured);
    assert_fields(
        &span,
        &[
            ("execution.context", "user"),
            ("caller.id", "bob@example.com"),
        ],
    );
    for text in captured.all_text() {
        assert!(!text.contains("dapi-secret"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------
// Outcomes

struct Seen {
    answer: Answer,
    span: SpanData,
    requests: usize,
}

async fn one_call(stack: &impl Stack, server: &TestServer, path: &str) -> Seen {
    let (_guard, captured) = capture();
    let answer = stack.call(Call::get(server.url(path))).await;
    Seen {
        answer,
        span: call_span(&captured),
        requests: server.hits(),
    }
}

#[tokio::test]
async fn ok_200_is_success() {
    let (telemetry, _exporter) = pipeline();
    let server = TestServer::always(200).await;
    let seen = one_call(&reqwest_stack(&telemetry), &server, "/").await;
    assert_fields(
        &seen.span,
        &[
            ("kasal.outcome", "success"),
            ("http.response.status_code", "200"),
        ],
    );
    assert_eq!(seen.span.field("otel.status_code"), None);
}

/// The traced response is the response: its URL, head, length and connection info survive
/// the body's rewrapping.
#[tokio::test]
async fn the_response_keeps_its_url_head_and_connection_info() {
    let (telemetry, _exporter) = pipeline();
    let server = TestServer::start(|_, _| Reply::text(200, "hello").header("x-kept", "yes")).await;
    let client = kasal_telemetry::reqwest::client(Product::Genie, &telemetry);
    let url = server.url("/api/2.0/genie/spaces?page=2");
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.url().as_str(), url);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-kept"], "yes");
    assert_eq!(response.content_length(), Some(5));
    assert_eq!(
        response.remote_addr().map(|addr| addr.to_string()),
        Some(server.authority())
    );
    assert_eq!(response.text().await.unwrap(), "hello");
    telemetry.flush().await;
    assert_eq!(telemetry.stats().accepted, 1);
}

#[tokio::test]
async fn too_many_requests_429_waits_its_retry_after_and_is_retried() {
    let (telemetry, _exporter) = pipeline();
    let server = TestServer::start(|_, n| match n {
        0 => Reply::status(429).header("retry-after", "1"),
        _ => Reply::text(200, "ok"),
    })
    .await;
    let started = Instant::now();
    let seen = one_call(&reqwest_stack(&telemetry), &server, "/").await;
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After");
    assert_eq!(seen.requests, 2);
    assert_eq!(seen.answer.status, Some(200));
    assert_fields(
        &seen.span,
        &[
            ("kasal.outcome", "success"),
            ("http.response.status_code", "200"),
            ("http.request.resend_count", "1"),
        ],
    );
}

#[tokio::test]
async fn unavailable_503_is_retryable_and_retried_three_times() {
    let (telemetry, _exporter) = pipeline();
    let server = TestServer::always(503).await;
    let seen = one_call(&reqwest_stack(&telemetry), &server, "/").await;
    assert_eq!(seen.requests, 4);
    assert_eq!(seen.answer.status, Some(503));
    assert_fields(
        &seen.span,
        &[
            ("kasal.outcome", "retryable"),
            ("error.type", "503"),
            ("otel.status_code", "ERROR"),
            ("http.request.resend_count", "3"),
        ],
    );
}

#[tokio::test]
async fn forbidden_403_is_terminal_and_not_retried() {
    let (telemetry, _exporter) = pipeline();
    let server = TestServer::always(403).await;
    let seen = one_call(&reqwest_stack(&telemetry), &server, "/").await;
    assert_eq!(seen.requests, 1);
    assert_fields(
        &seen.span,
        &[("kasal.outcome", "terminal"), ("error.type", "403")],
    );
    assert_eq!(seen.span.field("http.request.resend_count"), None);
}

#[tokio::test]
async fn connection_refused_is_retryable_connect_and_every_attempt_is_counted() {
    let (_guard, captured) = capture();
    let (telemetry, _exporter) = pipeline();
    let client = reqwest_stack(&telemetry).0;
    let error = client
        .get(format!("http://{}/", closed_port().await))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert!(matches!(error, reqwest_middleware::Error::Reqwest(_)));
    assert_fields(
        &call_span(&captured),
        &[
            ("kasal.outcome", "retryable"),
            ("error.type", "connect"),
            ("http.request.resend_count", "3"),
        ],
    );
}

#[tokio::test]
async fn a_timeout_is_retryable_timeout() {
    let (_guard, captured) = capture();
    let (telemetry, _exporter) = pipeline();
    let server = TestServer::start(|_, _| Reply::Hang).await;
    let http = http_client()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let client = ClientBuilder::new(http)
        .with(TelemetryMiddleware::new(Product::Genie, telemetry.clone()))
        .with(RetryMiddleware::new(fast_retry().max_retries(1)))
        .build();
    let error = client.get(server.url("/slow")).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(server.hits(), 2);
    assert_fields(
        &call_span(&captured),
        &[
            ("kasal.outcome", "retryable"),
            ("error.type", "timeout"),
            ("http.request.resend_count", "1"),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Records

#[tokio::test]
async fn records_reach_the_pipeline_as_rollups_and_operation_summaries() {
    let (telemetry, exporter) = pipeline();
    let server = TestServer::start(|r, _| match r.uri.path() {
        "/flaky" if !r.headers.contains_key("x-second") => Reply::status(503),
        _ => Reply::text(200, "body"),
    })
    .await;
    let client = reqwest_stack(&telemetry).0;
    for _ in 0..3 {
        client
            .get(server.url("/plain"))
            .with_extension(Route::new("/plain"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let operation = OperationId::new("statement-7");
    for path in ["/a", "/b"] {
        client
            .get(server.url(path))
            .with_extension(operation.clone())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    telemetry.complete_operation(&operation);
    telemetry.flush().await;

    let rollups = exporter.rollups();
    assert_eq!(rollups.len(), 1, "{rollups:#?}");
    assert_eq!(rollups[0].count, 3);
    assert_eq!(rollups[0].key.route.as_deref(), Some("/plain"));
    assert_eq!(rollups[0].key.product, Product::Genie);
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1, "{operations:#?}");
    assert_eq!(operations[0].operation_id, operation);
    assert_eq!(operations[0].calls, 2);
    assert_eq!(operations[0].bytes, 8);
    assert!(operations[0].complete);
    assert_eq!(telemetry.stats().accepted, 5);
}

#[tokio::test]
async fn retries_are_counted_in_the_operation_summary() {
    let (telemetry, exporter) = pipeline();
    let server = TestServer::start(|_, n| match n {
        0 | 1 => Reply::status(502),
        _ => Reply::text(200, "ok"),
    })
    .await;
    let client = reqwest_stack(&telemetry).0;
    let operation = OperationId::new("run-1");
    let response = client
        .get(server.url("/"))
        .with_extension(operation.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    telemetry.complete_operation(&operation);
    telemetry.flush().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1);
    assert_eq!((operations[0].calls, operations[0].retries), (1, 2));
    assert_eq!(operations[0].outcomes.success, 1);
}

#[tokio::test]
async fn a_streamed_body_keeps_the_span_open_until_its_end() {
    let (_guard, captured) = capture();
    let (telemetry, exporter) = pipeline();
    let (sender, receiver) = mpsc::channel::<Bytes>(4);
    let receiver = Arc::new(std::sync::Mutex::new(Some(receiver)));
    let server = TestServer::start(move |_, _| {
        Reply::text(200, "").body(ReplyBody::Channel(receiver.clone()))
    })
    .await;
    let client = ClientBuilder::new(http_client().build().unwrap())
        .with(TelemetryMiddleware::new(Product::Llm, telemetry.clone()).body_sizes(true))
        .build();
    let mut response = client.get(server.url("/stream")).send().await.unwrap();

    sender
        .send(Bytes::from_static(b"data: one\n\n"))
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    assert!(!call_span(&captured).closed, "open while the body streams");
    telemetry.flush().await;
    assert_eq!(exporter.total_calls(), 0, "not recorded before the end");

    sender
        .send(Bytes::from_static(b"data: two\n\n"))
        .await
        .unwrap();
    drop(sender);
    let second = response.chunk().await.unwrap().unwrap();
    assert_eq!(&second[..], b"data: two\n\n");
    assert!(response.chunk().await.unwrap().is_none());
    let span = call_span(&captured);
    assert!(span.closed);
    assert_fields(&span, &[("http.response.body.size", "22")]);
    telemetry.flush().await;
    assert_eq!(exporter.total_calls(), 1);
}

#[tokio::test]
async fn a_body_dropped_early_is_recorded_once_as_cut_short() {
    let (_guard, captured) = capture();
    let (telemetry, _exporter) = pipeline();
    let server = TestServer::start(|_, _| {
        Reply::text(200, "").body(ReplyBody::Chunks(
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            Duration::from_millis(20),
        ))
    })
    .await;
    let client = kasal_telemetry::reqwest::client(Product::Llm, &telemetry);
    let response = client.get(server.url("/")).send().await.unwrap();
    drop(response);
    let span = call_span(&captured);
    assert!(span.closed);
    assert_fields(&span, &[("kasal.body_cut_short", "true")]);
    assert_eq!(telemetry.stats().accepted, 1);
}

#[tokio::test]
async fn an_open_circuit_fails_at_once_with_circuit_open() {
    let (telemetry, _exporter) = pipeline();
    let server = TestServer::always(500).await;
    let breaker = CircuitBreaker::new(CircuitBreakerConfig::new().failure_threshold(2));
    let client = kasal_telemetry::reqwest::builder(Product::Genie, &telemetry)
        .with(CircuitBreakerMiddleware::new(breaker.clone()))
        .build();
    // The default retry makes the first call's attempts open the circuit.
    let (_guard, captured) = capture();
    let first = client.get(server.url("/")).send().await;
    assert!(first.is_err() || first.unwrap().status() == 500);
    let hits = server.hits();
    assert_eq!(hits, 2, "the breaker opened after two failures");
    let error = client.get(server.url("/")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &error else {
        panic!("expected the middleware's error, got {error:?}");
    };
    assert!(inner.downcast_ref::<CircuitOpen>().is_some(), "{inner:?}");
    assert_eq!(server.hits(), hits, "no request while open");
    let spans = captured.spans_named("HTTP");
    assert_fields(
        spans.last().unwrap(),
        &[
            ("kasal.outcome", "terminal"),
            ("error.type", "circuit_open"),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Parity

/// Each path answers by its own script; `n` counts that path's requests.
fn scripted() -> impl Fn(&common::Recorded, usize) -> Reply + Send + Sync + 'static {
    let counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    move |request, _| {
        let path = request.uri.path().to_owned();
        let n = {
            let mut counts = counts.lock().unwrap();
            let n = counts.entry(path.clone()).or_default();
            *n += 1;
            *n - 1
        };
        match (path.as_str(), n) {
            ("/ok", _) => Reply::text(200, "fine"),
            ("/flaky", 0) => Reply::status(503),
            ("/flaky", _) => Reply::text(200, "better"),
            ("/limited", 0) => Reply::status(429).header("retry-after", "0"),
            ("/limited", _) => Reply::text(200, "later"),
            ("/forbidden", _) => Reply::status(403),
            ("/missing", _) => Reply::status(404),
            ("/down", _) => Reply::status(503),
            ("/broken", _) => Reply::status(501),
            ("/reset", _) => Reply::Reset,
            _ => Reply::status(500),
        }
    }
}

const SCRIPT: &[&str] = &[
    "/ok",
    "/flaky",
    "/limited",
    "/forbidden",
    "/missing",
    "/down",
    "/broken",
    "/reset",
];

/// (outcome, status, attempts, error.type) of each call's span, and the pipeline's summary of
/// each call's operation as (calls, retries, outcomes, error types).
async fn records_through(
    stack: impl Fn(&Telemetry) -> Box<dyn StackObject>,
) -> (
    Vec<(String, Option<String>, u32, Option<String>)>,
    Vec<String>,
    Vec<Vec<(String, Option<String>, Option<String>)>>,
) {
    let server = TestServer::start(scripted()).await;
    let (telemetry, exporter) = pipeline();
    let stack = stack(&telemetry);
    let (_guard, captured) = capture();
    for (i, path) in SCRIPT.iter().enumerate() {
        let call = Call::get(server.url(path)).operation(format!("op-{i}"));
        stack.call_boxed(call).await;
    }
    for i in 0..SCRIPT.len() {
        telemetry.complete_operation(&OperationId::new(format!("op-{i}")));
    }
    telemetry.flush().await;
    let spans = captured.spans_named("HTTP");
    assert_eq!(spans.len(), SCRIPT.len());
    let records = spans
        .iter()
        .map(|span| {
            let resend: u32 = span
                .field("http.request.resend_count")
                .map_or(0, |n| n.parse().unwrap());
            (
                span.field("kasal.outcome").unwrap(),
                span.field("http.response.status_code"),
                resend + 1,
                span.field("error.type"),
            )
        })
        .collect();
    let mut summaries: Vec<_> = exporter
        .operations()
        .iter()
        .map(|op| {
            let errors: Vec<_> = op.errors.iter().map(|e| e.error_type.to_string()).collect();
            format!(
                "{} calls={} retries={} {:?} {errors:?}",
                op.operation_id, op.calls, op.retries, op.outcomes
            )
        })
        .collect();
    summaries.sort();
    // Each call's attempt spans: (attempt, status, error.type), children of its call span.
    let attempts = spans
        .iter()
        .map(|call| {
            captured
                .spans_named("HTTP attempt")
                .iter()
                .filter(|a| a.parent == Some(call.index) && a.closed)
                .map(|a| {
                    (
                        a.field("kasal.attempt").unwrap_or_default(),
                        a.field("http.response.status_code"),
                        a.field("error.type"),
                    )
                })
                .collect()
        })
        .collect();
    (records, summaries, attempts)
}

/// `Stack` boxed, so the parity test can take either stack from one closure type.
trait StackObject {
    fn call_boxed(
        &self,
        call: Call,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + '_>>;
}

impl<S: Stack + Sync> StackObject for S {
    fn call_boxed(
        &self,
        call: Call,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + '_>> {
        Box::pin(self.call(call))
    }
}

#[tokio::test]
async fn a_scripted_sequence_gives_the_same_records_through_both_stacks() {
    let retry = || fast_retry().max_retries(2);
    let (through_reqwest, reqwest_summaries, reqwest_attempts) =
        records_through(|telemetry| Box::new(stacks::reqwest(Product::Genie, telemetry, retry())))
            .await;
    // The same with the retry inside the telemetry middleware (what `client()` builds).
    let (through_fused, fused_summaries, fused_attempts) = records_through(|telemetry| {
        Box::new(stacks::Reqwest(
            ClientBuilder::new(http_client().build().unwrap())
                .with(TelemetryMiddleware::new(Product::Genie, telemetry.clone()).retry(retry()))
                .build(),
        ))
    })
    .await;
    let (through_tower, tower_summaries, tower_attempts) = records_through(|telemetry| {
        Box::new(stacks::tower(
            TelemetryLayer::new(Product::Genie, telemetry.clone()).retry(retry()),
        ))
    })
    .await;
    let expected = |outcome: &str, status: Option<&str>, attempts, error: Option<&str>| {
        (
            outcome.to_owned(),
            status.map(str::to_owned),
            attempts,
            error.map(str::to_owned),
        )
    };
    assert_eq!(
        through_reqwest[..7],
        [
            expected("success", Some("200"), 1, None),
            expected("success", Some("200"), 2, None),
            expected("success", Some("200"), 2, None),
            expected("terminal", Some("403"), 1, Some("403")),
            expected("terminal", Some("404"), 1, Some("404")),
            expected("retryable", Some("503"), 3, Some("503")),
            expected("terminal", Some("501"), 1, Some("501")),
        ]
    );
    // A reset connection, retried: no status, every attempt counted.
    assert_eq!(through_reqwest[7].0, "retryable");
    assert_eq!(
        (through_reqwest[7].1.as_deref(), through_reqwest[7].2),
        (None, 3)
    );
    assert_eq!(through_reqwest, through_tower);
    assert_eq!(through_fused, through_tower);
    assert_eq!(reqwest_summaries, tower_summaries);
    assert_eq!(fused_summaries, tower_summaries);
    assert_eq!(reqwest_summaries.len(), SCRIPT.len());
    // The same attempt spans for retried calls: 2 for /flaky (503, then 200), 3 for /down and
    // /reset. A call answered at once has none through reqwest without feature `otel` (its
    // call span is the attempt); a stack that sends each attempt's span downstream as
    // `traceparent` (the tower stack; reqwest's with `otel`) opens one for it too.
    let counts: Vec<usize> = reqwest_attempts.iter().map(Vec::len).collect();
    let sent_downstream = [1, 2, 2, 1, 1, 3, 1, 3];
    match cfg!(feature = "otel") {
        true => assert_eq!(counts, sent_downstream),
        false => assert_eq!(counts, [0, 2, 2, 0, 0, 3, 0, 3]),
    }
    assert_eq!(fused_attempts, reqwest_attempts);
    let tower_counts: Vec<usize> = tower_attempts.iter().map(Vec::len).collect();
    assert_eq!(tower_counts, sent_downstream);
    for (ours, tower) in reqwest_attempts.iter().zip(&tower_attempts) {
        if !ours.is_empty() {
            assert_eq!(ours, tower);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bad input: reqwest-middleware's error back, no panic, one record.

#[tokio::test]
async fn a_url_that_does_not_parse_is_recorded_once_as_invalid_url() {
    let (_guard, captured) = capture();
    let (telemetry, exporter) = pipeline();
    let client = kasal_telemetry::reqwest::client(Product::Genie, &telemetry);
    // reqwest-middleware fails in `send`, before any middleware: reqwest's own builder error.
    let error = client.get("http://[::1").send().await.unwrap_err();
    assert!(
        matches!(error, reqwest_middleware::Error::Reqwest(ref e) if e.is_builder()),
        "{error:?}"
    );
    telemetry.flush().await;
    assert_eq!(telemetry.stats().accepted, 1);
    assert_fields(
        &call_span(&captured),
        &[
            ("kasal.outcome", "terminal"),
            ("error.type", "invalid_url"),
            ("http.request.method", "_OTHER"),
        ],
    );
    assert!(call_span(&captured).closed);
    let rollups = exporter.rollups();
    let calls: u64 = rollups.iter().map(|r| r.count).sum();
    assert_eq!(calls, 1, "{rollups:#?}");
    // A URL that parses is not recorded before it is sent.
    let _unsent = client.get("http://127.0.0.1:1/");
    assert_eq!(telemetry.stats().accepted, 1);
}

#[tokio::test]
async fn a_url_reqwest_cannot_send_is_recorded_once_as_invalid_url() {
    let (_guard, captured) = capture();
    let (telemetry, _exporter) = pipeline();
    let client = kasal_telemetry::reqwest::client(Product::Genie, &telemetry);
    let error = client
        .get("ftp://127.0.0.1:21/file")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, reqwest_middleware::Error::Reqwest(ref e) if e.is_builder()));
    assert_eq!(telemetry.stats().accepted, 1);
    assert_fields(
        &call_span(&captured),
        &[("kasal.outcome", "terminal"), ("error.type", "invalid_url")],
    );
    assert_eq!(
        call_span(&captured).field("http.request.resend_count"),
        None
    );
}

#[tokio::test]
async fn a_redirect_loop_is_recorded_once_as_redirect() {
    let (_guard, captured) = capture();
    let (telemetry, _exporter) = pipeline();
    let server = TestServer::start(|_, _| Reply::status(302).header("location", "/loop")).await;
    let client = kasal_telemetry::reqwest::client(Product::Genie, &telemetry);
    let error = client.get(server.url("/loop")).send().await.unwrap_err();
    assert!(error.is_redirect(), "{error:?}");
    assert_eq!(
        server.hits(),
        11,
        "reqwest follows 10 redirects, once: no retry"
    );
    assert_eq!(telemetry.stats().accepted, 1);
    assert_fields(
        &call_span(&captured),
        &[("kasal.outcome", "terminal"), ("error.type", "redirect")],
    );
}

#[tokio::test]
async fn a_body_that_fails_mid_stream_is_recorded_once() {
    let (_guard, captured) = capture();
    let (telemetry, _exporter) = pipeline();
    let server =
        RawServer::start(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b").await;
    let client = kasal_telemetry::reqwest::client(Product::Genie, &telemetry);
    let response = client.get(server.url("/short")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let error = response.bytes().await.unwrap_err();
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    assert_eq!(telemetry.stats().accepted, 1);
    let span = call_span(&captured);
    assert!(span.closed);
    assert_fields(
        &span,
        &[
            ("http.response.status_code", "200"),
            ("kasal.outcome", "retryable"),
            ("error.type", "incomplete_message"),
            ("otel.status_code", "ERROR"),
        ],
    );
}

#[tokio::test]
async fn a_reset_connection_is_recorded_once_with_its_attempts() {
    let (_guard, captured) = capture();
    let (telemetry, _exporter) = pipeline();
    let resets = Arc::new(AtomicUsize::new(0));
    let count = resets.clone();
    let server = TestServer::start(move |_, _| {
        count.fetch_add(1, Ordering::SeqCst);
        Reply::Reset
    })
    .await;
    let client = reqwest_stack(&telemetry).0;
    let error = client.get(server.url("/")).send().await.unwrap_err();
    assert!(
        matches!(error, reqwest_middleware::Error::Reqwest(_)),
        "{error:?}"
    );
    assert_eq!(resets.load(Ordering::SeqCst), 4);
    assert_eq!(telemetry.stats().accepted, 1);
    let span = call_span(&captured);
    assert_fields(
        &span,
        &[
            ("kasal.outcome", "retryable"),
            ("http.request.resend_count", "3"),
            ("otel.status_code", "ERROR"),
        ],
    );
    assert!(span.field("error.type").is_some());
}

#[cfg(feature = "otel")]
#[path = "common/otel_trace.rs"]
mod otel_trace;

#[cfg(feature = "otel")]
mod otel {
    //! W3C trace context out of the reqwest stack, through tracing-opentelemetry and the global
    //! propagator, as the tower client layer sends it (tests/server.rs).
    use opentelemetry::trace::{SpanKind, TraceId};
    use opentelemetry_sdk::trace::SpanData;

    use super::otel_trace::{finished, otel_subscriber};
    use super::*;

    fn traceparent_of(span: &SpanData) -> String {
        format!(
            "00-{}-{}-01",
            span.span_context.trace_id(),
            span.span_context.span_id()
        )
    }

    #[tokio::test]
    async fn a_call_sends_its_span_as_traceparent() {
        let (_guard, exporter, provider) = otel_subscriber();
        let server = TestServer::start(|_, _| Reply::text(200, "{}")).await;
        let client = ClientBuilder::new(http_client().build().unwrap())
            .with(TelemetryMiddleware::new(
                Product::Genie,
                Telemetry::disabled(),
            ))
            .build();
        let response = client.get(server.url("/x")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();

        let spans = finished(&exporter, &provider);
        let call = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Client)
            .unwrap_or_else(|| panic!("no client span: {spans:#?}"));
        assert_ne!(call.span_context.trace_id(), TraceId::INVALID);
        let sent = server.requests()[0].header("traceparent");
        assert_eq!(sent, Some(traceparent_of(call)));
    }

    #[tokio::test]
    async fn with_retry_each_attempt_sends_its_own_span_as_traceparent() {
        let (_guard, exporter, provider) = otel_subscriber();
        let server = TestServer::start(|_, n| {
            if n == 0 {
                Reply::status(503).header("retry-after", "0")
            } else {
                Reply::text(200, "{}")
            }
        })
        .await;
        let client = ClientBuilder::new(http_client().build().unwrap())
            .with(
                TelemetryMiddleware::new(Product::Genie, Telemetry::disabled()).retry(fast_retry()),
            )
            .build();
        let response = client.get(server.url("/x")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();

        let sent: Vec<String> = server
            .requests()
            .iter()
            .map(|r| r.header("traceparent").expect("traceparent sent"))
            .collect();
        assert_eq!(sent.len(), 2);
        let spans = finished(&exporter, &provider);
        let call = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Client)
            .unwrap_or_else(|| panic!("no client span: {spans:#?}"));
        let attempts: Vec<String> = spans
            .iter()
            .filter(|s| s.parent_span_id == call.span_context.span_id())
            .map(traceparent_of)
            .collect();
        assert_eq!(attempts, sent, "{spans:#?}");
        assert_ne!(sent[0], sent[1]);
    }
}
