//! `ServerTelemetryLayer` end to end: real axum servers on 127.0.0.1 whose handlers call a
//! downstream `TestServer` through a `TelemetryLayer` client, with spans captured per test.
//! Server records go to a recorder closure (one `CallRecord` per request, as handed to the
//! pipeline); client records go through the real pipeline into an `InMemoryExporter`.
#![cfg(feature = "axum")]

#[path = "common/axum.rs"]
mod axum_server;
mod common;
#[path = "common/spans.rs"]
mod spans;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum_server::AxumServer;
use bytes::Bytes;
use common::{Reply, TestServer};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use kasal_telemetry::trace::{CallRecord, Direction, ExecutionContext, ExecutionMode, OperationId};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{
    InMemoryExporter, ServerTelemetryLayer, Telemetry, TelemetryLayer, TelemetryService,
};
use spans::{Captured, SpanCapture, SpanData};
use tower::{Layer, ServiceExt};

/// The downstream client every handler uses.
type Client = TelemetryService<HyperClient<HttpConnector, Full<Bytes>>>;

const SP: &str = "sp-test";

/// The tests of this file run one at a time. Each installs its own scoped subscriber, and
/// tracing rebuilds every callsite's interest whenever a subscriber is created or dropped: a
/// span opened by one test during another test's rebuild can miss its subscriber, which would
/// make the span counts here flaky. One at a time, nothing is rebuilt mid-test.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone)]
struct AppState {
    client: Client,
    downstream: String,
}

fn pipeline() -> (Telemetry, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    let telemetry = Telemetry::builder()
        .exporter(exporter.clone())
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
        .queue_capacity(8192)
        .build();
    (telemetry, exporter)
}

fn recorder() -> (
    Arc<Mutex<Vec<CallRecord>>>,
    impl Fn(CallRecord) + Clone + Send + Sync + 'static,
) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    (records, move |record| sink.lock().unwrap().push(record))
}

fn capture() -> (tracing::dispatcher::DefaultGuard, Captured) {
    let (dispatch, captured) = SpanCapture::dispatch();
    (tracing::dispatcher::set_default(&dispatch), captured)
}

/// Calls the downstream server as the current context: its token (if any) as a bearer token
/// and its caller id in `x-caller`, so the downstream log shows which token went with whom.
async fn call_downstream(state: &AppState) -> String {
    let context = ExecutionContext::current();
    let mut request = Request::get(&state.downstream)
        .body(Full::default())
        .unwrap();
    if let Some(caller) = &context.caller_id {
        request
            .headers_mut()
            .insert("x-caller", HeaderValue::from_str(caller).unwrap());
    }
    if let Some(token) = &context.user_token {
        let bearer = format!("Bearer {}", token.expose_secret());
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_str(&bearer).unwrap());
    }
    let response = state
        .client
        .clone()
        .oneshot(request)
        .await
        .expect("downstream call");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("downstream body");
    String::from_utf8_lossy(&body.to_bytes()).into_owned()
}

/// `"{mode}|{caller}|{obo_dev_fallback}"` of the current context.
fn whoami() -> String {
    let context = ExecutionContext::current();
    format!(
        "{}|{}|{}",
        context.mode.as_str(),
        context.caller_id.as_deref().unwrap_or("-"),
        context.obo_dev_fallback
    )
}

async fn in_handler(State(state): State<AppState>) -> String {
    call_downstream(&state).await;
    whoami()
}

async fn in_spawned_task(State(state): State<AppState>) -> String {
    kasal_telemetry::spawn(async move {
        call_downstream(&state).await;
        whoami()
    })
    .await
    .expect("task")
}

async fn in_blocking_closure(State(state): State<AppState>) -> String {
    let runtime = tokio::runtime::Handle::current();
    kasal_telemetry::spawn_blocking(move || {
        runtime.block_on(call_downstream(&state));
        whoami()
    })
    .await
    .expect("blocking task")
}

/// The response body makes the downstream call while it is being produced.
async fn while_streaming(State(state): State<AppState>) -> AxumBody {
    let chunks = futures_util::stream::once(async move {
        call_downstream(&state).await;
        Ok::<_, std::convert::Infallible>(Bytes::from(whoami()))
    });
    AxumBody::from_stream(chunks)
}

