//! The spans of real calls, client (`TelemetryLayer` over hyper-util, against a server on
//! 127.0.0.1) and server (`ServerTelemetryLayer` on an axum router), through
//! `tracing-opentelemetry` into the OpenTelemetry SDK's in-memory span exporter: what an
//! OpenTelemetry backend receives, checked against the `opentelemetry-semantic-conventions`
//! crate's constants.
#![cfg(all(feature = "otel", feature = "axum"))]

#[path = "common/axum.rs"]
mod axum_server;
mod common;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use axum_server::AxumServer;
use bytes::Bytes;
use common::{Reply, TestServer};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use kasal_telemetry::classify::RetryPolicy;
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{ServerTelemetryLayer, Telemetry, TelemetryLayer};
use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use opentelemetry_semantic_conventions::attribute as semconv;
use tower::{Layer, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

/// Each test installs its own scoped subscriber; one at a time, so no callsite interest is
/// rebuilt while another test's spans open.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every attribute name with a semantic-conventions constant that our spans may carry. (The
/// GenAI constants are deprecated in the crate, as moved to the GenAI conventions repository;
/// the names are unchanged there.)
#[allow(deprecated)]
const CONVENTIONS: &[&str] = &[
    semconv::HTTP_REQUEST_METHOD,
    semconv::HTTP_REQUEST_METHOD_ORIGINAL,
    semconv::URL_FULL,
    semconv::URL_TEMPLATE,
    semconv::URL_PATH,
    semconv::URL_SCHEME,
    semconv::SERVER_ADDRESS,
    semconv::SERVER_PORT,
    semconv::CLIENT_ADDRESS,
    semconv::USER_AGENT_ORIGINAL,
    semconv::HTTP_ROUTE,
    semconv::HTTP_RESPONSE_STATUS_CODE,
    semconv::HTTP_REQUEST_RESEND_COUNT,
    semconv::HTTP_REQUEST_BODY_SIZE,
    semconv::HTTP_RESPONSE_BODY_SIZE,
    semconv::NETWORK_PROTOCOL_VERSION,
    semconv::ERROR_TYPE,
    semconv::GEN_AI_REQUEST_MODEL,
    semconv::GEN_AI_RESPONSE_MODEL,
    semconv::GEN_AI_USAGE_INPUT_TOKENS,
    semconv::GEN_AI_USAGE_OUTPUT_TOKENS,
];

/// Our own attributes, outside the conventions: `kasal.*`, `execution.*` and `caller.id`.
fn is_ours(key: &str) -> bool {
    key.starts_with("kasal.") || key.starts_with("execution.") || key == "caller.id"
}

fn otel_subscriber() -> (
    tracing::dispatcher::DefaultGuard,
    InMemorySpanExporter,
    SdkTracerProvider,
) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    // Without the bridge's own attributes (code location, threads, busy/idle times, target, level): what is
    // left is what our layers emit.
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_level(false)
            .with_tracer(provider.tracer("otel_spans")),
    );
    let guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(subscriber));
    (guard, exporter, provider)
}

fn finished(exporter: &InMemorySpanExporter, provider: &SdkTracerProvider) -> Vec<SpanData> {
    provider.force_flush().expect("flush");
    exporter.get_finished_spans().expect("finished spans")
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn string(span: &SpanData, key: &str) -> String {
    match attr(span, key) {
        Some(Value::String(s)) => s.as_str().to_owned(),
        other => panic!("{key}: not a string: {other:?} in {span:#?}"),
    }
}

fn int(span: &SpanData, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::I64(n)) => *n,
        other => panic!("{key}: not an I64: {other:?} in {span:#?}"),
    }
}

/// Every attribute of every span is either one of the conventions' names (so spelled exactly as
/// the constant) or one of ours; and no attribute appears twice.
fn assert_names_follow_the_conventions(spans: &[SpanData]) {
    for span in spans {
        for KeyValue { key, .. } in &span.attributes {
            let key = key.as_str();
            assert!(
                CONVENTIONS.contains(&key) || is_ours(key),
                "{key} on {:?} is neither a semantic-conventions name nor ours",
                span.name
            );
            assert_eq!(
                span.attributes
                    .iter()
                    .filter(|kv| kv.key.as_str() == key)
                    .count(),
                1,
                "{key} twice on {:?}",
                span.name
            );
        }
    }
}

async fn call<S, B>(client: &S, method: Method, url: &str) -> Result<u16, kasal_telemetry::BoxError>
where
    S: tower::Service<Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: Into<kasal_telemetry::BoxError>,
    B: http_body::Body,
    B::Error: Into<kasal_telemetry::BoxError>,
{
    let response = client
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(url)
                .header("user-agent", "otel-test")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .map_err(Into::into)?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(Into::into)?;
    Ok(status)
}

const GENIE: &str = "/api/2.0/genie/spaces/01ef/conversations/42/messages/m7x";
const GENIE_TEMPLATE: &str =
    "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}";

