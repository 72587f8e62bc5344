//! The call span and the call record: fields, outcomes, errors and streamed bodies, against real
//! local servers and in-process services.
#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/spans.rs"]
mod spans;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Reply, ReplyBody, TestServer};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use kasal_classify::{Attempts, Outcome, Reason};
use kasal_trace::{CallRecord, Direction, OperationId, Route, SpanLayer};
use kasal_user_agent::Product;
use spans::{Captured, SpanCapture, SpanData};
use tower::{Layer, Service, ServiceExt};

/// A recorder that keeps every call.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<CallRecord>>>);

impl Records {
    fn layer(
        &self,
        product: Product,
    ) -> SpanLayer<kasal_classify::DefaultClassifier, impl kasal_trace::RecordCall> {
        let sink = self.0.clone();
        SpanLayer::new(product).recorder(move |record| sink.lock().unwrap().push(record))
    }

    fn all(&self) -> Vec<CallRecord> {
        self.0.lock().unwrap().clone()
    }

    fn only(&self) -> CallRecord {
        let all = self.all();
        assert_eq!(all.len(), 1, "records: {all:#?}");
        all.into_iter().next().unwrap()
    }
}

fn capture() -> (tracing::dispatcher::DefaultGuard, Captured) {
    let (dispatch, captured) = SpanCapture::dispatch();
    (tracing::dispatcher::set_default(&dispatch), captured)
}