async fn fails() -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "boom")
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "nothing here")
}

fn routes(state: AppState) -> Router {
    Router::new()
        .route("/handler/{id}", get(in_handler))
        .route("/spawned", get(in_spawned_task))
        .route("/blocking", get(in_blocking_closure))
        .route("/streamed", get(while_streaming))
        .route("/whoami", get(|| async { whoami() }))
        .route("/fails", get(fails))
        .route("/missing", get(not_found))
        .with_state(state)
}

/// A downstream server, the client to it, and the app's state.
async fn downstream(telemetry: &Telemetry) -> (TestServer, AppState) {
    let server = TestServer::start(|_, _| Reply::text(200, "{}")).await;
    let client = TelemetryLayer::new(Product::Genie, telemetry.clone())
        .layer(common::client::<Full<Bytes>>());
    let state = AppState {
        client,
        downstream: server.url("/api/2.0/serving-endpoints/chat/invocations"),
    };
    (server, state)
}

/// A plain hyper client for the test's own requests to the app (no telemetry).
fn plain_client() -> HyperClient<HttpConnector, Full<Bytes>> {
    common::client::<Full<Bytes>>()
}

async fn send(request: Request<Full<Bytes>>) -> (StatusCode, String) {
    let response = plain_client().request(request).await.expect("app answers");
    let status = response.status();
    let body = response.into_body().collect().await.expect("app body");
    (
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    )
}

fn as_user(url: &str, email: &str, token: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .header("x-forwarded-access-token", token)
        .header("x-forwarded-email", email)
        .body(Full::default())
        .unwrap()
}

fn kind(span: &SpanData) -> Option<String> {
    span.field("otel.kind")
}

/// Every call span captured, by kind.
fn call_spans(captured: &Captured, kind_: &str) -> Vec<SpanData> {
    captured
        .spans_named("HTTP")
        .into_iter()
        .filter(|span| kind(span).as_deref() == Some(kind_))
        .collect()
}

