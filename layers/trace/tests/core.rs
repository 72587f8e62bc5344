//! The open call core: the body hook, the public `TracedBody` and `CallSpan` for adapters, and
//! error types passed through unchanged.
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Reply, ReplyBody, TestServer};
use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use kasal_classify::DefaultClassifier;
use kasal_trace::{CallRecord, CallSpan, Direction, OnBodyChunk, SpanLayer, TracedBody};
use kasal_user_agent::Product;
use tower::{Layer, Service, ServiceExt};

type Sink = Arc<Mutex<Vec<CallRecord>>>;

fn sink() -> (Sink, impl kasal_trace::RecordCall) {
    let records: Sink = Arc::default();
    let writer = records.clone();
    (records, move |record| writer.lock().unwrap().push(record))
}

/// What one hook saw of one body: its chunks, and whether `on_finish` ran (and when, relative
/// to the record: the record must not exist yet when it runs).
#[derive(Clone, Debug, Default)]
struct Seen {
    /// The body's size hint (lower bound, exact length) as `on_body_start` saw it.
    size_hint: Option<(u64, Option<u64>)>,
    chunks: Vec<Bytes>,
    finished: usize,
    records_at_finish: Option<usize>,
}

/// A hook with per-call state that reports into a shared log when the call finishes.
#[derive(Clone)]
struct Recorder {
    seen: Seen,
    log: Arc<Mutex<Vec<Seen>>>,
    records: Sink,
}

impl OnBodyChunk<Bytes> for Recorder {
    fn on_body_start(&mut self, size_hint: &http_body::SizeHint) {
        assert!(self.seen.size_hint.is_none() && self.seen.chunks.is_empty());
        self.seen.size_hint = Some((size_hint.lower(), size_hint.exact()));
    }

    fn on_body_chunk(&mut self, chunk: &Bytes, call: &mut CallSpan) {
        self.seen.chunks.push(chunk.clone());
        // The hook may add to the record: the bytes counted so far include this chunk.
        assert!(call.record().response_bytes >= chunk.len() as u64);
    }

    fn on_finish(&mut self, call: &mut CallSpan) {
        self.seen.finished += 1;
        self.seen.records_at_finish = Some(self.records.lock().unwrap().len());
        call.record_mut().route = Some(Arc::from("/set/by/hook"));
        self.log.lock().unwrap().push(self.seen.clone());
    }
}

#[tokio::test]
async fn hook_sees_every_chunk_in_order_and_finishes_once_per_call() {
    let server = TestServer::start(|_, _| {
        Reply::text(200, "").body(ReplyBody::Chunks(
            vec![
                Bytes::from_static(b"data: one\n\n"),
                Bytes::from_static(b"data: two\n\n"),
                Bytes::from_static(b"data: three\n\n"),
            ],
            Duration::from_millis(5),
        ))
    })
    .await;
    let (records, recorder) = sink();
    let log = Arc::new(Mutex::new(Vec::new()));
    let hook = Recorder {
        seen: Seen::default(),
        log: log.clone(),
        records: records.clone(),
    };
    let mut client = SpanLayer::new(Product::Llm)
        .recorder(recorder)
        .on_body_chunk(hook)
        .layer(common::client::<Empty<Bytes>>());

    for _ in 0..2 {
        let request = Request::get(server.url("/stream"))
            .body(Empty::new())
            .unwrap();
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"data: one\n\ndata: two\n\ndata: three\n\n");
    }

    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2, "one on_finish per call");
    for (call, seen) in log.iter().enumerate() {
        // A fresh clone per call: each saw only its own body's chunks.
        let joined: Vec<u8> = seen.chunks.iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(joined, b"data: one\n\ndata: two\n\ndata: three\n\n");
        assert_eq!(seen.finished, 1);
        // A chunked body: its length was not known before its chunks.
        assert_eq!(seen.size_hint, Some((0, None)));
        // Called just before the record was taken.
        assert_eq!(seen.records_at_finish, Some(call));
    }
    let records = records.lock().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].route.as_deref(), Some("/set/by/hook"));
    assert_eq!(records[0].response_bytes, 35);
}

#[tokio::test]
async fn hook_is_told_the_length_of_a_body_that_has_one() {
    let server = TestServer::start(|_, _| Reply::text(200, "hello")).await;
    let (records, recorder) = sink();
    let log = Arc::new(Mutex::new(Vec::new()));
    let hook = Recorder {
        seen: Seen::default(),
        log: log.clone(),
        records,
    };
    let mut client = SpanLayer::new(Product::Llm)
        .recorder(recorder)
        .on_body_chunk(hook)
        .layer(common::client::<Empty<Bytes>>());
    let request = Request::get(server.url("/hello"))
        .body(Empty::new())
        .unwrap();
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].size_hint, Some((5, Some(5))), "Content-Length: 5");
}

#[tokio::test]
async fn closure_hook_counts_chunks_through_the_layer() {
    let server = TestServer::start(|_, _| Reply::text(200, "hello")).await;
    let (records, recorder) = sink();
    let chunks = Arc::new(Mutex::new(0usize));
    let counter = chunks.clone();
    let mut client = SpanLayer::new(Product::Genie)
        .recorder(recorder)
        .on_body_chunk(move |chunk: &Bytes, _call: &mut CallSpan| {
            *counter.lock().unwrap() += chunk.len();
        })
        .layer(common::client::<Empty<Bytes>>());
    let request = Request::get(server.url("/")).body(Empty::new()).unwrap();
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(*chunks.lock().unwrap(), 5);
    assert_eq!(records.lock().unwrap().len(), 1);
}

/// A hook that only notes `on_finish`, for the error and drop paths.
#[derive(Clone)]
struct Finishes(Arc<Mutex<usize>>);