#[tokio::test]
async fn client_spans_follow_the_http_conventions() {
    let _serial = SERIAL.lock().await;
    let (_guard, exporter, provider) = otel_subscriber();
    let server = TestServer::start(|request, _| match request.uri.path() {
        "/fail" => Reply::status(500),
        _ => Reply::text(200, "{}"),
    })
    .await;
    let client = TelemetryLayer::new(Product::Genie, Telemetry::disabled())
        .layer(common::client::<Full<Bytes>>());
    // A port nothing listens on: bound, then released.
    let refused_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };

    assert_eq!(
        call(&client, Method::GET, &server.url(GENIE))
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        call(&client, Method::GET, &server.url("/fail"))
            .await
            .unwrap(),
        500
    );
    let refused = call(
        &client,
        Method::GET,
        &format!("http://127.0.0.1:{refused_port}{GENIE}"),
    )
    .await;
    assert!(refused.is_err());
    let odd = Method::from_bytes(b"FROB").unwrap();
    assert_eq!(call(&client, odd, &server.url(GENIE)).await.unwrap(), 200);
    let invocations = "/serving-endpoints/my-llm/invocations";
    assert_eq!(
        call(&client, Method::POST, &server.url(invocations))
            .await
            .unwrap(),
        200
    );

    let spans = finished(&exporter, &provider);
    assert_eq!(spans.len(), 5, "{spans:#?}");
    assert_names_follow_the_conventions(&spans);
    let (ok, fail, refused, odd, model) = (&spans[0], &spans[1], &spans[2], &spans[3], &spans[4]);
    assert!(spans.iter().all(|s| s.span_kind == SpanKind::Client));

    // The first-try success.
    assert_eq!(ok.name, format!("GET {GENIE_TEMPLATE}"));
    assert_eq!(ok.span_kind, SpanKind::Client);
    assert_eq!(ok.status, Status::Unset);
    assert_eq!(string(ok, semconv::HTTP_REQUEST_METHOD), "GET");
    assert_eq!(string(ok, semconv::URL_TEMPLATE), GENIE_TEMPLATE);
    assert_eq!(string(ok, semconv::URL_FULL), server.url(GENIE));
    assert_eq!(string(ok, semconv::SERVER_ADDRESS), "127.0.0.1");
    assert_eq!(int(ok, semconv::SERVER_PORT), i64::from(server.addr.port()));
    assert_eq!(int(ok, semconv::HTTP_RESPONSE_STATUS_CODE), 200);
    assert_eq!(string(ok, semconv::NETWORK_PROTOCOL_VERSION), "1.1");
    for absent in [
        semconv::HTTP_REQUEST_RESEND_COUNT,
        semconv::ERROR_TYPE,
        semconv::HTTP_ROUTE,
        semconv::HTTP_REQUEST_METHOD_ORIGINAL,
        semconv::URL_PATH,
    ] {
        assert!(attr(ok, absent).is_none(), "{absent} on {ok:#?}");
    }

    // A 500: an error on a client span, `error.type` the status code. No error message exists,
    // so the description stays empty (the status code is in `error.type`).
    assert_eq!(fail.status, Status::error(""), "{fail:#?}");
    assert_eq!(int(fail, semconv::HTTP_RESPONSE_STATUS_CODE), 500);
    assert_eq!(string(fail, semconv::ERROR_TYPE), "500");
    assert!(attr(fail, semconv::HTTP_REQUEST_RESEND_COUNT).is_none());

    // Refused: an error with the redacted error message as its description, no status code.
    assert_eq!(refused.name, format!("GET {GENIE_TEMPLATE}"));
    assert_eq!(int(refused, semconv::SERVER_PORT), i64::from(refused_port));
    let Status::Error { description } = &refused.status else {
        panic!("not an error: {refused:#?}");
    };
    assert!(
        description.to_lowercase().contains("connect"),
        "{description:?}"
    );
    assert!(!string(refused, semconv::ERROR_TYPE).is_empty());
    assert!(attr(refused, semconv::HTTP_RESPONSE_STATUS_CODE).is_none());

    // An unknown method: `_OTHER` plus the original, and `HTTP` in the name.
    assert_eq!(odd.name, format!("HTTP {GENIE_TEMPLATE}"));
    assert_eq!(string(odd, semconv::HTTP_REQUEST_METHOD), "_OTHER");
    assert_eq!(string(odd, semconv::HTTP_REQUEST_METHOD_ORIGINAL), "FROB");

    // A model-serving call: the GenAI attribute under its conventions name.
    #[allow(deprecated)]
    let model_key = semconv::GEN_AI_REQUEST_MODEL;
    assert_eq!(string(model, model_key), "my-llm");
    assert_eq!(string(model, semconv::HTTP_REQUEST_METHOD), "POST");
}

