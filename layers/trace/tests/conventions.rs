//! The call span, convention by convention (OpenTelemetry HTTP semantic conventions, client and
//! server), against a real local server where the network matters and in-process services
//! where a response head must be shaped (HTTP/2, a custom method).
#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/spans.rs"]
mod spans;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Reply, TestServer};
use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full};
use kasal_classify::{Attempts, Outcome};
use kasal_trace::{CallRecord, CallSpan, ClientAddress, Direction, Route, SpanLayer};
use kasal_user_agent::Product;
use spans::{Captured, SpanCapture, SpanData, Value};
use tower::{Layer, Service, ServiceExt};

fn capture() -> (tracing::dispatcher::DefaultGuard, Captured) {
    let (dispatch, captured) = SpanCapture::dispatch();
    (tracing::dispatcher::set_default(&dispatch), captured)
}

fn records() -> (
    Arc<Mutex<Vec<CallRecord>>>,
    impl Fn(CallRecord) + Clone + Send + Sync + 'static,
) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    (records, move |record| sink.lock().unwrap().push(record))
}

#[track_caller]
fn assert_i64(span: &SpanData, field: &str, expected: i64) {
    assert_eq!(
        span.fields.get(field),
        Some(&Value::I64(expected)),
        "{field} must be an i64 in {span:#?}"
    );
}