#[tokio::test]
async fn client_calls_from_handler_task_blocking_closure_and_stream_are_children_of_the_server_span()
 {
    let _serial = SERIAL.lock().await;
    let (_guard, captured) = capture();
    let (telemetry, _exporter) = pipeline();
    let (downstream, state) = downstream(&telemetry).await;
    let (records, record) = recorder();
    let layer = ServerTelemetryLayer::new(Product::Agent, telemetry.clone())
        .service_principal_id(SP)
        .recorder(record);
    let app = AxumServer::start(routes(state).layer(layer)).await;

    let paths = ["/handler/7", "/spawned", "/blocking", "/streamed"];
    for (n, path) in paths.iter().enumerate() {
        let email = format!("user{n}@example.com");
        let (status, body) = send(as_user(&app.url(path), &email, &format!("tok-{n}"))).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body, format!("user|{email}|false"), "{path}");
    }
    assert_eq!(downstream.hits(), paths.len());

    let servers = call_spans(&captured, "server");
    let clients = call_spans(&captured, "client");
    assert_eq!(servers.len(), paths.len(), "{servers:#?}");
    assert_eq!(clients.len(), paths.len(), "{clients:#?}");
    let spans = captured.spans();
    for (n, path) in paths.iter().enumerate() {
        let email = format!("user{n}@example.com");
        let server = servers
            .iter()
            .find(|span| span.field("caller.id").as_deref() == Some(email.as_str()))
            .unwrap_or_else(|| panic!("no server span for {path}"));
        let client = clients
            .iter()
            .find(|span| span.field("caller.id").as_deref() == Some(email.as_str()))
            .unwrap_or_else(|| panic!("no client span for {path}"));
        // The client span's parent is this request's server span: no orphan, no stranger.
        assert_eq!(client.parent, Some(server.index), "{path}: {client:#?}");
        assert_eq!(server.parent, None, "{path}: the server span is a root");
        assert!(server.closed && client.closed, "{path}");
        assert_eq!(client.field("execution.context").as_deref(), Some("user"));
        assert_eq!(server.field("execution.context").as_deref(), Some("user"));
        assert_eq!(
            server.field("http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(spans[server.index].name, "HTTP");
    }
    let handler = servers
        .iter()
        .find(|span| span.field("caller.id").as_deref() == Some("user0@example.com"))
        .unwrap();
    assert_eq!(
        handler.field("http.route").as_deref(),
        Some("/handler/{id}")
    );
    assert_eq!(
        handler.field("otel.name").as_deref(),
        Some("GET /handler/{id}")
    );
    assert_eq!(handler.field("url.path").as_deref(), Some("/handler/7"));
    assert_eq!(
        handler.field("client.address").as_deref(),
        Some("127.0.0.1")
    );

    let records = records.lock().unwrap();
    assert_eq!(records.len(), paths.len());
    for record in records.iter() {
        assert_eq!(record.direction, Direction::Server);
        assert_eq!(record.product, Product::Agent);
        assert_eq!(record.mode, ExecutionMode::User);
        assert_eq!(record.status, Some(StatusCode::OK));
    }
    let routes: Vec<_> = records.iter().map(|r| r.route.as_deref()).collect();
    assert!(routes.contains(&Some("/streamed")), "{routes:?}");
}

#[tokio::test]
async fn the_server_span_lasts_until_the_streamed_body_ends() {
    let _serial = SERIAL.lock().await;
    let (_guard, captured) = capture();
    let (records, record) = recorder();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let app = Router::new()
        .route(
            "/stream",
            get(move || {
                let rx = rx.clone();
                async move {
                    let rx = rx.lock().await.take().expect("one request");
                    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
                        let chunk = rx.recv().await?;
                        Some((Ok::<_, std::convert::Infallible>(chunk), rx))
                    });
                    AxumBody::from_stream(chunks)
                }
            }),
        )
        .layer(ServerTelemetryLayer::new(Product::Agent, Telemetry::disabled()).recorder(record));
    let app = AxumServer::start(app).await;

    let response = plain_client()
        .request(
            Request::get(app.url("/stream"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");

    // The head and a chunk are out, the body is not over: the span is open, nothing recorded.
    let server = call_spans(&captured, "server").pop().expect("server span");
    assert!(!server.closed);
    assert!(records.lock().unwrap().is_empty());

    drop(tx);
    assert!(body.frame().await.is_none());
    let server = &captured.spans()[server.index];
    assert!(server.closed);
    let records = records.lock().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].response_bytes, 5);
}

