//! A hyper-util client wrapped in `TelemetryLayer`, calling a local server, with the pipeline
//! exporting JSON lines to stdout. Runs offline:
//!
//! ```sh
//! cargo run --example hyper_client
//! ```
//!
//! The local server answers `503` once and then `200`: the first call is retried inside its span,
//! and the operation summary printed at shutdown says `"calls":2,"retries":1`. The bearer token
//! sent with the calls appears nowhere in the output.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kasal_telemetry::classify::RetryPolicy;
use kasal_telemetry::trace::{ExecutionContext, OperationId, Route};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{BoxError, JsonLinesExporter, Telemetry, TelemetryLayer};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = serve_locally().await?;

    // One pipeline per process; JSON lines on stdout instead of the Databricks endpoint.
    let telemetry = Telemetry::builder()
        .exporter(JsonLinesExporter::stdout())
        .build();
    let client = ServiceBuilder::new()
        .layer(
            TelemetryLayer::new(Product::VectorSearch, telemetry.clone()).retry(RetryPolicy::new()),
        )
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    // A user's operation: its calls fold into one summary (the first one is retried).
    let operation = OperationId::new("demo-query-1");
    let context = ExecutionContext::user("alice@example.com").with_operation_id(operation.clone());
    for _ in 0..2 {
        let mut request = Request::post(format!(
            "http://{addr}/api/2.0/vector-search/indexes/demo/query"
        ))
        .header("authorization", "Bearer dapi-never-exported")
        .body(Full::new(Bytes::from_static(br#"{"query_text":"hello"}"#)))?;
        request
            .extensions_mut()
            .insert(Route::new("/api/2.0/vector-search/indexes/{name}/query"));
        let response = context
            .clone()
            .scope(async { client.clone().oneshot(request).await })
            .await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        eprintln!("app saw {status} {}", String::from_utf8_lossy(&body));
    }
    telemetry.complete_operation(&operation);

    // Plain calls (no operation) fold into per-window rollups.
    for _ in 0..3 {
        let request = Request::get(format!("http://{addr}/api/2.0/vector-search/endpoints"))
            .body(Full::default())?;
        let response = client.clone().oneshot(request).await?;
        response.into_body().collect().await?;
    }

    let stats = telemetry.shutdown().await;
    eprintln!(
        "accepted {}, dropped {}, exported {}",
        stats.accepted, stats.dropped, stats.exported
    );
    Ok(())
}

/// A local HTTP/1 server: `503` with `Retry-After: 0` for the first request, `200` after.
async fn serve_locally() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                    if first {
                        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        response
                            .headers_mut()
                            .insert("retry-after", http::HeaderValue::from_static("0"));
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(addr)
}