/// A service answering `status` with `body`, as HTTP `version`, with `Attempts(attempts)`.
fn answering(
    status: u16,
    version: Version,
    attempts: u32,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        *response.version_mut() = version;
        response.extensions_mut().insert(Attempts(attempts));
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

async fn call<S>(service: S, request: Request<Full<Bytes>>) -> StatusCode
where
    S: Service<Request<Full<Bytes>>, Response = Response<kasal_trace::TracedBody<Full<Bytes>, ()>>>,
    S::Error: std::fmt::Debug,
{
    let response = service.oneshot(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn integers_are_i64_and_resend_count_only_when_resent() {
    let (_guard, captured) = capture();
    let server = TestServer::start(|_, _| Reply::text(200, "hello")).await;
    let client = SpanLayer::new(Product::Genie)
        .body_sizes(true)
        .layer(common::client::<Full<Bytes>>());
    let request = Request::post(server.url("/api"))
        .header("content-length", "3")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    response.into_body().collect().await.unwrap();
    let span = captured.only_span("HTTP");
    assert_i64(&span, "http.response.status_code", 200);
    assert_i64(&span, "server.port", i64::from(server.addr.port()));
    assert_i64(&span, "http.request.body.size", 3);
    assert_i64(&span, "http.response.body.size", 5);
    assert_eq!(span.field("http.request.resend_count"), None);

    // Resent twice: the count appears, as an i64.
    captured.clear();
    let service = SpanLayer::new(Product::Genie).layer(answering(200, Version::HTTP_11, 3));
    call(service, Request::new(Full::default())).await;
    let span = captured.only_span("HTTP");
    assert_i64(&span, "http.request.resend_count", 2);
}

#[tokio::test]
async fn body_sizes_are_opt_in() {
    let (_guard, captured) = capture();
    let service = SpanLayer::new(Product::Genie).layer(answering(200, Version::HTTP_11, 1));
    let request = Request::post("http://h/")
        .header("content-length", "0")
        .body(Full::default())
        .unwrap();
    call(service, request).await;
    let span = captured.only_span("HTTP");
    assert_eq!(span.field("http.request.body.size"), None);
    assert_eq!(span.field("http.response.body.size"), None);
}

#[tokio::test]
async fn client_span_name_uses_url_template_never_http_route() {
    let (_guard, captured) = capture();
    let service = SpanLayer::new(Product::Jobs).layer(answering(200, Version::HTTP_11, 1));
    let mut request = Request::get("https://h/api/2.1/jobs/get?job_id=7")
        .body(Full::default())
        .unwrap();
    request
        .extensions_mut()
        .insert(Route::new("/api/2.1/jobs/get"));
    call(service, request).await;
    let span = captured.only_span("HTTP");
    assert_eq!(
        span.field("otel.name").as_deref(),
        Some("GET /api/2.1/jobs/get")
    );
    assert_eq!(
        span.field("url.template").as_deref(),
        Some("/api/2.1/jobs/get")
    );
    assert_eq!(span.field("http.route"), None);

    // Without a template: the method alone.
    captured.clear();
    let service = SpanLayer::new(Product::Jobs).layer(answering(200, Version::HTTP_11, 1));
    call(service, Request::new(Full::default())).await;
    let span = captured.only_span("HTTP");
    assert_eq!(span.field("otel.name").as_deref(), Some("GET"));
    assert_eq!(span.field("url.template"), None);
}

#[tokio::test]
async fn unknown_methods_are_other_with_the_original() {
    let (_guard, captured) = capture();
    let service = SpanLayer::new(Product::Jobs).layer(answering(200, Version::HTTP_11, 1));
    let mut request = Request::builder()
        .method(Method::from_bytes(b"PURGE").unwrap())
        .uri("http://h/cache")
        .body(Full::default())
        .unwrap();
    request.extensions_mut().insert(Route::new("/cache"));
    call(service, request).await;
    let span = captured.only_span("HTTP");
    assert_eq!(span.field("http.request.method").as_deref(), Some("_OTHER"));
    assert_eq!(
        span.field("http.request.method_original").as_deref(),
        Some("PURGE")
    );
    // The conventions name such a span `HTTP`, not after the unknown method.
    assert_eq!(span.field("otel.name").as_deref(), Some("HTTP /cache"));

    // Every known method is itself, without an original.
    for method in [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ] {
        captured.clear();
        let service = SpanLayer::new(Product::Jobs).layer(answering(200, Version::HTTP_11, 1));
        let request = Request::builder()
            .method(method.clone())
            .uri("http://h/")
            .body(Full::default())
            .unwrap();
        call(service, request).await;
        let span = captured.only_span("HTTP");
        assert_eq!(
            span.field("http.request.method").as_deref(),
            Some(method.as_str())
        );
        assert_eq!(span.field("http.request.method_original"), None);
    }
}

#[tokio::test]
async fn network_protocol_version_comes_from_the_response() {
    let (_guard, captured) = capture();
    let service = SpanLayer::new(Product::Llm).layer(answering(200, Version::HTTP_2, 1));
    call(service, Request::new(Full::default())).await;
    let span = captured.only_span("HTTP");
    assert_eq!(span.field("network.protocol.version").as_deref(), Some("2"));
}

#[tokio::test]
async fn client_4xx_and_5xx_are_errors_whatever_the_classifier_says() {
    /// A classifier that calls everything a success.
    #[derive(Clone)]
    struct Lenient;
    impl kasal_classify::Classify for Lenient {
        fn classify_response(&self, _status: StatusCode, _headers: &HeaderMap) -> Outcome {
            Outcome::Success
        }
        fn classify_error(&self, _error: &(dyn std::error::Error + 'static)) -> Outcome {
            Outcome::Success
        }
    }
    for (status, error) in [
        (200, None),
        (302, None),
        (404, Some("404")),
        (503, Some("503")),
    ] {
        let (_guard, captured) = capture();
        let service = SpanLayer::new(Product::Llm)
            .classifier(Lenient)
            .layer(answering(status, Version::HTTP_11, 1));
        let response = service
            .oneshot(Request::new(Full::default()))
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
        let span = captured.only_span("HTTP");
        assert_eq!(span.field("error.type").as_deref(), error, "{status}");
        assert_eq!(
            span.field("otel.status_code").as_deref(),
            error.map(|_| "ERROR"),
            "{status}"
        );
    }
}

#[test]
fn error_type_falls_back_to_other_and_the_description_is_redacted() {
    let (_guard, captured) = capture();
    let mut call = CallSpan::start(
        &Product::Genie,
        Direction::Client,
        &Method::GET,
        &Uri::from_static("http://h/"),
        &HeaderMap::new(),
        &Extensions::new(),
    );
    let error = std::io::Error::other("refused: Authorization: Bearer dapi0123456789abcdef");
    // An outcome with no reason (a lenient classifier): `error.type` is `_OTHER`.
    call.on_error(&error, Outcome::Success);
    let record = call.finish();
    let span = captured.only_span("HTTP");
    assert_eq!(span.field("error.type").as_deref(), Some("_OTHER"));
    assert_eq!(span.field("otel.status_code").as_deref(), Some("ERROR"));
    let description = span.field("otel.status_description").unwrap();
    assert_eq!(Some(description.as_str()), record.error.as_deref());
    assert!(description.starts_with("refused"), "{description}");
    assert!(
        !description.contains("dapi0123456789abcdef"),
        "{description}"
    );
}

#[tokio::test]
async fn server_spans_follow_the_server_conventions() {
    let (_guard, captured) = capture();
    let (records, recorder) = records();
    let inner = tower::service_fn(|request: Request<Empty<Bytes>>| {
        let status = match request.uri().path() {
            "/items/7" => StatusCode::OK,
            "/missing" => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = Response::new(Empty::<Bytes>::new());
        *response.status_mut() = status;
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let service = SpanLayer::new(Product::Agent)
        .direction(Direction::Server)
        .recorder(recorder)
        .layer(inner);
    let peer: SocketAddr = "10.1.2.3:40000".parse().unwrap();
    let mut request = Request::get("/items/7?secret=s3cr3t")
        .header("host", "app.example.com")
        .header("user-agent", "curl/8.0 token=dapi0123456789abcdef")
        .body(Empty::new())
        .unwrap();
    request.extensions_mut().insert(Route::new("/items/{id}"));
    request.extensions_mut().insert(ClientAddress::from(peer));
    service.clone().oneshot(request).await.unwrap();

    let span = captured.only_span("HTTP");
    for (field, value) in [
        ("otel.kind", "server"),
        ("otel.name", "GET /items/{id}"),
        ("http.route", "/items/{id}"),
        ("url.path", "/items/7"),
        ("url.scheme", "http"),
        ("server.address", "app.example.com"),
        ("client.address", "10.1.2.3"),
        ("http.request.method", "GET"),
    ] {
        assert_eq!(
            span.field(field).as_deref(),
            Some(value),
            "{field} in {span:#?}"
        );
    }
    let user_agent = span.field("user_agent.original").unwrap();
    assert!(user_agent.starts_with("curl/8.0"), "{user_agent}");
    assert!(!user_agent.contains("dapi0123456789abcdef"), "{user_agent}");
    for field in ["url.full", "url.template", "error.type", "otel.status_code"] {
        assert_eq!(span.field(field), None, "{field} in {span:#?}");
    }
    assert!(captured.all_text().iter().all(|t| !t.contains("s3cr3t")));

    // 4xx: the client's fault, not an error of the server span; 5xx: an error.
    for (path, error) in [("/missing", None), ("/boom", Some("500"))] {
        captured.clear();
        let request = Request::get(path).body(Empty::new()).unwrap();
        service.clone().oneshot(request).await.unwrap();
        let span = captured.only_span("HTTP");
        assert_eq!(span.field("error.type").as_deref(), error, "{path}");
        assert_eq!(
            span.field("otel.status_code").as_deref(),
            error.map(|_| "ERROR"),
            "{path}"
        );
        assert_eq!(span.field("otel.name").as_deref(), Some("GET"), "{path}");
    }
    let records = records.lock().unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.direction == Direction::Server));
}