/// A multi-thread runtime whose every thread reports to `dispatch` (a scoped default does not
/// cross threads on its own).
fn multi_thread_runtime(dispatch: tracing::Dispatch) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .on_thread_start(move || {
            // Leaked on purpose: the thread keeps the subscriber for its whole life.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        })
        .build()
        .expect("runtime")
}

#[test]
fn a_thousand_concurrent_users_never_cross() {
    let _serial = SERIAL.blocking_lock();
    const N: usize = 1_000;
    let (dispatch, captured) = SpanCapture::dispatch();
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let runtime = multi_thread_runtime(dispatch);
    runtime.block_on(async {
        let (telemetry, exporter) = pipeline();
        let (downstream, state) = downstream(&telemetry).await;
        let (records, record) = recorder();

        // The request's operation id comes from a test header, outside the server layer, so
        // every record and span can be tied to the request that made it.
        async fn work(
            State(state): State<AppState>,
            Extension(op): Extension<OperationId>,
        ) -> String {
            let context = ExecutionContext::current();
            let answer = whoami();
            context
                .with_operation_id(op)
                .scope(call_downstream(&state))
                .await;
            answer
        }
        let app = Router::new()
            .route("/work", get(work))
            .with_state(state)
            .layer(
                ServerTelemetryLayer::new(Product::Agent, telemetry.clone())
                    .service_principal_id(SP)
                    .recorder(record),
            )
            .layer(tower::util::MapRequestLayer::new(
                |mut request: Request<AxumBody>| {
                    let op = request.headers()["x-test-op"].to_str().unwrap().to_owned();
                    request.extensions_mut().insert(OperationId::new(op));
                    request
                },
            ));
        let app = AxumServer::start(app).await;

        let requests = (0..N).map(|n| {
            let mut request = as_user(
                &app.url("/work"),
                &format!("user{n}@example.com"),
                &format!("tok-{n}"),
            );
            request.headers_mut().insert(
                "x-test-op",
                HeaderValue::from_str(&format!("op-{n}")).unwrap(),
            );
            tokio::spawn(send(request))
        });
        let answers = futures_util::future::join_all(requests).await;
        for (n, answer) in answers.into_iter().enumerate() {
            let (status, body) = answer.expect("request task");
            assert_eq!(status, 200);
            assert_eq!(body, format!("user|user{n}@example.com|false"));
        }

        // The downstream saw each user's own token with that user's id.
        let seen = downstream.requests();
        assert_eq!(seen.len(), N);
        for request in &seen {
            let caller = request.header("x-caller").expect("x-caller");
            let n = caller
                .strip_prefix("user")
                .and_then(|rest| rest.strip_suffix("@example.com"))
                .expect("a user id");
            assert_eq!(
                request.header("authorization").as_deref(),
                Some(format!("Bearer tok-{n}").as_str())
            );
        }

        // Server records: one per request, each with its own caller.
        let records = records.lock().unwrap().clone();
        assert_eq!(records.len(), N);
        let mut by_op = HashMap::new();
        for record in &records {
            let op = record
                .operation_id
                .as_ref()
                .expect("operation id")
                .to_string();
            let n = op.strip_prefix("op-").unwrap();
            assert_eq!(record.mode, ExecutionMode::User, "{op}");
            assert_eq!(
                record.caller_id.as_deref(),
                Some(format!("user{n}@example.com").as_str()),
                "{op}"
            );
            assert!(
                by_op.insert(op, ()).is_none(),
                "one server record per request"
            );
        }

        // Client records, through the pipeline: one operation per request, its caller's.
        let stats = telemetry.shutdown().await;
        assert_eq!(stats.dropped, 0, "{stats:?}");
        let operations = exporter.operations();
        assert_eq!(operations.len(), N);
        for operation in &operations {
            let n = operation.operation_id.as_str().strip_prefix("op-").unwrap();
            assert_eq!(operation.calls, 1);
            assert_eq!(operation.mode, ExecutionMode::User);
            assert_eq!(
                operation.caller_id.as_deref(),
                Some(format!("user{n}@example.com").as_str())
            );
        }
    });

    // Spans: every server and client span carries its request's caller, and every client
    // span's parent is the server span of the same request.
    let spans = captured.spans();
    let servers = call_spans(&captured, "server");
    let clients = call_spans(&captured, "client");
    assert_eq!(servers.len(), N);
    assert_eq!(clients.len(), N);
    for span in servers.iter().chain(&clients) {
        let op = span.field("kasal.operation_id").expect("operation id");
        let n = op.strip_prefix("op-").unwrap();
        assert_eq!(
            span.field("caller.id").as_deref(),
            Some(format!("user{n}@example.com").as_str()),
            "{span:#?}"
        );
        assert_eq!(span.field("execution.context").as_deref(), Some("user"));
    }
    for client in &clients {
        let parent = &spans[client.parent.expect("client span has a parent")];
        assert_eq!(kind(parent).as_deref(), Some("server"));
        assert_eq!(
            parent.field("kasal.operation_id"),
            client.field("kasal.operation_id")
        );
    }
}

#[tokio::test]
async fn without_a_token_the_request_runs_as_the_service_and_is_flagged_only_in_development_mode() {
    let _serial = SERIAL.lock().await;
    let (_guard, captured) = capture();
    for dev in [false, true] {
        captured.clear();
        let (records, record) = recorder();
        let app = Router::new()
            .route("/whoami", get(|| async { whoami() }))
            .layer(
                ServerTelemetryLayer::new(Product::Agent, Telemetry::disabled())
                    .service_principal_id(SP)
                    .development_mode(dev)
                    .recorder(record),
            )
            .route("/public", get(|| async { whoami() }))
            .route_layer(
                ServerTelemetryLayer::new(Product::Agent, Telemetry::disabled())
                    .service_principal_id(SP)
                    .development_mode(dev)
                    .on_behalf_of(false),
            );
        let app = AxumServer::start(app).await;

        let no_token = Request::get(app.url("/whoami"))
            .header("x-forwarded-email", "alice@example.com") // no token: ignored
            .body(Full::default())
            .unwrap();
        let (status, body) = send(no_token).await;
        assert_eq!(status, 200);
        assert_eq!(body, format!("service|{SP}|{dev}"));
        let record = records.lock().unwrap().pop().expect("a server record");
        assert_eq!(record.mode, ExecutionMode::Service);
        assert_eq!(record.caller_id.as_deref(), Some(SP));
        assert_eq!(record.obo_dev_fallback, dev);
        let span = call_spans(&captured, "server").pop().unwrap();
        assert_eq!(span.field("execution.context").as_deref(), Some("service"));
        assert_eq!(
            span.field("execution.obo_dev_fallback").as_deref(),
            Some(dev.to_string().as_str())
        );

        // A route that is not on-behalf-of is never flagged.
        let (_, body) = send(
            Request::get(app.url("/public"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(body, format!("service|{SP}|false"));

        // With a token, development mode changes nothing.
        let (_, body) = send(as_user(&app.url("/whoami"), "bob@example.com", "tok")).await;
        assert_eq!(body, "user|bob@example.com|false");
    }
}

#[tokio::test]
async fn the_forwarded_token_is_in_no_span_event_record_or_export() {
    let _serial = SERIAL.lock().await;
    const TOKEN: &str = "dapiF0RWARDEDT0KEN0123456789abcdef";
    let (_guard, captured) = capture();
    let (telemetry, exporter) = pipeline();
    let (downstream, state) = downstream(&telemetry).await;
    let (records, record) = recorder();
    let app = routes(state)
        .layer(ServerTelemetryLayer::new(Product::Agent, telemetry.clone()).recorder(record));
    let app = AxumServer::start(app).await;

    for path in ["/handler/1", "/spawned", "/blocking", "/streamed", "/fails"] {
        let mut request = as_user(&app.url(path), "alice@example.com", TOKEN);
        // Also in the URL and a user-agent, where a careless layer might copy it from.
        *request.uri_mut() = format!("{}?token={TOKEN}", app.url(path)).parse().unwrap();
        request
            .headers_mut()
            .insert("user-agent", HeaderValue::from_static("probe/1.0"));
        send(request).await;
    }
    // The token did go downstream, where it belongs.
    assert!(
        downstream
            .requests()
            .iter()
            .all(|r| r.header("authorization").as_deref() == Some(&*format!("Bearer {TOKEN}")))
    );
    telemetry.flush().await;

    let mut haystack = captured.all_text();
    haystack.extend(captured.spans().iter().map(|s| format!("{s:?}")));
    haystack.extend(captured.events().iter().map(|e| format!("{e:?}")));
    haystack.extend(records.lock().unwrap().iter().map(|r| format!("{r:?}")));
    haystack.extend(exporter.batches().iter().map(|b| format!("{b:?}")));
    assert!(records.lock().unwrap().len() >= 5);
    assert!(!exporter.batches().is_empty());
    for text in &haystack {
        assert!(!text.contains(TOKEN), "token leaked into: {text}");
        assert!(
            !text.contains("F0RWARDED"),
            "token part leaked into: {text}"
        );
    }
}

#[tokio::test]
async fn bad_forwarded_headers_give_the_service_context_and_are_counted() {
    let _serial = SERIAL.lock().await;
    let (records, record) = recorder();
    let layer = ServerTelemetryLayer::new(Product::Agent, Telemetry::disabled())
        .service_principal_id(SP)
        .recorder(record);
    let app = Router::new()
        .route("/whoami", get(|| async { whoami() }))
        .layer(layer.clone());
    let app = AxumServer::start(app).await;

    let oversized = "a".repeat(8 * 1024 + 1);
    let cases: Vec<(&str, Vec<(&str, HeaderValue)>)> = vec![
        (
            "oversized token",
            vec![(
                "x-forwarded-access-token",
                HeaderValue::from_str(&oversized).unwrap(),
            )],
        ),
        (
            "oversized email",
            vec![
                ("x-forwarded-access-token", HeaderValue::from_static("tok")),
                (
                    "x-forwarded-email",
                    HeaderValue::from_str(&oversized).unwrap(),
                ),
            ],
        ),
        (
            "not utf-8",
            vec![
                ("x-forwarded-access-token", HeaderValue::from_static("tok")),
                (
                    "x-forwarded-email",
                    HeaderValue::from_bytes(b"al\xffce@x.com").unwrap(),
                ),
            ],
        ),
        (
            "empty token",
            vec![("x-forwarded-access-token", HeaderValue::from_static(""))],
        ),
        (
            "duplicated token",
            vec![
                (
                    "x-forwarded-access-token",
                    HeaderValue::from_static("tok-a"),
                ),
                (
                    "x-forwarded-access-token",
                    HeaderValue::from_static("tok-b"),
                ),
            ],
        ),
        (
            "duplicated email",
            vec![
                ("x-forwarded-access-token", HeaderValue::from_static("tok")),
                ("x-forwarded-email", HeaderValue::from_static("a@x.com")),
                ("x-forwarded-email", HeaderValue::from_static("b@x.com")),
            ],
        ),
    ];
    for (name, headers) in &cases {
        let mut request = Request::get(app.url("/whoami"))
            .body(Full::default())
            .unwrap();
        for (header, value) in headers {
            request.headers_mut().append(*header, value.clone());
        }
        let (status, body) = send(request).await;
        assert_eq!(status, 200, "{name}: never an error from the layer");
        assert_eq!(body, format!("service|{SP}|false"), "{name}");
    }
    let rejections = layer.rejections();
    assert_eq!(rejections.oversized, 2, "{rejections:?}");
    assert_eq!(rejections.not_utf8, 1, "{rejections:?}");
    assert_eq!(rejections.empty, 1, "{rejections:?}");
    assert_eq!(rejections.duplicated, 2, "{rejections:?}");
    assert_eq!(rejections.total(), cases.len() as u64);

    let records = records.lock().unwrap();
    assert_eq!(records.len(), cases.len());
    assert!(records.iter().all(|r| r.mode == ExecutionMode::Service));
    assert!(records.iter().all(|r| r.caller_id.as_deref() == Some(SP)));
}

#[tokio::test]
async fn router_layer_and_route_layer_serve_and_a_500_is_a_failed_server_call() {
    let _serial = SERIAL.lock().await;
    let (_guard, captured) = capture();
    let (records, record) = recorder();
    let (route_records, route_record) = recorder();
    let with_layer = Router::new()
        .route("/fails", get(fails))
        .route("/missing", get(not_found))
        .route("/ok", get(|| async { "ok" }))
        .layer(ServerTelemetryLayer::new(Product::Agent, Telemetry::disabled()).recorder(record));
    let with_route_layer = Router::new()
        .route("/ok/{name}", get(|| async { "ok" }))
        .route_layer(
            ServerTelemetryLayer::new(Product::Agent, Telemetry::disabled()).recorder(route_record),
        );
    let a = AxumServer::start(with_layer).await;
    let b = AxumServer::start(with_route_layer).await;

    let get_ = |url: String| Request::get(url).body(Full::default()).unwrap();
    assert_eq!(
        send(get_(a.url("/ok"))).await,
        (StatusCode::OK, "ok".into())
    );
    assert_eq!(
        send(get_(b.url("/ok/x"))).await,
        (StatusCode::OK, "ok".into())
    );
    let (status, _) = send(get_(a.url("/fails"))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = send(get_(a.url("/missing"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let route_records = route_records.lock().unwrap();
    assert_eq!(route_records.len(), 1);
    assert_eq!(route_records[0].route.as_deref(), Some("/ok/{name}"));

    let records = records.lock().unwrap();
    assert_eq!(records.len(), 3);
    let failed = records
        .iter()
        .find(|r| r.status == Some(StatusCode::INTERNAL_SERVER_ERROR))
        .expect("the 500 is recorded");
    assert_eq!(failed.direction, Direction::Server);
    assert_eq!(failed.route.as_deref(), Some("/fails"));
    assert_ne!(failed.outcome.as_str(), "success");

    let servers = call_spans(&captured, "server");
    let failed = servers
        .iter()
        .find(|s| s.field("http.route").as_deref() == Some("/fails"))
        .unwrap();
    assert_eq!(failed.field("error.type").as_deref(), Some("500"));
    assert_eq!(failed.field("otel.status_code").as_deref(), Some("ERROR"));
    assert_eq!(failed.field("otel.name").as_deref(), Some("GET /fails"));
    // A 404 is the client's fault: not an error on a server span.
    let missing = servers
        .iter()
        .find(|s| s.field("http.route").as_deref() == Some("/missing"))
        .unwrap();
    assert_eq!(
        missing.field("http.response.status_code").as_deref(),
        Some("404")
    );
    assert_eq!(missing.field("otel.status_code"), None);
}

#[tokio::test]
async fn a_plain_tokio_spawn_loses_the_context_and_the_helper_keeps_it() {
    let _serial = SERIAL.lock().await;
    let (_guard, captured) = capture();
    let span = tracing::info_span!("request");
    let _entered = span.enter();
    let context = ExecutionContext::user("alice@example.com");
    let (plain, helper) = context
        .scope(async {
            let plain = tokio::spawn(async { ExecutionContext::try_current() })
                .await
                .unwrap();
            let helper = kasal_telemetry::spawn(async {
                tracing::info!("in the task");
                ExecutionContext::try_current()
            })
            .await
            .unwrap();
            (plain, helper)
        })
        .await;
    assert_eq!(plain, None);
    assert_eq!(
        helper.and_then(|c| c.caller_id).as_deref(),
        Some("alice@example.com")
    );
    let event = captured.events_with_message("in the task").pop().unwrap();
    assert_eq!(event.parent, Some(captured.only_span("request").index));
}

#[cfg(feature = "otel")]
#[path = "common/otel_trace.rs"]
mod otel_trace;

#[cfg(feature = "otel")]
mod otel {
    //! W3C trace context in and out, through tracing-opentelemetry and the global propagator,
    //! exported by the OpenTelemetry SDK's in-memory exporter.
    use opentelemetry::trace::{SpanId, SpanKind, TraceId};
    use opentelemetry_sdk::trace::SpanData;

    use super::otel_trace::{finished, otel_subscriber};
    use super::*;

    fn attribute(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    #[tokio::test]
    async fn service_b_continues_the_trace_of_service_a_s_client_span() {
        let _serial = SERIAL.lock().await;
        let (_guard, exporter, provider) = otel_subscriber();
        let (telemetry, _) = pipeline();
        // B answers who it runs for.
        let b = AxumServer::start(
            Router::new()
                .route("/b", get(|| async { whoami() }))
                .layer(ServerTelemetryLayer::new(Product::Genie, telemetry.clone())),
        )
        .await;
        // A calls B through the client layer from its handler.
        let state = AppState {
            client: TelemetryLayer::new(Product::Agent, telemetry.clone())
                .layer(common::client::<Full<Bytes>>()),
            downstream: b.url("/b"),
        };
        let a = AxumServer::start(
            Router::new()
                .route("/a", get(in_handler))
                .with_state(state)
                .layer(ServerTelemetryLayer::new(Product::Agent, telemetry.clone())),
        )
        .await;

        let (status, _) = send(as_user(&a.url("/a"), "alice@example.com", "tok")).await;
        assert_eq!(status, 200);

        let spans = finished(&exporter, &provider);
        let by_kind = |kind: SpanKind, product: &str| -> SpanData {
            spans
                .iter()
                .find(|s| {
                    s.span_kind == kind && attribute(s, "kasal.product").as_deref() == Some(product)
                })
                .cloned()
                .unwrap_or_else(|| panic!("no {kind:?} span of {product}: {spans:#?}"))
        };
        let a_server = by_kind(SpanKind::Server, "agent");
        let a_client = by_kind(SpanKind::Client, "agent");
        let b_server = by_kind(SpanKind::Server, "genie");
        let trace = a_server.span_context.trace_id();
        assert_ne!(trace, TraceId::INVALID);
        assert_eq!(a_client.span_context.trace_id(), trace);
        assert_eq!(a_client.parent_span_id, a_server.span_context.span_id());
        // B's server span: same trace, A's client span as its remote parent.
        assert_eq!(b_server.span_context.trace_id(), trace);
        assert_eq!(b_server.parent_span_id, a_client.span_context.span_id());
        assert!(b_server.parent_span_is_remote);
        assert_eq!(b_server.name, "GET /b");
    }

    #[tokio::test]
    async fn with_retry_each_attempt_sends_its_own_span_as_traceparent() {
        let _serial = SERIAL.lock().await;
        let (_guard, exporter, provider) = otel_subscriber();
        let downstream = TestServer::start(|_, n| {
            if n == 0 {
                Reply::status(503).header("retry-after", "0")
            } else {
                Reply::text(200, "{}")
            }
        })
        .await;
        let client = TelemetryLayer::new(Product::Agent, Telemetry::disabled())
            .retry(
                kasal_telemetry::classify::RetryPolicy::new()
                    .base_delay(Duration::from_millis(1))
                    .max_delay(Duration::from_millis(1)),
            )
            .layer(common::client::<Full<Bytes>>());
        let response = client
            .oneshot(
                Request::get(downstream.url("/x"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();

        let sent: Vec<String> = downstream
            .requests()
            .iter()
            .map(|r| r.header("traceparent").expect("traceparent sent"))
            .collect();
        assert_eq!(sent.len(), 2);
        let spans = finished(&exporter, &provider);
        let call = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Client)
            .expect("the call span");
        let attempts: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.parent_span_id == call.span_context.span_id())
            .collect();
        assert_eq!(attempts.len(), 2, "{spans:#?}");
        for (header, attempt) in sent.iter().zip(&attempts) {
            let expected = format!(
                "00-{}-{}-01",
                attempt.span_context.trace_id(),
                attempt.span_context.span_id()
            );
            assert_eq!(header, &expected);
        }
        assert_ne!(sent[0], sent[1]);
    }

    #[tokio::test]
    async fn a_valid_traceparent_is_continued_and_a_malformed_one_starts_a_new_trace() {
        let _serial = SERIAL.lock().await;
        let (_guard, exporter, provider) = otel_subscriber();
        let app = AxumServer::start(Router::new().route("/x", get(|| async { "x" })).layer(
            ServerTelemetryLayer::new(Product::Agent, Telemetry::disabled()),
        ))
        .await;
        let with = |traceparent: &str| {
            Request::get(app.url("/x"))
                .header("traceparent", traceparent)
                .body(Full::default())
                .unwrap()
        };
        let remote_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let remote_span = "00f067aa0ba902b7";
        send(with(&format!("00-{remote_trace}-{remote_span}-01"))).await;
        for malformed in [
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01x",
        ] {
            let (status, _) = send(with(malformed)).await;
            assert_eq!(status, 200, "{malformed}");
        }

        let spans = finished(&exporter, &provider);
        assert_eq!(spans.len(), 5, "{spans:#?}");
        let continued = &spans[0];
        assert_eq!(
            continued.span_context.trace_id(),
            TraceId::from_hex(remote_trace).unwrap()
        );
        assert_eq!(
            continued.parent_span_id,
            SpanId::from_hex(remote_span).unwrap()
        );
        assert!(continued.parent_span_is_remote);
        for fresh in &spans[1..] {
            assert_ne!(
                fresh.span_context.trace_id(),
                TraceId::from_hex(remote_trace).unwrap()
            );
            assert_ne!(fresh.span_context.trace_id(), TraceId::INVALID);
            assert_eq!(
                fresh.parent_span_id,
                SpanId::INVALID,
                "a new trace: a root span"
            );
        }
    }
}