fn call_span(captured: &Captured) -> SpanData {
    captured.only_span("HTTP")
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

/// Calls `url` on the server through a traced hyper-util client and reads the body to its end.
async fn call_server(records: &Records, request: Request<Empty<Bytes>>) -> (StatusCode, Bytes) {
    let mut client = records
        .layer(Product::Genie)
        .layer(common::client::<Empty<Bytes>>());
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

#[tokio::test]
async fn ok_200_has_every_field() {
    let (_guard, captured) = capture();
    let server = TestServer::start(|_, _| Reply::text(200, "hello")).await;
    let records = Records::default();
    let mut request = get(&server.url("/api/2.0/genie/spaces/s1?token=dapi0123456789abc&page=2"));
    request
        .extensions_mut()
        .insert(Route::new("/api/2.0/genie/spaces/{id}"));
    request.extensions_mut().insert(OperationId::new("op-1"));

    let (status, body) = call_server(&records, request).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));

    let span = call_span(&captured);
    let port = server.addr.port().to_string();
    let url =
        format!("http://127.0.0.1:{port}/api/2.0/genie/spaces/s1?token=REDACTED&page=REDACTED");
    for (field, value) in [
        ("otel.kind", "client"),
        ("otel.name", "GET /api/2.0/genie/spaces/{id}"),
        ("http.request.method", "GET"),
        ("url.template", "/api/2.0/genie/spaces/{id}"),
        ("url.full", url.as_str()),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
        ("kasal.product", "genie"),
        ("kasal.outcome", "success"),
        ("kasal.operation_id", "op-1"),
        ("execution.context", "service"),
        ("execution.obo_dev_fallback", "false"),
    ] {
        assert_eq!(
            span.field(field).as_deref(),
            Some(value),
            "{field} in {span:#?}"
        );
    }
    // Unset on success, per the OTel HTTP conventions; no caller outside a user context; no
    // resend count on a call sent once; server-side fields and opt-in body sizes absent.
    for field in [
        "error.type",
        "otel.status_code",
        "otel.status_description",
        "caller.id",
        "kasal.body_cut_short",
        "http.request.resend_count",
        "http.request.method_original",
        "http.route",
        "url.path",
        "url.scheme",
        "user_agent.original",
        "client.address",
        "http.request.body.size",
        "http.response.body.size",
    ] {
        assert_eq!(span.field(field), None, "{field} in {span:#?}");
    }
    assert_eq!(span.target, "kasal_trace");
    assert!(span.closed, "the span closes when the body ends");
    assert!(
        captured
            .all_text()
            .iter()
            .all(|t| !t.contains("dapi0123456789abc"))
    );

    let record = records.only();
    assert_eq!(record.direction, Direction::Client);
    assert_eq!(record.product, Product::Genie);
    assert_eq!(record.method, http::Method::GET);
    assert_eq!(
        record.host.as_ref().map(|h| h.as_str()),
        Some(server.authority().as_str())
    );
    assert_eq!(record.route.as_deref(), Some("/api/2.0/genie/spaces/{id}"));
    assert_eq!(record.status, Some(StatusCode::OK));
    assert_eq!(record.outcome, Outcome::Success);
    assert_eq!((record.attempts, record.response_bytes), (1, 5));
    assert_eq!(record.operation_id, Some(OperationId::new("op-1")));
    assert_eq!(record.error, None);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn retryable_429_and_terminal_403() {
    for (status, outcome, reason) in [
        (
            429,
            "retryable",
            Reason::Status(StatusCode::TOO_MANY_REQUESTS),
        ),
        (403, "terminal", Reason::Status(StatusCode::FORBIDDEN)),
    ] {
        let (_guard, captured) = capture();
        let server = TestServer::start(move |_, _| Reply::text(status, "no")).await;
        let records = Records::default();
        let (got, _) = call_server(&records, get(&server.url("/x"))).await;
        assert_eq!(got.as_u16(), status);

        let span = call_span(&captured);
        let code = status.to_string();
        for (field, value) in [
            ("http.response.status_code", code.as_str()),
            ("error.type", code.as_str()),
            ("otel.status_code", "ERROR"),
            ("kasal.outcome", outcome),
            ("otel.name", "GET"),
        ] {
            assert_eq!(
                span.field(field).as_deref(),
                Some(value),
                "{field} in {span:#?}"
            );
        }
        assert!(span.closed);
        let record = records.only();
        assert_eq!(record.outcome.reason(), Some(&reason));
        assert_eq!(record.outcome.as_str(), outcome);
        assert_eq!(record.status.map(|s| s.as_u16()), Some(status));
        assert_eq!(record.response_bytes, 2);
    }
}

#[tokio::test]
async fn connection_refused_is_recorded_once_with_error_type() {
    let (_guard, captured) = capture();
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let records = Records::default();
    let mut client = records
        .layer(Product::Jobs)
        .layer(common::client::<Empty<Bytes>>());
    let error = client
        .ready()
        .await
        .unwrap()
        .call(get(&format!(
            "http://127.0.0.1:{closed_port}/api?password=hunter2"
        )))
        .await
        .expect_err("nothing listens there");
    // The inner error comes back unchanged: still hyper-util's own type.
    let inner: &hyper_util::client::legacy::Error = &error;
    assert!(inner.is_connect());

    let span = call_span(&captured);
    for (field, value) in [
        ("error.type", "connect"),
        ("otel.status_code", "ERROR"),
        ("kasal.outcome", "retryable"),
        ("kasal.product", "jobs"),
        ("server.port", closed_port.to_string().as_str()),
    ] {
        assert_eq!(
            span.field(field).as_deref(),
            Some(value),
            "{field} in {span:#?}"
        );
    }
    assert_eq!(span.field("http.response.status_code"), None);
    assert_eq!(span.field("http.request.resend_count"), None, "sent once");
    assert!(span.closed);
    let record = records.only();
    assert_eq!(record.status, None);
    assert_eq!(record.outcome.reason(), Some(&Reason::Connect));
    let message = record.error.as_deref().unwrap_or_default();
    assert!(message.contains("onnection refused"), "{message}");
    // The span status description is the same redacted message.
    assert_eq!(
        span.field("otel.status_description").as_deref(),
        Some(message)
    );
    assert!(captured.all_text().iter().all(|t| !t.contains("hunter2")));
}

/// An in-process service answering 200 with `body`, and the `Attempts` a retry layer would set.
fn answering<B: Clone + Send + 'static>(
    body: B,
    attempts: Option<u32>,
) -> impl Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible, Future: Send> + Clone
{
    tower::service_fn(move |_request: Request<Empty<Bytes>>| {
        let mut response = Response::new(body.clone());
        if let Some(n) = attempts {
            response.extensions_mut().insert(Attempts(n));
        }
        tracing::info!("inner service answering");
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

#[tokio::test]
async fn resend_count_comes_from_attempts_extension() {
    let (_guard, captured) = capture();
    let records = Records::default();
    let mut service = records
        .layer(Product::Llm)
        .layer(answering(Full::new(Bytes::from_static(b"ok")), Some(3)));
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(
            "https://user:pw@ws.example.com/serving-endpoints/e/invocations",
        ))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();

    let span = call_span(&captured);
    assert_eq!(
        span.field("http.request.resend_count").as_deref(),
        Some("2")
    );
    assert_eq!(
        span.field("server.address").as_deref(),
        Some("ws.example.com")
    );
    assert_eq!(span.field("server.port").as_deref(), Some("443"));
    assert_eq!(
        span.field("url.full").as_deref(),
        Some("https://ws.example.com/serving-endpoints/e/invocations")
    );
    let record = records.only();
    assert_eq!(record.attempts, 3);
    assert_eq!(
        record.host.as_ref().map(|h| h.as_str()),
        Some("ws.example.com")
    );
}

#[tokio::test]
async fn inner_service_events_are_children_of_the_call_span_whose_parent_is_current() {
    let (_guard, captured) = capture();
    let records = Records::default();
    let mut service = records
        .layer(Product::Agent)
        .layer(answering(Full::new(Bytes::new()), None));
    let outer = tracing::info_span!("agent_run");
    let response = {
        let _entered = outer.enter();
        service
            .ready()
            .await
            .unwrap()
            .call(get("http://h/"))
            .await
            .unwrap()
    };
    drop(response);
    let outer = captured.only_span("agent_run");
    let span = call_span(&captured);
    assert_eq!(span.parent, Some(outer.index));
    let events = captured.events_with_message("inner service answering");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].parent, Some(span.index));
    // An empty body ends the call at once.
    assert!(span.closed);
    assert_eq!(records.only().response_bytes, 0);
}