impl OnBodyChunk<Bytes> for Finishes {
    fn on_body_chunk(&mut self, _chunk: &Bytes, _call: &mut CallSpan) {}

    fn on_finish(&mut self, _call: &mut CallSpan) {
        *self.0.lock().unwrap() += 1;
    }
}

#[tokio::test]
async fn on_finish_runs_on_body_error_and_on_drop() {
    // A body that fails after one chunk.
    let finishes = Arc::new(Mutex::new(0));
    let (records, recorder) = sink();
    let failing = tower::service_fn(|_request: Request<Empty<Bytes>>| {
        let stream = futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"par"))),
            Err(std::io::Error::other("cut")),
        ]);
        std::future::ready(Ok::<_, Infallible>(Response::new(StreamBody::new(stream))))
    });
    let mut service = SpanLayer::new(Product::Llm)
        .recorder(recorder.clone())
        .on_body_chunk(Finishes(finishes.clone()))
        .layer(failing);
    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Empty::new()))
        .await
        .unwrap();
    let error: std::io::Error = response.into_body().collect().await.unwrap_err();
    assert_eq!(error.to_string(), "cut");
    assert_eq!(*finishes.lock().unwrap(), 1);
    assert!(records.lock().unwrap()[0].error.is_some());

    // A body dropped before its end.
    let server = TestServer::start(|_, _| {
        Reply::text(200, "").body(ReplyBody::Chunks(
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            Duration::from_millis(50),
        ))
    })
    .await;
    let mut client = SpanLayer::new(Product::Llm)
        .recorder(recorder)
        .on_body_chunk(Finishes(finishes.clone()))
        .layer(common::client::<Empty<Bytes>>());
    let request = Request::get(server.url("/")).body(Empty::new()).unwrap();
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    drop(response);
    assert_eq!(*finishes.lock().unwrap(), 2);
    assert_eq!(records.lock().unwrap().len(), 2);
}

/// The adapter path (the reqwest middleware, the server layer): no tower, the same core.
#[tokio::test]
async fn an_adapter_drives_call_span_and_traced_body_directly() {
    let (records, recorder) = sink();
    let classifier = DefaultClassifier::new();
    let uri = Uri::from_static("https://example.com/api/2.0/jobs/list?token=secret");

    // A response: classified, body wrapped with a hook, recorded at its end.
    let mut call = CallSpan::start(
        &Product::Jobs,
        Direction::Client,
        &Method::GET,
        &uri,
        &HeaderMap::new(),
        &Extensions::new(),
    );
    call.classify_response(
        &classifier,
        StatusCode::SERVICE_UNAVAILABLE,
        &HeaderMap::new(),
        &Extensions::new(),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let writer = seen.clone();
    let body = TracedBody::with_on_body_chunk(
        Full::new(Bytes::from_static(b"busy")),
        call,
        classifier.clone(),
        recorder.clone(),
        move |chunk: &Bytes, _call: &mut CallSpan| writer.lock().unwrap().push(chunk.clone()),
    );
    assert!(body.call().is_some());
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"busy");
    assert_eq!(seen.lock().unwrap().len(), 1);

    // An error without a response: one function classifies, records on the span, finishes.
    let call = CallSpan::start(
        &Product::Jobs,
        Direction::Client,
        &Method::GET,
        &uri,
        &HeaderMap::new(),
        &Extensions::new(),
    );
    let error = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    kasal_trace::RecordCall::record_call(&recorder, call.fail(&classifier, &error));

    let records = records.lock().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].status, Some(StatusCode::SERVICE_UNAVAILABLE));
    assert!(records[0].outcome.is_retryable());
    assert_eq!(records[0].response_bytes, 4);
    assert_eq!(records[1].status, None);
    assert!(
        records[1].outcome.is_retryable(),
        "{:?}",
        records[1].outcome
    );
    assert_eq!(records[1].error.as_deref(), Some("timed out"));
}

#[tokio::test]
async fn an_empty_body_is_recorded_when_wrapped() {
    let (records, recorder) = sink();
    let call = CallSpan::start(
        &Product::Jobs,
        Direction::Client,
        &Method::HEAD,
        &Uri::from_static("http://h/"),
        &HeaderMap::new(),
        &Extensions::new(),
    );
    let body = TracedBody::new(
        Empty::<Bytes>::new(),
        call,
        DefaultClassifier::new(),
        recorder,
    );
    assert_eq!(records.lock().unwrap().len(), 1);
    assert!(body.call().is_none());
}

/// Compile-level: the layer keeps the inner service's error type and the body's error type.
fn assert_infallible<S, B>(_service: &S)
where
    S: Service<Request<B>, Error = Infallible>,
{
}

#[tokio::test]
async fn span_layer_keeps_an_infallible_service_infallible() {
    let inner = tower::service_fn(|_request: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let mut service = SpanLayer::new(Product::Genie).layer(inner);
    assert_infallible::<_, Empty<Bytes>>(&service);
    let response: Response<TracedBody<Full<Bytes>, ()>> = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Empty::new()))
        .await
        .unwrap();
    // The body's error is still `Infallible` too.
    let collected: Result<_, Infallible> = response.into_body().collect().await;
    assert_eq!(&collected.unwrap().to_bytes()[..], b"ok");
}

/// Compile-level: what adapters need to hand the body on (`reqwest::Body::wrap` wants
/// `Send + Sync + 'static`; axum wants `Send`).
#[test]
fn traced_body_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<TracedBody<Full<Bytes>, ()>>();
    assert_send_sync::<TracedBody<Full<Bytes>, (), DefaultClassifier, Finishes>>();
    assert_send_sync::<CallSpan>();
}
