//! RetryLayer and CircuitBreakerLayer over a real hyper-util client against a scripted server.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Reply, TestServer};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use kasal_classify::{
    Attempts, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitOpen, CircuitState,
    Jitter, RetryLayer, RetryPolicy,
};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// Fast retries: the tests assert counts and ordering, not the default timings.
fn quick_retries() -> RetryLayer {
    RetryLayer::new(
        RetryPolicy::new()
            .base_delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(20)),
    )
}

fn get<B: Default>(server: &TestServer) -> Request<B> {
    Request::get(server.url("/api/2.0/jobs/list"))
        .body(B::default())
        .unwrap()
}

fn attempts<B>(res: &Response<B>) -> Option<u32> {
    res.extensions().get::<Attempts>().map(|a| a.0)
}

#[tokio::test]
async fn retry_makes_one_plus_three_attempts_on_503_and_returns_the_last() {
    let server = TestServer::start(|_, n| Reply::text(503, &format!("attempt {n}"))).await;
    let mut svc = ServiceBuilder::new()
        .layer(quick_retries())
        .service(common::client::<Full<Bytes>>());

    let res = svc.ready().await.unwrap().call(get(&server)).await.unwrap();

    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&res), Some(4));
    assert_eq!(server.hits(), 4);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"attempt 3", "the last response is returned");
}

#[tokio::test]
async fn retry_does_not_retry_403() {
    let server = TestServer::always(403).await;
    let mut svc = ServiceBuilder::new()
        .layer(quick_retries())
        .service(common::client::<Full<Bytes>>());

    let res = svc.ready().await.unwrap().call(get(&server)).await.unwrap();

    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(attempts(&res), Some(1));
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn retry_waits_the_retry_after_on_429() {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let server = TestServer::start(move |_, n| {
        seen.lock().unwrap().push(Instant::now());
        if n == 0 {
            Reply::status(429).header("retry-after", "1")
        } else {
            Reply::status(200)
        }
    })
    .await;
    // Backoff alone would wait at most 5 ms: only Retry-After explains a 1 s gap.
    let layer = RetryLayer::new(
        RetryPolicy::new()
            .base_delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(5))
            .max_retry_after(Duration::from_secs(2)),
    );
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(common::client::<Full<Bytes>>());

    let res = svc.ready().await.unwrap().call(get(&server)).await.unwrap();

    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(attempts(&res), Some(2));
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_secs(1),
        "second attempt after {gap:?}"
    );
    assert!(gap < Duration::from_secs(2), "waited {gap:?}");
}

#[tokio::test]
async fn retry_sends_a_streaming_body_once() {
    let server = TestServer::always(503).await;
    let mut svc = ServiceBuilder::new()
        .layer(quick_retries())
        .service(common::client::<BoxBody<Bytes, Infallible>>());
    let chunks = futures_util::stream::iter(
        [&b"part one, "[..], b"part two"]
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from_static(c)))),
    );
    let req = Request::post(server.url("/api/2.0/dbfs/put"))
        .body(StreamBody::new(chunks).boxed())
        .unwrap();

    let res = svc.ready().await.unwrap().call(req).await.unwrap();

    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&res), Some(1));
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], b"part one, part two");
}

#[tokio::test]
async fn retry_retries_connection_refused_then_surfaces_the_error() {
    // Bind then drop: nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let mut svc = ServiceBuilder::new()
        .layer(quick_retries())
        .map_request(move |req: Request<Full<Bytes>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            req
        })
        .service(common::client::<Full<Bytes>>());
    let mut req = Request::get(format!("http://127.0.0.1:{port}/"))
        .body(Full::default())
        .unwrap();
    let counter = kasal_classify::AttemptCounter::new();
    req.extensions_mut().insert(counter.clone());

    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();

    assert!(err.is_connect(), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // No response carries `Attempts` on an error: the counter in the request does.
    assert_eq!(counter.get(), 4);
}

fn breaker(open_for: Duration) -> CircuitBreaker {
    CircuitBreaker::new(CircuitBreakerConfig::new().open_for(open_for))
}

type Guarded = kasal_classify::CircuitBreakerService<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

fn guarded(breaker: &CircuitBreaker) -> Guarded {
    ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(common::client::<Full<Bytes>>())
}

async fn call(svc: &mut Guarded, server: &TestServer) -> Result<Response<Incoming>, BoxError> {
    svc.ready().await?.call(get(server)).await
}

fn is_open(result: &Result<Response<Incoming>, BoxError>, server: &TestServer) -> bool {
    match result {
        Err(err) => err
            .downcast_ref::<CircuitOpen>()
            .is_some_and(|open| *open.host == server.authority()),
        Ok(_) => false,
    }
}