#[tokio::test]
async fn a_retried_call_has_a_resend_count_and_one_child_span_per_attempt() {
    let _serial = SERIAL.lock().await;
    let (_guard, exporter, provider) = otel_subscriber();
    let server = TestServer::start(|_, n| match n {
        0 | 1 => Reply::status(503).header("retry-after", "0"),
        _ => Reply::text(200, "{}"),
    })
    .await;
    let client = TelemetryLayer::new(Product::Genie, Telemetry::disabled())
        .retry(
            RetryPolicy::new()
                .base_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(1)),
        )
        .layer(common::client::<Full<Bytes>>());

    assert_eq!(
        call(&client, Method::GET, &server.url(GENIE))
            .await
            .unwrap(),
        200
    );

    let spans = finished(&exporter, &provider);
    assert_names_follow_the_conventions(&spans);
    let calls: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    assert_eq!(calls.len(), 1, "one logical call span: {spans:#?}");
    let call_span = calls[0];
    assert_eq!(call_span.name, format!("GET {GENIE_TEMPLATE}"));
    assert_eq!(call_span.status, Status::Unset, "the call succeeded");
    assert_eq!(int(call_span, semconv::HTTP_REQUEST_RESEND_COUNT), 2);
    assert_eq!(int(call_span, semconv::HTTP_RESPONSE_STATUS_CODE), 200);

    let mut attempts: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.parent_span_id == call_span.span_context.span_id())
        .collect();
    attempts.sort_by_key(|s| int(s, "kasal.attempt"));
    assert_eq!(attempts.len(), 3, "{spans:#?}");
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.name, "HTTP attempt");
        assert_eq!(
            attempt.span_context.trace_id(),
            call_span.span_context.trace_id()
        );
        assert_eq!(int(attempt, "kasal.attempt"), n as i64 + 1);
        match n {
            0 => assert!(attr(attempt, semconv::HTTP_REQUEST_RESEND_COUNT).is_none()),
            _ => assert_eq!(int(attempt, semconv::HTTP_REQUEST_RESEND_COUNT), n as i64),
        }
    }
    for failed in &attempts[..2] {
        assert_eq!(int(failed, semconv::HTTP_RESPONSE_STATUS_CODE), 503);
        assert_eq!(string(failed, semconv::ERROR_TYPE), "503");
        assert!(matches!(failed.status, Status::Error { .. }));
    }
    assert_eq!(int(attempts[2], semconv::HTTP_RESPONSE_STATUS_CODE), 200);
    assert_eq!(attempts[2].status, Status::Unset);
}

#[tokio::test]
async fn server_spans_follow_the_http_conventions() {
    let _serial = SERIAL.lock().await;
    let (_guard, exporter, provider) = otel_subscriber();
    let app = AxumServer::start(
        Router::new()
            .route("/items/{id}", get(|| async { "item" }))
            .route("/missing/{id}", get(|| async { StatusCode::NOT_FOUND }))
            .route(
                "/broken",
                get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .layer(ServerTelemetryLayer::new(
                Product::Agent,
                Telemetry::disabled(),
            )),
    )
    .await;
    // A plain client: only the server's spans are exported.
    let client = common::client::<Full<Bytes>>();
    for (path, status) in [("/items/7", 200), ("/missing/8", 404), ("/broken", 500)] {
        let response = client
            .request(
                Request::get(app.url(path))
                    .header("user-agent", "otel-test/1.0")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        response.into_body().collect().await.unwrap();
    }

    let spans = finished(&exporter, &provider);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert_names_follow_the_conventions(&spans);
    let (ok, missing, broken) = (&spans[0], &spans[1], &spans[2]);
    for span in &spans {
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(string(span, semconv::HTTP_REQUEST_METHOD), "GET");
        assert_eq!(string(span, semconv::URL_SCHEME), "http");
        assert_eq!(string(span, semconv::USER_AGENT_ORIGINAL), "otel-test/1.0");
        assert_eq!(string(span, semconv::CLIENT_ADDRESS), "127.0.0.1");
        assert_eq!(string(span, semconv::NETWORK_PROTOCOL_VERSION), "1.1");
        for absent in [
            semconv::URL_TEMPLATE,
            semconv::URL_FULL,
            semconv::HTTP_REQUEST_RESEND_COUNT,
        ] {
            assert!(attr(span, absent).is_none(), "{absent} on {span:#?}");
        }
    }

    assert_eq!(ok.name, "GET /items/{id}");
    assert_eq!(string(ok, semconv::HTTP_ROUTE), "/items/{id}");
    assert_eq!(string(ok, semconv::URL_PATH), "/items/7");
    assert_eq!(int(ok, semconv::HTTP_RESPONSE_STATUS_CODE), 200);
    assert_eq!(ok.status, Status::Unset);

    // A 4xx is the client's fault, not the server's: no error on a server span.
    assert_eq!(missing.name, "GET /missing/{id}");
    assert_eq!(int(missing, semconv::HTTP_RESPONSE_STATUS_CODE), 404);
    assert_eq!(missing.status, Status::Unset);
    assert!(attr(missing, semconv::ERROR_TYPE).is_none());

    assert_eq!(broken.name, "GET /broken");
    assert_eq!(int(broken, semconv::HTTP_RESPONSE_STATUS_CODE), 500);
    assert_eq!(string(broken, semconv::ERROR_TYPE), "500");
    assert!(matches!(broken.status, Status::Error { .. }), "{broken:#?}");
}