type Chunks = tokio::sync::mpsc::UnboundedSender<Bytes>;

/// A service whose body streams what the test sends, logging inside each poll that produces.
fn streaming() -> (
    impl Service<
        Request<Empty<Bytes>>,
        Response = Response<impl http_body::Body<Data = Bytes, Error = Infallible>>,
        Error = Infallible,
    >,
    Chunks,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let service = tower::service_fn(move |_request: Request<Empty<Bytes>>| {
        let rx = rx.lock().unwrap().take().expect("one call");
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            tracing::info!(len = chunk.len(), "producing chunk");
            Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
        });
        std::future::ready(Ok::<_, Infallible>(Response::new(StreamBody::new(
            Box::pin(stream),
        ))))
    });
    (service, tx)
}

#[tokio::test]
async fn streamed_body_keeps_the_span_open_and_records_once_at_the_end() {
    let (_guard, captured) = capture();
    let records = Records::default();
    let (inner, chunks) = streaming();
    let mut service = records.layer(Product::Llm).body_sizes(true).layer(inner);
    let consumer = tracing::info_span!("consumer");
    let _in_consumer = consumer.enter();

    // Brackets the whole call: the recorded latency must fall inside it.
    let call_started = Instant::now();
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get("http://h/stream"))
        .await
        .unwrap();
    let mut body = response.into_body();

    chunks.send(Bytes::from_static(b"abc")).unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "abc");
    let span = call_span(&captured);
    assert!(!span.closed, "open while the body is read");
    assert!(records.all().is_empty(), "not recorded before the end");

    tracing::info!("consumer between polls");
    tokio::time::sleep(Duration::from_millis(50)).await; // the stream takes its time
    chunks.send(Bytes::from_static(b"defg")).unwrap();
    drop(chunks);
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "defg");
    assert!(body.frame().await.is_none());
    let call_bracket = call_started.elapsed();

    let span = call_span(&captured);
    assert!(span.closed, "closed once the body ended");
    assert_eq!(span.field("http.response.body.size").as_deref(), Some("7"));
    let produced = captured.events_with_message("producing chunk");
    assert_eq!(produced.len(), 2);
    assert!(
        produced.iter().all(|e| e.parent == Some(span.index)),
        "{produced:#?}"
    );
    // The caller's own code between polls stays in the caller's span.
    let between = captured.events_with_message("consumer between polls");
    assert_eq!(
        between[0].parent,
        Some(captured.only_span("consumer").index)
    );

    drop(body);
    let record = records.only();
    assert_eq!(record.response_bytes, 7);
    // At least the time the stream took, at most the time around the whole call.
    assert!(
        record.latency >= Duration::from_millis(50),
        "{:?}",
        record.latency
    );
    assert!(
        record.latency <= call_bracket,
        "{:?} > {call_bracket:?}",
        record.latency
    );
    assert_eq!(record.outcome, Outcome::Success);
}