#[tokio::test]
async fn breaker_opens_after_five_failures_probes_once_and_closes_after_two_successes() {
    let server = TestServer::start(|_, n| match n {
        0..5 => Reply::status(500),
        // The first probe is slow so a second caller arrives while it is in flight.
        5 => Reply::status(200).delayed(Duration::from_millis(300)),
        _ => Reply::status(200),
    })
    .await;
    let breaker = breaker(Duration::from_millis(200));
    let mut svc = guarded(&breaker);
    let host = server.authority();

    for _ in 0..5 {
        let res = call(&mut svc, &server).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(breaker.state(&host), CircuitState::Open);
    let rejected = call(&mut svc, &server).await;
    assert!(is_open(&rejected, &server), "{:?}", rejected.err());
    assert_eq!(
        server.hits(),
        5,
        "an open circuit does not reach the server"
    );

    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(breaker.state(&host), CircuitState::HalfOpen);
    let mut probe_svc = svc.clone();
    let probe = {
        let req = get(&server);
        tokio::spawn(async move { probe_svc.ready().await?.call(req).await })
    };
    server.wait_for(6, Duration::from_secs(5)).await;
    let concurrent = call(&mut svc, &server).await;
    assert!(is_open(&concurrent, &server), "one probe at a time");
    assert_eq!(server.hits(), 6);

    let probe = probe.await.unwrap().unwrap();
    assert_eq!(probe.status(), StatusCode::OK);
    assert_eq!(
        breaker.state(&host),
        CircuitState::HalfOpen,
        "one success is not enough"
    );

    let second = call(&mut svc, &server).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(breaker.state(&host), CircuitState::Closed);
    let (a, b) = tokio::join!(
        svc.clone().oneshot(get(&server)),
        svc.clone().oneshot(get(&server))
    );
    assert_eq!(a.unwrap().status(), StatusCode::OK);
    assert_eq!(b.unwrap().status(), StatusCode::OK);
    assert_eq!(server.hits(), 9);
}

#[tokio::test]
async fn breaker_reopens_on_a_half_open_failure() {
    let server = TestServer::always(500).await;
    let breaker = breaker(Duration::from_millis(150));
    let mut svc = guarded(&breaker);
    let host = server.authority();

    for _ in 0..5 {
        call(&mut svc, &server).await.unwrap();
    }
    assert!(is_open(&call(&mut svc, &server).await, &server));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let probe = call(&mut svc, &server).await.unwrap();
    assert_eq!(probe.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(breaker.state(&host), CircuitState::Open);
    assert!(is_open(&call(&mut svc, &server).await, &server));
    assert_eq!(server.hits(), 6);
}

#[tokio::test]
async fn breaker_ignores_client_errors() {
    let server = TestServer::start(|_, n| match n % 2 {
        0 => Reply::status(500),
        _ => Reply::status(404),
    })
    .await;
    let breaker = breaker(Duration::from_secs(60));
    let mut svc = guarded(&breaker);

    // 500, 404, 500, 404, ...: the 404s neither count nor reset, so the fifth 500 opens it.
    for _ in 0..9 {
        call(&mut svc, &server).await.unwrap();
    }
    assert_eq!(breaker.state(&server.authority()), CircuitState::Open);
    assert!(is_open(&call(&mut svc, &server).await, &server));
}

#[tokio::test]
async fn retry_over_breaker_stops_at_circuit_open() {
    let server = TestServer::always(503).await;
    let breaker = breaker(Duration::from_secs(60));
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryPolicy::new()
                .base_delay(Duration::from_millis(5))
                .jitter(Jitter::None),
        ))
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(common::client::<Full<Bytes>>());

    // 4 failures: below the threshold, every attempt reaches the server.
    let res = svc.ready().await.unwrap().call(get(&server)).await.unwrap();
    assert_eq!(attempts(&res), Some(4));
    assert_eq!(server.hits(), 4);

    // The 5th failure opens the circuit; the retry then meets CircuitOpen, which is terminal.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server))
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(server.hits(), 5);
}

#[tokio::test]
async fn trace_layer_reports_outcomes_through_the_adapter() {
    use kasal_classify::{DefaultClassifier, Outcome, Reason, TowerHttpClassifier};
    use tower_http::trace::TraceLayer;

    let server = TestServer::start(|_, n| Reply::status(if n == 0 { 200 } else { 503 })).await;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = failures.clone();
    let trace = TraceLayer::new(TowerHttpClassifier::new(DefaultClassifier::new())).on_failure(
        move |class: Outcome, _latency: Duration, _span: &tracing::Span| {
            seen.lock().unwrap().push(class);
        },
    );
    let mut svc = ServiceBuilder::new()
        .layer(trace)
        .service(common::client::<Full<Bytes>>());

    let ok = svc.ready().await.unwrap().call(get(&server)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let unavailable = svc.ready().await.unwrap().call(get(&server)).await.unwrap();
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);

    assert_eq!(
        *failures.lock().unwrap(),
        [Outcome::Retryable {
            reason: Reason::Status(StatusCode::SERVICE_UNAVAILABLE),
            retry_after: None
        }]
    );
}
