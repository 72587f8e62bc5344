//! `SpanLayer` on a real axum `Router`: it keeps the router's `Infallible` error and axum's body
//! error, so `Router::layer` and `Router::route_layer` accept it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use http_body_util::BodyExt;
use kasal_trace::{CallRecord, Direction, SpanLayer};
use kasal_user_agent::Product;
use tower::{Service, ServiceExt};

fn server_layer(
    records: &Arc<Mutex<Vec<CallRecord>>>,
) -> SpanLayer<kasal_classify::DefaultClassifier, impl kasal_trace::RecordCall> {
    let sink = records.clone();
    SpanLayer::new(Product::Agent)
        .direction(Direction::Server)
        .recorder(move |record| sink.lock().unwrap().push(record))
}

/// Compile-level: what axum serves must be an infallible service.
fn assert_infallible<S: Service<Request<Body>, Error = Infallible>>(_service: &S) {}

#[tokio::test]
async fn router_layer_and_route_layer_accept_span_layer() {
    let records = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/ok", get(|| async { "hello" }))
        .route(
            "/boom",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .layer(server_layer(&records));
    assert_infallible(&app);

    for (path, status) in [
        ("/ok", StatusCode::OK),
        ("/boom", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status);
        response.into_body().collect().await.unwrap();
    }
    let routed = Router::new()
        .route("/only", get(|| async { "routed" }))
        .route_layer(server_layer(&records));
    let request = Request::get("/only").body(Body::empty()).unwrap();
    let response = routed.oneshot(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"routed");

    let records = records.lock().unwrap();
    let statuses: Vec<_> = records.iter().map(|r| r.status.unwrap().as_u16()).collect();
    assert_eq!(statuses, [200, 500, 200]);
    assert!(records.iter().all(|r| r.direction == Direction::Server));
    // A handler's 500 is a failed server call.
    assert!(!records[1].outcome.is_success());
    assert_eq!(records[1].outcome.error_type(), Some("500"));
}