#[tokio::test]
async fn dropping_the_body_early_closes_the_span_and_records_once() {
    let (_guard, captured) = capture();
    let records = Records::default();
    let (inner, chunks) = streaming();
    let mut service = records.layer(Product::Llm).layer(inner);
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get("http://h/stream"))
        .await
        .unwrap();
    let mut body = response.into_body();
    chunks.send(Bytes::from_static(b"abc")).unwrap();
    body.frame().await.unwrap().unwrap();
    assert!(!call_span(&captured).closed);

    drop(body);
    let span = call_span(&captured);
    assert!(span.closed, "dropping the body closes the span");
    assert_eq!(span.field("kasal.body_cut_short").as_deref(), Some("true"));
    assert_eq!(span.field("kasal.outcome").as_deref(), Some("success"));
    let record = records.only();
    assert_eq!(
        (record.response_bytes, record.status),
        (3, Some(StatusCode::OK))
    );
    drop(chunks);
    assert_eq!(records.all().len(), 1, "recorded once");
}

#[tokio::test]
async fn streamed_body_over_the_network() {
    let (_guard, captured) = capture();
    let pause = Duration::from_millis(30);
    let server = TestServer::start(move |_, _| {
        Reply::status(200).body(ReplyBody::Chunks(
            vec![Bytes::from("ab"), Bytes::from("cd"), Bytes::from("ef")],
            pause,
        ))
    })
    .await;
    let records = Records::default();
    let mut client = records
        .layer(Product::Mcp)
        .layer(common::client::<Empty<Bytes>>());
    let response = client
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/sse")))
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            read.extend_from_slice(&data);
            if read.len() < 6 {
                assert!(!call_span(&captured).closed, "open mid-stream");
            }
        }
    }
    assert_eq!(read, b"abcdef");
    assert!(call_span(&captured).closed);
    let record = records.only();
    assert_eq!(record.response_bytes, 6);
    assert!(record.latency >= pause * 3);
}

#[tokio::test]
async fn body_error_is_classified_and_recorded_once() {
    let (_guard, captured) = capture();
    let records = Records::default();
    let inner = tower::service_fn(|_request: Request<Empty<Bytes>>| {
        let stream = futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"par"))),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "reset with Bearer abc.def",
            )),
        ]);
        std::future::ready(Ok::<_, Infallible>(Response::new(StreamBody::new(stream))))
    });
    let mut service = records.layer(Product::Llm).layer(inner);
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get("http://h/"))
        .await
        .unwrap();
    let error = response
        .into_body()
        .collect()
        .await
        .expect_err("body fails");
    // The body's own error type, unchanged.
    let error: std::io::Error = error;
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);

    let span = call_span(&captured);
    assert_eq!(span.field("error.type").as_deref(), Some("connect"));
    assert_eq!(span.field("otel.status_code").as_deref(), Some("ERROR"));
    assert_eq!(span.field("kasal.outcome").as_deref(), Some("retryable"));
    assert!(span.closed);
    let record = records.only();
    assert_eq!(record.status, Some(StatusCode::OK));
    assert_eq!(record.response_bytes, 3);
    assert_eq!(record.error.as_deref(), Some("reset with Bearer REDACTED"));
}

#[tokio::test]
async fn server_spans_treat_4xx_as_not_an_error() {
    let (_guard, captured) = capture();
    let inner = tower::service_fn(|_request: Request<Empty<Bytes>>| {
        let mut response = Response::new(Empty::<Bytes>::new());
        *response.status_mut() = StatusCode::NOT_FOUND;
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let records = Records::default();
    let mut service = records
        .layer(Product::Deployment)
        .direction(Direction::Server)
        .layer(inner);
    let request = Request::get("/api/items?id=7")
        .header("host", "app.example.com:8080")
        .body(Empty::new())
        .unwrap();
    drop(service.ready().await.unwrap().call(request).await.unwrap());
    let span = call_span(&captured);
    assert_eq!(span.field("otel.kind").as_deref(), Some("server"));
    assert_eq!(span.field("kasal.outcome").as_deref(), Some("terminal"));
    assert_eq!(
        span.field("server.address").as_deref(),
        Some("app.example.com")
    );
    assert_eq!(span.field("server.port").as_deref(), Some("8080"));
    // Server spans: the path and scheme, never the query; no `url.full`.
    assert_eq!(span.field("url.path").as_deref(), Some("/api/items"));
    assert_eq!(span.field("url.scheme").as_deref(), Some("http"));
    assert_eq!(span.field("url.full"), None);
    assert_eq!(span.field("error.type"), None);
    assert_eq!(span.field("otel.status_code"), None);
    assert_eq!(records.only().direction, Direction::Server);
}
